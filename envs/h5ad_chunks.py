"""Reading an ``.h5ad`` larger than memory: obs and var whole, the count matrix a block of rows at a time.

Opened read-only with h5py and anndata's element readers, so nothing is written to the user's
file and only one block of rows is ever in memory. A file that is truncated or not an AnnData
is one :class:`~envs.validation.DataValidationError`, when opened or when the bad block is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from envs.validation import DataValidationError, check_h5ad_path

__all__ = ["H5adChunks"]


class H5adChunks:
    """Row blocks of one matrix of an ``.h5ad`` file (``X`` or a layer), and its obs and var.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    layer
        Layer holding the expression; ``None`` reads ``X``.

    Use as a context manager; the file is closed on exit.
    """

    def __init__(self, path: str | Path, *, layer: str | None = None) -> None:
        self.path = check_h5ad_path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise _corrupt(self.path, exc) from exc
        try:
            self.obs: pd.DataFrame = ad.io.read_elem(self._file["obs"])
            self.var_names = ad.io.read_elem(self._file["var"]).index.astype(str).to_numpy()
            self._matrix = self._open_matrix(layer)
        except DataValidationError:
            self._file.close()
            raise
        except Exception as exc:  # h5py/anndata raise many types for damaged or foreign layouts
            self._file.close()
            raise _corrupt(self.path, exc) from exc
        self.n_obs, self.n_vars = (int(n) for n in self._matrix.shape)
        if self.n_obs != len(self.obs) or self.n_vars != len(self.var_names):
            self._file.close()
            raise DataValidationError(
                f"'{self.path}': the matrix is {self.n_obs} x {self.n_vars} but obs/var have {len(self.obs)} / "
                f"{len(self.var_names)} rows; the file is inconsistent. Write it again with `adata.write_h5ad(...)`."
            )

    def _open_matrix(self, layer: str | None):
        if layer is None:
            element = self._file["X"]
        else:
            layers = self._file.get("layers")
            if layers is None or layer not in layers:
                available = sorted(layers.keys()) if layers is not None else []
                raise DataValidationError(
                    f"Layer '{layer}' not found; available layers: {available or 'none'}. Pass layer=None to use X."
                )
            element = layers[layer]
        if isinstance(element, h5py.Dataset):
            return element  # dense: row slices are cheap
        encoding = str(element.attrs.get("encoding-type", ""))
        if encoding == "csc_matrix":
            raise DataValidationError(
                f"'{self.path}' stores its matrix column-wise (CSC); reading it a block of cells at a time would "
                "read the whole file for every block. Convert it once to CSR: "
                "`adata.X = adata.X.tocsr(); adata.write_h5ad(...)` (on a machine that holds it), or use the "
                "in-memory path (out_of_core=False)."
            )
        return ad.io.sparse_dataset(element)

    def __enter__(self) -> H5adChunks:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def stored_nnz(self) -> int:
        """Stored entries of the matrix (all values for a dense one)."""
        if isinstance(self._matrix, h5py.Dataset):
            return self.n_obs * self.n_vars
        return int(self._file[self._matrix.group.name]["data"].shape[0])

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as float32 CSR."""
        try:
            block = self._matrix[start:stop]
        except Exception as exc:  # a truncated file fails here, at the first block past its end
            raise _corrupt(self.path, exc, where=f"rows {start}-{stop - 1}") from exc
        return sp.csr_matrix(block, dtype=np.float32)

    def blocks(self, block_rows: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(first row, CSR block)`` over all rows in order."""
        for start in range(0, self.n_obs, block_rows):
            yield start, self.rows(start, min(start + block_rows, self.n_obs))


def _corrupt(path: Path, exc: Exception, where: str = "") -> DataValidationError:
    at = f" while reading {where}" if where else ""
    return DataValidationError(
        f"'{path}' could not be read{at} ({type(exc).__name__}: {exc}); the file looks truncated or damaged "
        "(an interrupted copy or download?). Copy or write it again and check its size."
    )
