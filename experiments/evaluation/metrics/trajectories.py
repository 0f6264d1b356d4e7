"""Pseudotime-ordered mean trajectories, their DTW distance, and the seed paper's start-vs-end metric (comparison only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from experiments.evaluation.metrics.inputs import as_matrix
from experiments.evaluation.metrics.deltas import pearson_or_zero

# --------------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------------
def binned_mean_trajectory(X: Any, pseudotime: Any, *, n_bins: int = 10) -> np.ndarray:
    """Pseudotime-ordered mean trajectory: mean state of the cells in each pseudotime bin.

    Bins are ``n_bins`` equal-width intervals over ``[min(pseudotime), max(pseudotime)]``
    (right edge included in the last bin). Empty bins are dropped, so the result may have
    fewer than ``n_bins`` rows. For simulated trajectories with states ``S`` of shape
    (cells, T, d), the mean trajectory is simply ``S.mean(axis=0)``.

    Parameters
    ----------
    X
        Cells x features (e.g. fixed-PCA coordinates).
    pseudotime
        One value per cell.
    n_bins
        Number of equal-width bins.

    Returns
    -------
    Array (n_nonempty_bins, d), ordered by increasing pseudotime.
    """
    Xa = as_matrix("X", X)
    t = np.asarray(pseudotime, dtype=np.float64).ravel()
    if t.size != Xa.shape[0]:
        raise ValueError(f"pseudotime has {t.size} values but X has {Xa.shape[0]} cells.")
    if not np.isfinite(t).all():
        raise ValueError("pseudotime contains NaN or infinite values.")
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be >= 1.")
    lo, hi = float(t.min()), float(t.max())
    if hi == lo:
        return Xa.mean(axis=0, keepdims=True)
    bins = np.minimum(((t - lo) / (hi - lo) * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sums = np.zeros((n_bins, Xa.shape[1]))
    np.add.at(sums, bins, Xa)
    keep = counts > 0
    return sums[keep] / counts[keep, None]


def dtw_distance(
    traj_a: Any,
    traj_b: Any,
    *,
    sakoe_chiba_radius: int | None = None,
) -> float:
    """Dynamic time warping distance between two mean trajectories (tslearn).

    ``tslearn.metrics.dtw``: local cost ``|a_i - b_j|^2`` (squared Euclidean), the optimal
    monotone alignment minimises the summed cost, and the returned value is the *square root*
    of that sum. Trajectories may have different lengths. tslearn is imported lazily: the
    first call in a process pays its import and numba compilation (about 7 s measured here on
    2 cores); later calls take well under a millisecond for short trajectories.

    Parameters
    ----------
    traj_a, traj_b
        Arrays (T1, d) and (T2, d), rows ordered by pseudotime (e.g. from
        :func:`binned_mean_trajectory`, or simulated states averaged over cells).
    sakoe_chiba_radius
        Optional band constraint passed to tslearn (``None``: unconstrained).

    Returns
    -------
    The DTW distance (float, >= 0).
    """
    from tslearn.metrics import dtw

    A = as_matrix("traj_a", traj_a)
    B = as_matrix("traj_b", traj_b, n_cols=A.shape[1], cols_of="traj_a")
    if sakoe_chiba_radius is None:
        return float(dtw(A, B))
    return float(
        dtw(A, B, global_constraint="sakoe_chiba", sakoe_chiba_radius=int(sakoe_chiba_radius))
    )



# --------------------------------------------------------------------------------------------
# the seed paper's metric (comparison only)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartEndMetric:
    """Start-vs-end metric per latent dimension (comparison only; see the function)."""

    per_dim: np.ndarray
    mean: float
    kind: str


def paper_start_end_metric(
    Z_start: Any,
    Z_end: Any,
    *,
    kind: Literal["mean_abs_change", "one_minus_corr"] = "mean_abs_change",
) -> StartEndMetric:
    """The seed paper's metric: each cell's start state vs its own end state, per latent dim.

    **Printed for comparison only; never use it to select or judge a model.** It measures
    how far cells moved from where they started, not whether they reached the observed
    perturbed population, so a do-nothing policy (end = start) scores the optimum, 0, under
    both kinds. Judge models with :func:`delta_metrics`, :func:`e_distance`,
    :func:`wasserstein2` and :func:`dtw_distance` on held-out data instead.

    Parameters
    ----------
    Z_start, Z_end
        Paired arrays (cells x latent dims): row i is cell i at the start and at the end.
    kind
        ``"mean_abs_change"`` (default): per dim, ``mean_i |Z_end[i, j] - Z_start[i, j]|``.
        ``"one_minus_corr"``: per dim, ``1 - pearson(Z_start[:, j], Z_end[:, j])``; a column
        pair that is identical gives 0, a constant (but not identical) one gives 1 (Pearson
        undefined -> 0, as in :func:`pearson_or_zero`).

    Returns
    -------
    :class:`StartEndMetric` with the per-dimension values and their mean (lower = "better"
    in the paper's reading).
    """
    S = as_matrix("Z_start", Z_start)
    E = as_matrix("Z_end", Z_end, n_cols=S.shape[1], cols_of="Z_start")
    if S.shape[0] != E.shape[0]:
        raise ValueError(
            f"Z_start has {S.shape[0]} cells but Z_end has {E.shape[0]}; rows must be paired."
        )
    if kind == "mean_abs_change":
        per_dim = np.abs(E - S).mean(axis=0)
    elif kind == "one_minus_corr":
        per_dim = np.array(
            [
                0.0 if np.array_equal(S[:, j], E[:, j]) else 1.0 - pearson_or_zero(S[:, j], E[:, j])
                for j in range(S.shape[1])
            ]
        )
    else:
        raise ValueError(f"Unknown kind {kind!r}; use 'mean_abs_change' or 'one_minus_corr'.")
    return StartEndMetric(per_dim=per_dim, mean=float(per_dim.mean()), kind=kind)
