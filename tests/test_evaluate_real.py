"""`waddington evaluate` end to end on the two shared real sets, one test per split kind (slow).

Tiny training budgets (1 TRPO + 1 PPO iteration of 512 steps, 2 seeds): these check that every
method, split and output works on real data, not what the numbers are (README "Results" has those).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import KANG, PAPALEXI, REPO, WADDINGTON, require_file, subprocess_env

PAPALEXI_ARGS = ["--perturbation-key", "perturbation_confident", "--control-value", "non-targeting",
                 "--ignore", "unassigned"]
CASES = {
    "papalexi-cells": (PAPALEXI, [*PAPALEXI_ARGS, "--split", "cells"], "held-out cells", 25),
    "papalexi-perturbations": (PAPALEXI, [*PAPALEXI_ARGS, "--holdout", "CMTM6,JAK2,STAT1,STAT3,UBE2L6"],
                               "held-out perturbations", 5),
    "kang-group": (KANG, ["--perturbation-key", "group_id", "--control-value", "ctrl", "--split", "group",
                          "--group-key", "cluster_id", "--holdout", "CD4 T cells"], "held-out group", 1),
}
METHODS = {"control-mean", "train-mean", "ridge", "drift (a=0)", "PPO-only", "TRPO-only", "TRPO->PPO"}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_evaluate_end_to_end_on_real_data(case, tmp_path):
    path, args, split, n_perturbations = CASES[case]
    require_file(path)
    out = tmp_path / case
    proc = subprocess.run(
        [*WADDINGTON, "evaluate", "--data", str(path), *args, "--seeds", "0,1", "--trpo-iters", "1",
         "--ppo-iters", "1", "--train-batch-size", "512", "--max-start-cells", "300", "--num-cpus", "2",
         "-o", str(out)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads((out / "metrics.json").read_text())
    rows = payload["rows"]
    assert METHODS <= {r["method"] for r in rows}
    assert {r["split"] for r in rows} == {split}
    assert {r["seed"] for r in rows} == {0, 1}
    assert all(r["n_perturbations"] == n_perturbations for r in rows if r["method"] != "perturbation-mean")
    for run in payload["runs"]:
        assert run["two_stage"]["handoff_max_abs_diff"] <= 1e-6
        assert run["ppo_only"]["iterations"] == 2
    report = (out / "report.md").read_text()
    assert f"## {split}" in report and "Ablation: TRPO-init PPO vs random-init PPO" in report
    for png in ("landscape.png", "delta_top_genes.png", "metric_bars.png"):
        assert (out / png).stat().st_size > 5000
