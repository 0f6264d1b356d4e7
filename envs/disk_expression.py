"""Processed expression kept on disk (CSR in HDF5), read a few rows at a time.

Out-of-core preparation writes the log-normalized expression of the kept genes here chunk by
chunk, and evaluation and prediction read only the rows a perturbation needs when it is scored,
so a 2M-cell screen never has its expression in memory. :class:`DiskExpression` answers the
subset of the scipy CSR interface that evaluation uses: ``shape``, ``dtype`` and ``matrix[rows]``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

__all__ = ["DiskExpression", "DiskExpressionWriter"]

#: Rows read as one contiguous slice when at least this share of a window is wanted.
_DENSE_WINDOW_SHARE = 1 / 16
_WINDOW_ROWS = 1024


class DiskExpressionWriter:
    """Append CSR row blocks to an HDF5 file; :meth:`close` returns the readable :class:`DiskExpression`.

    Parameters
    ----------
    path
        File to create (it must not exist).
    n_cols
        Number of columns (genes) of every block.
    """

    def __init__(self, path: str | Path, n_cols: int) -> None:
        self.path = Path(path)
        self.n_cols = int(n_cols)
        self.n_rows = 0
        self._file = h5py.File(self.path, "x")
        self._nnz = 0
        chunks = (1 << 20,)
        self._data = self._file.create_dataset("data", (0,), dtype=np.float32, maxshape=(None,), chunks=chunks)
        self._indices = self._file.create_dataset("indices", (0,), dtype=np.int32, maxshape=(None,), chunks=chunks)
        self._indptr = self._file.create_dataset("indptr", (1,), dtype=np.int64, maxshape=(None,), chunks=(1 << 16,))
        self._indptr[0] = 0

    def append(self, block: sp.spmatrix) -> None:
        """Append the rows of ``block`` (any sparse format; stored as float32 CSR)."""
        block = sp.csr_matrix(block, dtype=np.float32)
        if block.shape[1] != self.n_cols:
            raise ValueError(f"block has {block.shape[1]} columns, expected {self.n_cols}")
        nnz, rows = block.nnz, block.shape[0]
        self._data.resize((self._nnz + nnz,))
        self._indices.resize((self._nnz + nnz,))
        self._indptr.resize((self.n_rows + rows + 1,))
        self._data[self._nnz :] = block.data
        self._indices[self._nnz :] = block.indices
        self._indptr[self.n_rows + 1 :] = block.indptr[1:].astype(np.int64) + self._nnz
        self._nnz += nnz
        self.n_rows += rows

    def close(self) -> DiskExpression:
        self._file.attrs["shape"] = (self.n_rows, self.n_cols)
        self._file.close()
        return DiskExpression(self.path)

    def abort(self) -> None:
        """Close and delete the partial file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


class DiskExpression:
    """Read-only CSR matrix in an HDF5 file written by :class:`DiskExpressionWriter`.

    Parameters
    ----------
    path
        The HDF5 file.
    owned_dir
        A temporary directory holding the file, removed when this object is garbage collected
        (the file lives on wherever :meth:`link_to` put it).
    """

    def __init__(self, path: str | Path, *, owned_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        with h5py.File(self.path, "r") as handle:
            self.shape = tuple(int(n) for n in handle.attrs["shape"])
            self._indptr = handle["indptr"][:]
        self.dtype = np.dtype(np.float32)
        self._owned_dir = Path(owned_dir) if owned_dir is not None else None

    def own(self, directory: str | Path) -> None:
        """Remove ``directory`` (a temporary one holding the file) when this object is garbage collected."""
        self._owned_dir = Path(directory)

    def __del__(self) -> None:
        if getattr(self, "_owned_dir", None) is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

    def __getstate__(self) -> dict:
        # a copy (pickle, copy.copy) reads the same file but never deletes it: only the original owns it
        return {**self.__dict__, "_owned_dir": None}

    @property
    def nnz(self) -> int:
        return int(self._indptr[-1])

    def __getitem__(self, rows) -> sp.csr_matrix:
        """The rows ``rows`` (int array, boolean mask or slice) as an in-memory CSR matrix, in the order given."""
        rows = np.arange(self.shape[0])[rows] if not isinstance(rows, np.ndarray) or rows.dtype == bool else rows
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        with h5py.File(self.path, "r") as handle:
            blocks = [self._read_window(handle, part) for part in _windows(unique)]
        block = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
        return block[inverse] if not np.array_equal(unique, rows) else block

    def _read_window(self, handle: h5py.File, rows: np.ndarray) -> sp.csr_matrix:
        start, stop = int(rows[0]), int(rows[-1]) + 1
        if len(rows) >= _DENSE_WINDOW_SHARE * (stop - start):
            # One slice read is cheaper than many small ones when the window is well filled.
            return self._read_range(handle, start, stop)[rows - start]
        return sp.vstack([self._read_range(handle, int(r), int(r) + 1) for r in rows], format="csr")

    def _read_range(self, handle: h5py.File, start: int, stop: int) -> sp.csr_matrix:
        lo, hi = int(self._indptr[start]), int(self._indptr[stop])
        indptr = self._indptr[start : stop + 1] - lo
        return sp.csr_matrix((handle["data"][lo:hi], handle["indices"][lo:hi], indptr), shape=(stop - start, self.shape[1]))

    def iter_blocks(self, block_rows: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """``(first row, CSR block)`` over all rows in order, ``block_rows`` at a time."""
        with h5py.File(self.path, "r") as handle:
            for start in range(0, self.shape[0], block_rows):
                stop = min(start + block_rows, self.shape[0])
                yield start, self._read_range(handle, start, stop)

    def toarray(self) -> np.ndarray:
        return self[np.arange(self.shape[0])].toarray()

    def link_to(self, target: str | Path) -> None:
        """Put the file at ``target``: a hard link where the filesystem allows (no copy), else a copy."""
        try:
            os.link(self.path, target)
        except OSError:
            shutil.copyfile(self.path, target)


def _windows(sorted_rows: np.ndarray) -> Iterator[np.ndarray]:
    """Sorted row indices grouped by the fixed window of the file they fall in."""
    if not sorted_rows.size:
        return
    window = sorted_rows // _WINDOW_ROWS
    cuts = np.flatnonzero(np.diff(window)) + 1
    yield from np.split(sorted_rows, cuts)
