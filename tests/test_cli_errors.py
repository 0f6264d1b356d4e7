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
        (["--kl-radius", "0.01,0"], "Invalid kl_radius value(s) [0.0]: every kl_radius must be > 0"),
        (["--kl-radius", "-0.5"], "Invalid kl_radius value(s) [-0.5]"),
        (["--clip", "0.2,1.0"], "Invalid clip_param value(s) [1.0]: every clip_param must be in (0, 1)"),
        (["--clip", "0"], "Invalid clip_param value(s) [0.0]"),
    ],
)
def test_sweep_grid_invalid_values(args, message, capsys, tmp_path):
    rc, err, _ = _run(["sweep", *args, "--output", str(tmp_path)], capsys)
    assert rc == 2 and message in err, err


def test_sweep_grid_invalid_in_yaml(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kl_radius_grid: [0.01, 0.0]\n")
    rc, err, _ = _run(["sweep", "--config", str(cfg)], capsys)
    assert rc == 2 and "every kl_radius must be > 0" in err


def test_train_bad_single_values(capsys):
    rc, err, _ = _run(["train", "--clip", "1.5"], capsys)
    assert rc == 2 and "clip_param must lie in (0, 1)" in err
    rc, err, _ = _run(["train", "--kl-radius", "0"], capsys)
    assert rc == 2 and "kl_radius must be > 0" in err
    rc, err, _ = _run(["train", "--trpo-iters", "0"], capsys)
    assert rc == 2 and "trpo_iters must be an integer >= 1" in err


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
