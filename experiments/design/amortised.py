"""Training targets for the RL designer on a run: sets the run's own forward model moves a second group of cells with.

The amortised designer learns on many targets whose answer is known. On a run there are no such
targets, so they are made: a random set of 1..k library members, applied by the forward model to
*other* start cells than the design's (a second seeded subsample of the same start population), is
one training target. The true set is then not an exact copy of the target (other cells), as in a
real query. A member's features are its mean-shift hint in latent space (what it does alone: the
observed training mean shift for a seen member, ridge + self-effect for an unseen panel gene).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.design.env_problem import ObjectiveProblem
from experiments.design.objective import DesignObjective, ForwardModel

__all__ = ["DEFAULT_TRAINING_TARGETS", "member_features", "training_problems"]

DEFAULT_TRAINING_TARGETS = 512


def member_features(model: ForwardModel, library: Sequence[str]) -> np.ndarray:
    """Each member's mean-shift hint (members x d)."""
    return np.stack([model.mean_shift(m) for m in library])


def training_problems(model: ForwardModel, library: Sequence[str], *, max_size: int, n_targets: int = DEFAULT_TRAINING_TARGETS,
                      effort: float = 0.0, group: tuple[str, str] | None = None,
                      seed: int = 0) -> list[ObjectiveProblem]:
    """``n_targets`` design problems whose targets are random sets applied to a second subsample of start cells."""
    from experiments.prediction.predict import select_start_rows

    ds = model.dataset
    rng = np.random.default_rng([seed, 7])
    others = select_start_rows(ds, group=group, n_cells=len(model.start_rows), seed=seed + 1)
    target_model = ForwardModel(ds, model.env_config, others)
    problems = []
    for _ in range(n_targets):
        size = int(rng.integers(1, max_size + 1))
        members = sorted(rng.choice(len(library), size=size, replace=False).tolist())
        cells = target_model.predicted([library[i] for i in members])
        problems.append(ObjectiveProblem(DesignObjective(model, target_latent=cells, effort=effort), library))
    return problems
