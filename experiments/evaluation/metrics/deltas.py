"""Delta metrics in gene space: predicted vs observed mean change from the controls, on all and top-k DE genes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from experiments.evaluation.metrics.inputs import CONSTANT_RTOL, DEMethod, as_matrix

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
    C = as_matrix("X_ctrl", X_ctrl)
    O = as_matrix("X_obs", X_obs, n_cols=C.shape[1], cols_of="X_ctrl")
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
    C = as_matrix("X_ctrl", X_ctrl)
    g = C.shape[1]
    O = as_matrix("X_obs", X_obs, n_cols=g, cols_of="X_ctrl")
    P = as_matrix("X_pred", X_pred, n_cols=g, cols_of="X_ctrl")
    if gene_names is not None and len(gene_names) != g:
        raise ValueError(f"gene_names has {len(gene_names)} entries but there are {g} genes.")

    mu_c, mu_o, mu_p = C.mean(axis=0), O.mean(axis=0), P.mean(axis=0)
    d_obs = mu_o - mu_c
    d_pred = mu_p - mu_c
    scale = max(1.0, float(np.abs(mu_c).max()), float(np.abs(mu_o).max()), float(np.abs(mu_p).max()))
    atol = CONSTANT_RTOL * scale

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


def mean_expression_r2(X_obs: Any, X_pred: Any, *, genes: np.ndarray | None = None) -> float:
    """scGen's convention: R^2 = squared Pearson of the per-gene *mean expression* (not of deltas).

    ``pearson(mean(X_pred), mean(X_obs))^2`` over all genes or over ``genes`` (indices). It is
    high even for a do-nothing prediction whenever control and perturbed means are alike, so it
    is reported next to the delta metrics for comparison with published numbers, never alone.
    """
    O = as_matrix("X_obs", X_obs)
    P = as_matrix("X_pred", X_pred, n_cols=O.shape[1], cols_of="X_obs")
    mu_o, mu_p = O.mean(axis=0), P.mean(axis=0)
    if genes is not None:
        mu_o, mu_p = mu_o[genes], mu_p[genes]
    return pearson_or_zero(mu_p, mu_o) ** 2


#: False discovery rate of :func:`de_gene_count`.
DE_FDR = 0.05


def de_gene_count(X_ctrl: Any, X: Any, *, fdr: float = DE_FDR) -> int:
    """Genes a DE test calls changed between ``X`` and the control cells: Welch t-test, Benjamini-Hochberg q < ``fdr``.

    What a scanpy user's ``rank_genes_groups(method="t-test")`` or cell-eval would count. Scored on
    the real perturbed cells and on a prediction alike: a do-nothing prediction (the control cells)
    has 0; a prediction that moves every cell by one deterministic shift makes every shifted gene
    significant, however small the shift. Genes constant in both groups are not called.
    """
    from scipy.stats import false_discovery_control, ttest_ind

    C = as_matrix("X_ctrl", X_ctrl)
    P = as_matrix("X", X, n_cols=C.shape[1], cols_of="X_ctrl")
    if len(C) < 2 or len(P) < 2:
        return 0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = ttest_ind(P, C, axis=0, equal_var=False).pvalue
    p = np.where(np.isfinite(p), p, 1.0)
    return int(np.sum(false_discovery_control(p) < fdr))
