"""Perturbation features that let an unseen perturbation be expressed.

For a knockdown of a gene in the panel, the feature is the gene's knockdown direction in latent
space, ``-components[:, g]`` normalized: it needs no perturbed cells, so it exists for genes never
perturbed in training. Perturbations that are not panel genes (cytokines, genes outside the panel)
fall back to a one-hot id over the training perturbations of that kind; an unseen one of those is
all zeros (expressible, but carries no information).

Layout: ``[direction (n_latent), in_panel flag (1), one-hot over fallback perturbations (m)]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PerturbationFeaturizer"]


class PerturbationFeaturizer:
    """Maps perturbation names to fixed-length feature vectors in ``[-1, 1]``."""

    def __init__(self, components: np.ndarray, feature_names: Sequence[str], training_perturbations: Sequence[str]):
        self.components = np.asarray(components, dtype=np.float64)
        self.gene_index = {str(name): i for i, name in enumerate(feature_names)}
        self.fallback = sorted(str(p) for p in training_perturbations if str(p) not in self.gene_index)

    @property
    def dim(self) -> int:
        return self.components.shape[0] + 1 + len(self.fallback)

    def __call__(self, perturbation: str) -> np.ndarray:
        """Feature vector (float32) of one perturbation."""
        n_latent = self.components.shape[0]
        feature = np.zeros(self.dim, dtype=np.float32)
        gene = self.gene_index.get(str(perturbation))
        if gene is not None:
            direction = -self.components[:, gene]
            norm = np.linalg.norm(direction)
            if norm > 0:
                feature[:n_latent] = direction / norm
            feature[n_latent] = 1.0
        elif str(perturbation) in self.fallback:
            feature[n_latent + 1 + self.fallback.index(str(perturbation))] = 1.0
        return feature
