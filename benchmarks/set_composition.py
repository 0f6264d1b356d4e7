"""Sequential vs additive composition of per-cell hints on synthetic pairs of known truth (docs/sets.md).

For each seed, :func:`envs.synthetic_sets.make_synthetic_set_data` draws singles and four pairs
(uniform and disjoint: non-interacting; synergy and buffering: interacting); the pairs are held
out (``split="perturbations"``), so each is a set never observed whose members were all seen.
Every training control cell is moved by the pair's composed hint (:mod:`envs.set_hints`: the
members' per-cell OT displacement fields, added or applied in sequence) and decoded to genes as
``waddington evaluate`` decodes any latent move; the gene-space ``additive`` baseline (members'
training deltas summed) is scored beside them. Scores, against the pair's held-out cells: delta
MSE over all genes and top-20 delta Pearson. The paired difference additive - sequential in MSE
gets a 95% t interval over seeds, per pair kind.

With ``--unseen-member`` each pair's second member is held out too: the split of sets with one
unseen member, whose hint (and additive delta) comes from ridge + self-effect on its features.

    python benchmarks/set_composition.py --seeds 0,1,2,3,4 --json runs/i20/set_composition.json
    python benchmarks/set_composition.py --seeds 0,1,2,3,4 --unseen-member --json runs/i20/set_composition_unseen.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats


def score_seed(seed: int, unseen_member: bool = False) -> list[dict]:
    """Rows (pair kind, method, metrics) of one synthetic world."""
    from envs.preparation import prepare_dataset
    from envs.synthetic_sets import make_synthetic_set_data
    from experiments.evaluation import baselines as B
    from experiments.evaluation import metrics as M

    adata = make_synthetic_set_data(seed=seed)
    kinds = dict(adata.uns["truth"]["pairs"])
    ds = prepare_dataset(adata, perturbation_key="perturbation", control_value="control", split="perturbations",
                         holdout=sorted(kinds) + ([label.split("+")[1] for label in kinds] if unseen_member else []),
                         n_top_genes=adata.n_vars, seed=seed)
    dynamics = B.make_dynamics(ds)
    starts = ds.cell_indices(ds.control_value, "train")
    context = B.EvalContext(dataset=ds, start_rows={p: starts for p in kinds}, dynamics=dynamics,
                            train_delta=B.training_deltas(ds))
    X_ctrl = context.start_expression(next(iter(kinds)))
    z0 = ds.latent[starts].astype(np.float64)
    rows = []
    for label, kind in kinds.items():
        X_obs = np.asarray(ds.expression[ds.cell_indices(label, "test")].toarray(), dtype=np.float64)
        predictions = {"additive (gene space)": B.additive(context, label, np.random.default_rng(0)).cells}
        for how in ("additive", "sequential"):
            dynamics.state_hints.composition = how
            hint = dynamics.features_at(label, z0)[:, -ds.n_latent :]
            predictions[f"{how} hints"] = X_ctrl + B.latent_change_to_genes(ds, hint)
        for method, X_pred in predictions.items():
            d = M.delta_metrics(X_ctrl, X_obs, X_pred, k=20)
            rows.append({"seed": seed, "pair": label, "kind": kind, "method": method,
                         "delta_mse_all": float(d.mse_all), "delta_pearson_top20": float(d.pearson_top_k)})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per pair kind: mean of each method, and additive hints - sequential hints (delta MSE) with a 95% t interval."""
    out = []
    for kind in sorted({r["kind"] for r in rows}):
        mine = [r for r in rows if r["kind"] == kind]
        entry = {"kind": kind, "n_seeds": len({r["seed"] for r in mine})}
        for method in sorted({r["method"] for r in mine}):
            for metric in ("delta_mse_all", "delta_pearson_top20"):
                entry[f"{method} {metric}"] = float(np.mean([r[metric] for r in mine if r["method"] == method]))
        by_seed = {}
        for r in mine:
            by_seed.setdefault(r["seed"], {})[r["method"]] = r["delta_mse_all"]
        diff = np.array([v["additive hints"] - v["sequential hints"] for v in by_seed.values()])
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
        entry.update({"mse additive - sequential": float(diff.mean()), "ci95": [float(diff.mean() - half),
                                                                               float(diff.mean() + half)]})
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--unseen-member", action="store_true", help="also hold out each pair's second member")
    parser.add_argument("--json", help="write rows and summary here")
    args = parser.parse_args()
    rows = [row for seed in (int(s) for s in args.seeds.split(",")) for row in score_seed(seed, args.unseen_member)]
    summary = summarize(rows)
    for entry in summary:
        print(json.dumps(entry))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
