"""Bad input fails fast with one clear error, before any Ray start or training."""

from __future__ import annotations

import socket
import time

import pytest

from experiments.cli import main


def _run(argv, capsys):
    t0 = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err, time.perf_counter() - t0


@pytest.fixture(autouse=True)
def _no_ray_start(monkeypatch):
    """Any attempt to start or connect to Ray in these tests is a failure: errors must come first."""
    import ray

    def boom(*a, **k):
        raise AssertionError("ray.init was called before the input error was reported")

    monkeypatch.setattr(ray, "init", boom)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.mark.parametrize("cmd", ["train", "sweep"])
def test_unknown_option(cmd, capsys):
    rc, err, _ = _run([cmd, "--trpo-iterations", "3"], capsys)
    assert rc == 2 and "unrecognized arguments: --trpo-iterations" in err


def test_unknown_command(capsys):
    rc, err, _ = _run(["fly"], capsys)
    assert rc == 2 and "invalid choice: 'fly'" in err


@pytest.mark.parametrize(
    "args, message",
    [
        # given as flags, the messages name the flags
        (["--kl-radius", "0.01,0"], "Invalid --kl-radius value(s) [0.0]: every --kl-radius must be > 0"),
        (["--kl-radius", "-0.5"], "Invalid --kl-radius value(s) [-0.5]"),
        (["--clip", "0.2,1.0"], "Invalid --clip value(s) [1.0]: every --clip must be in (0, 1)"),
        (["--clip", "0"], "Invalid --clip value(s) [0.0]"),
    ],
)
def test_sweep_grid_invalid_values(args, message, capsys, tmp_path):
    rc, err, _ = _run(["sweep", *args, "--output", str(tmp_path)], capsys)
    assert rc == 2 and message in err, err


def test_sweep_grid_invalid_in_yaml(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kl_radius_grid: [0.01, 0.0]\n")
    rc, err, _ = _run(["sweep", "--config", str(cfg)], capsys)
    assert rc == 2 and "every kl_radius must be > 0" in err  # from YAML: the YAML key


def test_train_bad_single_values(capsys, tmp_path):
    rc, err, _ = _run(["train", "--clip", "1.5"], capsys)
    assert rc == 2 and "--clip must lie in (0, 1)" in err and "clip_param" not in err, err
    rc, err, _ = _run(["train", "--kl-radius", "0"], capsys)
    assert rc == 2 and "--kl-radius must be > 0" in err and "kl_radius" not in err, err
    rc, err, _ = _run(["train", "--trpo-iters", "0"], capsys)
    assert rc == 2 and "--trpo-iters must be an integer >= 1" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("clip_param: 1.5\n")
    rc, err, _ = _run(["train", "--config", str(cfg)], capsys)
    assert rc == 2 and "clip_param must lie in (0, 1)" in err  # from YAML: the YAML key


def test_unknown_yaml_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kl_radus: 0.01\n")
    rc, err, _ = _run(["train", "--config", str(cfg)], capsys)
    assert rc == 2 and "Unknown setting(s) ['kl_radus']" in err


def test_missing_data_file(capsys, tmp_path):
    rc, err, _ = _run(["train", "--data", str(tmp_path / "nope.h5ad")], capsys)
    assert rc == 2 and "Data file not found" in err, err


def test_data_that_fails_validation(capsys, tmp_path):
    import anndata as ad
    import numpy as np
    import pandas as pd

    adata = ad.AnnData(np.ones((30, 5), dtype=np.float32), obs=pd.DataFrame({"cond": ["a"] * 30},
                                                                             index=[f"c{i}" for i in range(30)]))
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    rc, err, _ = _run(["train", "--data", str(path), "--perturbation-key", "perturbation",
                       "--control-value", "ctrl"], capsys)
    assert rc == 2 and "Data failed validation" in err and "perturbation" in err, err


def test_cluster_address_that_does_not_answer(capsys):
    with socket.socket() as s:  # a loopback port that is certainly closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, err, elapsed = _run(["sweep", "--address", f"127.0.0.1:{port}"], capsys)
    assert rc == 2 and f"No Ray cluster answers at '127.0.0.1:{port}'" in err, err
    assert elapsed < 10
    rc, err, _ = _run(["train", "--address", "not-an-address"], capsys)
    assert rc == 2 and "is not host:port" in err


# ---------------------------------------------------------------------------------------------
# data errors come before the heavy imports (scanpy, Ray, torch): reported in well under 3 s
# ---------------------------------------------------------------------------------------------

_PROBE = """
import json, sys, time
from experiments.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    rc = main(argv)
    out.append({"rc": rc, "s": time.perf_counter() - t0})
heavy = sorted(m for m in ("ray", "torch", "scanpy", "envs", "sklearn") if m in sys.modules)
print(json.dumps({"runs": out, "heavy": heavy}))
"""


def test_data_errors_are_reported_before_any_heavy_import(tmp_path):
    import json
    import subprocess
    import sys

    from helpers import REPO, subprocess_env, tiny_counts_adata

    adata = tiny_counts_adata(groups=("ctrl", "A", "B"))
    h5ad = tmp_path / "cells.h5ad"
    adata.write_h5ad(h5ad)
    csv = tmp_path / "cells.csv"
    csv.write_text("cell,gene\nc1,3\n")
    fake = tmp_path / "fake.h5ad"
    fake.write_text("not hdf5")
    real = ["--data", str(h5ad), "--perturbation-key", "perturbation", "--control-value", "ctrl"]
    cases = [
        (["train", "--data", str(tmp_path / "nope.h5ad")], "Data file not found"),
        (["train", "--data", str(csv), "--perturbation-key", "p", "--control-value", "c"], "is not an .h5ad"),
        (["sweep", "--data", str(fake), "--perturbation-key", "p", "--control-value", "c"], "is not an .h5ad"),
        (["train", "--data", str(h5ad), "--perturbation-key", "guide", "--control-value", "ctrl"],
         "obs column 'guide' (--perturbation-key) not found. Available obs columns: ['perturbation']"),
        (["train", "--data", str(h5ad), "--perturbation-key", "perturbation", "--control-value", "stim"],
         "control label 'stim' (--control-value) not found in obs['perturbation']. Values present (most frequent "
         "first): ['A', 'B', 'ctrl']"),
        (["train", *real, "--ignore", "ctrl"], "control label 'ctrl' (--control-value) not found"),
        (["train", *real, "--holdout", "ZZZ"], "Held-out perturbations ['ZZZ'] are not in the data"),
        (["train", *real, "--split", "group", "--group-key", "donor", "--holdout", "d1"],
         "group_key 'donor' not found"),
        (["train", *real, "--layer", "raw"], "Layer 'raw' (--layer) not found"),
        (["train", "--data", str(h5ad)], "Real data needs --perturbation-key"),
        (["evaluate", "--data", str(h5ad), "--perturbation-key", "perturbation", "--control-value", "x", "--no-rl"],
         "control label 'x' (--control-value) not found"),
    ]
    argvs = [[*argv, "--output", str(tmp_path / f"out{i}")] for i, (argv, _) in enumerate(cases)]
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("waddington ")]
    assert len(errors) == len(cases), proc.stderr
    for (argv, message), run, err in zip(cases, result["runs"], errors):
        assert run["rc"] == 2 and message in err, (argv, err)
        assert "np.str_" not in err
        assert run["s"] < 3.0, (argv, run)  # measured ~0.01-0.2 s; generous for a loaded CI machine
    assert result["heavy"] == [], f"imported before the error was reported: {result['heavy']}"
    assert not any((tmp_path / f"out{i}").exists() for i in range(len(cases))), "an output dir was created"


def test_a_missing_file_is_reported_fast_from_a_fresh_process(tmp_path):
    import subprocess

    from helpers import REPO, WADDINGTON, subprocess_env

    t0 = time.perf_counter()
    proc = subprocess.run([*WADDINGTON, "train", "--data", str(tmp_path / "nope.h5ad")], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2 and "Data file not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert elapsed < 10, elapsed  # ~0.5 s here (interpreter start included); the bound only catches heavy imports


def test_messages_print_plain_strings():
    from experiments.cli.checks import plain

    text = "Known perturbations: [np.str_('A'), np.str_('stim')]; counts [np.int64(3), np.float64(0.5)], np.True_"
    assert plain(text) == "Known perturbations: ['A', 'stim']; counts [3, 0.5], True"


@pytest.mark.parametrize("cmd", ["train", "sweep", "evaluate"])
def test_help_shows_every_default(cmd):
    from experiments.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[cmd]
    missing = [a.option_strings[0] for a in sub._actions
               if a.option_strings and a.nargs != 0 and "default" not in (a.help or "").lower()]
    assert not missing, f"`waddington {cmd} --help` shows no default for {missing}"
    text = sub.format_help()
    assert "--overwrite" in text and "--resume" in text or cmd == "evaluate"
    if cmd == "train":
        from experiments.cli.train import TRAIN_DEFAULTS

        assert f"(default: {TRAIN_DEFAULTS['trpo_iters']})" in text and "(default: 0.01)" in text  # --trpo-iters, --kl-radius


def test_data_options_next_to_a_prepared_dataset_that_would_be_ignored_are_refused(capsys, tmp_path):
    from helpers import tiny_dataset

    data_dir = tiny_dataset().save(tmp_path / "data")  # prepared with split 'cells', key 'perturbation'
    rc, err, _ = _run(["train", "--data", str(data_dir), "--split", "perturbations", "--holdout", "A"], capsys)
    assert rc == 2 and "prepared with --split cells; --split perturbations would be ignored" in err, err
    rc, err, _ = _run(["train", "--data", str(data_dir), "--perturbation-key", "guide"], capsys)
    assert rc == 2 and "--perturbation-key guide would be ignored" in err, err
    rc, err, _ = _run(["train", "--data", str(tmp_path), "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "is a directory but not a prepared dataset" in err, err
