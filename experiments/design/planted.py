"""A planted design world: a library of pathway members with known synergy, for testing designers.

The design benchmarks need targets whose true set is known and a library large enough (500, 2,000)
that exhaustive search is expensive; the cell-level synthetic generators (``envs.synthetic_sets``)
have a handful of perturbations. This world plants the structure directly in a latent space, as
a forward model with the interface of :class:`experiments.design.objective.ForwardModel`, so every
designer and the objective (E-distance) run on it unchanged.

How it is planted (``structured=True``):

* Members belong to *pathways*; pathways come in pairs that are the two parallel branches of one
  *process* (redundant routes to one output). Library = ``processes x 2 branches x members``.
* Member ``i`` of process ``j`` has a strength ``s_i`` and an offset ``r_i``; its on-pathway effect
  is ``v_i = s_i (w_j + 0.5 r_i)`` with ``w_j`` a unit direction of process ``j``.
* Alone, a member moves cells only by its own small drift ``alpha * z_i`` (``z_i`` a random unit
  direction: the other branch compensates, as redundant pathways do). Members of one branch
  buffer each other (the branch's drift and effect are their members' mean).
* Once both branches of a process are hit, the process moves cells by ``beta`` times the sum of the
  two branches' effects (synergy).
* Features of member ``i`` (what a designer may read, as an annotation of a real library would
  tell): the process's embedding ``c_j`` (``w_j`` is a fixed linear map of it), the branch (0/1),
  and the on-pathway effect ``v_i``. They carry the structure of the effects and of the
  interactions (which members pair, and what a pair does), but not the solo drift: what a member
  does alone is no clue to what it does in a pair.

A target is the start population's distribution moved by one planted pair (one member of each
branch of one process), sampled afresh (other cells than the forward model's start cells). Greedy
search fails by construction: a pair's members alone move little, in directions unrelated to what
they do together, so the best single is no clue to the best pair.

``structured=False`` is the needle in a haystack: the same effects, but features drawn at random,
so nothing learned about some pairs says anything about others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PlantedForwardModel", "PlantedWorld", "make_planted_world", "planted_targets"]

ALPHA, BETA = 0.3, 1.0
#: Standard deviation of the cells around their state (latent units).
CELL_SPREAD = 0.5
_PROCESS_EMBEDDING = 6


@dataclass
class PlantedWorld:
    """Everything planted, truth included.

    Attributes
    ----------
    library
        Member names ``P{process}{a|b}_{member}``.
    features
        What a designer may read about each member (members x f).
    process, branch
        Each member's process and branch.
    effect, drift
        Each member's on-pathway effect ``v_i`` and solo drift ``alpha z_i`` (members x d).
    start
        The start cells (n x d).
    """

    library: list[str]
    features: np.ndarray
    process: np.ndarray
    branch: np.ndarray
    effect: np.ndarray
    drift: np.ndarray
    start: np.ndarray

    def shift(self, members: Sequence[str]) -> np.ndarray:
        """The planted mean shift (d,) of a set (module docstring)."""
        index = {m: i for i, m in enumerate(self.library)}
        rows = np.array([index[m] for m in members], dtype=int)
        out = np.zeros(self.start.shape[1])
        for j in np.unique(self.process[rows]):
            branches = [rows[(self.process[rows] == j) & (self.branch[rows] == b)] for b in (0, 1)]
            for hit in branches:
                if len(hit):
                    out += self.drift[hit].mean(axis=0)
            if all(len(hit) for hit in branches):
                out += BETA * sum(self.effect[hit].mean(axis=0) for hit in branches)
        return out


def make_planted_world(library_size: int = 500, members_per_branch: int = 10, n_latent: int = 8, n_cells: int = 64,
                       structured: bool = True, seed: int = 0) -> PlantedWorld:
    """A planted world of about ``library_size`` members (a multiple of ``2 * members_per_branch``)."""
    if library_size < 2 * members_per_branch:
        raise ValueError(f"library_size must be >= 2 * members_per_branch ({2 * members_per_branch}), got {library_size}.")
    rng = np.random.default_rng(seed)
    n_process = library_size // (2 * members_per_branch)
    embedding = rng.standard_normal((n_process, _PROCESS_EMBEDDING))
    directions = embedding @ rng.standard_normal((_PROCESS_EMBEDDING, n_latent))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    process = np.repeat(np.arange(n_process), 2 * members_per_branch)
    branch = np.tile(np.repeat([0, 1], members_per_branch), n_process)
    n = len(process)
    strength = rng.uniform(1.0, 2.5, size=n)
    offset = rng.standard_normal((n, n_latent)) / np.sqrt(n_latent)
    effect = strength[:, None] * (directions[process] + 0.5 * offset)
    solo = rng.standard_normal((n, n_latent))
    drift = ALPHA * solo / np.linalg.norm(solo, axis=1, keepdims=True)
    features = np.column_stack([embedding[process], branch, effect])
    if not structured:
        features = rng.standard_normal(features.shape)
    library = [f"P{p}{'ab'[b]}_{i % members_per_branch}" for i, (p, b) in enumerate(zip(process, branch))]
    start = CELL_SPREAD * rng.standard_normal((n_cells, n_latent))
    return PlantedWorld(library, features, process, branch, effect, drift, start)


def planted_targets(world: PlantedWorld, n: int, *, seed: int, exclude: Sequence[frozenset[str]] = ()
                    ) -> list[tuple[tuple[str, str], np.ndarray]]:
    """``n`` distinct planted pairs (not in ``exclude``) and their target cells (fresh cells moved by the pair)."""
    rng = np.random.default_rng(seed)
    excluded, out = set(exclude), []
    n_process = int(world.process.max()) + 1
    attempts = 0
    while len(out) < n and attempts < 100 * n:
        attempts += 1
        j = int(rng.integers(n_process))
        a = rng.choice(np.flatnonzero((world.process == j) & (world.branch == 0)))
        b = rng.choice(np.flatnonzero((world.process == j) & (world.branch == 1)))
        pair = tuple(sorted((world.library[a], world.library[b])))
        if frozenset(pair) in excluded:
            continue
        excluded.add(frozenset(pair))
        cells = CELL_SPREAD * rng.standard_normal(world.start.shape) + world.shift(pair)
        out.append((pair, cells))
    if len(out) < n:
        raise ValueError(f"Only {len(out)} distinct planted pairs are left for {n} targets: use a larger library.")
    return out


class PlantedForwardModel:
    """The planted world as a design forward model (the start cells moved by the set's planted shift)."""

    def __init__(self, world: PlantedWorld):
        self.world = world
        self.start = world.start
        self.n_latent = int(world.start.shape[1])

    def predicted(self, members: Sequence[str]) -> np.ndarray:
        """Predicted cells (start cells x d) of the set."""
        return self.start + (self.world.shift(members) if members else 0.0)

    def hints(self, members: Sequence[str]) -> np.ndarray:
        """The set's shift per start cell."""
        return self.predicted(members) - self.start

    def mean_shift(self, member: str) -> np.ndarray:
        """A member's shift alone (what the naive rule ranks by)."""
        return self.world.shift([member])

    def clear_cache(self) -> None:
        """Nothing is cached (the planted shift is cheap)."""
