"""Out-of-core preparation: the streamed recipe equals the in-memory one, bad input is one clear error,
and the on-disk expression reads back exactly."""

from __future__ import annotations

import gc

import anndata as ad
import h5py
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from helpers import PAPALEXI, require_file

import envs.out_of_core
from envs import (
    DataValidationError,
    load_dataset,
    make_synthetic_perturbation_data,
    prepare_dataset,
)
from envs.disk_expression import DiskExpression, DiskExpressionWriter
from envs.hvg import GeneMoments, seurat_hvg
from experiments.evaluation.baselines import BASELINES
from experiments.evaluation.evaluate import evaluate_dataset

SYNTHETIC = {"perturbation_key": "perturbation", "control_value": "control"}
PAPALEXI_KEYS = {"perturbation_key": "perturbation_confident", "control_value": "non-targeting",
                 "ignore_values": ["unassigned"]}


def _principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the row spaces of two orthonormal bases."""
    return np.linalg.svd(a @ b.T, compute_uv=False)


def _assert_equivalent(in_memory, streamed, *, latent_atol: float) -> None:
    np.testing.assert_array_equal(in_memory.latent_space.feature_names, streamed.latent_space.feature_names)
    assert in_memory.meta["basis"] == streamed.meta["basis"]
    assert _principal_cosines(in_memory.latent_space.components, streamed.latent_space.components).min() > 0.9999
    assert streamed.latent_space.scale == pytest.approx(in_memory.latent_space.scale, rel=1e-4)
    assert np.abs(in_memory.latent - streamed.latent).max() < latent_atol  # same signs, same scale
    np.testing.assert_array_equal(in_memory.labels, streamed.labels)
    np.testing.assert_array_equal(in_memory.split.train, streamed.split.train)
    rows = np.arange(0, len(in_memory.labels), 7)
    assert abs(in_memory.expression[rows] - streamed.expression[rows]).max() < 1e-4
    assert sorted(in_memory.pairs) == sorted(streamed.pairs)


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory):
    adata = make_synthetic_perturbation_data(seed=3)
    path = tmp_path_factory.mktemp("ooc") / "synthetic.h5ad"
    adata.write_h5ad(path)
    return path


def test_seurat_hvg_matches_scanpy_from_streamed_moments():
    adata = make_synthetic_perturbation_data(seed=1)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    moments = GeneMoments(adata.n_vars)
    for start in range(0, adata.n_obs, 700):  # blocks of rows, as the streaming pass sees them
        moments.add(adata.X[start : start + 700].expm1())
    for n_top in (40, 100, 150):
        expected = sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat", inplace=False)
        chosen = seurat_hvg(moments.mean, moments.var, n_top)
        # equal moments up to summation order: at most a gene at the cut may differ across CPUs
        assert (chosen != expected["highly_variable"].to_numpy()).sum() <= 1
        assert abs(int(chosen.sum()) - n_top) <= 1


def test_synthetic_out_of_core_equals_in_memory(synthetic_file, monkeypatch):
    monkeypatch.setattr(envs.out_of_core, "BLOCK_ROWS", 700)  # several blocks, the last one partial
    options = dict(SYNTHETIC, n_top_genes=120, split="perturbations", holdout=["G164"], seed=0)
    in_memory = prepare_dataset(synthetic_file, out_of_core=False, **options)
    streamed = prepare_dataset(synthetic_file, out_of_core=True, **options)
    assert streamed.meta["out_of_core"] and not in_memory.meta["out_of_core"]
    assert isinstance(streamed.expression, DiskExpression)
    # the 120th and 121st genes' normalized dispersions differ by ~4e-4, far above summation-order noise
    _assert_equivalent(in_memory, streamed, latent_atol=1e-3)


@pytest.mark.slow  # prepares Papalexi twice; the synthetic equivalence stays fast
def test_papalexi_out_of_core_equals_in_memory_in_space_and_metrics():
    path = require_file(PAPALEXI)
    in_memory = prepare_dataset(path, out_of_core=False, **PAPALEXI_KEYS)
    streamed = prepare_dataset(path, out_of_core=True, **PAPALEXI_KEYS)
    _assert_equivalent(in_memory, streamed, latent_atol=1e-2)
    methods = {name: BASELINES[name] for name in ("control-mean", "train-mean", "perturbation-mean")}
    scores = [{(row["method"], row["metric"]): row["value"] for row in evaluate_dataset(
        ds, methods, references=False, max_start_cells=200).rows} for ds in (in_memory, streamed)]
    assert scores[0].keys() == scores[1].keys()
    for (method, metric), value in scores[0].items():
        if metric in ("delta_pearson_top20", "delta_pearson_top100", "r2_mean_all"):
            assert scores[1][method, metric] == pytest.approx(value, abs=2e-3), (method, metric)


def test_out_of_core_dataset_saves_by_link_and_loads_lazily(synthetic_file, tmp_path):
    streamed = prepare_dataset(synthetic_file, out_of_core=True, workdir=tmp_path, **SYNTHETIC)
    temporary = streamed.expression._owned_dir
    saved = streamed.save(tmp_path / "prepared")
    assert (saved / "expression.h5").is_file() and not (saved / "expression.npz").exists()
    loaded = load_dataset(saved)
    assert isinstance(loaded.expression, DiskExpression)
    rows = np.array([5, 1, 5, len(loaded.labels) - 1])
    np.testing.assert_array_equal(loaded.expression[rows].toarray(), streamed.expression[rows].toarray())
    del streamed
    gc.collect()
    assert not temporary.exists()  # the temporary copy went with its dataset; the saved one stays
    assert loaded.expression[np.arange(3)].shape == (3, loaded.expression.shape[1])


def test_disk_expression_reads_any_rows_like_scipy(tmp_path):
    rng = np.random.default_rng(0)
    matrix = sp.random(3000, 40, density=0.2, format="csr", dtype=np.float32, random_state=1)
    writer = DiskExpressionWriter(tmp_path / "x.h5", 40)
    for start in range(0, 3000, 512):
        writer.append(matrix[start : start + 512])
    disk = writer.close()
    assert disk.shape == matrix.shape and disk.nnz == matrix.nnz
    for rows in (rng.choice(3000, 50, replace=False), rng.choice(3000, 2000), np.arange(100, 1900),
                 rng.random(3000) < 0.3, np.array([], dtype=int), np.array([-1, 0])):
        np.testing.assert_array_equal(disk[rows].toarray(), matrix[rows].toarray())
    with pytest.raises(IndexError):
        disk[np.array([3000])]


def _write_with_negative_late(path, adata, row: int) -> None:
    adata = adata.copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.X[row, adata.X[row].indices[0]] = -3.0
    adata.write_h5ad(path)


def test_negative_value_in_a_late_block_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(envs.out_of_core, "BLOCK_ROWS", 500)
    adata = make_synthetic_perturbation_data(seed=2)
    _write_with_negative_late(tmp_path / "bad.h5ad", adata, row=adata.n_obs - 10)
    with pytest.raises(DataValidationError, match=r"negative values.*rows 3000-") as info:
        prepare_dataset(tmp_path / "bad.h5ad", out_of_core=True, workdir=tmp_path, **SYNTHETIC)
    assert "raw counts are required" in str(info.value)
    assert not list(tmp_path.glob(".waddington-expression-*"))  # found in pass 1: nothing was written


def test_a_run_stopped_while_writing_leaves_no_partial_matrix(synthetic_file, tmp_path, monkeypatch):
    monkeypatch.setattr(envs.out_of_core, "BLOCK_ROWS", 500)
    written = []
    append = DiskExpressionWriter.append

    def interrupted_append(self, block):  # Ctrl-C arrives during pass 2, after the matrix was started
        if written:
            raise KeyboardInterrupt
        written.append(block.shape[0])
        append(self, block)

    monkeypatch.setattr(DiskExpressionWriter, "append", interrupted_append)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(synthetic_file, out_of_core=True, workdir=tmp_path, **SYNTHETIC)
    assert written and not list(tmp_path.iterdir())


def test_missing_column_and_truncated_file_are_clear_errors(synthetic_file, tmp_path):
    with pytest.raises(DataValidationError, match="obs column 'condition' not found"):
        prepare_dataset(synthetic_file, out_of_core=True, perturbation_key="condition", control_value="control")
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(synthetic_file.read_bytes()[: int(synthetic_file.stat().st_size * 0.6)])
    with pytest.raises(DataValidationError, match="truncated or damaged"):
        prepare_dataset(truncated, out_of_core=True, **SYNTHETIC)


def test_column_major_files_are_refused_with_the_conversion(tmp_path):
    adata = make_synthetic_perturbation_data(seed=0)
    adata.X = sp.csc_matrix(adata.X)
    adata.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(DataValidationError, match="CSC.*tocsr"):
        prepare_dataset(tmp_path / "csc.h5ad", out_of_core=True, **SYNTHETIC)


def test_large_files_stream_automatically(synthetic_file, monkeypatch):
    import envs.preparation

    with h5py.File(synthetic_file, "r") as handle:
        stored = handle["X"]["data"].shape[0] if isinstance(handle["X"], h5py.Group) else handle["X"].size
    monkeypatch.setattr(envs.preparation, "OUT_OF_CORE_ENTRIES", stored - 1)
    assert prepare_dataset(synthetic_file, **SYNTHETIC).meta["out_of_core"]
    monkeypatch.setattr(envs.preparation, "OUT_OF_CORE_ENTRIES", stored)
    assert not prepare_dataset(synthetic_file, **SYNTHETIC).meta["out_of_core"]
    with pytest.raises(DataValidationError, match="needs the path"):
        prepare_dataset(ad.read_h5ad(synthetic_file), out_of_core=True, **SYNTHETIC)
