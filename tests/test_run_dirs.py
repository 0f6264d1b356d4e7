"""Run directories a user can trust: a manifest in every run dir, no silent mixing, `--overwrite` replaces a run
whole, Ctrl-C is one line and exit 130, `train --resume` finishes an interrupted run, evaluation refuses
incomplete or mixed runs, data options from YAML reach the prepared dataset, `-q` prints only our own lines."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import PAPALEXI, REPO, WADDINGTON, require_file, subprocess_env, tiny_counts_adata, tiny_settings


def _main(argv, capsys):
    from experiments.cli import main

    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny h5ad with an 'unassigned' label and a YAML that drops it (data options from YAML)."""
    base = tmp_path_factory.mktemp("rundirs")
    adata = tiny_counts_adata(n_per_group=60, n_genes=40, groups=("ctrl", "A", "B", "unassigned"), seed=1)
    h5ad = base / "tiny.h5ad"
    adata.write_h5ad(h5ad)
    settings = tiny_settings(trpo_iters=1, ppo_iters=1, perturbation_key="perturbation", control_value="ctrl",
                             ignore_values=["unassigned"], n_latent=4)
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    return {"base": base, "h5ad": h5ad, "yaml": cfg}


@pytest.fixture(scope="module")
def first_run(tiny):
    out = tiny["base"] / "first"
    argv = ["train", "--config", str(tiny["yaml"]), "--data", str(tiny["h5ad"]), "--num-cpus", "2", "-q",
            "-o", str(out)]
    proc = subprocess.run([*WADDINGTON, *argv], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"dir": out, "argv": argv, "proc": proc}


def test_train_dir_has_a_complete_manifest_its_dataset_and_quiet_output(first_run, tiny):
    import envs

    out, proc = first_run["dir"], first_run["proc"]
    assert proc.stderr == "", proc.stderr  # -q: Ray's and RLlib's messages are in DIR/ray.log
    assert "Started a local Ray instance" in (out / "ray.log").read_text()
    m = _manifest(out)
    assert m["status"] == "complete" and m["kind"] == "train" and m["command"] == first_run["argv"]
    assert m["seed"] == 0 and m["settings"]["ignore_values"] == ["unassigned"]
    assert m["input"]["sha256"] == hashlib.sha256(tiny["h5ad"].read_bytes()).hexdigest()
    assert {"ray", "torch", "gymnasium", "scanpy", "anndata", "numpy", "waddington-rl"} <= set(m["versions"])
    assert [c["stage"] for c in m["checkpoints"]] == ["trpo", "ppo"]
    assert all(not Path(c["path"]).is_absolute() and (out / c["path"] / "state.json").is_file()
               for c in m["checkpoints"])
    # the run trains on, and points evaluation at, the dataset saved with it (YAML's ignore_values applied)
    assert m["settings"]["data"] == str(out / "dataset") and m["dataset"] == "dataset"
    dataset = envs.load_dataset(out / "dataset")
    assert set(dataset.labels) == {"ctrl", "A", "B"} and dataset.expression is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["handoff_max_abs_diff"] <= 1e-6


def _waddington_quietly(*argv):
    proc = subprocess.run([*WADDINGTON, *map(str, argv)], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_predict_is_quiet_with_q(first_run, tmp_path):
    """-q: RLlib's RLModule deprecation notice (logged whenever it loads a policy) goes beside the output."""
    predicted = _waddington_quietly("predict", "--run", first_run["dir"], "-p", "A", "--n-cells", "10", "-q",
                                    "-o", tmp_path / "pred.h5ad")
    assert predicted.stderr == "", predicted.stderr
    assert (tmp_path / "pred.ray.log").is_file() and predicted.stdout.startswith("wrote ")


@pytest.mark.slow  # trains the PPO-only ablation in a fresh process
def test_evaluate_is_quiet_with_q(first_run, tmp_path):
    """-q: RLlib's new-API-stack notice, logged when the ablation's algorithm is built, goes to DIR/ray.log."""
    scored = _waddington_quietly("evaluate", "--run", first_run["dir"], "--num-cpus", "2", "-q", "-o", tmp_path / "ev")
    assert scored.stderr == "", scored.stderr
    assert "new API stack" in (tmp_path / "ev" / "ray.log").read_text()


def test_a_dir_holding_a_run_is_refused(first_run, tiny, capsys, tmp_path):
    out = first_run["dir"]
    before = (out / "manifest.json").read_text()
    for cmd in (["train"], ["sweep", "--kl-radius", "0.01", "--clip", "0.2"]):
        rc, err = _main([*cmd, "--config", tiny["yaml"], "--data", tiny["h5ad"], "-o", out], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "already holds a train run (complete" in err and "--overwrite" in err and "--resume" in err, err
    rc, err = _main(["evaluate", "--data", tiny["h5ad"], "--perturbation-key", "perturbation", "--control-value",
                     "ctrl", "--no-rl", "-o", out], capsys)
    assert rc == 2 and "--overwrite" in err, err
    assert (out / "manifest.json").read_text() == before
    # --overwrite replaces run dirs only, never a folder of other files
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    rc, err = _main(["train", "--overwrite", "-o", other], capsys)
    assert rc == 2 and "not a waddington run" in err and (other / "todo.txt").exists(), err


@pytest.fixture(scope="module")
def interrupted(first_run, tiny):
    """`train --overwrite` into a copy of the first run, Ctrl-C (SIGINT from here) once stage 2 has begun."""
    out = tiny["base"] / "second"
    shutil.copytree(first_run["dir"], out)
    cfg = tiny["base"] / "long.yaml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(tiny["yaml"].read_text()), "ppo_iters": 15}))
    argv = ["train", "--config", str(cfg), "--data", str(tiny["h5ad"]), "--seed", "5", "--num-cpus", "2", "-q",
            "--overwrite", "-o", str(out)]
    proc = subprocess.Popen([*WADDINGTON, *argv], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines, descendants = [], []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "checkpoint (trpo done)" in line:  # stage 1 is saved; stage 2 is being built or trained
                descendants = _descendants(proc.pid)
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in descendants):
        time.sleep(0.5)
    return {"dir": out, "rc": proc.returncode, "stdout": "".join(lines) + stdout, "stderr": stderr,
            "descendants": descendants, "left": [p for p in descendants if _alive(p)]}


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_ray_process(interrupted):
    assert interrupted["rc"] == 130, interrupted["stdout"][-2000:] + interrupted["stderr"][-3000:]
    out = interrupted["dir"]
    hint = f"waddington train --resume {out}"
    assert interrupted["stderr"].strip() == f"waddington train: interrupted; resume with `{hint}`"
    assert "Traceback" not in interrupted["stdout"] + interrupted["stderr"]
    assert interrupted["descendants"], "Ray had started no process to check"
    assert not interrupted["left"], f"processes left behind: {interrupted['left']}"
    m = _manifest(out)
    assert m["status"] == "interrupted"
    assert [c["stage"] for c in m["checkpoints"]] == ["trpo"]


def test_overwrite_leaves_only_the_new_run(interrupted, first_run):
    out = interrupted["dir"]
    old, new = _manifest(first_run["dir"]), _manifest(out)
    assert new["run_id"] != old["run_id"] and new["seed"] == 5 and new["settings"]["seed"] == 5
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [Path(new["checkpoints"][0]["path"]).name]
    assert not (out / "summary.json").exists(), "the old run's summary survived --overwrite"
    assert not list(out.parent.glob(f".{out.name}.replaced-*")), "the old run was not deleted"


def test_evaluate_refuses_an_incomplete_run(interrupted, capsys, tmp_path):
    out = interrupted["dir"]
    rc, err = _main(["evaluate", "--run", out, "--no-ablation", "-o", tmp_path / "eval"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "is incomplete (manifest status 'interrupted')" in err and f"waddington train --resume {out}" in err


def test_evaluate_refuses_a_mixed_run(first_run, capsys, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(first_run["dir"], mixed)
    stage2 = mixed / _manifest(mixed)["checkpoints"][1]["path"]
    shutil.copytree(stage2, mixed / "checkpoints" / "stage2-another")  # another run wrote into this dir
    rc, err = _main(["evaluate", "--run", mixed, "--no-ablation", "-o", tmp_path / "eval"], capsys)
    assert rc == 2 and "is mixed" in err and "stage2-another" in err, err
    # without a manifest (older dirs) two finished runs in one dir are refused too, never picked by mtime
    (mixed / "manifest.json").unlink()
    state = json.loads((mixed / "checkpoints" / "stage2-another" / "state.json").read_text())
    state["settings"]["seed"] = 1
    (mixed / "checkpoints" / "stage2-another" / "state.json").write_text(json.dumps(state))
    rc, err = _main(["evaluate", "--run", mixed, "--no-ablation", "-o", tmp_path / "eval"], capsys)
    assert rc == 2 and "is mixed" in err and "2 finished runs" in err, err
    assert not (tmp_path / "eval").exists()


def test_resume_finishes_with_the_summary_of_an_uninterrupted_run(interrupted, first_run):
    from experiments.evaluation.checkpoints import find_stage_checkpoints

    out = interrupted["dir"]
    stage1 = _manifest(out)["checkpoints"][0]["path"]
    proc = subprocess.run([*WADDINGTON, "train", "--resume", str(out), "--num-cpus", "2", "-q"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr == "" and f"resuming from {stage1}" in proc.stdout
    m = _manifest(out)
    assert m["status"] == "complete" and [c["stage"] for c in m["checkpoints"]] == ["trpo", "ppo"]
    assert m["checkpoints"][0]["path"] == stage1, "TRPO was trained again"
    assert [h["event"] for h in m["history"]] == ["start", "interrupted", "resume", "complete"]
    summary = json.loads((out / "summary.json").read_text())
    uninterrupted = json.loads((first_run["dir"] / "summary.json").read_text())
    assert set(summary) == set(uninterrupted)
    assert summary["handoff_max_abs_diff"] <= 1e-6 and summary["ppo_weight_change_l2"] > 0
    assert summary["seed"] == 5 and summary["resumed_from"] == stage1
    state1 = json.loads((out / stage1 / "state.json").read_text())
    assert summary["trpo_final_return"] == state1["stage1"]["trpo_final_return"]
    ckpts = find_stage_checkpoints(out)  # now complete: evaluation takes exactly the manifest's checkpoints
    assert ckpts.stage1 == (out / stage1).resolve() and ckpts.settings["data"] == str((out / "dataset").resolve())


@pytest.mark.slow
def test_train_ignore_unassigned_on_papalexi_trains_on_25_perturbations(tmp_path):
    import envs

    path = require_file(PAPALEXI)
    out = tmp_path / "papalexi"
    proc = subprocess.run(
        [*WADDINGTON, "train", "--data", str(path), "--perturbation-key", "perturbation_confident",
         "--control-value", "non-targeting", "--ignore", "unassigned", "--trpo-iters", "1", "--ppo-iters", "1",
         "--train-batch-size", "256", "--num-cpus", "2", "-q", "-o", str(out)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dataset = envs.load_dataset(out / "dataset")
    assert "unassigned" not in set(dataset.labels) and len(dataset.perturbations) == 25
    assert _manifest(out)["settings"]["ignore_values"] == ["unassigned"]


# ---------------------------------------------------------------------------------------------
# the manifest and the directory claim, without training
# ---------------------------------------------------------------------------------------------

def _args(argv):
    import argparse

    return argparse.Namespace(argv=list(argv))


def test_manifest_marks_interrupted_and_failed_runs(tmp_path):
    from experiments.cli.run_dirs import guarded, start_run

    for exc, status in ((KeyboardInterrupt(), "interrupted"), (RuntimeError("boom"), "failed")):
        out = tmp_path / status
        manifest = start_run(out, kind="train", args=_args(["train", "-o", str(out)]), overwrite=False,
                             settings={"seed": 1}, seed=1, input=None)
        assert _manifest(out)["status"] == "running" and _manifest(out)["pid"] == os.getpid()
        with pytest.raises(type(exc)), guarded(manifest):
            raise exc
        m = _manifest(out)
        assert m["status"] == status and m["finished_at"] and [h["event"] for h in m["history"]] == ["start", status]
        assert (status != "failed") or "boom" in m["error"]
        assert sorted(p.name for p in out.iterdir()) == ["manifest.json"], "a temp file was left behind"


def test_overwrite_replaces_a_run_whole_or_not_at_all(tmp_path, monkeypatch):
    from experiments.cli.errors import UsageError
    from experiments.cli.run_dirs import start_run
    from experiments.runs import manifest as run_manifest

    out = tmp_path / "run"
    start_run(out, kind="train", args=_args(["train"]), overwrite=False, settings={}, seed=0, input=None)
    (out / "checkpoints" / "stage1-old").mkdir(parents=True)
    old_id = _manifest(out)["run_id"]
    with pytest.raises(UsageError, match="--overwrite"):
        start_run(out, kind="train", args=_args(["train"]), overwrite=False, settings={}, seed=0, input=None)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(run_manifest.RunManifest, "create", classmethod(broken))
    with pytest.raises(OSError):
        start_run(out, kind="train", args=_args(["train"]), overwrite=True, settings={}, seed=0, input=None)
    assert _manifest(out)["run_id"] == old_id and (out / "checkpoints" / "stage1-old").is_dir(), "old run damaged"
    monkeypatch.undo()
    start_run(out, kind="train", args=_args(["train"]), overwrite=True, settings={}, seed=1, input=None)
    assert _manifest(out)["run_id"] != old_id and sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "the old run was left beside the new one"


def test_a_ctrl_c_swallowed_by_a_finalizer_is_raised_again():
    from experiments.cli.runtime import Interrupts, raise_if_interrupted

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt  # what a SIGINT landing in a finalizer does: Python ignores it

    with pytest.raises(KeyboardInterrupt), Interrupts():
        Finalized()  # the interrupt is swallowed here...
        deadline = time.time() + 5
        while time.time() < deadline:  # ...and raised again at the next step
            time.sleep(0.01)
    raise_if_interrupted()  # outside the context nothing is pending
