"""RL algorithms for RLlib's new API stack: TRPO (``algorithms.trpo``) and the measured TRPO -> PPO weight handoff."""
