"""Designers: search the sets of up to ``k`` library members for the lowest objective, within one budget.

Every designer scores sets through the same :class:`~experiments.design.objective.DesignObjective`,
which counts forward-model evaluations (a set scored twice counts once), so their counts compare
like with like. Each returns every set it scored, ranked (objective, then size, then name).

* ``exhaustive``: every set of 1..k members (exact); refused with one error when their number
  exceeds the budget (``k = 1`` always fits a budget of at least the library's size).
* ``greedy``: add the member that lowers the objective most, one at a time, stopping at ``k`` or
  when no member lowers it. It fails by construction where a set's members alone move little.
* ``beam``: keep the ``width`` best sets of each size, extend each by every member.
* ``random``: sets drawn uniformly among all sets of 1..k members, without repeats, until the budget
  (default: the library's size times ``k``) is spent.
* ``naive`` (retrieval, singles only, no forward model): rank members by the distance between
  their mean-shift hint (the observed training mean shift for a seen member, ridge + self-effect
  for an unseen panel gene) and the target's mean shift from the start cells, in latent space. Its
  ``distance`` is that mean-shift distance, not an E-distance, and it makes 0 evaluations.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from experiments.design.errors import DesignError
from experiments.design.objective import CandidateSet, DesignObjective, Score

__all__ = ["DEFAULT_BEAM_WIDTH", "DESIGNERS", "DesignResult", "affordable", "n_sets", "run_designer"]

DESIGNERS = ("beam", "greedy", "exhaustive", "random", "naive")
DEFAULT_BEAM_WIDTH = 8
#: Sets scored per batch (one progress line each on long searches).
_CHUNK = 512

Log = Callable[[str], None] | None


@dataclass
class DesignResult:
    """What one designer found for one target.

    Attributes
    ----------
    designer
        The designer's name.
    ranked
        Every set it scored, best first.
    evaluations
        Forward-model evaluations it made.
    baseline
        The empty set's score (the start cells unmoved).
    wall_s
        Seconds the search took.
    """

    designer: str
    ranked: list[Score]
    evaluations: int
    baseline: Score
    wall_s: float


def n_sets(library_size: int, max_size: int) -> int:
    """Number of sets of 1..``max_size`` distinct members of a library of ``library_size``."""
    return sum(math.comb(library_size, s) for s in range(1, max_size + 1))


def run_designer(objective: DesignObjective, library: Sequence[str], *, designer: str = "beam", max_size: int = 2,
                 beam_width: int = DEFAULT_BEAM_WIDTH, seed: int = 0, log: Log = None) -> DesignResult:
    """Run ``designer`` on ``objective`` over sets of up to ``max_size`` members of ``library``."""
    library = [str(m) for m in library]
    if designer not in DESIGNERS:
        raise DesignError(f"Unknown designer {designer!r}; choose one of {list(DESIGNERS)}.")
    check_size(library, max_size)
    if beam_width < 1:
        raise DesignError(f"--beam-width must be >= 1, got {beam_width}.")
    started = time.perf_counter()
    baseline = objective.baseline()
    if designer == "naive":
        ranked = _naive(objective, library)
    else:
        search = {"exhaustive": _exhaustive, "greedy": _greedy, "beam": _beam, "random": _random}[designer]
        search(objective, library, max_size=max_size, beam_width=beam_width, seed=seed, log=log)
        ranked = objective.ranked()
    return DesignResult(designer=designer, ranked=ranked, evaluations=objective.evaluations if designer != "naive"
                        else 0, baseline=baseline, wall_s=time.perf_counter() - started)


def check_size(library: Sequence[str], max_size: int) -> None:
    """One error for a set size the library cannot fill."""
    if max_size < 1:
        raise DesignError(f"--max-size must be >= 1, got {max_size}.")
    if max_size > len(library):
        raise DesignError(f"--max-size {max_size} is larger than the library ({len(library)} members): a set names "
                          "each member once. Lower --max-size or widen --library.")


def _score_all(objective: DesignObjective, sets: Sequence[CandidateSet], log: Log, what: str) -> list[Score]:
    """Score ``sets`` in batches (a progress line per batch when there are several)."""
    scores: list[Score] = []
    for start in range(0, len(sets), _CHUNK):
        scores += objective.score(sets[start : start + _CHUNK])
        if log and len(sets) > _CHUNK:
            log(f"{what}: {min(start + _CHUNK, len(sets))}/{len(sets)} sets scored")
    return scores


def affordable(objective: DesignObjective, sets: list[CandidateSet]) -> list[CandidateSet]:
    """The first sets the budget pays for (sets scored before cost nothing)."""
    if objective.remaining is None:
        return sets
    out, left = [], objective.remaining
    for s in sets:
        if objective.is_scored(s):
            out.append(s)
        elif left > 0:
            out.append(s)
            left -= 1
    return out


def _exhaustive(objective: DesignObjective, library: list[str], *, max_size: int, log: Log, **_) -> None:
    total = n_sets(len(library), max_size)
    if objective.remaining is not None and total > objective.remaining:
        raise DesignError(f"--designer exhaustive: the sets of up to {max_size} of {len(library)} members are {total}, "
                          f"more than the budget of {objective.budget} evaluations. Raise --budget, lower "
                          "--max-size, or use --designer beam, greedy or random.")
    sets = [c for size in range(1, max_size + 1) for c in itertools.combinations(sorted(library), size)]
    _score_all(objective, sets, log, "exhaustive")


def _greedy(objective: DesignObjective, library: list[str], *, max_size: int, log: Log, **_) -> None:
    current: CandidateSet = ()
    best = objective.baseline()
    for size in range(1, max_size + 1):
        candidates = affordable(objective, [tuple(sorted((*current, m))) for m in library if m not in current])
        if not candidates:
            return
        scores = _score_all(objective, candidates, log, f"greedy size {size}")
        step = min(scores, key=lambda s: (s.objective, s.members))
        if current and step.objective >= best.objective:
            return  # no member lowers the objective: stop
        current, best = step.members, step
        if log:
            log(f"greedy size {size}: {'+'.join(current)} objective {best.objective:.4g}")


def _beam(objective: DesignObjective, library: list[str], *, max_size: int, beam_width: int, log: Log, **_) -> None:
    beam: list[CandidateSet] = [()]
    for size in range(1, max_size + 1):
        grown = {tuple(sorted((*b, m))) for b in beam for m in library if m not in b}
        candidates = affordable(objective, sorted(grown))
        if not candidates:
            return
        scores = _score_all(objective, candidates, log, f"beam size {size}")
        beam = [s.members for s in sorted(scores, key=lambda s: (s.objective, s.members))[:beam_width]]
        if log:
            log(f"beam size {size}: best {'+'.join(beam[0])} objective {min(s.objective for s in scores):.4g}")


def _random(objective: DesignObjective, library: list[str], *, max_size: int, seed: int, log: Log, **_) -> None:
    total = n_sets(len(library), max_size)
    wanted = min(total, objective.remaining if objective.remaining is not None else len(library) * max_size)
    rng = np.random.default_rng(seed)
    members = sorted(library)
    sizes = np.arange(1, max_size + 1)
    weights = np.array([math.comb(len(members), int(s)) for s in sizes], dtype=np.float64)
    drawn: dict[frozenset[str], CandidateSet] = {}
    attempts = 0
    while len(drawn) < wanted and attempts < 50 * wanted + 1000:  # uniform over all sets of 1..k members
        size = int(rng.choice(sizes, p=weights / weights.sum()))
        pick = tuple(sorted(members[i] for i in rng.choice(len(members), size=size, replace=False)))
        drawn.setdefault(frozenset(pick), pick)
        attempts += 1
    _score_all(objective, list(drawn.values()), log, "random")


def _naive(objective: DesignObjective, library: list[str]) -> list[Score]:
    """Members ranked by |mean-shift hint - target mean shift| in latent space (module docstring)."""
    if objective.target is None:
        raise DesignError("--designer naive ranks members by the target cells' mean shift: give --target-cells.")
    model = objective.model
    wanted = objective.target.mean(axis=0) - model.start.mean(axis=0)
    shifts = np.stack([model.mean_shift(m) for m in library])
    distance = np.linalg.norm(shifts - wanted[None, :], axis=1)
    scores = [Score((m,), float(d + objective.effort), float(d), float(objective.effort))
              for m, d in zip(library, distance)]
    return sorted(scores, key=lambda s: (s.objective, s.members))
