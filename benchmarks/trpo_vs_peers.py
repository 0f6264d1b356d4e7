"""Benchmark: this project's RLlib TRPO vs sb3-contrib TRPO, and TRPO's learner vs RLlib PPO's.

Same env, same env steps, same 64x64 tanh actor and critic nets, same KL radius, CG iterations,
damping, line search, critic optimizer (Adam, lr 1e-3, 10 epochs x minibatch 128), GAE
(gamma, lambda 0.95), batch 2048 per update, on Pendulum-v1 and waddington/CellState-v0 (the
synthetic dataset), for 3 seeds. Policy parametrisation matched to sb3's: state-independent
log-std starting at 0, orthogonal init (gain sqrt(2) hidden, 0.01 on the action-mean layer).

Sampling differs on purpose: sb3-contrib steps 1 env (its default), RLlib steps 32 vectorized
envs in one local env runner (``num_envs_per_env_runner=32``, ``rollout_fragment_length="auto"``).

Measured per run: wall seconds of the training loop (construction reported apart), env steps
per second, and the return curve at fixed step counts (mean return of the last 20 episodes
finished by that step, recorded per episode in both libraries). Then, on one fixed 4000-step
Pendulum batch: seconds per update of this TRPO's learner vs RLlib PPO's default learner (30
epochs x minibatch 128, PPO's default batch of 4000), median of repeats.

    pip install -e '.[bench]'
    python benchmarks/trpo_vs_peers.py                       # full run (3 seeds, both envs)
    python benchmarks/trpo_vs_peers.py --seeds 0 --pendulum-steps 20000 --envs pendulum  # quick look

Writes ``benchmarks/results/trpo_vs_peers.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV_IDS = {"pendulum": "Pendulum-v1", "cellstate": "waddington/CellState-v0"}
HIDDEN = [64, 64]
BATCH = 2048
KL_RADIUS = 0.01
GAMMA = {"pendulum": 0.9, "cellstate": 0.99}
LAMBDA = 0.95
CG_ITERS = 15
CG_DAMPING = 0.1
LS_STEPS = 10
LS_RATIO = 0.8
VF_LR = 1e-3
VF_ITERS = 10
VF_MINIBATCH = 128
SMOOTH = 20  # episodes in the moving mean of the return curve
RLLIB_NUM_ENVS = 32


# --------------------------------------------------------------------------- helpers


def curve_at(episodes: list[tuple[int, float]], checkpoints: list[int]) -> list[float]:
    """Mean return of the last ``SMOOTH`` episodes finished at or before each checkpoint."""
    out = []
    for c in checkpoints:
        rets = [r for s, r in episodes if s <= c][-SMOOTH:]
        out.append(float(np.mean(rets)) if rets else float("nan"))
    return out


def _cellstate_dataset(seed: int = 0):
    import envs  # noqa: F401  (registers the env)
    from envs.sources import resolve_dataset

    return resolve_dataset("synthetic", n_latent=8, seed=seed)


# --------------------------------------------------------------------------- RLlib TRPO


def run_rllib_trpo(env_key: str, seed: int, steps: int, data_ref: Any = None) -> dict:
    import gymnasium as gym
    from ray.rllib.callbacks.callbacks import RLlibCallback

    from algorithms.trpo import TRPOConfig

    finished: list[float] = []

    class _Record(RLlibCallback):
        # num_env_runners=0: the local env runner lives in this process.
        # Episodes span sample calls: add the earlier chunks' rewards.
        def on_episode_end(self, *, episode, prev_episode_chunks=(), **kwargs):
            ret = episode.get_return() + sum(c.get_return() for c in prev_episode_chunks)
            finished.append(float(ret))

    env_config: dict[str, Any] = {}
    runner_kwargs: dict[str, Any] = {}
    if env_key == "cellstate":
        env_config = {"data": data_ref}
        runner_kwargs["gym_env_vectorize_mode"] = gym.VectorizeMode.VECTOR_ENTRY_POINT
    config = (
        TRPOConfig()
        .environment(ENV_IDS[env_key], env_config=env_config)
        .env_runners(
            num_env_runners=0,
            num_envs_per_env_runner=RLLIB_NUM_ENVS,
            rollout_fragment_length="auto",
            **runner_kwargs,
        )
        .training(
            train_batch_size_per_learner=BATCH,
            gamma=GAMMA[env_key],
            lambda_=LAMBDA,
            kl_radius=KL_RADIUS,
            cg_iters=CG_ITERS,
            cg_damping=CG_DAMPING,
            line_search_max_steps=LS_STEPS,
            line_search_backtrack_ratio=LS_RATIO,
            vf_lr=VF_LR,
            vf_iters=VF_ITERS,
            vf_minibatch_size=VF_MINIBATCH,
            pi_output_init_gain=0.01,
        )
        .rl_module(
            model_config={
                "fcnet_hiddens": HIDDEN,
                "fcnet_activation": "tanh",
                "fcnet_kernel_initializer": "orthogonal_",
                "fcnet_kernel_initializer_kwargs": {"gain": math.sqrt(2)},
                "free_log_std": True,
                "vf_share_layers": False,
            }
        )
        .callbacks(_Record)
        .debugging(seed=seed)
    )
    t0 = time.perf_counter()
    algo = config.build_algo()
    build_s = time.perf_counter() - t0
    episodes: list[tuple[int, float]] = []
    learner_s, kls = [], []
    done = 0
    t0 = time.perf_counter()
    try:
        while done < steps:
            result = algo.train()
            done = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
            episodes.extend((done, r) for r in finished)
            finished.clear()
            learner_s.append(float(result["timers"]["learner_update_timer"]))
            kls.append(float(result["learners"]["default_policy"]["trpo_kl"]))
        wall = time.perf_counter() - t0
    finally:
        algo.stop()
    assert max(kls) <= KL_RADIUS, kls
    return {
        "lib": "rllib_trpo",
        "env": env_key,
        "seed": seed,
        "steps": done,
        "wall_s": wall,
        "build_s": build_s,
        "steps_per_s": done / wall,
        "episodes": episodes,
        "max_trpo_kl": max(kls),
        "learner_update_timer_mean_s": float(np.mean(learner_s)),
    }


# --------------------------------------------------------------------------- sb3-contrib TRPO


def run_sb3_trpo(env_key: str, seed: int, steps: int, dataset: Any = None) -> dict:
    import gymnasium as gym
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    episodes: list[tuple[int, float]] = []

    class _Record(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    episodes.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    if env_key == "cellstate":
        env = Monitor(gym.make(ENV_IDS[env_key], data=dataset))
    else:
        env = Monitor(gym.make(ENV_IDS[env_key]))
    t0 = time.perf_counter()
    model = TRPO(
        "MlpPolicy",
        env,
        learning_rate=VF_LR,
        n_steps=BATCH,
        batch_size=VF_MINIBATCH,
        gamma=GAMMA[env_key],
        gae_lambda=LAMBDA,
        cg_max_steps=CG_ITERS,
        cg_damping=CG_DAMPING,
        line_search_shrinking_factor=LS_RATIO,
        line_search_max_iter=LS_STEPS,
        n_critic_updates=VF_ITERS,
        target_kl=KL_RADIUS,
        policy_kwargs={
            "net_arch": {"pi": HIDDEN, "vf": HIDDEN},
            "activation_fn": torch.nn.Tanh,
        },
        seed=seed,
        device="cpu",
    )
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, callback=_Record())
    wall = time.perf_counter() - t0
    done = int(model.num_timesteps)
    env.close()
    return {
        "lib": "sb3_contrib_trpo",
        "env": env_key,
        "seed": seed,
        "steps": done,
        "wall_s": wall,
        "build_s": build_s,
        "steps_per_s": done / wall,
        "episodes": episodes,
    }


# --------------------------------------------------------------------------- learner timing


def learner_timing(repeats: int = 5, batch: int = 4000) -> dict:
    """Seconds per update on one fixed Pendulum batch: this TRPO vs RLlib PPO's defaults."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from algorithms.trpo import TRPOConfig

    model_config = {"fcnet_hiddens": HIDDEN, "fcnet_activation": "tanh", "free_log_std": True}
    trpo = (
        TRPOConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=20)
        .training(train_batch_size_per_learner=batch)
        .rl_module(model_config=model_config)
        .debugging(seed=0)
    ).build_algo()
    ppo_config = (
        PPOConfig()  # PPO's default learner: 30 epochs x minibatch 128
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=batch)
        .rl_module(model_config={**model_config, "vf_share_layers": False})
        .debugging(seed=0)
    )
    ppo = ppo_config.build_algo()
    try:
        episodes = synchronous_parallel_sample(
            worker_set=trpo.env_runner_group, max_env_steps=batch, _uses_new_env_runners=True
        )
        n_steps = sum(len(e) for e in episodes)
        timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: 0}

        def _time_once(algo, **kw) -> float:
            eps = copy.deepcopy(episodes)  # learner connectors extend episodes in place
            t = time.perf_counter()
            algo.learner_group.update(episodes=eps, timesteps=timesteps, **kw)
            return time.perf_counter() - t

        ppo_kw = dict(
            num_epochs=ppo_config.num_epochs,
            minibatch_size=ppo_config.minibatch_size,
            shuffle_batch_per_epoch=ppo_config.shuffle_batch_per_epoch,
        )
        # Warm-up, then alternate the two so that background load hits both alike.
        _time_once(trpo, num_epochs=1, minibatch_size=None)
        _time_once(ppo, **ppo_kw)
        trpo_s, ppo_s = [], []
        for _ in range(repeats):
            trpo_s.append(_time_once(trpo, num_epochs=1, minibatch_size=None))
            ppo_s.append(_time_once(ppo, **ppo_kw))
    finally:
        trpo.stop()
        ppo.stop()
    return {
        "batch_env_steps": n_steps,
        "ppo_num_epochs": ppo_config.num_epochs,
        "ppo_minibatch_size": ppo_config.minibatch_size,
        "trpo_s": trpo_s,
        "ppo_s": ppo_s,
        "trpo_median_s": statistics.median(trpo_s),
        "ppo_median_s": statistics.median(ppo_s),
        "ratio": statistics.median(trpo_s) / statistics.median(ppo_s),
    }


# --------------------------------------------------------------------------- main


def summarize(runs: list[dict], checkpoints: dict[str, list[int]]) -> dict:
    summary: dict[str, Any] = {}
    for env_key in sorted({r["env"] for r in runs}):
        summary[env_key] = {}
        for lib in ("rllib_trpo", "sb3_contrib_trpo"):
            rs = [r for r in runs if r["env"] == env_key and r["lib"] == lib]
            if not rs:
                continue
            curves = np.array([curve_at(r["episodes"], checkpoints[env_key]) for r in rs])
            summary[env_key][lib] = {
                "seeds": [r["seed"] for r in rs],
                "steps": [r["steps"] for r in rs],
                "wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
                "wall_s_per_seed": [r["wall_s"] for r in rs],
                "build_s_mean": float(np.mean([r["build_s"] for r in rs])),
                "steps_per_s_mean": float(np.mean([r["steps_per_s"] for r in rs])),
                "checkpoints": checkpoints[env_key],
                "curve_mean": np.nanmean(curves, axis=0).tolist(),
                "curve_per_seed": curves.tolist(),
                "final_return_mean": float(np.nanmean(curves[:, -1])),
                "auc_return_mean": float(np.nanmean(curves)),
            }
        both = summary[env_key]
        if "rllib_trpo" in both and "sb3_contrib_trpo" in both:
            both["wall_ratio_rllib_over_sb3"] = (
                both["rllib_trpo"]["wall_s_mean"] / both["sb3_contrib_trpo"]["wall_s_mean"]
            )
            # Each seed's two runs are adjacent in time, so their ratio is the fairer one
            # on a machine shared with other work.
            walls = {
                (r["lib"], r["seed"]): r["wall_s"] for r in runs if r["env"] == env_key
            }
            both["wall_ratio_per_seed"] = [
                walls[("rllib_trpo", sd)] / walls[("sb3_contrib_trpo", sd)]
                for sd in both["rllib_trpo"]["seeds"]
                if ("sb3_contrib_trpo", sd) in walls
            ]
    return summary


def print_table(summary: dict, timing: dict | None) -> None:
    print()
    print("| env | library | wall s (train loop) | build s | env steps/s | return at checkpoints (mean of seeds) | final | mean over curve |")
    print("|---|---|---|---|---|---|---|---|")
    for env_key, libs in summary.items():
        for lib in ("rllib_trpo", "sb3_contrib_trpo"):
            if lib not in libs:
                continue
            s = libs[lib]
            pts = ", ".join(
                f"{c // 1000}k: {v:.0f}" for c, v in zip(s["checkpoints"], s["curve_mean"])
            )
            print(
                f"| {ENV_IDS[env_key]} | {lib} | {s['wall_s_mean']:.1f} | {s['build_s_mean']:.1f} | "
                f"{s['steps_per_s_mean']:.0f} | {pts} | {s['final_return_mean']:.1f} | "
                f"{s['auc_return_mean']:.1f} |"
            )
        if "wall_ratio_rllib_over_sb3" in libs:
            per_seed = ", ".join(f"{x:.2f}" for x in libs["wall_ratio_per_seed"])
            print(
                f"| {ENV_IDS[env_key]} | wall ratio rllib/sb3 | {libs['wall_ratio_rllib_over_sb3']:.2f} "
                f"(per seed: {per_seed}) | | | | | |"
            )
    if timing:
        print()
        print(
            f"Learner seconds per update on one {timing['batch_env_steps']}-step Pendulum batch "
            f"(median of {len(timing['trpo_s'])}): TRPO {timing['trpo_median_s']:.2f} s, "
            f"RLlib PPO default ({timing['ppo_num_epochs']} epochs x {timing['ppo_minibatch_size']}) "
            f"{timing['ppo_median_s']:.2f} s, ratio {timing['ratio']:.3f}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["pendulum", "cellstate"], choices=list(ENV_IDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pendulum-steps", type=int, default=100_000, help="env steps per Pendulum run")
    parser.add_argument("--cellstate-steps", type=int, default=50_000, help="env steps per CellState run")
    parser.add_argument("--libs", nargs="+", default=["rllib_trpo", "sb3_contrib_trpo"],
                        choices=["rllib_trpo", "sb3_contrib_trpo"])
    parser.add_argument("--no-learner-timing", action="store_true")
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for both libraries (0: leave torch's default). On a shared "
        "2-core machine 2 threads made a 2048-step TRPO update ~20x slower than 1 (7.4 s vs 0.33 s).",
    )
    parser.add_argument("--out", default="benchmarks/results/trpo_vs_peers.json")
    args = parser.parse_args(argv)

    import torch

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        from experiments.training.ray_runtime import start_local_ray

        start_local_ray(num_cpus=2, configure_logging=False)

    dataset = data_ref = None
    if "cellstate" in args.envs:
        dataset = _cellstate_dataset()
        data_ref = ray.put(dataset)

    steps = {"pendulum": args.pendulum_steps, "cellstate": args.cellstate_steps}
    n_ckpt = 10
    checkpoints = {
        e: [int(round(steps[e] * (i + 1) / n_ckpt)) for i in range(n_ckpt)] for e in args.envs
    }
    runs = []
    for env_key in args.envs:
        for seed in args.seeds:
            if "rllib_trpo" in args.libs:
                load0 = os.getloadavg()[0]
                r = run_rllib_trpo(env_key, seed, steps[env_key], data_ref)
                r["loadavg_1min_before_after"] = [load0, os.getloadavg()[0]]
                print(f"rllib_trpo {env_key} seed {seed}: {r['wall_s']:.1f} s, {r['steps_per_s']:.0f} steps/s", flush=True)
                runs.append(r)
            if "sb3_contrib_trpo" in args.libs:
                load0 = os.getloadavg()[0]
                r = run_sb3_trpo(env_key, seed, steps[env_key], dataset)
                r["loadavg_1min_before_after"] = [load0, os.getloadavg()[0]]
                print(f"sb3_contrib_trpo {env_key} seed {seed}: {r['wall_s']:.1f} s, {r['steps_per_s']:.0f} steps/s", flush=True)
                runs.append(r)

    timing = None if args.no_learner_timing else learner_timing(repeats=args.timing_repeats)
    summary = summarize(runs, checkpoints)
    print_table(summary, timing)

    out = {
        "settings": {
            "steps": steps,
            "seeds": args.seeds,
            "batch": BATCH,
            "hidden": HIDDEN,
            "kl_radius": KL_RADIUS,
            "gamma": GAMMA,
            "lambda": LAMBDA,
            "cg_iters": CG_ITERS,
            "cg_damping": CG_DAMPING,
            "vf_lr": VF_LR,
            "vf_iters": VF_ITERS,
            "vf_minibatch": VF_MINIBATCH,
            "rllib_num_envs_per_env_runner": RLLIB_NUM_ENVS,
            "sb3_num_envs": 1,
            "curve_smoothing_episodes": SMOOTH,
            "torch_threads": torch.get_num_threads(),
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "summary": summary,
        "learner_timing": timing,
        "runs": runs,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
