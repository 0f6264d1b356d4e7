"""Env throughput and preprocessing scale for ``waddington/CellState-v0``.

Measures, side by side in one run:
- single env steps/s, native VectorEnv(64) steps/s (with per-cell hints, the default, and with
  the perturbation's mean shift as every cell's hint, ``state_hint_neighbours=0``), RLlib local env runner sampled steps/s with
  that VectorEnv (PPO's default module, inference included; RLlib defaults, and with the identity
  action normalization switched off), and RLlib / raw VectorEnv;
- ``prepare_dataset`` wall time and peak RSS on synthetic data of ``--cells`` x ``--genes``
  (in a child process, so the peak is preprocessing's own), with a linear extrapolation to a
  2M-cell genome-wide screen.

Prints a table and writes JSON (``--out``).

    python benchmarks/env_throughput.py --out benchmarks/results/env_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs


def single_env_rate(dataset, steps: int) -> float:
    env = gym.make(envs.ENV_ID, data=dataset)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, env.action_space.shape[0])).astype(np.float32)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_env_rate(dataset, num_envs: int, steps: int, **env_options) -> float:
    vec = gym.make_vec(envs.ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", data=dataset,
                       **env_options)
    vec.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(num_envs, vec.single_action_space.shape[0]))
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        vec.step(actions)
    return (steps // num_envs) * num_envs / (time.perf_counter() - start)


def rllib_runner_rates(dataset, num_envs: int, steps: int) -> dict[str, float]:
    """Local env runner sampling rate with RLlib's defaults and with action normalization off.

    CellState's action box is already [-1, 1], so RLlib's per-item unsquash/clip connector is an
    identity there; turning it off (``normalize_actions=False, clip_actions=False``) is exact.
    """
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig

    from experiments.training.ray_runtime import start_local_ray

    # Remote runners get OMP_NUM_THREADS=1 from Ray; match that here. Two intra-op threads on a
    # busy 2-core machine spin against other processes and made sampling ~10x slower.
    torch.set_num_threads(1)
    start_local_ray(num_cpus=2)
    rates = {}
    try:
        ref = ray.put(dataset)
        for label, normalize in (("rllib_default", True), ("rllib_no_action_normalization", False)):
            algo = (
                PPOConfig()
                .environment(envs.ENV_ID, env_config={"data": ref}, normalize_actions=normalize, clip_actions=False)
                .env_runners(
                    num_env_runners=0,
                    num_envs_per_env_runner=num_envs,
                    gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
                )
                .build_algo()
            )
            runner = algo.env_runner
            runner.sample(num_timesteps=2000)  # warm-up: first forward passes, first resets
            start = time.perf_counter()
            episodes = runner.sample(num_timesteps=steps)
            rates[label] = sum(len(e) for e in episodes) / (time.perf_counter() - start)
            algo.stop()
    finally:
        ray.shutdown()
    return rates


PREPARE_CHILD = """
import json, resource, sys, time
import envs
start = time.perf_counter()
dataset = envs.prepare_dataset(sys.argv[1], perturbation_key="perturbation", control_value="control",
                               n_latent=16, n_top_genes=2000, max_pair_cells=1000, verbose=True)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def preprocessing_cost(n_cells: int, n_genes: int, library_size: float) -> dict:
    n_perturbations = 8
    per_group = n_cells // (n_perturbations + 2)
    adata = envs.make_synthetic_perturbation_data(
        n_perturbations=n_perturbations,
        n_control_cells=n_cells - n_perturbations * per_group,
        n_cells_per_perturbation=per_group,
        n_genes=n_genes,
        mean_library_size=library_size,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.h5ad"
        adata.write_h5ad(path)
        file_mb = path.stat().st_size / 2**20
        del adata
        out = subprocess.run([sys.executable, "-c", PREPARE_CHILD, str(path)], capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    figures.update({"cells": n_cells, "genes": n_genes, "library_size": library_size, "h5ad_mb": file_mb})
    scale = 2_000_000 / n_cells
    figures["extrapolated_2M_seconds"] = figures["seconds"] * scale
    figures["extrapolated_2M_peak_rss_gb"] = figures["peak_rss_mb"] * scale / 1024
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=64_000, help="env steps per throughput measurement")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument(
        "--library-size", type=float, default=800.0,
        help="mean UMIs per cell within the genes (800 over 2k genes gives the ~30%% density of 10x HVG matrices)",
    )
    parser.add_argument("--skip-preprocessing", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/env_throughput.json")
    args = parser.parse_args()

    dataset = envs.prepare_dataset("synthetic", seed=0).env_view()
    single = single_env_rate(dataset, min(args.steps, 20_000))
    vector = vector_env_rate(dataset, args.num_envs, args.steps)
    mean_hints = vector_env_rate(dataset, args.num_envs, args.steps, state_hint_neighbours=0)
    rllib = rllib_runner_rates(dataset, args.num_envs, args.steps)
    results = {
        "single_env_steps_per_s": single,
        f"vector_env_{args.num_envs}_steps_per_s": vector,
        f"vector_env_{args.num_envs}_mean_shift_hints_steps_per_s": mean_hints,
        "per_cell_over_mean_shift_hints": vector / mean_hints,
        "rllib_runner_default_steps_per_s": rllib["rllib_default"],
        "rllib_runner_no_action_norm_steps_per_s": rllib["rllib_no_action_normalization"],
        "rllib_default_over_raw_vector": rllib["rllib_default"] / vector,
        "rllib_no_action_norm_over_raw_vector": rllib["rllib_no_action_normalization"] / vector,
        "num_envs": args.num_envs,
        "cpu_count": os.cpu_count(),
    }
    if not args.skip_preprocessing:
        results["preprocessing"] = preprocessing_cost(args.cells, args.genes, args.library_size)

    print(f"{'measure':<40}{'value':>14}")
    for key, value in results.items():
        if isinstance(value, dict):
            for sub, val in value.items():
                print(f"{'preprocessing.' + sub:<40}{val:>14.2f}")
        else:
            print(f"{key:<40}{value:>14.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
