"""Two-stage TRPO -> PPO training: typed settings, the run, Tune sweeps, the Ray runtime."""
