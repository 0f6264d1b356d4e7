"""Reverse retrieval on real data: given a perturbation's held-out cells, is it the set the design ranks first?

For every held-out perturbation of a prepared split, the target is its own held-out cells and the
library is every label of the data (seen members by their observed hints, held-out panel genes by
ridge + self-effect, as ``--library FILE`` gives them); the designer ranks sets of up to ``--k``
members with the run's forward model (no policy; :mod:`experiments.design.objective`). Rows: the
true label's rank per target and designer; summary: top-1, top-5 and mean rank per designer, with
``random`` as the expected rank of a uniform guess and ``naive`` the mean-shift rule (seen members
by their observed mean, unseen ones by ridge + self-effect).

    python benchmarks/design_retrieval.py --data ../shared/data/papalexi2021_thp1_crispr.h5ad \\
        --perturbation-key perturbation_confident --control-value non-targeting --ignore unassigned \\
        --split cells --seeds 0,1,2 --json benchmarks/results/design_retrieval_papalexi_cells.json
    python benchmarks/design_retrieval.py --data ../shared/data/papalexi2021_thp1_crispr.h5ad \\
        --perturbation-key perturbation_confident --control-value non-targeting --ignore unassigned \\
        --split perturbations --holdout CMTM6,JAK2,STAT1,STAT3,UBE2L6 --seeds 0,1,2
    python benchmarks/design_retrieval.py --data ../shared/data/norman2019_k562_crispra_subset.h5ad \\
        --perturbation-key condition --control-value control --split perturbations --k 2 \\
        --holdout KLF1+MAP2K6,KLF1+TGFBR2,MAP2K3+MAP2K6,MAPK1+TGFBR2,MAP2K3+SLC38A2 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DESIGNERS = ("exhaustive", "naive")


def seed_rows(args: argparse.Namespace, seed: int) -> list[dict]:
    """One row per (target, designer) of one seed."""
    import anndata as ad

    from envs.perturbation_sets import set_syntax_of
    from experiments import api
    from experiments.design.library import resolve_library
    from experiments.design.objective import DesignObjective, ForwardModel
    from experiments.design.search import n_sets, run_designer
    from experiments.prediction.predict import select_start_rows

    adata = ad.read_h5ad(args.data)
    ds = api.prepare(adata, perturbation_key=args.perturbation_key, control_value=args.control_value,
                     split=args.split, holdout=args.holdout.split(",") if args.holdout else (),
                     ignore_values=args.ignore.split(",") if args.ignore else (), seed=seed)
    sets = set_syntax_of(ds.meta, ds.control_value)
    held_out = sorted({str(p) for p in np.asarray(ds.labels)[ds.split.test] if str(p) != ds.control_value})
    singles = [p for p in ds.perturbations if p != ds.control_value and not sets.is_set(p)]
    library = resolve_library(ds, singles)
    model = ForwardModel(ds, {}, select_start_rows(ds, n_cells=256, seed=seed))
    rng = np.random.default_rng(seed)
    total = n_sets(len(library), args.k)
    rows = []
    for target in held_out:
        cells = ds.latent[ds.cell_indices(target, "test")].astype(np.float64)
        cells = cells[np.sort(rng.choice(len(cells), size=min(256, len(cells)), replace=False))]
        truth = frozenset(sets.members(target)) if sets.is_set(target) else frozenset([target])
        for designer in DESIGNERS:
            if designer == "naive" and args.k > 1:
                continue
            objective = DesignObjective(model, target_latent=cells)
            result = run_designer(objective, library, designer=designer, max_size=args.k)
            rank = next((i + 1 for i, s in enumerate(result.ranked) if frozenset(s.members) == truth), None)
            rows.append({"seed": seed, "target": target, "designer": designer, "rank": rank, "candidates": total,
                         "best": "+".join(result.ranked[0].members), "evaluations": result.evaluations})
        print(f"seed {seed} {target}: " + ", ".join(f"{r['designer']} rank {r['rank']}" for r in rows[-2:]
                                                     if r["target"] == target), flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Top-1, top-5 and mean rank per designer, and the uniform guess's expectation."""
    out = []
    for designer in dict.fromkeys(r["designer"] for r in rows):
        mine = [r for r in rows if r["designer"] == designer]
        ranks = np.array([r["rank"] if r["rank"] is not None else r["candidates"] for r in mine], dtype=float)
        out.append({"designer": designer, "n_targets": len(mine), "top1": float(np.mean(ranks <= 1)),
                    "top5": float(np.mean(ranks <= 5)), "mean_rank": float(ranks.mean())})
    n = rows[0]["candidates"]
    out.append({"designer": "random (expected)", "n_targets": len({(r["seed"], r["target"]) for r in rows}),
                "top1": 1.0 / n, "top5": min(5, n) / n, "mean_rank": (n + 1) / 2})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--perturbation-key", required=True)
    parser.add_argument("--control-value", required=True)
    parser.add_argument("--ignore", default="")
    parser.add_argument("--split", default="cells", choices=["cells", "perturbations"])
    parser.add_argument("--holdout", default="")
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [r for seed in args.seeds.split(",") for r in seed_rows(args, int(seed))]
    summary = summarize(rows)
    print(f"{'designer':<18} {'targets':>7} {'top-1':>6} {'top-5':>6} {'mean rank':>9}  (of {rows[0]['candidates']})")
    for e in summary:
        print(f"{e['designer']:<18} {e['n_targets']:>7} {e['top1']:>6.2f} {e['top5']:>6.2f} {e['mean_rank']:>9.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
