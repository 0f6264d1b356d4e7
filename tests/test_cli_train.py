"""`waddington train` end to end (tiny): progress per iteration, summary table, DIR/summary.json."""

from __future__ import annotations

import json
import subprocess

import yaml

from helpers import WADDINGTON, REPO, subprocess_env, tiny_dataset, tiny_settings


def test_train_writes_summary(tmp_path):
    data_dir = tmp_path / "data"
    tiny_dataset().save(data_dir)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_settings()))
    out = tmp_path / "out"
    proc = subprocess.run(
        [*WADDINGTON, "train", "--config", str(cfg), "--data", str(data_dir), "--trpo-iters", "2",
         "--ppo-iters", "3", "--seed", "3", "--num-cpus", "2", "--output", str(out)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(" trpo it ") == 2 and proc.stdout.count(" ppo it ") == 3
    assert "handoff max |diff|" in proc.stdout and "both stages trained and the handoff is exact: yes" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("handoff_max_abs_diff", "ppo_weight_change_l2", "trpo_final_return", "ppo_final_return",
                "trpo_returns", "ppo_returns", "trpo_wall_s", "ppo_wall_s", "wall_s"):
        assert key in summary, key
    assert summary["handoff_max_abs_diff"] <= 1e-6
    assert summary["ppo_weight_change_l2"] > 0
    assert summary["seed"] == 3 and summary["trpo_iters"] == 2 and summary["ppo_iters"] == 3
    assert len(summary["ppo_returns"]) == 3
    # read against the oracle, next to the guide alone on the same episodes (what learning added)
    assert "guide alone (zero action) / oracle's" in proc.stdout
    assert 0 < summary["guide_return"] < summary["oracle_return"]
    assert summary["guide_fraction_of_oracle"] == summary["guide_return"] / summary["oracle_return"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 3 and manifest["settings"]["trpo_iters"] == 2
    assert manifest["input"]["kind"] == "prepared dataset" and len(manifest["input"]["sha256"]) == 64
    assert [c["stage"] for c in manifest["checkpoints"]] == ["trpo", "ppo"]


def test_main_job_schedule_is_trains_own_and_yields_to_yaml_and_flags(tmp_path):
    """`train` runs the short main-job schedule; YAML and flags still win, and `evaluate` keeps the results' budget."""
    from experiments.cli import evaluate, train
    from experiments.cli.main import build_parser

    parser = build_parser()
    assert train._settings(parser.parse_args(["train"])).trpo_iters == train.TRAIN_DEFAULTS["trpo_iters"]
    assert train._settings(parser.parse_args(["train"])).plateau_patience == train.TRAIN_DEFAULTS["plateau_patience"]
    cfg = tmp_path / "budget.yaml"
    cfg.write_text(yaml.safe_dump({"trpo_iters": 3, "plateau_patience": 0}))
    from_yaml = train._settings(parser.parse_args(["train", "--config", str(cfg)]))
    assert (from_yaml.trpo_iters, from_yaml.plateau_patience) == (3, 0)
    assert train._settings(parser.parse_args(["train", "--config", str(cfg), "--trpo-iters", "5"])).trpo_iters == 5
    scored = evaluate._base_settings(parser.parse_args(["evaluate", "--data", "synthetic"]))
    assert scored.trpo_iters == 40 and scored.plateau_patience == 30
    train_help = next(a.help for a in parser._subparsers._group_actions[0].choices["train"]._actions
                      if a.dest == "trpo_iters")
    assert f"(default: {train.TRAIN_DEFAULTS['trpo_iters']})" in train_help
