"""Perturbation features that let an unseen perturbation be expressed.

For a knockdown of a gene in the panel, the feature is the gene's knockdown direction in latent
space, ``-components[:, g]`` normalized: it needs no perturbed cells, so it exists for genes never
perturbed in training. Perturbations that are not panel genes (cytokines, genes outside the panel)
fall back to a one-hot id over the training perturbations of that kind; an unseen one of those is
all zeros (expressible, but carries no information).

Layout: ``[direction (n_latent), in_panel flag (1), one-hot over fallback perturbations (m)]``.
:class:`ShiftHints` adds what the training data say about each perturbation's mean shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.hint_calibration import HintShrinkage, RidgeFit, hint_shrinkage, ridge_fit
from envs.hint_calibration import self_effect as _self_effect

__all__ = ["PerturbationFeaturizer", "ShiftHints"]


class PerturbationFeaturizer:
    """Maps perturbation names to fixed-length feature vectors in ``[-1, 1]``."""

    def __init__(self, components: np.ndarray, feature_names: Sequence[str], training_perturbations: Sequence[str],
                 *, shared_rows: Sequence[int] | None = None):
        self.components = np.asarray(components, dtype=np.float64)
        # basis rows every gene loads on (cell PCs, response directions); None: all rows. A target-gene
        # axis row belongs to one gene: for a gene never perturbed in training it is an input the policy
        # never saw, whose untrained weights would push cells anywhere.
        self.shared_rows = None if shared_rows is None else np.asarray(sorted(shared_rows), dtype=int)
        self.gene_index = {str(name): i for i, name in enumerate(feature_names)}
        self.fallback = sorted(str(p) for p in training_perturbations if str(p) not in self.gene_index)

    @property
    def dim(self) -> int:
        return self.components.shape[0] + 1 + len(self.fallback)

    def own_axis(self, perturbation: str) -> np.ndarray:
        """The part of a panel gene's knockdown direction that lies on the basis rows left out (its own target-gene axis).

        Zeros for other perturbations, or when no rows are left out.
        """
        out = np.zeros(self.components.shape[0])
        gene = self.gene_index.get(str(perturbation))
        if gene is None or self.shared_rows is None:
            return out
        own = ~np.isin(np.arange(len(out)), self.shared_rows)
        out[own] = -self.components[own, gene]
        return out

    def __call__(self, perturbation: str) -> np.ndarray:
        """Feature vector (float32) of one perturbation."""
        n_latent = self.components.shape[0]
        feature = np.zeros(self.dim, dtype=np.float32)
        gene = self.gene_index.get(str(perturbation))
        if gene is not None:
            direction = -self.components[:, gene]
            if self.shared_rows is not None:
                direction = np.where(np.isin(np.arange(n_latent), self.shared_rows), direction, 0.0)
            norm = np.linalg.norm(direction)
            if norm > 0:
                feature[:n_latent] = direction / norm
            feature[n_latent] = 1.0
        elif str(perturbation) in self.fallback:
            feature[n_latent + 1 + self.fallback.index(str(perturbation))] = 1.0
        return feature


class ShiftHints:
    """Where each perturbation moves cells on average, in latent units: a hint the policy observes.

    Learning a perturbation's mean shift from the reward alone is slow (every episode's target is one
    random paired cell), and a policy that does not learn it scores no better than the average shift
    over perturbations. The hint hands it over from the training data: for a training perturbation,
    the mean displacement of its OT pairs (paired target minus start, with the pairs' weights, so
    within covariates when the pairs are); for any other perturbation, a ridge regression of those
    displacements on the perturbations' features (:class:`PerturbationFeaturizer`), which for a
    held-out panel gene extrapolates from its loadings on the basis rows all genes share, plus the
    knockdown's effect on the gene's own axis at the strength the training knockdowns showed on
    theirs (one coefficient shared by all genes: a knocked-down gene's own expression falls, which no
    other gene's features can say); a perturbation with no features at all gets the average shift.
    With ``calibrate``, the ridge's deviation from the average and the self-effect are each scaled by
    a factor in ``[0, 1]`` chosen by leaving out each training panel gene in turn
    (:func:`envs.hint_calibration.hint_shrinkage`), so an unseen perturbation's shift is not
    inflated by a noisy extrapolation. The policy still learns the state-dependent rest from the
    paired targets.

    Parameters
    ----------
    latent
        Latent cells (rows indexed by the pairs).
    pairs
        Training perturbation -> ``(k, 3)`` ``[start row, target row, weight]``.
    featurizer
        Features the regression for other perturbations reads.
    alpha
        Ridge penalty.
    self_effect
        Add the knockdown self-effect (off for datasets prepared before it: their policies never saw it).
    calibrate
        Shrink the extrapolated parts of an unseen perturbation's hint (off for datasets prepared
        before it: their runs keep the hints they were trained and scored with).
    """

    def __init__(self, latent: np.ndarray, pairs: dict[str, np.ndarray], featurizer: PerturbationFeaturizer,
                 *, alpha: float = 1.0, self_effect: bool = True, calibrate: bool = False):
        self.featurizer = featurizer
        self.known = {
            name: np.average(latent[p[:, 1].astype(int)] - latent[p[:, 0].astype(int)], axis=0, weights=p[:, 2])
            for name, p in pairs.items() if len(p)
        }
        names = sorted(self.known)
        dim = latent.shape[1]
        self.shrinkage = HintShrinkage()
        if not names:
            self._fit = RidgeFit(np.zeros(dim), np.zeros(featurizer.dim), np.zeros((featurizer.dim, dim)))
            self.self_effect = 0.0
            return
        features = np.stack([featurizer(n) for n in names]).astype(np.float64)
        shifts = np.stack([self.known[n] for n in names])
        self._fit = ridge_fit(features, shifts, alpha)
        own = np.stack([featurizer.own_axis(n) for n in names])
        self.self_effect = _self_effect(features, shifts, own, alpha) if self_effect else 0.0
        if calibrate:
            expressible = np.array([n in featurizer.gene_index for n in names])
            self.shrinkage = hint_shrinkage(features, shifts, own, expressible, alpha, with_self_effect=self_effect)

    def __call__(self, perturbation: str) -> np.ndarray:
        """The hint (float32, latent units) of one perturbation, seen or not."""
        name = str(perturbation)
        if name in self.known:
            return self.known[name].astype(np.float32)
        feature = self.featurizer(name).astype(np.float64)
        if not feature.any():  # nothing is known about it: the average shift, not an extrapolation from zero
            return self._fit.target_mean.astype(np.float32)
        shrink = self.shrinkage
        shift = self._fit.target_mean + shrink.ridge * self._fit.deviation(feature)
        own = self.featurizer.own_axis(name)
        return (shift + shrink.self_effect * self.self_effect * own).astype(np.float32)
