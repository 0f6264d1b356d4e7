"""Where the out-of-range rule's constants come from: score quantiles on synthetic data only.

Prepares ``make_synthetic_perturbation_data(far_group=True)`` at the defaults with the far group
held out (``split="group"``), and with a near-group cell split for comparison, and prints the
quantiles of :class:`envs.start_range.StartRange` scores for the paired training starts (their own
leave-one-out scores), the near group's unpaired or held-out-split control cells, and the far
group's control cells. :data:`envs.start_range.IN_RANGE` sits above what in-distribution cells
reach, :data:`envs.start_range.OUT_OF_RANGE` below the far group. No real data is read.

    python benchmarks/start_range_constants.py [--seeds 0,1,2] [--far-offset 4]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import envs
from envs.start_range import IN_RANGE, OUT_OF_RANGE, StartRange

QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {f"q{q}": round(float(np.quantile(x, q)), 3) for q in QUANTILES} | {"min": round(float(x.min()), 3)}


def measure(seed: int, far_offset: float = 4.0) -> dict[str, dict[str, float]]:
    """Score quantiles of one seed's synthetic far-group data (see the module docstring)."""
    adata = envs.make_synthetic_perturbation_data(far_group=True, far_offset=far_offset, seed=seed)
    out = {}
    ds = envs.prepare_dataset(adata, perturbation_key="perturbation", control_value="control", split="group",
                              holdout=["far"], group_key="group", seed=seed)
    rng = StartRange(ds.latent, ds.pairs)
    control = (ds.labels == ds.control_value) & ds.split.train
    out["paired starts (own, leave-one-out)"] = _quantiles(rng.score(rng.states))
    out["far group controls"] = _quantiles(rng.score(ds.latent[control & (ds.groups == "far")]))
    near = envs.prepare_dataset(adata[adata.obs["group"] == "near"].copy(), perturbation_key="perturbation",
                                control_value="control", split="cells", seed=seed)
    near_rng = StartRange(near.latent, near.pairs)
    test_control = np.flatnonzero((near.labels == near.control_value) & near.split.test)
    out["near group held-out controls (cell split)"] = _quantiles(near_rng.score(near.latent[test_control]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--far-offset", type=float, default=4.0, help="the far group's programme strength")
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        print(json.dumps({"seed": seed, "far_offset": args.far_offset, "in_range": IN_RANGE,
                          "out_of_range": OUT_OF_RANGE, **measure(seed, args.far_offset)}, indent=1))


if __name__ == "__main__":
    main()
