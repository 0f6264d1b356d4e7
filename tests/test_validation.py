"""Bad input gets one clear error naming the fix, and the user's file is never modified."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from envs import DataValidationError, prepare_dataset
from helpers import tiny_counts_adata

KEYS = {"perturbation_key": "perturbation", "control_value": "ctrl", "n_latent": 4, "min_cells": 10}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataValidationError, match="not found"):
        prepare_dataset(tmp_path / "nope.h5ad", **KEYS)


def test_not_an_h5ad(tmp_path):
    path = tmp_path / "cells.h5ad"
    path.write_text("gene,cell\n1,2\n")
    with pytest.raises(DataValidationError, match="not an .h5ad"):
        prepare_dataset(path, **KEYS)


def test_missing_perturbation_column_lists_columns():
    with pytest.raises(DataValidationError, match=r"obs column 'guide' not found.*perturbation"):
        prepare_dataset(tiny_counts_adata(), **{**KEYS, "perturbation_key": "guide"})


def test_control_label_absent_lists_values():
    with pytest.raises(DataValidationError, match=r"Control label 'non-targeting' not found.*ctrl"):
        prepare_dataset(tiny_counts_adata(), **{**KEYS, "control_value": "non-targeting"})


def test_too_few_cells_names_the_group():
    adata = tiny_counts_adata()
    adata = adata[~((adata.obs.perturbation == "B").to_numpy() & (np.arange(adata.n_obs) % 30 > 4))].copy()
    with pytest.raises(DataValidationError, match=r"B \(5 cells\).*min_cells"):
        prepare_dataset(adata, **KEYS)


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN"), (-1.0, "negative")])
def test_nan_and_negative_counts(bad, message):
    adata = tiny_counts_adata()
    adata.X[3, 2] = bad
    with pytest.raises(DataValidationError, match=message):
        prepare_dataset(adata, **KEYS)


def test_non_count_data_suggests_raw_layer():
    adata = tiny_counts_adata()
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X)
    with pytest.raises(DataValidationError, match=r"raw counts.*Layers present: \['counts'\].*layer=<name") as err:
        prepare_dataset(adata, **KEYS)
    assert "require_counts" not in str(err.value)  # advise only what prepare_dataset exposes
    assert prepare_dataset(adata, layer="counts", **KEYS).meta["basis"]["cell_pcs"] == 4


def test_fewer_genes_than_latent_dim():
    with pytest.raises(DataValidationError, match="n_latent=50"):
        prepare_dataset(tiny_counts_adata(), **{**KEYS, "n_latent": 50})


def test_real_data_needs_keys(tmp_path):
    path = tmp_path / "cells.h5ad"
    tiny_counts_adata().write_h5ad(path)
    with pytest.raises(DataValidationError, match="perturbation_key"):
        prepare_dataset(path)


def test_input_file_is_never_modified(tmp_path):
    path = tmp_path / "cells.h5ad"
    tiny_counts_adata().write_h5ad(path)
    before = _digest(path)
    prepare_dataset(path, **KEYS)
    with pytest.raises(DataValidationError):
        prepare_dataset(path, **{**KEYS, "control_value": "absent"})
    assert _digest(path) == before


def test_split_errors():
    adata = tiny_counts_adata()
    with pytest.raises(DataValidationError, match=r"\['Z'\] are not in the data"):
        prepare_dataset(adata, split="perturbations", holdout=["Z"], **KEYS)
    with pytest.raises(DataValidationError, match="leaves no training perturbation"):
        prepare_dataset(adata, split="perturbations", holdout=["A", "B"], **KEYS)
    with pytest.raises(DataValidationError, match="group_key 'cell_type' not found"):
        prepare_dataset(adata, split="group", group_key="cell_type", holdout=["T"], **KEYS)


def test_log_normalized_input_is_used_as_declared():
    adata = tiny_counts_adata()
    counts = prepare_dataset(adata.copy(), **KEYS)
    logged = adata.copy()
    import scanpy as sc

    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    declared = prepare_dataset(logged, input_kind="log-normalized", **KEYS)
    # the same log-normalized expression either way: the recipe skips only its own normalization
    np.testing.assert_allclose(declared.expression.toarray(), counts.expression.toarray(), rtol=1e-5, atol=1e-5)
    assert declared.meta["input_kind"] == "log-normalized"
    with pytest.raises(DataValidationError, match="look like raw counts"):
        prepare_dataset(adata, input_kind="log-normalized", **KEYS)
    scaled = adata.copy()
    scaled.X = scaled.X * 10.5
    with pytest.raises(DataValidationError, match="neither log-normalized nor raw counts"):
        prepare_dataset(scaled, input_kind="log-normalized", **KEYS)
