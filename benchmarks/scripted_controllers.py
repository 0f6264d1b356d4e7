"""Reference returns on the CellState env: the yardsticks for a learned policy.

Landscape-aware steering to each cell's OT-paired target (the oracle), to a k-nearest-neighbour
estimate of that target from the start cell alone (what a policy, which never observes its
episode's target, can aim for; leave-one-out, several k), to the start cell moved by its
per-cell hint (the guide: ``envs.state_hints``, for the same k values) and by the perturbation's
mean shift hint, to the population mean (collapse), zero action and
uniform random action; plain (unguided) pushes, 200 episodes each, the same episode seeds for
every controller; last, the guide as a guided policy gets it (a zero action in the guided env).
Prints a table with each return as a share of the oracle's and writes JSON.

    python benchmarks/scripted_controllers.py --out benchmarks/results/scripted_controllers.json
    python benchmarks/scripted_controllers.py --data runs/train-x/dataset   # a run's prepared dataset
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import envs
from envs.controllers import (
    landscape_aware,
    rollout_returns,
    toward_population_mean,
    toward_start_state_map,
    toward_target,
    zero_action,
)
from envs.dynamics import CellStateDynamics, DynamicsConfig


def _hinted(dynamics: CellStateDynamics, latent: np.ndarray):
    """Where a guide with ``dynamics``' hints steers an episode: its start cell moved by its per-cell hint."""
    d = dynamics.n_latent

    def point(info):
        start = latent[info["start_cell"]]
        return start + dynamics.features_at(info["perturbation"], start[None, :])[0, -d:]

    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--data", default="synthetic", help="'synthetic' or a prepared dataset directory")
    parser.add_argument("--neighbours", default="1,5,20,50", help="k values of the start-state map and per-cell hints")
    parser.add_argument("--out", default="benchmarks/results/scripted_controllers.json")
    args = parser.parse_args()
    data = args.data if args.data == "synthetic" else envs.load_dataset(args.data)
    env = envs.make_cell_state_env({"data": data, "guided": False})  # plain pushes: zero is doing nothing
    rng = np.random.default_rng(0)
    controllers = {"landscape-aware to OT target (oracle)": toward_target(env)}
    neighbours = [int(v) for v in args.neighbours.split(",")]
    for k in neighbours:
        controllers[f"landscape-aware to start-state map, k={k}"] = toward_start_state_map(env, k)
    if env.dynamics.hints is not None:
        latent = env.dataset.latent.astype(np.float64)
        dynamics = env.dynamics
        if dynamics.state_hints is not None:
            for k in neighbours:
                controllers[f"landscape-aware to start + per-cell hint, k={k}"] = landscape_aware(
                    env, _hinted(CellStateDynamics(env.dataset, DynamicsConfig(state_hint_neighbours=k)), latent))
        controllers["landscape-aware to start + mean shift hint"] = landscape_aware(
            env, lambda info: latent[info["start_cell"]] + dynamics.hints(info["perturbation"]))
    controllers.update({
        "landscape-aware to population mean (collapse)": toward_population_mean(env),
        "zero action": zero_action(env),
        "random action": lambda obs, info: rng.uniform(-1, 1, env.dynamics.n_latent),
    })
    results = {}
    print(f"{'controller':<52}{'mean return':>12}{'std':>8}{'x oracle':>10}")
    oracle = None
    runs = [(name, env, controller) for name, controller in controllers.items()]
    if env.dynamics.hints is not None:  # the guide as a guided policy gets it: its zero action, guided pushes
        guided = envs.make_cell_state_env({"data": env.dataset, "guided": True})
        runs.append(("zero action, guided env (the guide, default hints)", guided, zero_action(guided)))
    for name, run_env, controller in runs:
        returns, _, _ = rollout_returns(run_env, controller, episodes=args.episodes)
        oracle = returns.mean() if oracle is None else oracle
        share = returns.mean() / oracle
        results[name] = {"mean_return": float(returns.mean()), "std_return": float(returns.std()),
                         "share_of_oracle": float(share)}
        print(f"{name:<52}{returns.mean():>12.3f}{returns.std():>8.3f}{share:>10.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": args.data, "episodes": args.episodes, "controllers": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
