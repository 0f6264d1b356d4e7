"""The chunked synthetic ``.h5ad`` writer of benchmarks/prepare_scale.py, at a tiny size (seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse

_SPEC = importlib.util.spec_from_file_location(
    "prepare_scale", Path(__file__).resolve().parents[1] / "benchmarks" / "prepare_scale.py"
)
prepare_scale = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(prepare_scale)

N_CELLS, N_GENES, DETECTED = 3000, 500, 90


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scale") / "tiny.h5ad"
    return prepare_scale.write_synthetic_counts_h5ad(
        path, N_CELLS, N_GENES, seed=0, chunk_cells=1000, detected_per_cell=DETECTED
    )


def test_reads_in_memory_as_integer_csr(written: Path) -> None:
    adata = ad.read_h5ad(written)
    assert adata.shape == (N_CELLS, N_GENES)
    assert isinstance(adata.X, scipy.sparse.csr_matrix) and adata.X.dtype == np.float32
    data = adata.X.data
    assert data.min() >= 1 and np.array_equal(data, np.round(data))
    detected = adata.X.getnnz(axis=1)
    assert abs(detected.mean() - DETECTED) < 0.1 * DETECTED
    assert detected.std() > 5  # cells differ in depth
    assert not (written.parent / (written.name + ".partial")).exists()


def test_obs_labels(written: Path) -> None:
    obs = ad.read_h5ad(written).obs
    pert = obs["perturbation"].astype(str).to_numpy()
    assert abs((pert == "control").mean() - 0.10) < 0.01
    names = set(pert) - {"control"}
    assert all(n.startswith("PERT_") and len(n) == 10 for n in names)
    sizes = obs["perturbation"].value_counts().drop("control")
    assert 130 <= sizes.mean() <= 170
    # interleaved: consecutive rows mostly carry different labels
    assert (pert[1:] != pert[:-1]).mean() > 0.8
    assert 2 <= obs["cell_type"].nunique() <= 3


def test_backed_row_slices_match(written: Path) -> None:
    full = ad.read_h5ad(written).X
    backed = ad.read_h5ad(written, backed="r")
    try:
        for lo, hi in ((0, 10), (995, 1010), (2990, 3000)):
            part = backed.X[lo:hi]
            assert (part != full[lo:hi]).nnz == 0
    finally:
        backed.file.close()


def test_same_arguments_same_bytes(written: Path, tmp_path: Path) -> None:
    again = prepare_scale.write_synthetic_counts_h5ad(
        tmp_path / "again.h5ad", N_CELLS, N_GENES, seed=0, chunk_cells=2500, detected_per_cell=DETECTED
    )
    with h5py.File(written, "r") as a, h5py.File(again, "r") as b:
        for name in ("data", "indices", "indptr"):
            assert a["X"][name][()].tobytes() == b["X"][name][()].tobytes()
    other = prepare_scale.write_synthetic_counts_h5ad(
        tmp_path / "other.h5ad", N_CELLS, N_GENES, seed=1, chunk_cells=1000, detected_per_cell=DETECTED
    )
    with h5py.File(written, "r") as a, h5py.File(other, "r") as b:
        assert a["X"]["data"].shape != b["X"]["data"].shape or not np.array_equal(a["X"]["data"], b["X"]["data"])


def test_fit_power_law_recovers_exponent() -> None:
    fit = prepare_scale.fit_power_law([1e5, 2.5e5, 5e5], [10.0, 25.0, 50.0])
    assert fit["exponent"] == pytest.approx(1.0)
    assert fit["at_2000000"] == pytest.approx(200.0)
    assert prepare_scale.fit_power_law([1e5], [10.0]) is None
