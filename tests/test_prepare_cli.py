"""`waddington prepare`: prepare once, then train and evaluate from the directory (or a file:// URI)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from helpers import REPO, WADDINGTON, subprocess_env, tiny_settings

from envs import make_synthetic_perturbation_data

KEYS = ["--perturbation-key", "perturbation", "--control-value", "control"]


def _waddington(*args, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*WADDINGTON, *map(str, args)], cwd=REPO, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prepare_cli") / "small.h5ad"
    make_synthetic_perturbation_data(n_perturbations=3, n_control_cells=300, n_cells_per_perturbation=120,
                                     n_genes=80, seed=0).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def prepared(small_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    proc = _waddington("prepare", "--data", small_file, *KEYS, "--split", "perturbations", "--holdout", "G069",
                       "--out-of-core", "-o", out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "prepared out of core" in proc.stdout and f"waddington train --data {out}" in proc.stdout
    return out


def test_prepare_writes_a_dataset_and_guards_its_output(prepared, small_file, tmp_path):
    assert {p.name for p in prepared.iterdir()} == {"arrays.npz", "meta.json", "expression.h5"}
    assert not list(prepared.parent.glob(".waddington-*"))  # no staging left beside it
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["split"]["heldout_perturbations"] == ["G069"] and meta["meta"]["out_of_core"]
    again = _waddington("prepare", "--data", small_file, *KEYS, "-o", prepared)
    assert again.returncode == 2 and "already holds a prepared dataset" in again.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = _waddington("prepare", "--data", small_file, *KEYS, "--overwrite", "-o", other)
    assert refused.returncode == 2 and "not a prepared dataset" in refused.stderr
    assert (other / "notes.txt").read_text() == "mine"


def test_bad_values_late_in_the_file_leave_nothing_behind(tmp_path):
    adata = make_synthetic_perturbation_data(n_perturbations=3, n_control_cells=6000, n_cells_per_perturbation=1500,
                                             n_genes=60, seed=1)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    row = adata.n_obs - 5  # past the first block of 8192 cells
    adata.X[row, adata.X[row].indices[0]] = 2.5
    adata.write_h5ad(tmp_path / "late.h5ad")
    proc = _waddington("prepare", "--data", tmp_path / "late.h5ad", *KEYS, "--out-of-core", "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "non-integer values found (rows 8192-" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".waddington-*"))


@pytest.mark.slow  # train + evaluate; evaluate from a prepared storage URI stays fast
def test_train_and_evaluate_start_from_the_prepared_directory(prepared, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_settings()))
    run = tmp_path / "run"
    proc = _waddington("train", "--config", cfg, "--data", prepared, "--num-cpus", "2", "-q", "-o", run)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["settings"]["split"] == "perturbations" and manifest["settings"]["holdout"] == ["G069"]
    # the run keeps the on-disk expression as a hard link to the prepared file, not a copy
    assert (run / "dataset" / "expression.h5").stat().st_ino == (prepared / "expression.h5").stat().st_ino
    conflicting = _waddington("train", "--data", prepared, "--holdout", "G023", "-o", tmp_path / "x")
    assert conflicting.returncode == 2 and "prepared dataset" in conflicting.stderr
    scored = _waddington("evaluate", "--data", prepared, "--no-rl", "--seeds", "0", "-q", "-o", tmp_path / "ev")
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {row["perturbation"] for row in metrics["per_perturbation"]} == {"G069"}


def test_prepare_to_and_evaluate_from_a_storage_uri(small_file, tmp_path):
    uri = f"file://{tmp_path / 'bucket' / 'prepared'}"
    proc = _waddington("prepare", "--data", small_file, *KEYS, "-o", uri)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "bucket" / "prepared" / "meta.json").is_file()
    again = _waddington("prepare", "--data", small_file, *KEYS, "-o", uri)
    assert again.returncode == 2 and "already holds a prepared dataset" in again.stderr
    cache = tmp_path / "cache"
    scored = _waddington("evaluate", "--data", uri, "--no-rl", "--seeds", "0", "-q", "-o", tmp_path / "ev",
                         WADDINGTON_CACHE=str(cache))
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    assert len(list(cache.glob("*/arrays.npz"))) == 1  # downloaded once into the cache


def test_storage_never_replaces_foreign_files_and_refreshes_a_stale_cache(tmp_path, monkeypatch, prepared):
    from experiments.training.prepared_storage import (
        CACHE_ENV,
        download_dataset,
        upload_directory,
    )

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    foreign = tmp_path / "bucket" / "mine"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="other files"):
        upload_directory(prepared, f"file://{foreign}")
    assert (foreign / "notes.txt").read_text() == "mine"
    uri = f"file://{tmp_path / 'bucket' / 'prepared'}"
    upload_directory(prepared, uri)
    first = download_dataset(uri)
    assert (first / "expression.h5").is_file()
    assert download_dataset(uri) == first  # unchanged remote: the cached copy
    meta = json.loads((prepared / "meta.json").read_text())
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("arrays.npz", "expression.h5"):
        (changed / name).write_bytes((prepared / name).read_bytes())
    (changed / "meta.json").write_text(json.dumps({**meta, "control_value": "control "}))
    upload_directory(changed, uri)  # prepared again at the same URI
    assert json.loads((download_dataset(uri) / "meta.json").read_text())["control_value"] == "control "


def test_an_empty_output_directory_is_used(small_file, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    proc = _waddington("prepare", "--data", small_file, *KEYS, "-o", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "meta.json").is_file() and (out / "expression.npz").is_file()  # small: prepared in memory
