"""Optimal-transport pairing of control cells with perturbed cells (episode start -> target).

Each episode starts at a control cell and is rewarded for approaching the perturbed cell that the
exact OT plan (POT ``ot.emd``, squared Euclidean cost, uniform weights) assigns to it. Pairing by
transport rather than to the population mean keeps the reward from favouring collapse: the
optimal policy carries the control population onto the whole perturbed population.
"""

from __future__ import annotations

import numpy as np
import ot

__all__ = ["ot_pairs", "ot_pairs_between", "stratified_ot_pairs"]


def ot_pairs(
    source: np.ndarray,
    target: np.ndarray,
    *,
    max_cells: int = 1000,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return the support of the exact OT plan between two latent clouds.

    Parameters
    ----------
    source, target
        Latent cells (n x d, m x d).
    max_cells
        Larger clouds are subsampled to this many cells first (the plan is O(n m) in memory).
    rng
        Random generator for the subsampling.

    Returns
    -------
    Array (k, 3) of ``[source_row, target_row, weight]`` with weights summing to 1, rows indexing
    the given ``source`` and ``target`` arrays.
    """
    source_rows = np.arange(len(source))
    target_rows = np.arange(len(target))
    if len(source_rows) > max_cells:
        source_rows = np.sort(rng.choice(source_rows, size=max_cells, replace=False))
    if len(target_rows) > max_cells:
        target_rows = np.sort(rng.choice(target_rows, size=max_cells, replace=False))
    cost = ot.dist(source[source_rows].astype(np.float64), target[target_rows].astype(np.float64))
    a = np.full(len(source_rows), 1.0 / len(source_rows))
    b = np.full(len(target_rows), 1.0 / len(target_rows))
    plan = ot.emd(a, b, cost, numItermax=1_000_000)
    i, j = np.nonzero(plan > 0)
    weight = plan[i, j]
    return np.column_stack([source_rows[i], target_rows[j], weight / weight.sum()])


def ot_pairs_between(
    latent: np.ndarray,
    source_rows: np.ndarray,
    target_rows: np.ndarray,
    *,
    max_cells: int = 1000,
    rng: np.random.Generator,
) -> np.ndarray:
    """:func:`ot_pairs` between two row sets of one latent array, indexed by rows of that array.

    Returns
    -------
    Array (k, 3) of ``[source row, target row, weight]`` (rows of ``latent``), weights summing to 1.
    """
    local = ot_pairs(latent[source_rows], latent[target_rows], max_cells=max_cells, rng=rng)
    return np.column_stack(
        [source_rows[local[:, 0].astype(int)], target_rows[local[:, 1].astype(int)], local[:, 2]]
    )


def stratified_ot_pairs(
    latent: np.ndarray,
    source_rows: np.ndarray,
    target_rows: np.ndarray,
    strata: np.ndarray | None,
    *,
    max_cells: int = 1000,
    rng: np.random.Generator,
) -> np.ndarray:
    """OT pairs formed within each stratum (a covariate combination such as cell type x donor).

    Within a stratum the pairs are :func:`ot_pairs_between` its source and target cells; strata are
    weighted by their share of the target cells, so episodes reproduce the target population's
    composition. Target cells of a stratum without source cells cannot be paired like with like and
    are left out; source cells of a stratum without targets are never paired (a held-out group's
    controls are not turned into other groups' perturbed cells). Only when no stratum holds both
    does it fall back to one pooled plan. ``strata=None`` is the pooled plan.

    Returns
    -------
    Array (k, 3) of ``[source row, target row, weight]`` (rows of ``latent``), weights summing to 1.
    """
    if strata is None:
        return ot_pairs_between(latent, source_rows, target_rows, max_cells=max_cells, rng=rng)
    blocks = []
    for stratum in np.unique(strata[target_rows]):
        sources = source_rows[strata[source_rows] == stratum]
        targets = target_rows[strata[target_rows] == stratum]
        if len(sources) == 0:
            continue
        block = ot_pairs_between(latent, sources, targets, max_cells=max_cells, rng=rng)
        block[:, 2] *= len(targets)
        blocks.append(block)
    if not blocks:
        return ot_pairs_between(latent, source_rows, target_rows, max_cells=max_cells, rng=rng)
    pairs = np.vstack(blocks)
    pairs[:, 2] /= pairs[:, 2].sum()
    return pairs
