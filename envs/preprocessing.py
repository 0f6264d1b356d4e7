"""scanpy preprocessing into a linear latent space that decodes back to gene space.

RNA: ``normalize_total`` -> ``log1p`` -> highly variable genes -> PCA.
ATAC-like peak matrices: TF-IDF -> ``log1p`` -> LSI (truncated SVD, first component dropped
because it tracks sequencing depth).

The fit uses only the cells in ``fit_mask`` (the training cells), so held-out perturbations
never shape the space they are judged in; every cell is then projected with the same map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from envs.latent_basis import response_deltas, widen_basis
from envs.validation import counts_matrix

__all__ = ["BasisOptions", "LatentSpace", "preprocess"]

Modality = Literal["rna", "atac"]


@dataclass
class BasisOptions:
    """How the cell PCs are widened (see :mod:`envs.latent_basis`).

    Attributes
    ----------
    labels, control_value
        Perturbation label of every cell (all cells, not only the fitted ones) and the control label.
    response_energy, max_response_dims
        Share of the training responses' energy the basis keeps, and the most directions added for it.
    target_gene_axes
        Add the unit axis of every panel gene a label names.
    max_gene_axes
        At most this many gene axes (a genome-wide screen names thousands of genes, and every axis
        is a latent dimension): the panel genes whose own expression the training perturbations
        move most are kept, then held-out ones in name order.
    """

    labels: np.ndarray
    control_value: str
    response_energy: float = 0.9
    max_response_dims: int = 16
    target_gene_axes: bool = True
    max_gene_axes: int = 32
    added: dict = field(default_factory=dict)

    def widen(self, components: np.ndarray, fit_rows, feature_names: np.ndarray, fit_mask: np.ndarray) -> np.ndarray:
        """The widened orthonormal basis; what was added is kept in ``self.added``."""
        labels = np.asarray(self.labels).astype(str)
        deltas = response_deltas(fit_rows, labels[fit_mask], self.control_value)
        return self.widen_by(components, deltas, feature_names, sorted(set(labels[fit_mask]) - {self.control_value}))

    def widen_by(self, components: np.ndarray, deltas: np.ndarray, feature_names: np.ndarray,
                 delta_names: list[str]) -> np.ndarray:
        """:meth:`widen` given the training responses (perturbations x features, rows named by ``delta_names``)."""
        basis, self.added = widen_basis(components, deltas, gene_axes=self._gene_axes(deltas, feature_names,
                                                                                      delta_names),
                                        energy=self.response_energy, max_dims=self.max_response_dims)
        return basis

    def _gene_axes(self, deltas: np.ndarray, feature_names: np.ndarray, delta_names: list[str]) -> list[int]:
        if not self.target_gene_axes:
            return []
        index = {str(name): i for i, name in enumerate(feature_names)}
        genes = sorted(set(np.asarray(self.labels).astype(str)) - {self.control_value} & index.keys())
        if len(genes) <= self.max_gene_axes:
            return sorted(index[g] for g in genes)
        named = len(deltas) == len(delta_names)  # no training controls: no deltas to rank by
        own_change = {name: abs(deltas[row, index[name]]) for row, name in enumerate(delta_names)
                      if named and name in index}
        ranked = sorted(genes, key=lambda g: (-own_change.get(g, -1.0), g))
        return sorted(index[g] for g in ranked[: self.max_gene_axes])


@dataclass
class LatentSpace:
    """A linear map between processed expression and a latent space.

    ``encode(x) = (x - feature_mean) @ components.T / scale`` and ``decode`` is its inverse on the
    span of ``components``. ``scale`` makes the mean per-dimension variance of training cells 1,
    so step sizes in the env mean the same thing on every dataset.
    """

    components: np.ndarray  # (n_latent, n_features), orthonormal rows
    feature_mean: np.ndarray  # (n_features,)
    scale: float
    feature_names: np.ndarray  # (n_features,) gene or peak names
    modality: str = "rna"

    @property
    def n_latent(self) -> int:
        return self.components.shape[0]

    def encode(self, expression: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Processed expression (cells x features) -> latent coordinates (cells x n_latent)."""
        projected = expression @ self.components.T
        projected = np.asarray(projected) - self.feature_mean @ self.components.T
        return (projected / self.scale).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Latent coordinates -> processed expression (log-normalized genes, or TF-IDF peaks)."""
        return (np.asarray(latent, dtype=np.float64) * self.scale) @ self.components + self.feature_mean

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "components": self.components,
            "feature_mean": self.feature_mean,
            "scale": np.asarray(self.scale),
            "feature_names": self.feature_names.astype(str),
            "modality": np.asarray(self.modality),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LatentSpace:
        return cls(
            components=arrays["components"],
            feature_mean=arrays["feature_mean"],
            scale=float(arrays["scale"]),
            feature_names=arrays["feature_names"],
            modality=str(arrays["modality"]),
        )


def _normalize_rna(adata: ad.AnnData) -> None:
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)


def _tfidf(matrix: sp.spmatrix | np.ndarray, idf: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    depth = np.asarray(matrix.sum(axis=1)).ravel()
    tf = sp.diags(1.0 / np.maximum(depth, 1.0)) @ matrix
    if idf is None:
        idf = np.log1p(matrix.shape[0] / (1.0 + np.asarray((matrix > 0).sum(axis=0)).ravel()))
    tfidf = (tf @ sp.diags(idf.astype(np.float32))) * 1e4
    return sp.csr_matrix(tfidf).log1p(), idf


def preprocess(
    adata: ad.AnnData,
    *,
    fit_mask: np.ndarray,
    n_latent: int = 16,
    n_top_features: int = 2000,
    modality: Modality = "rna",
    layer: str | None = None,
    normalize: bool = True,
    basis: BasisOptions | None = None,
    seed: int = 0,
) -> tuple[LatentSpace, np.ndarray, sp.csr_matrix]:
    """Fit the latent space on ``fit_mask`` cells and project every cell.

    Parameters
    ----------
    adata
        Raw counts (cells x genes, or cells x peaks for ``modality="atac"``). Not modified.
    fit_mask
        Boolean mask of the cells that the recipe is fitted on (training cells).
    n_latent
        Latent dimension (PCA components, or LSI components after dropping the first).
    n_top_features
        Highly variable genes (RNA) or most accessible peaks (ATAC) kept.
    modality
        ``"rna"`` or ``"atac"``.
    layer
        Layer with raw counts; ``None`` uses ``adata.X``.
    normalize
        RNA only: ``normalize_total`` + ``log1p`` first (raw counts); False for data that are
        already log-normalized.
    basis
        Labels and rules that widen the ``n_latent`` cell PCs so responses are expressible
        (:mod:`envs.latent_basis`); None keeps the cell PCs alone.
    seed
        Random state for the SVD solvers.

    Returns
    -------
    ``(latent_space, latent, expression)``: latent coordinates of all cells (cells x n_latent,
    float32) and the processed expression of the kept features (CSR, float32).
    """
    fit_mask = np.asarray(fit_mask, dtype=bool)
    work = ad.AnnData(X=sp.csr_matrix(counts_matrix(adata, layer=layer), dtype=np.float32), var=adata.var[[]].copy())
    work.var_names = adata.var_names.astype(str)
    if modality == "rna":
        if normalize:
            _normalize_rna(work)
        n_keep = min(n_top_features, work.n_vars)
        fit_view = work[fit_mask]
        if n_keep < work.n_vars:
            hvg = sc.pp.highly_variable_genes(fit_view, n_top_genes=n_keep, flavor="seurat", inplace=False)
            keep = hvg["highly_variable"].to_numpy()
        else:
            keep = np.ones(work.n_vars, dtype=bool)
        # Peak memory is a few copies of the count matrix; drop each as soon as it is consumed.
        expression = work.X if keep.all() else sp.csr_matrix(work.X[:, keep])
        names = work.var_names[keep].to_numpy()
        del work, fit_view
        fit_data = ad.AnnData(X=expression[fit_mask])
        sc.pp.pca(fit_data, n_comps=n_latent, zero_center=True, random_state=seed)
        components = np.asarray(fit_data.varm["PCs"].T, dtype=np.float64)
        feature_mean = np.asarray(fit_data.X.mean(axis=0)).ravel()
        fit_rows = fit_data.X
        del fit_data
    elif modality == "atac":
        accessibility = np.asarray((work.X[fit_mask] > 0).sum(axis=0)).ravel()
        n_keep = min(n_top_features, work.n_vars)
        keep = np.zeros(work.n_vars, dtype=bool)
        keep[np.argsort(-accessibility, kind="stable")[:n_keep]] = True
        _, idf = _tfidf(work.X[fit_mask][:, keep])
        expression, _ = _tfidf(work.X[:, keep], idf=idf)
        names = work.var_names[keep].to_numpy()
        del work
        fit_rows = expression[fit_mask]
        svd = TruncatedSVD(n_components=n_latent + 1, random_state=seed).fit(fit_rows)
        components = svd.components_[1:]
        feature_mean = np.zeros(expression.shape[1])
    else:
        raise ValueError(f"modality must be 'rna' or 'atac', got {modality!r}.")
    if basis is not None:
        components = basis.widen(components, fit_rows, names, fit_mask)
    unscaled = LatentSpace(components, feature_mean, 1.0, names, modality)
    scale = float(np.sqrt(np.mean(unscaled.encode(fit_rows).var(axis=0))))
    del fit_rows
    space = LatentSpace(components, feature_mean, scale, names, modality)
    return space, space.encode(expression), sp.csr_matrix(expression, dtype=np.float32, copy=False)
