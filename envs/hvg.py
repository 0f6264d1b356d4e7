"""Highly variable genes from per-gene moments, so they can be computed from one streaming pass.

:func:`seurat_hvg` is scanpy's ``highly_variable_genes(flavor="seurat", n_top_genes=n)`` written
on the per-gene mean and variance of the library-size-normalized (not log) values, which a pass
over row blocks accumulates exactly; given the same moments it selects the same genes (tested
against scanpy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["seurat_hvg", "GeneMoments"]


class GeneMoments:
    """Running per-gene sums of ``x`` and ``x**2`` over row blocks (float64), for mean and variance."""

    def __init__(self, n_genes: int) -> None:
        self.n = 0
        self.sum = np.zeros(n_genes)
        self.sum_squares = np.zeros(n_genes)

    def add(self, block) -> None:
        """Add the rows of a (sparse or dense) block."""
        block64 = block.astype(np.float64)
        self.n += block.shape[0]
        self.sum += np.asarray(block64.sum(axis=0)).ravel()
        self.sum_squares += np.asarray(block64.multiply(block64).sum(axis=0) if hasattr(block64, "multiply")
                                       else (block64**2).sum(axis=0)).ravel()

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.n, 1)

    @property
    def var(self) -> np.ndarray:
        """Variance with ``ddof=1``, as scanpy's ``_get_mean_var``."""
        if self.n < 2:
            return np.zeros_like(self.sum)
        return np.maximum(self.sum_squares - self.n * self.mean**2, 0.0) / (self.n - 1)


def seurat_hvg(mean: np.ndarray, var: np.ndarray, n_top: int, *, n_bins: int = 20) -> np.ndarray:
    """Boolean mask of the ``n_top`` most dispersed genes, binned by mean (Seurat v2's rule).

    Parameters
    ----------
    mean, var
        Per-gene mean and variance (``ddof=1``) of library-size-normalized expression (``expm1`` of
        the ``log1p`` values).
    n_top
        Genes to keep; ties at the cut keep every tied gene, as scanpy does.
    n_bins
        Bins of ``log1p(mean)`` within which dispersions are z-scored.
    """
    mean = np.array(mean, dtype=np.float64)
    mean[mean == 0] = 1e-12
    dispersion = np.asarray(var, dtype=np.float64) / mean
    dispersion[dispersion == 0] = np.nan
    frame = pd.DataFrame({"means": np.log1p(mean), "dispersions": np.log(dispersion)})
    frame["mean_bin"] = pd.cut(frame["means"], bins=n_bins)
    stats = frame.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # a bin holding one gene: its normalized dispersion is set to 1
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    per_gene = stats.loc[frame["mean_bin"]].set_index(frame.index)
    normalized = ((frame["dispersions"] - per_gene["avg"]) / per_gene["dev"]).to_numpy()
    finite = np.sort(normalized[~np.isnan(normalized)])[::-1]
    if n_top >= len(mean):
        return np.ones(len(mean), dtype=bool)
    cut = finite[min(n_top, finite.size) - 1]
    return np.nan_to_num(normalized, nan=-np.inf) >= cut
