"""How far to trust the regressed shift hint of an unseen perturbation: leave-one-perturbation-out shrinkage.

The hint of a perturbation with no training cells (:class:`envs.perturbation_features.ShiftHints`)
is the average training shift plus two extrapolations: a ridge regression's deviation from that
average (from the perturbation's features) and, for a panel-gene knockdown, the self-effect along
the gene's own axis. With a few dozen training perturbations both are noisy, and taken at face
value they inflate the predicted fold changes. Each part therefore gets a factor in ``[0, 1]``
chosen from the training perturbations alone: every training perturbation that would be
expressed by its features if it were unseen (a panel gene) is left out in turn, both parts are
refitted on the others (the self-effect by its own leave-one-out within them), and the two
factors are those that bring the left-out perturbations' predicted shifts closest to their
measured ones (least squares over latent dimensions; the basis is orthonormal, so this is the
gene-space squared error within it). Held-out cells never enter.

The factors only shrink (at most 1): a fit asking for more than the regression says is read as
noise of a few left-out perturbations, not as a reason to extrapolate further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

__all__ = ["RidgeFit", "ridge_fit", "self_effect", "HintShrinkage", "hint_shrinkage"]


@dataclass(frozen=True)
class RidgeFit:
    """A ridge regression with an unpenalized intercept: ``target_mean + (feature - feature_mean) @ weights``."""

    target_mean: np.ndarray
    feature_mean: np.ndarray
    weights: np.ndarray

    def deviation(self, feature: np.ndarray) -> np.ndarray:
        """The regression's deviation from the target mean for ``feature`` (the part calibration scales)."""
        return (np.asarray(feature, dtype=np.float64) - self.feature_mean) @ self.weights


def ridge_fit(features: np.ndarray, targets: np.ndarray, alpha: float) -> RidgeFit:
    """Ridge regression of ``targets`` (n, d) on ``features`` (n, f) with penalty ``alpha``."""
    target_mean, feature_mean = targets.mean(axis=0), features.mean(axis=0)
    centred = features - feature_mean
    gram = centred.T @ centred + alpha * np.eye(features.shape[1])
    return RidgeFit(target_mean, feature_mean, np.linalg.solve(gram, centred.T @ (targets - target_mean)))


def self_effect(features: np.ndarray, shifts: np.ndarray, own: np.ndarray, alpha: float) -> float:
    """The knockdown self-effect: one coefficient on the own-axis loading, leave-one-out.

    For every row with an own axis (a panel-gene knockdown), a regression fitted without it
    leaves a residual; the coefficient is the residuals' summed projection on their own axes over
    the axes' summed squared norm (left out, so the fit cannot absorb the effect). 0 when fewer
    than two rows or no own axis.

    Parameters
    ----------
    features, shifts, own
        Per training perturbation: features (n, f), measured shift (n, d), own-axis loading (n, d).
    alpha
        Ridge penalty.
    """
    n = len(features)
    gained = norm = 0.0
    for i in np.flatnonzero(own.any(axis=1)) if n > 1 else []:
        rest = np.arange(n) != i
        fit = ridge_fit(features[rest], shifts[rest], alpha)
        residual = shifts[i] - fit.target_mean - fit.deviation(features[i])
        gained += float(residual @ own[i])
        norm += float(own[i] @ own[i])
    return gained / norm if norm > 0 else 0.0


@dataclass(frozen=True)
class HintShrinkage:
    """Factors on the two extrapolated parts of an unseen perturbation's hint, and the evidence behind them.

    Attributes
    ----------
    ridge
        Factor on the ridge regression's deviation from the average shift.
    self_effect
        Factor on the knockdown self-effect.
    n_left_out
        Training perturbations left out to choose them (0: no evidence, both factors 1).
    """

    ridge: float = 1.0
    self_effect: float = 1.0
    n_left_out: int = 0


def hint_shrinkage(features: np.ndarray, shifts: np.ndarray, own: np.ndarray, expressible: np.ndarray,
                   alpha: float, *, with_self_effect: bool = True) -> HintShrinkage:
    """Choose the shrinkage of an unseen perturbation's hint by leaving out each expressible training perturbation.

    Parameters
    ----------
    features, shifts, own
        Per training perturbation: features (n, f), measured shift (n, d), own-axis loading (n, d).
    expressible
        (n,) bool: the perturbation would have features if it were unseen (a panel gene); the
        others would get the average shift, which has nothing to scale.
    alpha
        Ridge penalty (as the hint's).
    with_self_effect
        Whether the hint carries the self-effect (off: its factor stays 1 and is not fitted).

    Returns
    -------
    :class:`HintShrinkage`, both factors in ``[0, 1]``.
    """
    n = len(features)
    left_out = np.flatnonzero(np.asarray(expressible, dtype=bool)) if n > 1 else np.array([], dtype=int)
    if not len(left_out):
        return HintShrinkage()
    columns, targets = [], []
    for i in left_out:
        rest = np.arange(n) != i
        fit = ridge_fit(features[rest], shifts[rest], alpha)
        effect = self_effect(features[rest], shifts[rest], own[rest], alpha) if with_self_effect else 0.0
        columns.append(np.stack([fit.deviation(features[i]), effect * own[i]], axis=1))
        targets.append(shifts[i] - fit.target_mean)
    design, target = np.concatenate(columns), np.concatenate(targets)
    used = np.flatnonzero(np.abs(design).sum(axis=0) > 0)  # a part that is zero everywhere keeps factor 1
    factors = np.ones(2)
    if len(used):
        factors[used] = lsq_linear(design[:, used], target, bounds=(0.0, 1.0)).x
    return HintShrinkage(float(factors[0]), float(factors[1]), len(left_out))
