"""Distribution distances between predicted and observed cells: E-distance and exact W2 (POT), with stated fallbacks."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.decomposition import PCA

from experiments.evaluation.metrics.inputs import E_DISTANCE_MAX_CELLS, W2_MAX_EXACT, W2_NUM_ITER_MAX, as_matrix, project

# --------------------------------------------------------------------------------------------
# distribution distances (fixed PCA space)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistanceResult:
    """A distance between two point clouds, with how it was computed.

    Attributes
    ----------
    value
        The distance (see the producing function for its convention).
    metric
        ``"e_distance"`` or ``"wasserstein2"``.
    method
        ``"exact"`` (all cells), ``"subsample"`` (exact on a random subsample of each cloud
        larger than the limit) or ``"sliced"`` (sliced W2 on all cells; a different quantity).
    n_x, n_y
        Input cloud sizes; ``n_x_used``, ``n_y_used`` the sizes actually used.
    info
        Extra details (limit, seed, projections, solver status, ...).
    """

    value: float
    metric: str
    method: str
    n_x: int
    n_y: int
    n_x_used: int
    n_y_used: int
    info: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)


def _subsample(X: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    if X.shape[0] <= n_max:
        return X
    idx = np.sort(rng.choice(X.shape[0], size=n_max, replace=False))
    return X[idx]


def _sum_pairwise_euclidean(
    A: np.ndarray, B: np.ndarray | None, *, chunk_size: int
) -> float:
    """Sum of ||a_i - b_j|| over all (i, j); ``B=None`` means B = A (uses symmetry).

    One BLAS matmul per row chunk on augmented rows ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``, which
    yields ``|a|^2 + |b|^2 - 2 a.b`` directly; then clip at 0, sqrt, sum. Memory is
    ``chunk_size x n_B`` floats. Callers centre the data first to limit cancellation.
    """
    sym = B is None
    Bm = A if sym else B
    na = np.einsum("ij,ij->i", A, A)
    nb = na if sym else np.einsum("ij,ij->i", Bm, Bm)
    A_aug = np.hstack([A, na[:, None], np.ones((A.shape[0], 1))])
    B_aug = np.hstack([-2.0 * Bm, np.ones((Bm.shape[0], 1)), nb[:, None]])
    buf = np.empty((min(chunk_size, A.shape[0]), Bm.shape[0]))
    total = 0.0
    for i in range(0, A.shape[0], chunk_size):
        a = A_aug[i : i + chunk_size]
        r = a.shape[0]
        j0 = i if sym else 0
        out = buf[:r, : Bm.shape[0] - j0]
        np.matmul(a, B_aug[j0:].T, out=out)
        if sym:
            np.fill_diagonal(out[:, :r], 0.0)
        np.maximum(out, 0.0, out=out)
        np.sqrt(out, out=out)
        if sym:
            # [i:i+r, i:i+r] holds both (p, q) and (q, p); the rest of the row block is the
            # upper triangle only, which the lower triangle mirrors.
            total += float(out[:, :r].sum()) + 2.0 * float(out[:, r:].sum())
        else:
            total += float(out.sum())
    return total


def e_distance(
    X: Any,
    Y: Any,
    *,
    pca: PCA | None = None,
    max_cells: int = E_DISTANCE_MAX_CELLS,
    seed: int = 0,
    chunk_size: int = 512,
    blas_threads: int | None = 1,
) -> DistanceResult:
    """E-distance between two point clouds (squared energy distance, Euclidean).

    Convention::

        E(X, Y) = 2 mean_ij |x_i - y_j| - mean_ij |x_i - x_j| - mean_ij |y_i - y_j|

    with Euclidean norms ``|.|`` (not squared) and V-statistic means over *all* pairs,
    ``i = j`` included. ``E >= 0`` and ``E = 0`` iff the empirical distributions agree.
    ``sqrt(E)`` is the energy distance of ``scipy.stats.energy_distance`` (1-D) and is stored
    as ``info["energy_distance"]``. Note scPerturb/pertpy's ``edist`` defaults to *squared*
    Euclidean distances, which reduces to ``2 |mean(X) - mean(Y)|^2`` (a mean shift only);
    the Euclidean form used here also sees differences in spread and shape.

    Exact on all cells up to ``max_cells`` per cloud (10,000 by default; 10k x 10k cells in a
    50-d PCA space took 0.5-0.9 s median on a shared 2-core machine, see
    ``benchmarks/metrics_cost.py``).
    A larger cloud is replaced by a uniform random subsample of ``max_cells`` cells
    (without replacement, ``seed``), reported as ``method="subsample"``.

    Cost is O(n^2 d): meant for a low-dimensional fixed PCA space, not raw genes. BLAS is
    limited to ``blas_threads`` threads during the computation (threadpoolctl, process-wide
    while it runs): on a busy 2-core machine multi-threaded OpenBLAS spin-waits and was
    2-4x slower than one thread here; the elementwise sqrt dominates the cost anyway.

    Parameters
    ----------
    X, Y
        Cells x features. If ``pca`` is given, gene-space cells that are projected first.
    pca
        Fitted PCA from :func:`fixed_pca` (recommended), or None if already projected.
    max_cells
        Largest cloud used exactly; larger clouds are subsampled to this size.
    seed
        Seed of the subsample.
    chunk_size
        Rows per matmul block (memory ``chunk_size x n`` floats).
    blas_threads
        BLAS threads used during the computation; ``None`` leaves the BLAS setting alone.

    Returns
    -------
    :class:`DistanceResult` with ``metric="e_distance"``.
    """
    Xa = as_matrix("X", X)
    Ya = as_matrix("Y", Y, n_cols=Xa.shape[1], cols_of="X")
    if max_cells < 1 or chunk_size < 1:
        raise ValueError(f"max_cells={max_cells} and chunk_size={chunk_size} must be >= 1.")
    Xa, Ya = project("X", Xa, pca), project("Y", Ya, pca)
    n_x, n_y = Xa.shape[0], Ya.shape[0]
    rng = np.random.default_rng(seed)
    Xs, Ys = _subsample(Xa, max_cells, rng), _subsample(Ya, max_cells, rng)
    # Centre on the pooled mean: distances are unchanged, cancellation in the matmul form shrinks.
    centre = np.concatenate([Xs, Ys]).mean(axis=0)
    Xs, Ys = Xs - centre, Ys - centre
    m, n = Xs.shape[0], Ys.shape[0]
    with contextlib.ExitStack() as stack:
        if blas_threads is not None:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=int(blas_threads), user_api="blas"))
        d_xy = _sum_pairwise_euclidean(Xs, Ys, chunk_size=chunk_size) / (m * n)
        d_xx = _sum_pairwise_euclidean(Xs, None, chunk_size=chunk_size) / (m * m)
        d_yy = _sum_pairwise_euclidean(Ys, None, chunk_size=chunk_size) / (n * n)
    value = max(2.0 * d_xy - d_xx - d_yy, 0.0)
    sub = m < n_x or n < n_y
    return DistanceResult(
        value=value,
        metric="e_distance",
        method="subsample" if sub else "exact",
        n_x=n_x,
        n_y=n_y,
        n_x_used=m,
        n_y_used=n,
        info={
            "convention": "2E|X-Y| - E|X-X'| - E|Y-Y'|, Euclidean, V-statistic (squared energy distance)",
            "energy_distance": float(np.sqrt(value)),
            "mean_xy": d_xy,
            "mean_xx": d_xx,
            "mean_yy": d_yy,
            "max_cells": int(max_cells),
            "seed": int(seed),
        },
    )


def wasserstein2(
    X: Any,
    Y: Any,
    *,
    pca: PCA | None = None,
    max_exact: int = W2_MAX_EXACT,
    fallback: Literal["subsample", "sliced"] = "subsample",
    n_projections: int = 256,
    seed: int = 0,
    num_iter_max: int = W2_NUM_ITER_MAX,
) -> DistanceResult:
    """2-Wasserstein distance between two point clouds via POT.

    Exact: ``W2 = sqrt(ot.emd2(a, b, M))`` with uniform weights ``a = 1/n_x``, ``b = 1/n_y``
    and squared-Euclidean cost ``M_ij = |x_i - y_j|^2`` (network simplex, run with
    ``numItermax=num_iter_max``; POT's default 100k stops before optimality at 2k cells).
    The solver status is in ``info["converged"]``; a non-optimal stop also warns.

    Exact when both clouds have ``<= max_exact`` cells (default 2,000; 2k x 2k cells in 50-d
    took 0.6-1.4 s median on a shared 2-core machine, see ``benchmarks/metrics_cost.py``).
    Above that:

    * ``fallback="subsample"`` (default): exact W2 between uniform random subsamples of
      ``max_exact`` cells of each larger cloud (``seed``). Same quantity, but the empirical W2
      of subsamples is biased upward (sampling noise adds transport cost).
    * ``fallback="sliced"``: ``ot.sliced_wasserstein_distance(X, Y, n_projections=..., p=2,
      seed=...)`` on all cells: the sliced W2 (root mean over random directions of the 1-D W2^2),
      which is a *different, smaller* quantity (about W2 / sqrt(d) for a pure shift); do not
      compare it with exact values.

    ``DistanceResult.method`` says which was used.

    Parameters
    ----------
    X, Y
        Cells x features. If ``pca`` is given, gene-space cells that are projected first.
    pca
        Fitted PCA from :func:`fixed_pca` (recommended), or None if already projected.
    max_exact
        Largest cloud size solved exactly.
    fallback
        ``"subsample"`` or ``"sliced"``; used only above ``max_exact``.
    n_projections
        Random directions for the sliced fallback.
    seed
        Seed of the subsample / projections.
    num_iter_max
        Network-simplex iteration cap passed to ``ot.emd2``.

    Returns
    -------
    :class:`DistanceResult` with ``metric="wasserstein2"``.
    """
    import ot

    Xa = as_matrix("X", X)
    Ya = as_matrix("Y", Y, n_cols=Xa.shape[1], cols_of="X")
    if max_exact < 1:
        raise ValueError(f"max_exact={max_exact} must be >= 1.")
    if fallback not in ("subsample", "sliced"):
        raise ValueError(f"Unknown fallback {fallback!r}; use 'subsample' or 'sliced'.")
    Xa, Ya = project("X", Xa, pca), project("Y", Ya, pca)
    n_x, n_y = Xa.shape[0], Ya.shape[0]
    base_info: dict[str, Any] = {"max_exact": int(max_exact), "seed": int(seed)}

    if max(n_x, n_y) > max_exact and fallback == "sliced":
        value = float(
            ot.sliced_wasserstein_distance(
                Xa, Ya, n_projections=int(n_projections), p=2, seed=seed
            )
        )
        return DistanceResult(
            value=value,
            metric="wasserstein2",
            method="sliced",
            n_x=n_x,
            n_y=n_y,
            n_x_used=n_x,
            n_y_used=n_y,
            info={**base_info, "n_projections": int(n_projections),
                  "note": "sliced W2, not comparable with exact W2"},
        )

    rng = np.random.default_rng(seed)
    Xs, Ys = _subsample(Xa, max_exact, rng), _subsample(Ya, max_exact, rng)
    centre = np.concatenate([Xs, Ys]).mean(axis=0)
    Xs, Ys = Xs - centre, Ys - centre
    M = ot.dist(Xs, Ys, metric="sqeuclidean")
    np.maximum(M, 0.0, out=M)
    a = np.full(Xs.shape[0], 1.0 / Xs.shape[0])
    b = np.full(Ys.shape[0], 1.0 / Ys.shape[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cost, log = ot.emd2(a, b, M, numItermax=int(num_iter_max), log=True)
    converged = int(log.get("result_code", 1)) == 1 and not caught
    if not converged:
        msgs = "; ".join(str(w.message) for w in caught) or str(log.get("warning"))
        warnings.warn(
            f"ot.emd2 did not reach optimality ({msgs}); W2 is an upper bound. "
            "Raise num_iter_max.",
            RuntimeWarning,
            stacklevel=2,
        )
    sub = Xs.shape[0] < n_x or Ys.shape[0] < n_y
    return DistanceResult(
        value=float(np.sqrt(max(float(cost), 0.0))),
        metric="wasserstein2",
        method="subsample" if sub else "exact",
        n_x=n_x,
        n_y=n_y,
        n_x_used=Xs.shape[0],
        n_y_used=Ys.shape[0],
        info={**base_info, "converged": converged, "ot_cost": float(cost),
              "num_iter_max": int(num_iter_max)},
    )
