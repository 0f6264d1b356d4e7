"""Kill the sweep driver mid-sweep, `waddington sweep --resume`: no finished trial is lost or retrained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import WADDINGTON, REPO, subprocess_env, tiny_dataset, tiny_settings


def _trial_results(exp_dir: Path) -> dict[str, list[dict]]:
    """trial dir name -> its reported results (result.json lines)."""
    out = {}
    for f in sorted(exp_dir.glob("*/result.json")):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        out[f.parent.name] = lines
    return out


def _finished(results: list[dict], ppo_iters: int) -> bool:
    return any(r.get("stage") == "ppo" and r.get("stage_iteration") == ppo_iters for r in results)


@pytest.mark.slow  # a sweep driver killed and resumed
@pytest.mark.timeout(600)
def test_kill_driver_and_resume_loses_no_finished_trial(tmp_path):
    data_dir = tmp_path / "data"
    tiny_dataset().save(data_dir)
    s = tiny_settings(ppo_iters=3)
    s.pop("fcnet_hiddens")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**s, "fcnet_hiddens": [32, 32]}))
    out = tmp_path / "out"
    cmd = [*WADDINGTON, "sweep", "--config", str(cfg), "--data", str(data_dir), "--kl-radius", "0.01,0.02,0.04",
           "--clip", "0.2", "--max-concurrent", "1", "--num-cpus", "2", "--output", str(out), "--quiet"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    exp_dir = out / "sweep"
    finished_before: dict[str, list[dict]] = {}
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            results = _trial_results(exp_dir) if exp_dir.exists() else {}
            finished_before = {k: v for k, v in results.items() if _finished(v, s["ppo_iters"])}
            if finished_before:
                break
            time.sleep(0.5)
        assert finished_before, "no trial finished in time"
    finally:
        # The driver (a session leader; Ray's own processes fate-share with it) dies mid-sweep.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    unfinished_at_kill = set(_trial_results(exp_dir)) - set(finished_before)
    assert len(finished_before) < 3, "the sweep finished before it could be killed"

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    after = _trial_results(exp_dir)
    assert len(after) == 3 and all(_finished(v, s["ppo_iters"]) for v in after.values())
    for name, before in finished_before.items():
        new_lines = after[name][len(before):]
        # a finished trial is never retrained: at most its final result is re-reported from its checkpoint
        assert all(r.get("done_before_resume") for r in new_lines), new_lines
        final_before = [r for r in before if _finished([r], s["ppo_iters"])][-1]
        final_after = [r for r in after[name] if _finished([r], s["ppo_iters"])][-1]
        assert final_after["ppo_final_return"] == final_before["ppo_final_return"]
        assert final_after["handoff_max_abs_diff"] <= 1e-6
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["num_trials"] == 3
    # the manifest: killed while running (SIGKILL cannot mark it), resumed, complete; each trial's final checkpoint
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sweep" and manifest["status"] == "complete"
    assert [h["event"] for h in manifest["history"]] == ["start", "resume", "complete"]
    assert manifest["settings"]["data"] == str(out / "dataset") and (out / "dataset" / "meta.json").is_file()
    assert len(manifest["checkpoints"]) == 3 and {c["stage"] for c in manifest["checkpoints"]} == {"ppo"}
    assert all((out / c["path"] / "state.json").is_file() for c in manifest["checkpoints"])
    assert all(t["error"] is None for t in summary["trials"])
    assert summary["best"] is not None
    assert unfinished_at_kill is not None
