"""Preparation's part of perturbation sets: data labels read as sets, held-out names matched, members checked.

Runs on ``obs`` alone, before any expression is read, so a label that cannot be read, a held-out
set spelled otherwise than the data spell it, or a held-out set with a member nothing can express
is one clear error before the long work (:mod:`envs.perturbation_sets` for the rules).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from envs.perturbation_sets import PerturbationSetError, SetSyntax, canonical_labels, members_of_all
from envs.set_hints import COMPOSITIONS

__all__ = ["canonical_obs", "resolve_holdout", "check_heldout_members", "check_composition"]


def check_composition(composition: str) -> None:
    """One clear error for an unknown set composition."""
    if composition not in COMPOSITIONS:
        raise PerturbationSetError(f"set_composition must be one of {list(COMPOSITIONS)}, got {composition!r}.")


def canonical_obs(obs: pd.DataFrame, perturbation_key: str, syntax: SetSyntax) -> pd.DataFrame:
    """``obs`` with each perturbation spelled one way (:func:`envs.perturbation_sets.canonical_labels`).

    The same object when nothing changes (the usual case); else a copy (the user's obs is never modified).
    """
    if perturbation_key not in obs.columns:
        return obs  # validation names the missing column
    labels = obs[perturbation_key].astype(str).to_numpy()
    canonical = canonical_labels(labels, syntax)
    if canonical is labels:
        return obs
    obs = obs.copy()
    obs[perturbation_key] = pd.Categorical(canonical)
    return obs


def resolve_holdout(holdout: Sequence[str], labels: np.ndarray, syntax: SetSyntax) -> list[str]:
    """Held-out names in the data's spelling (``MAP2K6+KLF1`` -> ``KLF1+MAP2K6``); others unchanged."""
    known = sorted(set(np.asarray(labels).astype(str).tolist()))
    return [syntax.resolve(name, known) if syntax.separator else str(name) for name in holdout]


def check_heldout_members(heldout: Sequence[str], train_labels: np.ndarray, features: Sequence[str],
                          syntax: SetSyntax, *, where: str = "genes of the data") -> None:
    """Every member of a held-out set must be expressible: a member of a training label, or one of ``features``.

    Raises :class:`PerturbationSetError` naming the member and what can be expressed.
    """
    if syntax.separator is None:
        return
    trained = set(members_of_all([str(x) for x in np.unique(np.asarray(train_labels).astype(str))], syntax))
    trained.discard(str(syntax.control))
    panel = set(map(str, features))
    for name in heldout:
        members = syntax.members(name)
        if len(members) < 2:
            continue
        missing = [m for m in members if m not in trained and m not in panel]
        if missing:
            raise PerturbationSetError(
                f"Held-out set '{name}': member(s) {missing} cannot be expressed: not a member of any training "
                f"perturbation and not among the {where}. Expressible members: the training members "
                f"{sorted(trained)}, or a gene of the panel.")
