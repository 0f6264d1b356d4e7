"""A design objective as the design env's problem (:class:`envs.design_env.DesignProblem`).

The env lives in ``envs/`` and knows no pipeline; this adapter hands it a run's forward model and
objective for one target given as cells. Every set the env asks about is scored through the
objective, so an episode's evaluations are counted like any designer's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.design.errors import DesignError
from experiments.design.objective import DesignObjective

__all__ = ["ObjectiveProblem"]


class ObjectiveProblem:
    """One target's :class:`~experiments.design.objective.DesignObjective` over ``library``, as the env needs it."""

    def __init__(self, objective: DesignObjective, library: Sequence[str]):
        if objective.target is None:
            raise DesignError("The design env observes the gap to the target's cells: give a target as cells, not "
                              "a signature.")
        self.objective = objective
        self.library = [str(m) for m in library]
        self.n_latent = objective.model.n_latent
        self.effort = objective.effort
        self.target_mean = objective.target.mean(axis=0)
        self._empty = objective.baseline().distance

    def predicted_mean(self, members: Sequence[str]) -> np.ndarray:
        """Mean of the set's predicted latent cells (the empty set: the start cells)."""
        return self.objective.model.predicted(list(members)).mean(axis=0)

    def distance(self, members: Sequence[str]) -> float:
        """The set's distance to the target (one evaluation the first time a set is asked about)."""
        if not members:
            return self._empty
        return self.objective.score([list(members)])[0].distance
