"""Hints of perturbation sets never observed: their members' hints, composed.

A set observed in training (``A+B`` with cells) is an ordinary perturbation: its own OT pairs,
mean shift and per-cell hints. A set never observed gets its members' hints composed, one of:

* ``additive``: the sum of the members' per-cell hints at the cell's state,
  ``h(z) = h_A(z) + h_B(z)`` (the field's strongest baseline in gene space, here per cell);
* ``sequential`` (the default): a landscape composes state by state, so A moves the cell and B
  then acts where A left it, ``h_AB(z) = h_A(z) + h_B(z + h_A(z))``, averaged over member orders
  so the result does not depend on the order members are written in (all orders up to four
  members; above that each member once first, in rotation, both directions).

Where the members' fields are the same at every state (a shift of the whole landscape), the two
are identical; they differ exactly where one member's response depends on the state the other
leaves the cell in. The default was chosen on the synthetic sets (:mod:`envs.synthetic_sets`,
``benchmarks/set_composition.py``), not on real data: there sequential was closer to the truth on
interacting pairs and level with additive on non-interacting ones (``docs/sets.md``).

A member's hint is its own where it has training pairs (:class:`envs.state_hints.StateHints`),
else its mean-shift hint (:class:`envs.perturbation_features.ShiftHints`: ridge on its features
plus the self-effect for a panel gene) at every state.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from envs.perturbation_sets import SetSyntax, set_syntax_of

__all__ = ["COMPOSITIONS", "DEFAULT_SET_COMPOSITION", "SetShiftHints", "SetStateHints", "compose_fields",
           "member_orders", "with_set_shift_hints", "with_set_state_hints"]

COMPOSITIONS = ("additive", "sequential")
#: Chosen on the synthetic sets (module docstring).
DEFAULT_SET_COMPOSITION = "sequential"

Field = Callable[[np.ndarray], np.ndarray]


def member_orders(n: int) -> list[tuple[int, ...]]:
    """Orders in which ``n`` members are applied: every permutation up to 4, else rotations both ways."""
    if n <= 4:
        return list(itertools.permutations(range(n)))
    forward = [tuple((start + i) % n for i in range(n)) for start in range(n)]
    return forward + [tuple(reversed(order)) for order in forward]


def compose_fields(fields: Sequence[Field], states: np.ndarray, how: str) -> np.ndarray:
    """Displacement (cells x d) of cells at ``states`` under the members' displacement ``fields``, composed ``how``."""
    states = np.asarray(states, dtype=np.float64)
    if how == "additive":
        return np.sum([np.asarray(field(states), dtype=np.float64) for field in fields], axis=0)
    if how != "sequential":
        raise ValueError(f"set composition must be one of {list(COMPOSITIONS)}, got {how!r}.")
    orders = member_orders(len(fields))
    total = np.zeros_like(states)
    for order in orders:
        z = states.copy()
        for i in order:
            z = z + np.asarray(fields[i](z), dtype=np.float64)
        total += z - states
    return total / len(orders)


class SetShiftHints:
    """Mean-shift hints (:class:`~envs.perturbation_features.ShiftHints`) that also answer for sets never observed.

    A set's mean shift is the sum of its members' (a constant field composes the same either way).
    Everything else is the wrapped hints'.
    """

    def __init__(self, hints, sets: SetSyntax):
        self.inner, self.sets = hints, sets
        self._spelling = _spellings(hints.known, sets)

    def __getattr__(self, name: str):
        if name in ("inner", "sets", "_spelling"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, perturbation: str) -> np.ndarray:
        name = _known_spelling(str(perturbation), self._spelling, self.sets)
        if name in self.inner.known:
            return self.inner(name)
        members = self.sets.members(name)
        if len(members) <= 1:
            return self.inner(members[0] if members else name)
        return np.sum([self.inner(m) for m in members], axis=0).astype(np.float32)


class SetStateHints:
    """Per-cell hints (:class:`~envs.state_hints.StateHints`) that compose members for sets never observed.

    Parameters
    ----------
    hints
        The per-cell hints of the training perturbations.
    shifts
        Mean-shift hints: a member without training pairs moves every cell by its mean shift.
    sets
        How labels name sets.
    composition
        ``"additive"`` or ``"sequential"`` (module docstring).
    """

    def __init__(self, hints, shifts, sets: SetSyntax, composition: str = DEFAULT_SET_COMPOSITION):
        if composition not in COMPOSITIONS:
            raise ValueError(f"set composition must be one of {list(COMPOSITIONS)}, got {composition!r}.")
        self.inner, self.shifts, self.sets, self.composition = hints, shifts, sets, composition
        self._spelling = _spellings([n for n in shifts.known if hints.covers(n)], sets)

    def __getattr__(self, name: str):
        if name in ("inner", "shifts", "sets", "composition", "_spelling"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def covers(self, perturbation: str) -> bool:
        """Whether ``perturbation`` (or a single's one member) has per-cell hints of its own."""
        return self.inner.covers(_known_spelling(str(perturbation), self._spelling, self.sets))

    def member_field(self, member: str) -> Field:
        """Displacement field of one member: its per-cell hints, or its mean shift everywhere."""
        fallback = np.asarray(self.shifts(member), dtype=np.float64)
        return lambda states: self.inner.at(member, states, fallback)

    def at(self, perturbation: str, states: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Hints (cells x d) at ``states``: the perturbation's own, or a set never observed its members' composed."""
        name = _known_spelling(str(perturbation), self._spelling, self.sets)
        if self.inner.covers(name):
            return self.inner.at(name, states, fallback)
        members = self.sets.members(name)
        if len(members) <= 1:
            return self.inner.at(members[0] if members else name, states, fallback)
        states = np.atleast_2d(np.asarray(states, dtype=np.float64))
        return compose_fields([self.member_field(m) for m in members], states, self.composition)


def _spellings(labels, sets: SetSyntax) -> dict[frozenset[str], str]:
    """Members -> the label spelling them, for labels with hints of their own."""
    return {sets.key(name): str(name) for name in labels}


def _known_spelling(name: str, spelling: dict[frozenset[str], str], sets: SetSyntax) -> str:
    """``name``'s spelling among labels with hints of their own (``B+A`` -> ``A+B``, ``A+ctrl`` -> ``A``), or itself."""
    if sets.separator is None or sets.separator not in name:
        return name
    return spelling.get(sets.key(name), name)


def with_set_shift_hints(dataset, hints):
    """``hints`` answering for sets, for datasets prepared with sets (others: ``hints`` unchanged)."""
    if hints is None or set_syntax_of(dataset.meta, dataset.control_value).separator is None:
        return hints
    return SetShiftHints(hints, set_syntax_of(dataset.meta, dataset.control_value))


def with_set_state_hints(dataset, state_hints, shifts):
    """``state_hints`` composing members of sets never observed, for datasets prepared with sets."""
    sets = set_syntax_of(dataset.meta, dataset.control_value)
    if state_hints is None or sets.separator is None:
        return state_hints
    return SetStateHints(state_hints, shifts, sets, dataset.meta.get("set_composition", DEFAULT_SET_COMPOSITION))
