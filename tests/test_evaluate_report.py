"""report.md: 95% t-intervals over seeds, best per column, and verdicts that say when a CI includes 0."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats


def _rows(values: dict[str, list[float]], metric: str = "delta_mse_top20", split: str = "held-out cells"):
    return [dict(method=m, split=split, metric=metric, seed=s, value=v, n_perturbations=3)
            for m, vs in values.items() for s, v in enumerate(vs)]


def test_ci_is_the_t_interval_of_the_seed_means():
    from experiments.evaluation.report import summarize

    vals = [0.3, 0.5, 0.4, 0.9, 0.2]
    got = summarize(_rows({"ridge": vals}))[("held-out cells", "ridge", "delta_mse_top20")]
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert got["mean"] == pytest.approx(np.mean(vals))
    assert got["ci"] == pytest.approx((hi - lo) / 2)
    assert got["n"] == 5


def test_best_per_column_and_plain_verdicts():
    from experiments.evaluation.report import render_report

    rows = _rows({
        "control-mean": [3.0, 3.1, 2.9],
        "train-mean": [1.0, 1.1, 0.9],
        "PPO-only": [1.05, 0.95, 1.0],
        "TRPO->PPO": [2.0, 2.2, 1.9],   # clearly worse than train-mean (lower is better)
    })
    rows += _rows({"train-mean": [0.5, 0.6, 0.4], "TRPO->PPO": [0.7, 0.8, 0.75], "control-mean": [0, 0, 0],
                   "PPO-only": [0.7, 0.6, 0.9]}, metric="delta_pearson_top20")
    text = render_report(rows)
    table = [line for line in text.splitlines() if line.startswith("| train-mean")][0]
    assert "**1 ± " in table  # lowest MSE is bold
    trpo = [line for line in text.splitlines() if line.startswith("| TRPO->PPO")][0]
    assert "**0.75 ± " in trpo  # highest Pearson is bold
    assert "delta_mse_top20 (lower is better): TRPO->PPO 2.03 vs train-mean 1; difference 1.03" in text
    assert "→ **TRPO->PPO worse** (0/3 seeds better)" in text
    assert "delta_pearson_top20 (higher is better): TRPO->PPO 0.75 vs train-mean 0.5" in text
    assert "→ **TRPO->PPO better** (3/3 seeds better)" in text
    # ablation: PPO-only vs TRPO->PPO on Pearson overlaps -> said so, not called a win
    ablation = text.split("Ablation")[1]
    assert "delta_pearson_top20 (higher is better): TRPO->PPO 0.75 vs PPO-only 0.733" in ablation
    assert "no clear difference (95% CI includes 0)" in ablation
