"""Train/test splits that match the questions users ask.

- ``"cells"``: held-out cells of seen perturbations (every group split at random, stratified).
- ``"perturbations"``: whole perturbations held out; the model never sees their cells.
- ``"group"``: one group's (e.g. a cell type's) perturbed cells are held out and must be predicted
  from that group's control cells, which stay in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from envs.validation import DataValidationError

__all__ = ["Split", "make_split"]

SplitKind = Literal["cells", "perturbations", "group"]


@dataclass
class Split:
    """Boolean masks over cells plus what was held out."""

    kind: str
    train: np.ndarray
    test: np.ndarray
    heldout_perturbations: list[str] = field(default_factory=list)
    group_key: str | None = None
    heldout_group: str | None = None


def _stratified_test_mask(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    test = np.zeros(len(labels), dtype=bool)
    values, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")  # each label's rows ascending, found in one pass (2M cells x 10k labels)
    bounds = np.searchsorted(codes[order], np.arange(len(values) + 1))
    for i in range(len(values)):
        index = order[bounds[i] : bounds[i + 1]]
        n_test = int(round(test_fraction * len(index)))
        n_test = min(max(n_test, 1), len(index) - 1) if len(index) > 1 else 0
        test[rng.choice(index, size=n_test, replace=False)] = True
    return test


def make_split(
    labels: np.ndarray,
    *,
    control_value: str,
    kind: SplitKind = "cells",
    holdout: Sequence[str] = (),
    groups: np.ndarray | None = None,
    group_key: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Split cells for one of the three evaluation questions.

    Parameters
    ----------
    labels
        Perturbation label of each cell (strings).
    control_value
        Label of control cells.
    kind
        ``"cells"``, ``"perturbations"`` or ``"group"``.
    holdout
        Held-out perturbations (``kind="perturbations"``) or one held-out group value
        (``kind="group"``).
    groups
        Group of each cell (``kind="group"``), e.g. ``adata.obs["cell_type"]``.
    group_key
        Name of the group column, used in messages and stored with the split.
    test_fraction
        Fraction of cells held out per group (``"cells"``), or of control cells (``"perturbations"``).
    seed
        Random state.
    """
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    perturbations = sorted(str(x) for x in set(labels) - {control_value})  # plain strings in messages
    holdout = [str(h) for h in holdout]
    if not 0.0 < test_fraction < 1.0:
        raise DataValidationError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if kind == "cells":
        test = _stratified_test_mask(labels, test_fraction, rng)
        return Split("cells", ~test, test)
    if kind == "perturbations":
        if not holdout:
            raise DataValidationError("kind='perturbations' needs holdout=[...] naming the perturbations to hold out.")
        unknown = [h for h in holdout if h not in perturbations]
        if unknown:
            raise DataValidationError(
                f"Held-out perturbations {unknown} are not in the data. Known perturbations: {perturbations}."
            )
        if set(holdout) >= set(perturbations):
            raise DataValidationError(
                f"Holding out {holdout} leaves no training perturbation; keep at least one of {perturbations}."
            )
        held = np.isin(labels, holdout)
        control_test = _stratified_test_mask(np.where(labels == control_value, "c", "x"), test_fraction, rng)
        control_test &= labels == control_value
        test = held | control_test
        return Split("perturbations", ~test, test, heldout_perturbations=holdout)
    if kind == "group":
        if groups is None:
            raise DataValidationError("kind='group' needs a group column: pass group_key=<obs column>.")
        groups = np.asarray(groups).astype(str)
        if len(holdout) != 1:
            raise DataValidationError(f"kind='group' holds out exactly one group value, got holdout={holdout}.")
        value = holdout[0]
        present = sorted(str(g) for g in set(groups))
        if value not in present:
            raise DataValidationError(
                f"Group '{value}' not found in obs['{group_key}']. Values present: {present}."
            )
        in_group = groups == value
        test = in_group & (labels != control_value)
        if not test.any():
            raise DataValidationError(f"Group '{value}' has no perturbed cells to hold out.")
        if not (in_group & (labels == control_value)).any():
            raise DataValidationError(
                f"Group '{value}' has no control cells, so its perturbed cells cannot be predicted from them."
            )
        if not ((labels != control_value) & ~in_group).any():
            raise DataValidationError(f"Holding out group '{value}' leaves no perturbed training cells.")
        return Split("group", ~test, test, group_key=group_key, heldout_group=value)
    raise DataValidationError(f"Unknown split kind {kind!r}; use 'cells', 'perturbations' or 'group'.")
