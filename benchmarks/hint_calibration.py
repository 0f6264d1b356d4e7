"""The guide on unseen perturbations with and without calibrated hints (``envs.hint_calibration``), no training.

A guided policy starts from the guide (its zero action), and on unseen perturbations learning adds
little to it, so the guide alone (``hint-controller``) shows in seconds what calibrating the hint
does. For each seed this prepares the data, prints the shrinkage factors the training
perturbations chose, and scores train-mean, ridge + self-effect and the guide with the hints as
prepared before calibration and after it, on the held-out perturbations of ``--split
perturbations``. Prints a table (mean over seeds), writes JSON.

    python benchmarks/hint_calibration.py --data ../shared/data/papalexi2021_thp1_crispr.h5ad \\
        --perturbation-key perturbation_confident --control-value non-targeting --ignore unassigned \\
        --split perturbations --holdout CMTM6,JAK2,STAT1,STAT3,UBE2L6 --seeds 0
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_arguments import prepare_from_arguments, split_list, unseen_split_arguments  # noqa: E402

METRICS = ("delta_pearson_top20", "delta_pearson_all", "delta_mse_all", "e_distance")


def score(dataset, seed: int) -> tuple[list[dict], dict]:
    """(metric rows, the factors) for one prepared dataset: baselines once, the guide before and after calibration."""
    from envs.dynamics import CellStateDynamics, DynamicsConfig
    from experiments.evaluation.baselines import BASELINES
    from experiments.evaluation.evaluate import evaluate_dataset

    rows = []
    for calibrated in (False, True):
        names = ("train-mean", "ridge + self-effect", "hint-controller") if not calibrated else ("hint-controller",)
        as_prepared = dataclasses.replace(dataset, meta={**dataset.meta, "calibrated_hints": calibrated})
        scored = evaluate_dataset(as_prepared, {n: BASELINES[n] for n in names}, seed=seed, references=False)
        suffix = " (calibrated)" if calibrated else ""
        rows += [{**r, "method": r["method"] + (suffix if r["method"] == "hint-controller" else "")}
                 for r in scored.rows if r["metric"] in METRICS]
    shrinkage = CellStateDynamics(dataset, DynamicsConfig()).hints.shrinkage
    return rows, dataclasses.asdict(shrinkage)


def main() -> None:
    args = unseen_split_arguments(__doc__, "benchmarks/results/hint_calibration.json")

    rows, factors = [], {}
    for seed in (int(v) for v in split_list(args.seeds)):
        dataset = prepare_from_arguments(args, seed=seed)
        seed_rows, factors[seed] = score(dataset, seed)
        rows += seed_rows
        print(f"seed {seed}: factors {factors[seed]}", flush=True)
    table = {method: {m: float(np.mean([r["value"] for r in rows if r["method"] == method and r["metric"] == m]))
                      for m in METRICS} for method in dict.fromkeys(r["method"] for r in rows)}
    print(f"{'method':<30}" + "".join(f"{m:>22}" for m in METRICS))
    for method, means in table.items():
        print(f"{method:<30}" + "".join(f"{means[m]:>22.4f}" for m in METRICS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "factors": factors, "mean_over_seeds": table, "rows": rows},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
