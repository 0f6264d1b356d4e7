"""Reference returns on the synthetic CellState env: the yardsticks for a learned policy.

Landscape-aware steering to each cell's OT-paired target (upper reference), the same steering to
the population mean (collapse), zero action and uniform random action; 200 episodes each.
Prints a table and writes JSON.

    python benchmarks/scripted_controllers.py --out benchmarks/results/scripted_controllers.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import envs
from envs.controllers import rollout_returns, toward_population_mean, toward_target, zero_action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/scripted_controllers.json")
    args = parser.parse_args()
    env = envs.make_cell_state_env({"data": "synthetic", "guided": False})  # plain pushes: zero is doing nothing
    rng = np.random.default_rng(0)
    controllers = {
        "landscape-aware to OT target": toward_target(env),
        "landscape-aware to population mean (collapse)": toward_population_mean(env),
        "zero action": zero_action(env),
        "random action": lambda obs, info: rng.uniform(-1, 1, env.dynamics.n_latent),
    }
    results = {}
    print(f"{'controller':<48}{'mean return':>12}{'std':>8}")
    for name, controller in controllers.items():
        returns, _, _ = rollout_returns(env, controller, episodes=args.episodes)
        results[name] = {"mean_return": float(returns.mean()), "std_return": float(returns.std())}
        print(f"{name:<48}{returns.mean():>12.3f}{returns.std():>8.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
