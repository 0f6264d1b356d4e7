"""The run as a vectorised forward model of perturbation sets, and the design objective.

Forward model. A set's predicted population is the run's start cells ``Z`` (a seeded subsample,
256 by default) moved by the set's per-cell hint, in latent space: ``Z + h_S(Z)``. The hint is
the one the run's guide steers toward (:meth:`envs.dynamics.CellStateDynamics.features_at`): a
member's own per-cell k-NN hint where it has training pairs (shrunk toward its mean shift out of
range), its mean-shift hint otherwise (ridge + self-effect for an unseen panel gene), and for a set
never observed its members' hints composed as the run's dataset says (:mod:`envs.set_hints`,
sequential by default). That is where the guide takes the cells; the policy's correction and the
landscape's noise are not part of it (a rollout per candidate would cost an env loop each).

Objective. ``objective(S) = distance(S) + effort * |S|`` with, for a target given as cells, the
E-distance between the predicted and the target's latent cells (a subsample of 256 by default) in
the convention of :func:`experiments.evaluation.metrics.distances.e_distance`::

    E(P, T) = 2 mean_ij |p_i - t_j| - mean_ij |p_i - p_j| - mean_ij |t_i - t_j|

(Euclidean norms, not squared; V-statistic means over all pairs, ``i = j`` included; the squared
energy distance), computed here in batches of candidate sets. For a signature target
(``GENE:up,GENE:down``), the distance is the root mean square, over the signature genes, of the
decoded mean shift's error against the signature: ``delta_g - s_g * tau_g`` with ``s_g = +-1`` and
``tau_g`` the largest absolute mean change of gene ``g`` among the run's training perturbations
(as far as the data ever moved that gene, in the direction asked; doing nothing scores
``rms(tau)``, never 0).

Every set the forward model scores is one *evaluation*; a set asked for again is answered from
the cache and not counted again, so designers that revisit sets pay once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset
from experiments.design.errors import DesignError

__all__ = ["DEFAULT_N_START", "DEFAULT_N_TARGET", "CandidateSet", "DesignObjective", "ForwardModel", "Score",
           "e_distance_batch", "signature_scale"]

#: Start cells the forward model moves (a seeded subsample) and target cells it is compared with.
DEFAULT_N_START = 256
DEFAULT_N_TARGET = 256
#: Floats of one batch of pairwise distances (candidates x cells x cells): bounds the memory of a batch.
_BATCH_FLOATS = 8_000_000
#: Sets whose per-cell hints the forward model keeps (256 cells x 8 dims: about 16 KB each).
_CACHED_HINTS = 20_000

CandidateSet = tuple[str, ...]


def e_distance_batch(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """E-distance of each predicted cloud to one target cloud, in :func:`~experiments.evaluation.metrics.distances.e_distance`'s convention.

    Parameters
    ----------
    predicted
        Candidate clouds, (candidates x n x d).
    target
        The target cloud, (m x d).

    Returns
    -------
    (candidates,) ``2 mean|p - t| - mean|p - p'| - mean|t - t'|`` (Euclidean, V-statistic), clipped at 0.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if predicted.ndim != 3 or target.ndim != 2 or predicted.shape[2] != target.shape[1]:
        raise ValueError(f"predicted must be (candidates, n, d) and target (m, d); got {predicted.shape} and "
                         f"{target.shape}.")
    # centred on the target's mean: distances unchanged, less cancellation in the matmul form
    centre = target.mean(axis=0)
    predicted, target = predicted - centre, target - centre
    n, m = predicted.shape[1], target.shape[0]
    t_sq = np.sum(target**2, axis=1)
    yy = _mean_distance(target[None], target, t_sq)[0]
    out = np.empty(len(predicted))
    step = max(1, _BATCH_FLOATS // max(n * max(n, m), 1))
    for start in range(0, len(predicted), step):
        block = predicted[start : start + step]
        xy = _mean_distance(block, target, t_sq)
        xx = np.array([_mean_distance(p[None], p, None)[0] for p in block]) if n * n * len(block) > _BATCH_FLOATS \
            else _self_mean_distance(block)
        out[start : start + step] = 2.0 * xy - xx - yy
    return np.maximum(out, 0.0)


def _mean_distance(clouds: np.ndarray, other: np.ndarray, other_sq: np.ndarray | None) -> np.ndarray:
    """Mean Euclidean distance between each cloud's points (b x n x d) and ``other``'s (m x d)."""
    other_sq = np.sum(other**2, axis=1) if other_sq is None else other_sq
    sq = np.sum(clouds**2, axis=2)[:, :, None] + other_sq[None, None, :] - 2.0 * np.einsum("bnd,md->bnm", clouds, other)
    return np.sqrt(np.maximum(sq, 0.0)).mean(axis=(1, 2))


def _self_mean_distance(clouds: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance between each cloud's points and its own (b x n x d)."""
    norms = np.sum(clouds**2, axis=2)
    sq = norms[:, :, None] + norms[:, None, :] - 2.0 * np.einsum("bnd,bmd->bnm", clouds, clouds)
    return np.sqrt(np.maximum(sq, 0.0)).mean(axis=(1, 2))


class ForwardModel:
    """A run's dataset and env settings as the map set -> predicted latent cells (module docstring).

    Parameters
    ----------
    dataset
        The run's full prepared dataset.
    env_config
        The run's env settings (``Run.env_config``): they decide hints, neighbours and the start range.
    start_rows
        Rows of the start cells in ``dataset`` (:func:`experiments.prediction.predict.select_start_rows`).
    """

    def __init__(self, dataset: PreparedDataset, env_config: Mapping[str, Any] | None, start_rows: np.ndarray):
        from envs.perturbation_sets import set_syntax_of
        from experiments.evaluation.baselines import make_dynamics

        try:
            self.dynamics = make_dynamics(dataset, dict(env_config or {}))
        except (TypeError, ValueError) as exc:
            raise DesignError(f"The run's env settings {dict(env_config or {})} do not fit the dynamics: {exc}") from exc
        if self.dynamics.hints is None:
            raise DesignError("The run's dataset has no shift hints (prepared with shift_hint off): the design's "
                              "forward model moves cells by them. Prepare the data again with hints on.")
        self.dataset = dataset
        self.env_config = dict(env_config or {})
        self.sets = set_syntax_of(dataset.meta, dataset.control_value)
        self.start_rows = np.asarray(start_rows)
        self.start = dataset.latent[self.start_rows].astype(np.float64)
        self.n_latent = int(dataset.n_latent)
        self._hints: OrderedDict[frozenset[str], np.ndarray] = OrderedDict()

    def label(self, members: Sequence[str]) -> str:
        """The perturbation label of a set: members joined by the run's separator (one member: itself)."""
        members = [str(m) for m in members]
        if len(members) == 1:
            return members[0]
        if self.sets.separator is None:
            raise DesignError("The run's data were prepared without sets (set separator 'none'), so it cannot "
                              "compose members: design with --max-size 1, or prepare with a set separator.")
        return self.sets.separator.join(members)

    def hints(self, members: Sequence[str]) -> np.ndarray:
        """Per-cell hint (start cells x d) of the set ``members`` (order-free, cached: the latest ones kept)."""
        key = frozenset(map(str, members))
        if key in self._hints:
            self._hints.move_to_end(key)
            return self._hints[key]
        if not key:
            hint = np.zeros_like(self.start)
        else:
            hint = self.dynamics.features_at(self.label(sorted(key)), self.start)[:, -self.n_latent :].astype(np.float64)
        self._hints[key] = hint
        if len(self._hints) > _CACHED_HINTS:  # an RL designer's training visits many sets: bound the memory
            self._hints.popitem(last=False)
        return hint

    def clear_cache(self) -> None:
        """Forget the hints computed so far (a benchmark times each designer from a cold cache)."""
        self._hints.clear()

    def predicted(self, members: Sequence[str]) -> np.ndarray:
        """Predicted latent cells (start cells x d) of the set: the start cells moved by its hint."""
        return self.start + self.hints(members)

    def mean_shift(self, member: str) -> np.ndarray:
        """A member's mean-shift hint (d,): its observed training mean shift if seen, ridge + self-effect if not."""
        return np.asarray(self.dynamics.hints(str(member)), dtype=np.float64)

    def decode_shift(self, shift: np.ndarray) -> np.ndarray:
        """A latent shift (..., d) as a change per gene of the run's gene space."""
        space = self.dataset.latent_space
        return (np.asarray(shift, dtype=np.float64) * space.scale) @ space.components


@dataclass(frozen=True)
class Score:
    """One candidate set's score: ``objective = distance + effort``."""

    members: CandidateSet
    objective: float
    distance: float
    effort: float


class DesignObjective:
    """The objective of one target, shared by every designer, with its evaluation count and budget.

    Parameters
    ----------
    model
        The forward model.
    target_latent
        Target cells in the run's latent space (m x d), or ``None`` with ``signature``.
    signature
        Gene -> +1 (up) / -1 (down), for a signature target.
    effort
        Cost per member (added to the distance).
    budget
        Most forward-model evaluations (``None``: no limit).
    """

    def __init__(self, model: ForwardModel, *, target_latent: np.ndarray | None = None,
                 signature: Mapping[str, int] | None = None, effort: float = 0.0, budget: int | None = None):
        if (target_latent is None) == (signature is None):
            raise DesignError("A design target is either cells or a gene signature, not both or neither.")
        if effort < 0:
            raise DesignError(f"--effort must be >= 0, got {effort}.")
        if budget is not None and budget < 1:
            raise DesignError(f"--budget must be >= 1, got {budget}.")
        self.model, self.effort, self.budget = model, float(effort), budget
        self.target = None if target_latent is None else np.asarray(target_latent, dtype=np.float64)
        self.signature = None
        if signature is not None:
            genes = [str(g) for g in model.dataset.latent_space.feature_names]
            index = {g: i for i, g in enumerate(genes)}
            self.signature = (np.array([index[g] for g in signature]), np.array([signature[g] for g in signature],
                                                                               dtype=np.float64))
            self.signature_scale = signature_scale(model.dataset, self.signature[0])
        self.evaluations = 0
        self._cache: dict[frozenset[str], Score] = {}

    @property
    def remaining(self) -> int | None:
        """Evaluations left in the budget (``None``: no limit)."""
        return None if self.budget is None else max(self.budget - self.evaluations, 0)

    def is_scored(self, members: Sequence[str]) -> bool:
        return frozenset(members) in self._cache

    def score(self, sets: Sequence[Sequence[str]]) -> list[Score]:
        """Scores of ``sets`` (one forward-model evaluation per set not scored before).

        Raises :class:`DesignError` if the new sets would exceed the budget (designers trim first).
        """
        new = list(dict.fromkeys(frozenset(map(str, s)) for s in sets if frozenset(map(str, s)) not in self._cache))
        if self.remaining is not None and len(new) > self.remaining:
            raise DesignError(f"Scoring {len(new)} new sets would exceed the budget ({self.remaining} evaluations "
                              "left).")
        if new:
            distances = self._distances([sorted(s) for s in new])
            for key, distance in zip(new, distances):
                effort = self.effort * len(key)
                self._cache[key] = Score(tuple(sorted(key)), float(distance + effort), float(distance), float(effort))
            self.evaluations += len(new)
        return [self._cache[frozenset(map(str, s))] for s in sets]

    def baseline(self) -> Score:
        """The empty set (no perturbation: the start cells as they are); not counted as an evaluation."""
        distance = float(self._distances([()])[0])
        return Score((), distance, distance, 0.0)

    def _distances(self, sets: Sequence[Sequence[str]]) -> np.ndarray:
        if self.signature is not None:
            genes, signs = self.signature
            shifts = np.stack([self.model.hints(s).mean(axis=0) for s in sets])
            delta = self.model.decode_shift(shifts)[:, genes]
            return np.sqrt(np.mean((delta - signs * self.signature_scale) ** 2, axis=1))
        predicted = np.stack([self.model.predicted(s) for s in sets])
        return e_distance_batch(predicted, self.target)

    def ranked(self) -> list[Score]:
        """Every set scored so far, best (lowest objective) first; ties by size, then name."""
        return sorted(self._cache.values(), key=lambda s: (s.objective, len(s.members), s.members))


def signature_scale(dataset: PreparedDataset, genes: np.ndarray) -> np.ndarray:
    """``tau_g``: the largest absolute mean change of each gene among the training perturbations (module docstring)."""
    from envs.latent_basis import response_deltas

    train = np.asarray(dataset.split.train, dtype=bool)
    deltas = response_deltas(dataset.expression[np.flatnonzero(train)], np.asarray(dataset.labels)[train],
                             dataset.control_value)
    if len(deltas) == 0:
        raise DesignError("The run's training data have no perturbed cells to scale a signature by.")
    return np.abs(deltas[:, genes]).max(axis=0)
