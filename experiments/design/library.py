"""The library a design draws members from: the run's seen perturbations, its panel genes, both, or a file.

* ``seen``: the members of the run's training perturbations (a training set ``A+B`` contributes ``A``
  and ``B``), in sorted order;
* ``panel``: a knockdown of every gene of the run's gene space (expressible by its latent direction);
* ``all``: both, plus held-out labels the run can express;
* a file: one label per line (``#`` starts a comment); every member is checked as predict checks a
  perturbation (:func:`experiments.prediction.predict.check_perturbations` with a feature method),
  so a member the run cannot express is one error naming it, before any work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.dataset import PreparedDataset
from experiments.design.errors import DesignError

__all__ = ["LIBRARY_CHOICES", "resolve_library"]

LIBRARY_CHOICES = ("seen", "panel", "all")


def resolve_library(dataset: PreparedDataset, library: str | list[str] | tuple[str, ...] = "seen") -> list[str]:
    """The members of ``library`` (``seen``, ``panel``, ``all``, a file of labels, or a list), checked."""
    from envs.perturbation_sets import members_of_all, set_syntax_of

    sets = set_syntax_of(dataset.meta, dataset.control_value)
    seen = [m for m in members_of_all(list(dataset.training_perturbations), sets) if m != dataset.control_value]
    panel = [str(g) for g in dataset.latent_space.feature_names]
    if isinstance(library, (list, tuple)):
        members, where = [str(m).strip() for m in library], "the library"
    elif library == "seen":
        return seen
    elif library == "panel":
        return panel
    elif library == "all":
        featurizer = dataset.featurizer
        extra = [p for p in dataset.perturbations if p != dataset.control_value and not sets.is_set(p)
                 and np.any(featurizer(p))]
        return list(dict.fromkeys([*seen, *panel, *extra]))
    else:
        file = Path(str(library)).expanduser()
        if not file.is_file():
            raise DesignError(f"--library must be one of {list(LIBRARY_CHOICES)} or a file of labels; '{library}' is "
                              "neither.")
        members = [line.split("#", 1)[0].strip() for line in file.read_text().splitlines()]
        where = f"--library file '{file}'"
    members = [m for m in members if m]
    if not members:
        raise DesignError(f"{where} names no member.")
    twice = sorted({m for m in members if members.count(m) > 1})
    if twice:
        raise DesignError(f"{where} names {twice} more than once.")
    _check_members(dataset, members, sets, where)
    return members


def _check_members(dataset: PreparedDataset, members: list[str], sets, where: str) -> None:
    """One error for the first member the run cannot express (predict's check and message)."""
    from experiments.prediction.predict import check_perturbations
    from experiments.prediction.runs import PredictionError

    for member in members:
        if sets.separator is not None and sets.separator in member:
            raise DesignError(f"{where}: '{member}' is a set; a library lists single members (the design builds "
                              "sets from them).")
        try:
            check_perturbations(dataset, [member], "hint-controller")
        except PredictionError as exc:
            raise DesignError(f"{where}: member '{member}' cannot be used. {exc}") from exc
