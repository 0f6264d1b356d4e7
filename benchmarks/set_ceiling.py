"""Half-vs-half ceiling of held-out sets: how well one half of a set's cells predicts the other half's delta.

The delta metrics of ``waddington evaluate`` (top-20 delta Pearson, delta MSE over all genes), with
one random half of the held-out cells as the "prediction" and the other half as the observation,
control = the dataset's training control cells (the start cells evaluate uses); mean over
``--repeats`` random halvings. Reads a prepared dataset (e.g. ``RUN/seed0/dataset``).

With ``--guides`` it also scores the guide alone (``hint-controller``: the push toward each start
cell moved by its composed hint) under each set composition, with ``waddington evaluate``'s scoring
(:func:`experiments.evaluation.evaluate.evaluate_dataset`, the dataset's own split and seed 0).

    python benchmarks/set_ceiling.py runs/i20/norman/seed0/dataset --guides
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    import envs
    from experiments.evaluation import metrics as M

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--guides", action="store_true", help="also score the guide under each composition")
    args = parser.parse_args()
    ds = envs.load_dataset(args.dataset)
    dense = lambda rows: np.asarray(ds.expression[rows].toarray(), dtype=np.float64)
    X_ctrl = dense(ds.cell_indices(ds.control_value, "train"))
    rng = np.random.default_rng(0)
    out = {}
    for name in ds.split.heldout_perturbations:
        X = dense(ds.cell_indices(name, "test"))
        scores = []
        for _ in range(args.repeats):
            order = rng.permutation(len(X))
            half = len(X) // 2
            d = M.delta_metrics(X_ctrl, X[order[:half]], X[order[half:]], k=20)
            scores.append((d.pearson_top_k, d.mse_all))
        out[name] = {"delta_pearson_top20": float(np.mean([s[0] for s in scores])),
                     "delta_mse_all": float(np.mean([s[1] for s in scores])), "n_cells": len(X)}
    out["mean"] = {key: float(np.mean([v[key] for v in out.values()])) for key in ("delta_pearson_top20",
                                                                                  "delta_mse_all")}
    if args.guides:
        out["guides"] = _guides(ds)
    print(json.dumps(out, indent=1))


def _guides(ds) -> dict:
    """Mean top-20 delta Pearson and delta MSE (all genes) of the guide alone, per set composition."""
    from experiments.evaluation import baselines as B
    from experiments.evaluation.evaluate import evaluate_dataset

    out = {}
    for how in ("additive", "sequential"):
        ds.meta["set_composition"] = how  # the dynamics read it from the dataset
        result = evaluate_dataset(ds, {"hint-controller": B.hint_controller, "additive": B.additive}, seed=0,
                                  references=False, keep_examples=0)
        for row in result.rows:
            if row["metric"] in ("delta_pearson_top20", "delta_mse_all"):
                method = f"guide ({how} hints)" if row["method"] == "hint-controller" else row["method"]
                out.setdefault(method, {})[row["metric"]] = float(row["value"])
    return out


if __name__ == "__main__":
    main()
