"""Gene-space and distribution metrics for perturbation-response predictions.

Everything here is pure numpy / scipy / POT / tslearn (no Ray, no torch) and works on plain
arrays, so it can score any predictor: the RL policy, the baselines, or observed data itself.

Conventions (the same ones the README states):

* **Delta metrics** (:func:`delta_metrics`) are computed in gene space (log-normalized
  expression). ``delta_pred = mean(X_pred) - mean(X_ctrl)`` and
  ``delta_obs = mean(X_obs) - mean(X_ctrl)``; Pearson and MSE between the two, on all genes and
  on the top-``k`` DE genes of the perturbation. The top-``k`` set is chosen from the *observed*
  data only (default: largest ``|delta_obs|``; option: largest ``|Welch t|`` of observed vs
  control), never from the prediction. Pearson with a constant vector (e.g. a do-nothing
  prediction, ``delta_pred == 0``) is undefined and reported as ``0.0``, so "no change" scores
  exactly like the control-mean baseline.
* **E-distance** (:func:`e_distance`) is the squared form of the energy distance with
  Euclidean (not squared-Euclidean) distances and V-statistic means (all pairs, i = j included):
  ``E = 2 mean|x - y| - mean|x - x'| - mean|y - y'|``. Its square root is
  ``scipy.stats.energy_distance`` in 1-D. scPerturb/pertpy's ``edist`` default uses
  *squared* Euclidean distances, which collapses to ``2 |mean(x) - mean(y)|^2``; we do not.
* **Wasserstein** (:func:`wasserstein2`) is W2: ``sqrt(ot.emd2(a, b, M))`` with uniform weights
  and squared-Euclidean cost ``M``; exact up to ``max_exact`` cells per cloud, above that a
  documented fallback (subsample, or sliced W2), recorded in the result.
* **DTW** (:func:`dtw_distance`) is ``tslearn.metrics.dtw`` between two pseudotime-ordered mean
  trajectories: square root of the summed squared Euclidean costs along the optimal path.
* Distances between clouds are computed in one **fixed PCA space** (:func:`fixed_pca`, fitted
  on reference cells such as the training set) so numbers are comparable across predictors.
* :func:`paper_start_end_metric` reproduces the seed paper's start-vs-end metric for comparison
  only; a do-nothing policy wins it.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import scipy.sparse
from sklearn.decomposition import PCA

__all__ = [
    "DeltaMetrics",
    "DistanceResult",
    "StartEndMetric",
    "binned_mean_trajectory",
    "delta_metrics",
    "dtw_distance",
    "e_distance",
    "fixed_pca",
    "paper_start_end_metric",
    "pearson_or_zero",
    "top_k_de_genes",
    "wasserstein2",
]

# Defaults chosen from benchmarks/metrics_cost.py on a shared 2-core machine (50-d PCA space):
# E-distance on 10k x 10k cells and exact W2 on 2k x 2k cells both stayed under 1.5 s median.
E_DISTANCE_MAX_CELLS = 10_000
W2_MAX_EXACT = 2_000
# POT's default (100k) stops the network simplex before optimality already at 2k x 2k cells.
W2_NUM_ITER_MAX = 10_000_000
# Relative tolerance under which a vector counts as constant for Pearson (rounding noise of a
# mean over shuffled rows is ~1e-16 * n_cells relative; real gene deltas are many orders larger).
_CONSTANT_RTOL = 1e-10

DEMethod = Literal["abs_delta", "welch_t"]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _as_matrix(name: str, X: Any, *, n_cols: int | None = None, cols_of: str = "") -> np.ndarray:
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


def _project(name: str, X: np.ndarray, pca: PCA | None) -> np.ndarray:
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
    R = _as_matrix("reference", reference)
    limit = min(R.shape)
    if not 1 <= int(n_components) <= limit:
        raise ValueError(
            f"n_components={n_components} must be between 1 and min(n_cells, n_genes)={limit}."
        )
    return PCA(n_components=int(n_components), random_state=seed).fit(R)


# --------------------------------------------------------------------------------------------
# delta metrics (gene space)
# --------------------------------------------------------------------------------------------
def pearson_or_zero(a: Any, b: Any, *, atol: float = 0.0) -> float:
    """Pearson correlation of two vectors, ``0.0`` where it is undefined.

    Pearson is undefined when either vector is constant (zero variance), e.g. the delta of a
    do-nothing prediction, which is exactly 0 for every gene. We return ``0.0`` in that case
    (no linear association claimed), so a do-nothing prediction and the control-mean baseline
    get the same score.

    Parameters
    ----------
    a, b
        1-D vectors of equal length.
    atol
        A vector whose range (max - min) is ``<= atol`` counts as constant.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pearson_or_zero needs equal lengths; got {x.size} and {y.size}.")
    if x.size < 2 or np.ptp(x) <= atol or np.ptp(y) <= atol:
        return 0.0
    xc = x - x.mean()
    yc = y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if denom == 0.0:
        return 0.0
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


def _welch_t(X_ctrl: np.ndarray, X_obs: np.ndarray) -> np.ndarray:
    n_c, n_o = X_ctrl.shape[0], X_obs.shape[0]
    if n_c < 2 or n_o < 2:
        raise ValueError(
            f"de_method='welch_t' needs >= 2 cells in control and observed; got "
            f"{n_c} and {n_o}. Use de_method='abs_delta'."
        )
    diff = X_obs.mean(axis=0) - X_ctrl.mean(axis=0)
    se = np.sqrt(X_obs.var(axis=0, ddof=1) / n_o + X_ctrl.var(axis=0, ddof=1) / n_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / se
    # Zero variance in both groups: no evidence if the means agree, perfect separation otherwise.
    return np.where(se > 0, t, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))


def top_k_de_genes(
    X_ctrl: Any,
    X_obs: Any,
    *,
    k: int = 20,
    method: DEMethod = "abs_delta",
) -> np.ndarray:
    """Indices of the top-``k`` differentially expressed genes of a perturbation.

    Chosen from observed data only (control vs observed perturbed cells), never from a
    prediction, so every predictor is judged on the same genes.

    Parameters
    ----------
    X_ctrl, X_obs
        Control and observed perturbed cells x genes (log-normalized expression).
    k
        Number of genes; clipped to the number of genes.
    method
        ``"abs_delta"`` (default): rank by ``|mean(X_obs) - mean(X_ctrl)|``.
        ``"welch_t"``: rank by ``|t|`` of Welch's unequal-variance t-test per gene (as
        ``scipy.stats.ttest_ind(equal_var=False)``); genes constant in both groups get
        ``t = 0`` if the means agree and ``|t| = inf`` otherwise.

    Returns
    -------
    Integer gene indices, most DE first. Ties are broken by the lower gene index (stable sort).
    """
    C = _as_matrix("X_ctrl", X_ctrl)
    O = _as_matrix("X_obs", X_obs, n_cols=C.shape[1], cols_of="X_ctrl")
    return _top_k(C, O, k=k, method=method)


def _top_k(C: np.ndarray, O: np.ndarray, *, k: int, method: str) -> np.ndarray:
    if int(k) < 1:
        raise ValueError(f"k={k} must be >= 1.")
    if method == "abs_delta":
        score = np.abs(O.mean(axis=0) - C.mean(axis=0))
    elif method == "welch_t":
        score = np.abs(_welch_t(C, O))
    else:
        raise ValueError(f"Unknown DE method {method!r}; use 'abs_delta' or 'welch_t'.")
    k_eff = min(int(k), C.shape[1])
    return np.argsort(-score, kind="stable")[:k_eff]


@dataclass(frozen=True)
class DeltaMetrics:
    """Delta metrics of one perturbation (see :func:`delta_metrics`).

    Attributes
    ----------
    pearson_all, mse_all
        Pearson / MSE between predicted and observed delta over all genes.
    pearson_top_k, mse_top_k
        The same on the top-``k`` DE genes.
    top_k_genes
        Indices of those genes (most DE first); ``top_k_names`` their names if given.
    k, de_method
        Effective ``k`` (clipped to the gene count) and the DE ranking used.
    """

    pearson_all: float
    mse_all: float
    pearson_top_k: float
    mse_top_k: float
    top_k_genes: np.ndarray
    k: int
    de_method: str
    top_k_names: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, float]:
        """The four scalar scores, keyed for a report table."""
        return {
            "delta_pearson_all": self.pearson_all,
            "delta_mse_all": self.mse_all,
            f"delta_pearson_top{self.k}": self.pearson_top_k,
            f"delta_mse_top{self.k}": self.mse_top_k,
        }


def delta_metrics(
    X_ctrl: Any,
    X_obs: Any,
    X_pred: Any,
    *,
    k: int = 20,
    de_method: DEMethod = "abs_delta",
    gene_names: Sequence[str] | None = None,
) -> DeltaMetrics:
    """Compare predicted and observed mean expression changes of one perturbation.

    ``delta_pred = mean(X_pred) - mean(X_ctrl)`` and ``delta_obs = mean(X_obs) - mean(X_ctrl)``
    (means over cells, per gene). Scores: Pearson and MSE between them on all genes and on the
    top-``k`` DE genes (chosen from ``X_ctrl`` vs ``X_obs`` only, see :func:`top_k_de_genes`).
    MSE is ``mean_g (delta_pred_g - delta_obs_g)^2``.

    Pearson is undefined when ``delta_pred`` (or ``delta_obs``) is constant across the genes
    scored, e.g. for a do-nothing prediction (``X_pred`` = the control cells: delta is 0 for
    every gene). It is then reported as ``0.0``. A vector counts as constant when its range
    is ``<= 1e-10 * max(1, largest |mean expression|)``, which absorbs the rounding noise of a
    mean over reordered cells. Hence predicting the control cells themselves and predicting the
    control mean (one row) give identical delta metrics.

    Parameters
    ----------
    X_ctrl
        Control cells x genes, log-normalized (dense or scipy sparse).
    X_obs
        Observed perturbed cells x genes (held-out), same genes.
    X_pred
        Predicted perturbed cells x genes; a single row (a mean prediction) is fine.
    k
        Number of top DE genes (default 20, clipped to the gene count).
    de_method
        DE ranking, ``"abs_delta"`` (default) or ``"welch_t"``; see :func:`top_k_de_genes`.
    gene_names
        Optional gene names (length = number of genes) to report the top-``k`` genes by name.

    Returns
    -------
    :class:`DeltaMetrics`.
    """
    C = _as_matrix("X_ctrl", X_ctrl)
    g = C.shape[1]
    O = _as_matrix("X_obs", X_obs, n_cols=g, cols_of="X_ctrl")
    P = _as_matrix("X_pred", X_pred, n_cols=g, cols_of="X_ctrl")
    if gene_names is not None and len(gene_names) != g:
        raise ValueError(f"gene_names has {len(gene_names)} entries but there are {g} genes.")

    mu_c, mu_o, mu_p = C.mean(axis=0), O.mean(axis=0), P.mean(axis=0)
    d_obs = mu_o - mu_c
    d_pred = mu_p - mu_c
    scale = max(1.0, float(np.abs(mu_c).max()), float(np.abs(mu_o).max()), float(np.abs(mu_p).max()))
    atol = _CONSTANT_RTOL * scale

    top = _top_k(C, O, k=k, method=de_method)
    return DeltaMetrics(
        pearson_all=pearson_or_zero(d_pred, d_obs, atol=atol),
        mse_all=float(np.mean((d_pred - d_obs) ** 2)),
        pearson_top_k=pearson_or_zero(d_pred[top], d_obs[top], atol=atol),
        mse_top_k=float(np.mean((d_pred[top] - d_obs[top]) ** 2)),
        top_k_genes=top,
        k=int(top.size),
        de_method=de_method,
        top_k_names=None if gene_names is None else tuple(str(gene_names[i]) for i in top),
    )


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
    Xa = _as_matrix("X", X)
    Ya = _as_matrix("Y", Y, n_cols=Xa.shape[1], cols_of="X")
    if max_cells < 1 or chunk_size < 1:
        raise ValueError(f"max_cells={max_cells} and chunk_size={chunk_size} must be >= 1.")
    Xa, Ya = _project("X", Xa, pca), _project("Y", Ya, pca)
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

    Xa = _as_matrix("X", X)
    Ya = _as_matrix("Y", Y, n_cols=Xa.shape[1], cols_of="X")
    if max_exact < 1:
        raise ValueError(f"max_exact={max_exact} must be >= 1.")
    if fallback not in ("subsample", "sliced"):
        raise ValueError(f"Unknown fallback {fallback!r}; use 'subsample' or 'sliced'.")
    Xa, Ya = _project("X", Xa, pca), _project("Y", Ya, pca)
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
    Xa = _as_matrix("X", X)
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

    A = _as_matrix("traj_a", traj_a)
    B = _as_matrix("traj_b", traj_b, n_cols=A.shape[1], cols_of="traj_a")
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
    S = _as_matrix("Z_start", Z_start)
    E = _as_matrix("Z_end", Z_end, n_cols=S.shape[1], cols_of="Z_start")
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
