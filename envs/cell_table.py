"""Per-cell annotations from obs alone: which cells are kept, their labels, groups, covariates and split.

Both preparation paths (in memory and out of core) build them here, from the obs table only, so
a 2M-cell file is split the same way whether or not its matrix fits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from envs.splits import Split, SplitKind, make_split
from envs.validation import DataValidationError

__all__ = ["CellTable", "annotate_cells"]


@dataclass
class CellTable:
    """What preparation knows about every kept cell before any expression is read."""

    keep: np.ndarray  # (n_obs,) bool: cells not dropped by ignore_values
    labels: np.ndarray  # (n_kept,) perturbation label
    split: Split
    obs_names: np.ndarray
    groups: np.ndarray | None
    covariates: np.ndarray | None  # per kept cell: its covariate combination
    covariate_keys: list[str]


def annotate_cells(
    obs: pd.DataFrame,
    *,
    perturbation_key: str,
    control_value: str,
    ignore_values: Sequence[str] = (),
    split: SplitKind = "cells",
    holdout: Sequence[str] = (),
    group_key: str | None = None,
    covariate_keys: Sequence[str] = (),
    test_fraction: float = 0.2,
    seed: int = 0,
) -> CellTable:
    """Labels, groups, covariates and split of the cells kept from ``obs`` (see ``envs.prepare_dataset``)."""
    labels_all = obs[perturbation_key].astype(str).to_numpy()
    keep = ~np.isin(labels_all, list(ignore_values))
    kept_obs = obs[keep] if not keep.all() else obs
    labels = labels_all[keep]
    groups = obs_strings(kept_obs, [group_key], "group_key") if group_key else None
    keys = list(dict.fromkeys([*covariate_keys, *([group_key] if split == "group" and group_key else [])]))
    covariates = obs_strings(kept_obs, keys, "covariate_keys") if keys else None
    cell_split = make_split(labels, control_value=control_value, kind=split, holdout=holdout, groups=groups,
                            group_key=group_key, test_fraction=test_fraction, seed=seed)
    return CellTable(keep=keep, labels=labels, split=cell_split, obs_names=kept_obs.index.astype(str).to_numpy(),
                     groups=groups, covariates=covariates, covariate_keys=keys)


def obs_strings(obs: pd.DataFrame, keys: Sequence[str], option: str) -> np.ndarray:
    """One string per cell from obs columns ``keys`` (joined with ``|``); a missing column is a clear error."""
    missing = [key for key in keys if key not in obs.columns]
    if missing:
        what = f"'{missing[0]}'" if len(keys) == 1 else str(missing)
        raise DataValidationError(f"{option} {what} not found in obs. Available obs columns: {list(obs.columns)}.")
    columns = [obs[key].astype(str).to_numpy() for key in keys]
    return columns[0] if len(columns) == 1 else np.array(["|".join(parts) for parts in zip(*columns)])
