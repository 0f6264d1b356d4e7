"""Perturbation sets: labels that join members with a separator (``KLF1+MAP2K6``), parsed and checked.

A label is a *set* when it joins two or more members with the separator (``+`` by default: the
GEARS / CPA / PerturBench convention). Members equal to the control label are dropped, so
``A+ctrl`` and ``ctrl+A`` mean ``A`` (and ``ctrl+ctrl`` the control). Order does not matter:
``A+B`` and ``B+A`` are one set. Whitespace around members is ignored.

Separator clashes are refused, never guessed: a label that contains the separator but does not
split into non-empty members (``A+``, ``+A``, ``A++B``), a member named twice (``A+A``), or a
control label that contains the separator. When ``+`` is part of single perturbation names in a
file, choose another separator (``--set-separator ';'``) or turn sets off (``--set-separator none``):
then every label is one perturbation, as before sets existed.

Data labels keep their spelling (``SAMD1+PTPN12`` stays so); only labels that name the same set
in several ways are merged (:func:`canonical_labels`), and a name a user gives (``--holdout``,
``--perturbation``) is matched to the data's spelling of the same set (:meth:`SetSyntax.resolve`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from envs.validation import DataValidationError

__all__ = [
    "DEFAULT_SET_SEPARATOR",
    "NO_SETS",
    "PerturbationSetError",
    "SetSyntax",
    "canonical_labels",
    "members_of_all",
    "set_syntax_of",
]

#: Joins the members of a set in a label.
DEFAULT_SET_SEPARATOR = "+"
#: The ``--set-separator`` value that turns sets off (every label is one perturbation).
NO_SETS = "none"


class PerturbationSetError(DataValidationError):
    """A label cannot be read as a perturbation or a set of them; the message names the fix."""


def _fix(separator: str) -> str:
    return (f"If '{separator}' is part of single perturbation names, choose another separator "
            f"(--set-separator ';', or set_separator=';') or turn sets off (--set-separator {NO_SETS}).")


@dataclass(frozen=True)
class SetSyntax:
    """How labels name sets: the separator (``None``: no sets) and the control label members may use.

    Parameters
    ----------
    separator
        String joining members; ``None`` (or ``"none"``, ``""``): every label is one perturbation.
    control
        The control label: a member equal to it is dropped.
    """

    separator: str | None = DEFAULT_SET_SEPARATOR
    control: str | None = None

    def __post_init__(self) -> None:
        separator = self.separator
        if separator is not None and (separator.strip() == "" or separator.lower() == NO_SETS):
            object.__setattr__(self, "separator", None)
        elif separator is not None and separator != separator.strip():
            raise PerturbationSetError(f"The set separator {separator!r} has surrounding whitespace; pass "
                                       f"{separator.strip()!r}.")
        if self.separator is not None and self.control is not None and self.separator in str(self.control):
            raise PerturbationSetError(f"The control label '{self.control}' contains the set separator "
                                       f"'{self.separator}'. " + _fix(self.separator))

    def members(self, label: str) -> tuple[str, ...]:
        """Members of ``label`` in the order written; ``()`` for the control; one member for a single.

        Raises :class:`PerturbationSetError` for an empty member or a member named twice.
        """
        label = str(label)
        if self.separator is None or self.separator not in label:
            return () if label == self.control else (label,)
        parts = [part.strip() for part in label.split(self.separator)]
        if any(not part for part in parts):
            raise PerturbationSetError(f"'{label}' has an empty member (nothing between separators "
                                       f"'{self.separator}'). Write members as A{self.separator}B. "
                                       + _fix(self.separator))
        members = tuple(part for part in parts if part != self.control)
        twice = sorted({m for m in members if members.count(m) > 1})
        if twice:
            raise PerturbationSetError(f"'{label}' names member(s) {twice} more than once; a set names each "
                                       "member once.")
        return members

    def is_set(self, label: str) -> bool:
        """Whether ``label`` names two or more members."""
        return len(self.members(label)) > 1

    def key(self, label: str) -> frozenset[str]:
        """The members as a set: labels with equal keys are the same perturbation."""
        return frozenset(self.members(label))

    def spelling(self, label: str) -> str:
        """``label`` with control members and stray whitespace dropped (members in the order written)."""
        members = self.members(label)
        if not members:
            return str(self.control)
        return members[0] if len(members) == 1 else self.separator.join(members)

    def resolve(self, label: str, known: Iterable[str]) -> str:
        """The spelling in ``known`` of the same perturbation as ``label``, else :meth:`spelling`."""
        label = str(label)
        known = list(known)
        if label in known:
            return label
        key = self.key(label)
        for name in known:
            try:
                if self.key(name) == key:
                    return str(name)
            except PerturbationSetError:
                continue
        return self.spelling(label)


def canonical_labels(labels: np.ndarray, syntax: SetSyntax) -> np.ndarray:
    """Data labels with each perturbation spelled one way: ``A+ctrl`` -> ``A``, ``B+A`` -> ``A+B`` when both occur.

    A set spelled several ways takes its most frequent spelling (ties: the first in sorted order).
    Labels that need no change are returned as they are (the same array when none changes).
    Raises :class:`PerturbationSetError` for a label that cannot be read (:meth:`SetSyntax.members`).
    """
    labels = np.asarray(labels)
    if syntax.separator is None:
        return labels
    names, counts = np.unique(labels.astype(str), return_counts=True)
    if not any(syntax.separator in name for name in names):
        return labels
    by_key: dict[frozenset[str], list[tuple[int, str]]] = {}
    for name, count in zip(names, counts):
        by_key.setdefault(syntax.key(name), []).append((-int(count), syntax.spelling(name)))
    chosen = {key: sorted(spellings)[0][1] for key, spellings in by_key.items()}
    rename = {name: chosen[syntax.key(name)] for name in names}
    if all(old == new for old, new in rename.items()):
        return labels
    return np.array([rename[str(label)] for label in labels.astype(str)], dtype=object)


def set_syntax_of(meta: dict, control: str | None) -> SetSyntax:
    """The set syntax a prepared dataset was made with (datasets prepared before sets: none)."""
    return SetSyntax(meta.get("set_separator"), control)


def members_of_all(labels: Sequence[str], syntax: SetSyntax) -> list[str]:
    """Sorted distinct members of ``labels`` (the vocabulary a featurizer gives ids to)."""
    out: set[str] = set()
    for label in labels:
        out.update(syntax.members(label))
    return sorted(out)
