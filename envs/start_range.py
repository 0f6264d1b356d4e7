"""How far a start cell lies outside what the policy and the guide's neighbours learned from.

The learned correction was trained on episodes that start at *paired* training control cells (those
the OT plans matched with observed perturbed cells), and the guide's per-cell hint
(:mod:`envs.state_hints`) averages the displacements of the nearest of them. A start cell far from
every paired start state gets a correction the policy never trained for and a hint borrowed from
cells unlike it: both are extrapolations.

Score (training data only): the mean distance of a cell to its ``k`` nearest paired training start
states, divided by the same quantity's median over the paired start states themselves (each
leaving itself out, as :mod:`envs.state_hints` does). A cell among the paired starts scores about
1; a cell ``s`` times further from them than they are from each other scores ``s``.

Rule (:meth:`StartRange.trust`): a weight ``w`` that is 1 up to :data:`IN_RANGE`, 0 from
:data:`OUT_OF_RANGE` on, linear between. Out of range the prediction degrades toward what is known:

* the policy's correction is scaled by ``w`` (:func:`ranged_policy`): at ``w = 0`` a guided policy
  predicts what the guide predicts;
* the guide's per-cell hint is ``w * hint + (1 - w) * mean shift``: the k-NN displacement borrowed
  from far cells gives way to the perturbation's population mean shift. (What the cell's own group
  showed under other perturbations would come first, but a cell far from every paired start lies in
  no stratum with paired cells, so no shift of its group was observed: the mean shift is what is known.)

The constants were chosen on synthetic data only (``make_synthetic_perturbation_data(far_group=True)``
prepared at the defaults, ``benchmarks/start_range_constants.py``, ``docs/out_of_range.md``), never on
the shared real data: there (seed 0) 99.9% of the paired starts' own scores lie below 2.0 and every
never-paired control cell of the near group below 1.53, while the far group's control cells score
9.4 and more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from sklearn.neighbors import NearestNeighbors

from envs.state_hints import SAME_STATE  # one rule for "a paired start is the queried cell itself"

__all__ = ["IN_RANGE", "OUT_OF_RANGE", "RANGE_NEIGHBOURS", "StartRange", "ranged_policy"]

#: Paired start states averaged per score (a few: one close twin must not make a cell look typical).
RANGE_NEIGHBOURS = 5
#: Score up to which a start cell is in range (weight 1); chosen on synthetic data (module docstring).
IN_RANGE = 2.0
#: Score from which a start cell is out of range (weight 0); chosen on synthetic data (module docstring).
OUT_OF_RANGE = 4.0


class StartRange:
    """Out-of-range scores and trust weights of start cells, from the paired training start states.

    Parameters
    ----------
    latent
        Latent cells (rows indexed by the pairs).
    pairs
        Training perturbation -> ``(k, 3)`` ``[start row, target row, weight]``: the starts of every
        perturbation's pairs are the reference states.
    neighbours
        Paired start states averaged per score (:data:`RANGE_NEIGHBOURS`).
    in_range, out_of_range
        Scores where the weight leaves 1 and reaches 0 (:data:`IN_RANGE`, :data:`OUT_OF_RANGE`).
    """

    def __init__(self, latent: np.ndarray, pairs: Mapping[str, np.ndarray], *, neighbours: int = RANGE_NEIGHBOURS,
                 in_range: float = IN_RANGE, out_of_range: float = OUT_OF_RANGE):
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}.")
        if not 0.0 < in_range < out_of_range:
            raise ValueError(f"need 0 < in_range < out_of_range, got in_range={in_range}, out_of_range={out_of_range}.")
        rows = [p[:, 0].astype(int) for p in pairs.values() if len(p)]
        if not rows:
            raise ValueError("StartRange needs training pairs: no perturbation has any.")
        self.rows = np.unique(np.concatenate(rows))
        self.states = np.asarray(latent, dtype=np.float64)[self.rows]
        self.k = min(neighbours, max(len(self.rows) - 1, 1))
        self.in_range, self.out_of_range = float(in_range), float(out_of_range)
        self._index = NearestNeighbors(n_neighbors=min(self.k + 1, len(self.rows))).fit(self.states)
        own = float(np.median(self._distance(self.states)))  # the reference states' own typical spacing
        self.spacing = own if own > 0 else 1.0

    def _distance(self, states: np.ndarray) -> np.ndarray:
        """Mean distance to the ``k`` nearest reference states other than the queried state itself."""
        states = np.atleast_2d(np.asarray(states, dtype=np.float64))
        if len(states) == 0:
            return np.zeros(0)
        _, neighbour = self._index.kneighbors(states)
        # exact distances (a brute-force search's own distance is not exactly 0), the cell itself left out
        distance = np.linalg.norm(self.states[neighbour] - states[:, None, :], axis=2)
        keep = (distance > SAME_STATE) & (np.cumsum(distance > SAME_STATE, axis=1) <= self.k)
        return np.where(keep, distance, 0.0).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)

    def score(self, states: np.ndarray) -> np.ndarray:
        """Out-of-range score of cells at latent ``states`` (about 1 among the paired starts; larger is further out)."""
        return self._distance(states) / self.spacing

    def trust(self, score: np.ndarray) -> np.ndarray:
        """Weight of the learned parts for ``score``: 1 up to ``in_range``, 0 from ``out_of_range``, linear between."""
        score = np.asarray(score, dtype=np.float64)
        return np.clip((self.out_of_range - score) / (self.out_of_range - self.in_range), 0.0, 1.0)

    def weight(self, states: np.ndarray) -> np.ndarray:
        """:meth:`trust` of :meth:`score`: the weight of cells at ``states``."""
        return self.trust(self.score(states))

    def blend_hints(self, hints: np.ndarray, fallback: np.ndarray, states: np.ndarray | None = None, *,
                    weight: np.ndarray | None = None) -> np.ndarray:
        """Per-cell hints shrunk toward ``fallback`` (the mean shift) by each cell's weight; never beyond either.

        ``weight``: the cells' :meth:`weight`, when the caller has it already (else from ``states``).
        """
        w = (self.weight(states) if weight is None else np.asarray(weight, dtype=np.float64))[:, None]
        return w * np.asarray(hints, dtype=np.float64) + (1.0 - w) * np.asarray(fallback, dtype=np.float64)[None, :]


def ranged_policy(act: Callable[[np.ndarray], np.ndarray], start_range: StartRange,
                  n_latent: int) -> Callable[[np.ndarray], np.ndarray]:
    """``act`` with each cell's correction scaled by its start cell's weight (read off the observation).

    Observations hold ``[z, start, ...]`` (:meth:`envs.dynamics.CellStateDynamics.observe_features`),
    so the start state is ``obs[:, n_latent:2 * n_latent]``; weights are computed once per start.
    """
    cache: dict[bytes, np.ndarray] = {}

    def ranged(obs: np.ndarray) -> np.ndarray:
        starts = np.asarray(obs, dtype=np.float64)[:, n_latent : 2 * n_latent]
        key = starts.tobytes()
        if key not in cache:
            cache.clear()  # one rollout at a time: its starts stay the same over the horizon
            cache[key] = start_range.weight(starts)
        return np.asarray(act(obs), dtype=np.float64) * cache[key][:, None]

    ranged.obs_dim = getattr(act, "obs_dim", None)  # type: ignore[attr-defined]
    return ranged
