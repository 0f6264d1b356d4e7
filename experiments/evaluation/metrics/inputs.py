"""Shared input checks of the metrics and the fixed PCA space that distribution distances use."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse
from sklearn.decomposition import PCA

# Defaults chosen from benchmarks/metrics_cost.py on a shared 2-core machine (50-d PCA space):
# E-distance on 10k x 10k cells and exact W2 on 2k x 2k cells both stayed under 1.5 s median.
E_DISTANCE_MAX_CELLS = 10_000
W2_MAX_EXACT = 2_000
# POT's default (100k) stops the network simplex before optimality already at 2k x 2k cells.
W2_NUM_ITER_MAX = 10_000_000
# Relative tolerance under which a vector counts as constant for Pearson (rounding noise of a
# mean over shuffled rows is ~1e-16 * n_cells relative; real gene deltas are many orders larger).
CONSTANT_RTOL = 1e-10

DEMethod = Literal["abs_delta", "welch_t"]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def as_matrix(name: str, X: Any, *, n_cols: int | None = None, cols_of: str = "") -> np.ndarray:
    """Return ``X`` as a finite 2-D float64 array, or raise a ValueError naming ``name``."""
    if X is None:
        raise ValueError(f"{name} is None; expected a 2-D array (cells x features).")
    if scipy.sparse.issparse(X):
        X = X.toarray()
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} could not be converted to a float array: {err}") from err
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (cells x features); got an array of shape {arr.shape}."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} is empty: shape {arr.shape}; need at least one cell (row) and one "
            "feature (column)."
        )
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ValueError(
            f"{name} has {arr.shape[1]} features (columns) but {cols_of} has {n_cols}; "
            "both must live in the same gene/feature space."
        )
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s).")
    return arr


def project(name: str, X: np.ndarray, pca: PCA | None) -> np.ndarray:
    if pca is None:
        return X
    n_in = int(pca.n_features_in_)
    if X.shape[1] != n_in:
        raise ValueError(
            f"{name} has {X.shape[1]} features but the fixed PCA was fitted on {n_in}."
        )
    return np.asarray(pca.transform(X), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# fixed PCA space
# --------------------------------------------------------------------------------------------
def fixed_pca(reference: Any, n_components: int, *, seed: int = 0) -> PCA:
    """Fit the PCA that defines the fixed space in which cloud distances are measured.

    Fit it once on reference cells (e.g. all training cells, in gene space) and pass the
    returned object as ``pca=`` to :func:`e_distance` / :func:`wasserstein2`, so every
    predictor is scored in the same coordinates.

    Parameters
    ----------
    reference
        Cells x genes array (dense or scipy sparse) the PCA is fitted on.
    n_components
        Number of principal components; ``1 <= n_components <= min(n_cells, n_genes)``.
    seed
        ``random_state`` for sklearn's randomized solver (results are deterministic per seed).

    Returns
    -------
    A fitted :class:`sklearn.decomposition.PCA`; use ``.transform(X)`` to project.
    """
    R = as_matrix("reference", reference)
    limit = min(R.shape)
    if not 1 <= int(n_components) <= limit:
        raise ValueError(
            f"n_components={n_components} must be between 1 and min(n_cells, n_genes)={limit}."
        )
    return PCA(n_components=int(n_components), random_state=seed).fit(R)
