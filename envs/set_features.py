"""Features of perturbation sets: a permutation-invariant encoding of their members' features.

:class:`SetFeaturizer` is :class:`envs.perturbation_features.PerturbationFeaturizer` read member by
member: a set's feature vector is the mean of its members' vectors, so it does not depend on the
order members are written in, it stays in ``[-1, 1]`` (the observation box) and a single keeps
exactly the vector it had before sets existed (the mean of one). The one-hot ids of non-panel
perturbations are given to *members*: every member of a training label (a single, or a member of
a training set such as ``CBL`` in ``CBL+CNN1``) gets one, so an observed set shares its members'
ids with their singles and a new set of seen members is expressible. The set's size is still
visible to the policy: its shift hint (:mod:`envs.set_hints`) is the composition of its members'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.perturbation_features import PerturbationFeaturizer
from envs.perturbation_sets import SetSyntax, members_of_all

__all__ = ["SetFeaturizer", "unexpressible_members"]


class SetFeaturizer(PerturbationFeaturizer):
    """:class:`~envs.perturbation_features.PerturbationFeaturizer` for labels that may be sets.

    Parameters
    ----------
    components, feature_names, shared_rows
        As :class:`~envs.perturbation_features.PerturbationFeaturizer`.
    training_perturbations
        Training labels (singles and sets); their members get the fallback ids.
    sets
        How labels name sets (:class:`envs.perturbation_sets.SetSyntax`).
    """

    def __init__(self, components: np.ndarray, feature_names: Sequence[str], training_perturbations: Sequence[str],
                 *, sets: SetSyntax, shared_rows: Sequence[int] | None = None):
        super().__init__(components, feature_names, members_of_all(training_perturbations, sets),
                         shared_rows=shared_rows)
        self.sets = sets

    def members(self, perturbation: str) -> tuple[str, ...]:
        """Members of ``perturbation`` (itself for a single or the control)."""
        return self.sets.members(perturbation) or (str(perturbation),)

    def own_axis(self, perturbation: str) -> np.ndarray:
        """Sum of the members' own target-gene axes (each activated or knocked-down gene moves its own)."""
        return np.sum([super(SetFeaturizer, self).own_axis(m) for m in self.members(perturbation)], axis=0)

    def __call__(self, perturbation: str) -> np.ndarray:
        """Feature vector (float32): the member's for a single, the mean of the members' for a set."""
        members = self.members(perturbation)
        if len(members) == 1:
            return super().__call__(members[0])
        return np.mean([super(SetFeaturizer, self).__call__(m) for m in members], axis=0).astype(np.float32)


def unexpressible_members(featurizer: PerturbationFeaturizer, perturbation: str) -> list[str]:
    """Members of ``perturbation`` whose features are all zero (neither a panel gene nor a training member)."""
    members = featurizer.members(perturbation) if isinstance(featurizer, SetFeaturizer) else (str(perturbation),)
    base = super(SetFeaturizer, featurizer).__call__ if isinstance(featurizer, SetFeaturizer) else featurizer
    return [m for m in members if not np.any(base(m))]
