"""The latent space of an ``.h5ad`` larger than memory, fitted from three streaming passes.

The same recipe as :func:`envs.preprocessing.preprocess` (``normalize_total`` -> ``log1p`` ->
Seurat HVGs -> PCA on the training cells -> widened basis), computed a block of rows at a time:

1. every block of the raw file: its values are checked (a bad value in a late block is one clear
   error naming the rows), and the training cells' per-gene moments are accumulated for the HVGs
   and the centring mean;
2. every block again: the log-normalized HVG columns are appended to the on-disk expression
   matrix (:class:`envs.disk_expression.DiskExpression`), and the training cells' centred Gram
   matrix (HVGs x HVGs) and per-perturbation sums are accumulated. The PCA is the exact
   eigendecomposition of that covariance: the subspace scanpy's in-memory PCA finds (arpack on the
   implicitly centred matrix here), with scikit-learn's sign rule;
3. the on-disk HVG matrix, a block at a time: every cell is projected to the latent space.

Memory is one block plus the HVG Gram matrix and the latent arrays: flat in the number of cells.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from envs.cell_table import CellTable
from envs.disk_expression import DiskExpression, DiskExpressionWriter
from envs.h5ad_chunks import H5adChunks
from envs.hvg import GeneMoments, seurat_hvg
from envs.preprocessing import BasisOptions, LatentSpace
from envs.validation import DataValidationError, validate_values

__all__ = ["fit_latent_out_of_core", "BLOCK_ROWS"]

#: Cells per block: ~100 MB of a 8k-gene, 1.5k-detected-genes file, and a 64 MB dense HVG block.
BLOCK_ROWS = 8192
#: Most genes the streamed covariance holds (genes^2 float64: 10,000 genes is 800 MB).
MAX_STREAMED_GENES = 10_000


def fit_latent_out_of_core(
    reader: H5adChunks,
    cells: CellTable,
    *,
    n_latent: int,
    n_top_genes: int,
    input_kind: str,
    basis: BasisOptions,
    expression_path: str | Path,
    block_rows: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[LatentSpace, np.ndarray, DiskExpression]:
    """Fit the latent space on ``cells.split.train`` and project every kept cell, streaming the file.

    Parameters
    ----------
    reader
        The open input file.
    cells
        Kept cells, their labels and split (from the obs table).
    n_latent, n_top_genes, basis
        As :func:`envs.preprocessing.preprocess` (``basis.labels`` are the kept cells' labels).
    input_kind
        ``"counts"`` (normalized and log1p'd here) or ``"log-normalized"`` (used as is).
    expression_path
        Where the log-normalized HVG expression of every kept cell is written (must not exist).
    block_rows
        Cells per block (default: the module's ``BLOCK_ROWS``).
    log
        Receives one progress line per pass and every ~10% of a pass.

    Returns
    -------
    ``(latent_space, latent, expression)`` as :func:`~envs.preprocessing.preprocess`, with the
    expression on disk.
    """
    block_rows = block_rows or BLOCK_ROWS
    if min(n_top_genes, reader.n_vars) > MAX_STREAMED_GENES:
        raise DataValidationError(
            f"Out-of-core preparation keeps at most {MAX_STREAMED_GENES} genes (their covariance is held in memory); "
            f"n_top_genes={n_top_genes} with {reader.n_vars} genes in the file. Lower n_top_genes (default 2000).")
    passes = _Passes(reader, cells, input_kind=input_kind, block_rows=block_rows, log=log)
    counts_moments, log_moments = passes.moments()
    hvg = (seurat_hvg(counts_moments.mean, counts_moments.var, n_top_genes) if n_top_genes < reader.n_vars
           else np.ones(reader.n_vars, dtype=bool))
    names = reader.var_names[hvg]
    mean = log_moments.mean[hvg]
    log(f"{int(hvg.sum())} highly variable genes of {reader.n_vars}")
    gram, (label_names, label_sums, label_counts), expression = passes.write_hvg_and_gram(hvg, mean, expression_path)
    n_fit = int(label_counts.sum())
    covariance = gram / max(n_fit - 1, 1)
    _, vectors = np.linalg.eigh(covariance)
    components = _flip_signs(vectors[:, ::-1][:, :n_latent].T)
    deltas, delta_names = _response_deltas(label_names, label_sums, label_counts, basis.control_value)
    components = basis.widen_by(components, deltas, names, delta_names)
    per_dim_variance = np.einsum("ij,jk,ik->i", components, gram / max(n_fit, 1), components)
    scale = float(np.sqrt(np.mean(per_dim_variance)))
    space = LatentSpace(components, mean, scale, names, "rna")
    latent = np.empty((expression.shape[0], space.n_latent), dtype=np.float32)
    for start, block in expression.iter_blocks(block_rows):
        latent[start : start + block.shape[0]] = space.encode(block)
    log(f"pass 3/3: projected {expression.shape[0]} cells to {space.n_latent} latent dims")
    return space, latent, expression


class _Passes:
    """The two passes over the raw file, sharing the block loop, the value checks and the progress lines."""

    def __init__(self, reader: H5adChunks, cells: CellTable, *, input_kind: str, block_rows: int, log) -> None:
        self.reader, self.cells, self.input_kind, self.block_rows, self.log = reader, cells, input_kind, block_rows, log
        self.kept_index = np.cumsum(cells.keep) - 1  # file row -> kept-cell row

    def _blocks(self, name: str):
        """(kept rows of the block as log-normalized CSR, their training mask, their kept-cell rows)."""
        started, n, next_report = time.perf_counter(), self.reader.n_obs, 0.1
        for start, raw in self.reader.blocks(self.block_rows):
            stop = start + raw.shape[0]
            validate_values(raw.data, input_kind=self.input_kind, where=f"rows {start}-{stop - 1} of the file")
            keep = self.cells.keep[start:stop]
            kept_rows = self.kept_index[start:stop][keep]
            yield self._log_normalize(raw[keep] if not keep.all() else raw), self.cells.split.train[kept_rows], kept_rows
            if stop / n >= next_report or stop == n:
                rate = stop / max(time.perf_counter() - started, 1e-9)
                self.log(f"{name}: {stop}/{n} cells ({100 * stop / n:.0f}%, {rate:,.0f} cells/s)")
                next_report = stop / n + 0.1

    def _log_normalize(self, raw: sp.csr_matrix) -> sp.csr_matrix:
        if self.input_kind != "counts":
            return raw
        totals = np.asarray(raw.sum(axis=1), dtype=np.float64).ravel()
        factors = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)
        normalized = sp.csr_matrix(sp.diags(factors) @ raw, dtype=np.float32)
        return normalized.log1p()

    def moments(self) -> tuple[GeneMoments, GeneMoments]:
        """Pass 1: moments of the training cells' normalized values (HVGs) and log values (mean)."""
        counts, logs = GeneMoments(self.reader.n_vars), GeneMoments(self.reader.n_vars)
        for block, train, _ in self._blocks("pass 1/3 (checks, gene moments)"):
            fit = block[train]
            logs.add(fit)
            counts.add(fit.expm1())
        return counts, logs

    def write_hvg_and_gram(self, hvg: np.ndarray, mean: np.ndarray, expression_path: str | Path):
        """Pass 2: the on-disk HVG matrix; the training cells' centred Gram matrix and per-label sums."""
        n_genes = int(hvg.sum())
        gram = np.zeros((n_genes, n_genes))
        label_names, codes = np.unique(self.cells.labels, return_inverse=True)
        label_sums = np.zeros((len(label_names), n_genes))
        label_counts = np.zeros(len(label_names))
        mean32 = mean.astype(np.float32)
        writer = DiskExpressionWriter(expression_path, n_genes)
        try:
            for block, train, kept_rows in self._blocks("pass 2/3 (expression, covariance)"):
                selected = sp.csr_matrix(block[:, hvg])
                writer.append(selected)
                if not train.any():
                    continue
                fit = selected[train]
                centred = fit.toarray() - mean32  # centred before the product: no cancellation in float32
                gram += centred.T @ centred
                fit_codes = codes[kept_rows[train]]
                indicator = sp.csr_matrix((np.ones(len(fit_codes)), (fit_codes, np.arange(len(fit_codes)))),
                                          shape=(len(label_names), len(fit_codes)))
                present = np.unique(fit_codes)  # only the labels of this block: no labels x genes temporary
                label_sums[present] += (indicator[present] @ fit.astype(np.float64)).toarray()
                label_counts += np.bincount(fit_codes, minlength=len(label_names))
        except BaseException:
            writer.abort()
            raise
        return gram, (label_names, label_sums, label_counts), writer.close()


def _response_deltas(label_names: np.ndarray, label_sums: np.ndarray, label_counts: np.ndarray,
                     control_value: str) -> tuple[np.ndarray, list[str]]:
    """Mean change of each training perturbation vs the training controls, and their names (sorted)."""
    present = label_counts > 0
    is_control = label_names == control_value
    if not (present & is_control).any():
        return np.zeros((0, label_sums.shape[1])), []
    means = label_sums / np.maximum(label_counts, 1)[:, None]
    chosen = present & ~is_control
    return means[chosen] - means[is_control], [str(name) for name in label_names[chosen]]


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Each component's largest-magnitude loading positive (scikit-learn's ``svd_flip`` on V)."""
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), largest])
    signs[signs == 0] = 1.0
    return components * signs[:, None]
