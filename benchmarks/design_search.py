"""Designers on planted pairs of known truth: does the search recover the pair that made the target? (docs/design.md)

Two worlds. ``--world planted`` (default): a library of 50 to thousands of pathway members whose
features carry their effects, with synergy planted so greedy fails, where the RL designer (trained
TRPO -> PPO, and PPO only with ``--stages``) is compared with every search
(:mod:`benchmarks.design_planted` says how). ``--world cells``: the cell-level synthetic sets
(:func:`envs.synthetic_sets.make_synthetic_set_data`): for each seed the four planted pairs (uniform
and disjoint: non-interacting; synergy: A carries a well where B then moves it; buffering: A and A'
do the same thing, so together they move the cells once) are held out (``split="perturbations"``);
each pair's own cells are a target, and the library is the seen singles (7), padded with knockdowns
of other panel genes to ``--library N`` members (decoys expressed by ridge + self-effect). Every
designer (:mod:`experiments.design.search`) searches sets of up to ``--k`` members with the run's
forward model (start cells moved by composed per-cell hints; no policy). ``random`` gets the
evaluations ``beam`` used (the same budget), ``exhaustive`` runs only where it fits ``--budget``.

Rows: ``designer``, ``library``, ``k``, ``recall_at_1``, ``recall_at_10`` (share of targets whose
true pair is ranked first / in the top 10), ``evaluations`` and ``wall_s`` (mean per target), and the
same recall per pair kind. A buffering pair's target is reached as well by one of its members alone
(the pair moves cells once, as each member does), so its pair is not identifiable from cells: the
kind is reported, and ``recall_*_identifiable`` leaves it out.

    python benchmarks/design_search.py --world cells --seeds 0,1,2 --library 40 --k 2
    python benchmarks/design_search.py --seeds 0,1,2,3,4 --library 500 --k 2 --stages "trpo->ppo,ppo" \
        --json benchmarks/results/design_search.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DESIGNERS = ("exhaustive", "beam", "greedy", "random", "naive")


def score_seed(seed: int, library_size: int, k: int, budget: int, beam_width: int) -> list[dict]:
    """One row per (designer, target) of one synthetic world."""
    from envs.preparation import prepare_dataset
    from envs.synthetic_sets import make_synthetic_set_data
    from experiments.design.library import resolve_library
    from experiments.design.objective import DesignObjective, ForwardModel
    from experiments.design.search import n_sets, run_designer
    from experiments.prediction.predict import select_start_rows

    adata = make_synthetic_set_data(seed=seed)
    kinds = dict(adata.uns["truth"]["pairs"])
    ds = prepare_dataset(adata, perturbation_key="perturbation", control_value="control", split="perturbations",
                         holdout=sorted(kinds), n_latent=8, seed=seed)
    seen = resolve_library(ds, "seen")
    decoys = [g for g in resolve_library(ds, "panel") if g not in seen]
    rng = np.random.default_rng(seed)
    extra = max(0, library_size - len(seen))
    library = seen + sorted(rng.choice(decoys, size=min(extra, len(decoys)), replace=False).tolist())
    model = ForwardModel(ds, {}, select_start_rows(ds, n_cells=256, seed=seed))
    rows = []
    for pair, kind in sorted(kinds.items()):
        target = ds.latent[ds.cell_indices(pair, "all")].astype(np.float64)
        target = target[np.sort(rng.choice(len(target), size=min(256, len(target)), replace=False))]
        truth = frozenset(pair.split("+"))
        beam_evaluations = None
        for designer in DESIGNERS:
            if designer == "exhaustive" and n_sets(len(library), k) > budget:
                continue
            limit = beam_evaluations if designer == "random" else None
            model.clear_cache()  # each designer pays for its own hints: wall times compare
            objective = DesignObjective(model, target_latent=target, budget=limit)
            started = time.perf_counter()
            result = run_designer(objective, library, designer=designer, max_size=k, beam_width=beam_width, seed=seed)
            wall = time.perf_counter() - started
            if designer == "beam":
                beam_evaluations = result.evaluations
            rank = next((i + 1 for i, s in enumerate(result.ranked) if frozenset(s.members) == truth), None)
            rows.append({"seed": seed, "target": pair, "kind": kind, "designer": designer, "library": len(library),
                         "k": k, "rank": rank, "best": "+".join(result.ranked[0].members),
                         "evaluations": result.evaluations, "wall_s": round(wall, 3)})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Recall@1 / @10, mean evaluations and wall time per designer (all kinds, identifiable kinds, per kind)."""
    out = []
    for designer in DESIGNERS:
        mine = [r for r in rows if r["designer"] == designer]
        if not mine:
            continue

        def recall(subset, at):
            return float(np.mean([r["rank"] is not None and r["rank"] <= at for r in subset])) if subset else None

        identifiable = [r for r in mine if r["kind"] != "buffering"]
        entry = {"designer": designer, "library": mine[0]["library"], "k": mine[0]["k"], "n_targets": len(mine),
                 "recall_at_1": recall(mine, 1), "recall_at_10": recall(mine, 10),
                 "recall_at_1_identifiable": recall(identifiable, 1),
                 "recall_at_10_identifiable": recall(identifiable, 10),
                 "evaluations": float(np.mean([r["evaluations"] for r in mine])),
                 "wall_s": float(np.mean([r["wall_s"] for r in mine]))}
        for kind in sorted({r["kind"] for r in mine}):
            entry[f"recall_at_1_{kind}"] = recall([r for r in mine if r["kind"] == kind], 1)
        out.append(entry)
    return out


#: (header, summary key, width, number format) of each world's table.
PLANTED_COLUMNS = (("designer", "designer", 12, ""), ("library", "library", 7, ""), ("k", "k", 2, ""),
                   ("recall@1", "recall_at_1", 8, ".2f"), ("@10", "recall_at_10", 5, ".2f"),
                   ("evals", "evaluations", 8, ".0f"), ("share", "evaluations_share", 7, ".4f"),
                   ("vs beam", "objective_vs_beam", 7, ".3f"), ("wall_s", "wall_s", 7, ".2f"),
                   ("train_s", "train_wall_s", 7, ".0f"))
CELLS_COLUMNS = (("designer", "designer", 11, ""), ("library", "library", 7, ""), ("k", "k", 2, ""),
                 ("recall@1", "recall_at_1", 8, ".2f"), ("@10", "recall_at_10", 5, ".2f"),
                 ("@1 ident.", "recall_at_1_identifiable", 9, ".2f"), ("evals", "evaluations", 7, ".0f"),
                 ("wall_s", "wall_s", 7, ".2f"))


def print_table(summary: list[dict], columns) -> None:
    """One line per designer; a value a designer lacks (e.g. a search's training time) prints as nan."""
    print(" ".join(f"{header:<{width}}" if i == 0 else f"{header:>{width}}"
                   for i, (header, _, width, _) in enumerate(columns)))
    for e in summary:
        cells = []
        for i, (_, key, width, number) in enumerate(columns):
            value = e.get(key, float("nan"))
            cells.append(f"{value:<{width}}" if i == 0 else f"{value:>{width}{number if isinstance(value, float) else ''}}")
        print(" ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=["planted", "cells"], default="planted")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--library", type=int, default=500, help="library size (cells: the 7 seen singles plus "
                        "panel decoys; default 500)")
    parser.add_argument("--k", type=int, default=2, help="most members per set (default 2)")
    parser.add_argument("--budget", type=int, default=200_000, help="exhaustive runs only below this many sets")
    parser.add_argument("--beam-width", type=int, default=8)
    parser.add_argument("--targets", type=int, default=20, help="planted: held-out queries per seed")
    parser.add_argument("--train-targets", type=int, default=2000, help="planted: training targets of the RL designer")
    parser.add_argument("--stages", default="trpo->ppo", help="planted: RL variants, comma-separated: trpo->ppo, ppo")
    parser.add_argument("--iterations", type=int, default=80, help="planted: RL training iterations (a quarter TRPO)")
    parser.add_argument("--exhaustive-targets", type=int, default=5, help="planted: queries exhaustive is run on")
    parser.add_argument("--unstructured", action="store_true", help="planted: random member features (the needle)")
    parser.add_argument("--json", help="write rows and summary here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.world == "planted":
        from benchmarks.design_planted import planted_rows, summarize_planted

        rows = []
        for seed in seeds:
            rows += planted_rows(seed, library=args.library, k=args.k, n_targets=args.targets,
                                 n_train=args.train_targets, stages=args.stages.split(","), iterations=args.iterations,
                                 budget=args.budget, exhaustive_targets=args.exhaustive_targets,
                                 beam_width=args.beam_width, structured=not args.unstructured)
        summary = summarize_planted(rows)
        columns = PLANTED_COLUMNS
    else:
        rows = []
        for seed in seeds:
            rows += score_seed(seed, args.library, args.k, args.budget, args.beam_width)
        summary = summarize(rows)
        columns = CELLS_COLUMNS
    print_table(summary, columns)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"world": args.world, "argv": sys.argv[1:], "rows": rows,
                                               "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
