"""Per-cell shift hints: how cells like this one moved under a perturbation in training.

A perturbation's mean shift (:class:`envs.perturbation_features.ShiftHints`) is the same for every
cell, but responses depend on the cell's state: interferon moves a monocyte elsewhere than a T
cell. The training OT pairs say how each paired control cell moved (its partners' mean
displacement, by the pairs' weights). :class:`StateHints` hands a cell the weighted mean
displacement of the ``k`` paired control cells nearest to it in latent space (a k-NN regression
of the OT displacement field), so the guide steers each cell by how its neighbours responded.
Displacements, not target positions, are averaged: a cell type never paired in training (a
held-out group) borrows the response of its nearest paired cells without being turned into them.

A paired cell at exactly the queried state is left out (leave-one-out): an episode that starts
at a paired control cell never reads its own partner, which is the target it is rewarded for
reaching, so a start cell seen in training gets about the hint a new one would.

Only perturbations with training pairs have per-cell hints; others keep their mean shift.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

__all__ = ["DEFAULT_NEIGHBOURS", "SAME_STATE", "StateHints"]

#: Neighbours averaged, chosen on the synthetic default only (``benchmarks/scripted_controllers.py``:
#: the guide's return by k, and the k-NN start-state map's, best at 5 to 20; 20 averages more noise).
DEFAULT_NEIGHBOURS = 20
SAME_STATE = 1e-9  # exact latent distance under which a paired cell counts as the queried cell itself


class _Field:
    """One perturbation's paired control cells and their mean displacements."""

    def __init__(self, latent: np.ndarray, pairs: np.ndarray, neighbours: int):
        start, target, weight = pairs[:, 0].astype(int), pairs[:, 1].astype(int), pairs[:, 2].astype(np.float64)
        self.rows, inverse = np.unique(start, return_inverse=True)
        self.weight = np.bincount(inverse, weights=weight)
        moved = latent[target].astype(np.float64) - latent[start].astype(np.float64)
        self.displacement = np.stack([np.bincount(inverse, weights=weight * moved[:, j], minlength=len(self.rows))
                                      for j in range(latent.shape[1])], axis=1) / self.weight[:, None]
        self.states = latent[self.rows].astype(np.float64)
        self.k = min(neighbours, len(self.rows))
        self.index = NearestNeighbors(n_neighbors=min(self.k + 1, len(self.rows))).fit(self.states)

    def at(self, states: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=np.float64)
        _, neighbour = self.index.kneighbors(states)
        # exact distances: a brute-force search's own distance is not exactly 0 (expanded-norm rounding)
        own = np.linalg.norm(self.states[neighbour] - states[:, None, :], axis=2) <= SAME_STATE
        # keep the first k neighbours that are not the queried cell itself
        keep = (~own) & (np.cumsum(~own, axis=1) <= self.k)
        weight = np.where(keep, self.weight[neighbour], 0.0)
        total = weight.sum(axis=1)
        hint = np.einsum("nk,nkd->nd", weight, self.displacement[neighbour]) / np.maximum(total, 1e-300)[:, None]
        return np.where(total[:, None] > 0, hint, fallback[None, :])  # no other paired cell: the mean shift


class StateHints:
    """Per-cell hints of the training perturbations, from the k-NN of their OT displacements.

    Parameters
    ----------
    latent
        Latent cells (rows indexed by the pairs).
    pairs
        Training perturbation -> ``(k, 3)`` ``[start row, target row, weight]``.
    neighbours
        Paired control cells averaged per hint (:data:`DEFAULT_NEIGHBOURS`).
    """

    def __init__(self, latent: np.ndarray, pairs: dict[str, np.ndarray], *, neighbours: int = DEFAULT_NEIGHBOURS):
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}.")
        self.neighbours = neighbours
        self._fields = {str(name): _Field(latent, p, neighbours) for name, p in pairs.items() if len(p)}

    def covers(self, perturbation: str) -> bool:
        """Whether ``perturbation`` has per-cell hints (it has training pairs)."""
        return str(perturbation) in self._fields

    def at(self, perturbation: str, states: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Hints (cells x d) for cells at ``states``; ``fallback`` (the mean shift) where there are none."""
        field = self._fields.get(str(perturbation))
        states = np.atleast_2d(np.asarray(states, dtype=np.float64))
        if field is None:
            return np.broadcast_to(np.asarray(fallback, dtype=np.float64), states.shape).copy()
        return field.at(states, np.asarray(fallback, dtype=np.float64))
