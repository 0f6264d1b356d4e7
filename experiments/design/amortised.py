"""Training targets for the RL designer on a run: sets moving a second group of the run's start cells.

The amortised designer learns on many targets whose answer is known. On a run there are no such
targets, so they are made: a random set of 1..k library members, applied to *other* start cells
than the design's (a second seeded subsample of the same start population), is one training
target. The true set is then not an exact copy of the target (other cells), as in a real query.

Training runs on a cheap stand-in of the run's forward model (:class:`AdditiveSurrogate`): each
member's own per-cell hint at the start cells, computed once, and a set's hint the sum of its
members'. The run's forward model composes a set sequentially (B's field where A left each cell),
a k-NN query per candidate: tens of milliseconds, too slow for the hundred thousand env steps of a
training. Only the training uses the stand-in; every set proposed at query time is scored by the
run's own forward model, so the ranking a user reads is the run's.

A member's features are its mean-shift hint in latent space (what it does alone: the observed
training mean shift for a seen member, ridge + self-effect for an unseen panel gene).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.design.env_problem import ObjectiveProblem
from experiments.design.objective import DesignObjective, ForwardModel

__all__ = ["DEFAULT_TRAINING_TARGETS", "AdditiveSurrogate", "member_features", "training_problems"]

DEFAULT_TRAINING_TARGETS = 512


def member_features(model: ForwardModel, library: Sequence[str]) -> np.ndarray:
    """Each member's mean-shift hint (members x d)."""
    return np.stack([model.mean_shift(m) for m in library])


class AdditiveSurrogate:
    """A forward model's start cells moved by the sum of the members' own per-cell hints (computed once each)."""

    def __init__(self, model: ForwardModel, library: Sequence[str]):
        self.start, self.n_latent = model.start, model.n_latent
        self._index = {m: i for i, m in enumerate(library)}
        self._single = np.stack([model.hints([m]) for m in library])  # members x cells x d

    def predicted(self, members: Sequence[str]) -> np.ndarray:
        """Predicted cells (start cells x d) of the set."""
        rows = [self._index[m] for m in members]
        return self.start + (self._single[rows].sum(axis=0) if rows else 0.0)

    def clear_cache(self) -> None:
        """Nothing grows (the members' hints are fixed)."""


def training_problems(model: ForwardModel, library: Sequence[str], *, max_size: int, n_targets: int = DEFAULT_TRAINING_TARGETS,
                      effort: float = 0.0, group: tuple[str, str] | None = None,
                      seed: int = 0) -> list[ObjectiveProblem]:
    """``n_targets`` design problems (on the additive stand-in) whose targets are random sets moving other start cells."""
    from experiments.prediction.predict import select_start_rows

    ds = model.dataset
    rng = np.random.default_rng([seed, 7])
    others = select_start_rows(ds, group=group, n_cells=len(model.start_rows), seed=seed + 1)
    surrogate = AdditiveSurrogate(model, library)
    targets = AdditiveSurrogate(ForwardModel(ds, model.env_config, others), library)
    problems = []
    for _ in range(n_targets):
        size = int(rng.integers(1, max_size + 1))
        members = sorted(rng.choice(len(library), size=size, replace=False).tolist())
        cells = targets.predicted([library[i] for i in members])
        problems.append(ObjectiveProblem(DesignObjective(surrogate, target_latent=cells, effort=effort), library))
    return problems
