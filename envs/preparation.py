"""From the synthetic default, an ``.h5ad`` path or an AnnData to a :class:`~envs.dataset.PreparedDataset`.

h5ad -> validation -> split -> latent space -> landscape -> OT pairings, once. A file too large
for memory takes the out-of-core route (:mod:`envs.out_of_core`): the same recipe, streamed, with
its expression kept on disk; everything after the latent space is shared by both routes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import scipy.sparse as sp

from envs.cell_table import CellTable, annotate_cells
from envs.dataset import PreparedDataset, jsonable
from envs.landscape import CellLandscape
from envs.pairing import stratified_ot_pairs
from envs.perturbation_sets import DEFAULT_SET_SEPARATOR, SetSyntax
from envs.preprocessing import BasisOptions, LatentSpace, Modality, preprocess
from envs.set_hints import DEFAULT_SET_COMPOSITION
from envs.set_labels import canonical_obs, check_composition, check_heldout_members, resolve_holdout
from envs.splits import SplitKind
from envs.synthetic import (
    SYNTHETIC_CONTROL_VALUE,
    SYNTHETIC_PERTURBATION_KEY,
    make_synthetic_perturbation_data,
)
from envs.validation import (
    DataValidationError,
    check_h5ad_path,
    read_h5ad,
    validate_labels,
    validate_perturbation_data,
)

__all__ = ["prepare_dataset", "OUT_OF_CORE_ENTRIES", "LANDSCAPE_MAX_CELLS"]

#: Files whose matrix stores more entries than this are streamed: about 1.6 GB as float32 values
#: plus int32 indices, which the in-memory recipe holds several copies of at its peak.
OUT_OF_CORE_ENTRIES = 200_000_000
#: The landscape is fitted on at most this many training cells.
LANDSCAPE_MAX_CELLS = 50_000


def prepare_dataset(
    data: str | Path | ad.AnnData = "synthetic",
    *,
    perturbation_key: str | None = None,
    control_value: str | None = None,
    split: SplitKind = "cells",
    holdout: Sequence[str] = (),
    group_key: str | None = None,
    test_fraction: float = 0.2,
    n_latent: int = 8,
    n_top_genes: int = 2000,
    n_wells: int | None = None,
    modality: Modality = "rna",
    layer: str | None = None,
    min_cells: int = 20,
    ignore_values: Sequence[str] = (),
    covariate_keys: Sequence[str] = (),
    input_kind: str = "counts",
    response_energy: float = 0.9,
    max_response_dims: int = 16,
    target_gene_axes: bool = True,
    max_gene_axes: int = 32,
    max_pair_cells: int = 1000,
    max_landscape_cells: int = LANDSCAPE_MAX_CELLS,
    out_of_core: bool | None = None,
    workdir: str | Path | None = None,
    set_separator: str | None = DEFAULT_SET_SEPARATOR,
    set_composition: str = DEFAULT_SET_COMPOSITION,
    seed: int = 0,
    verbose: bool = False,
) -> PreparedDataset:
    """Build a :class:`~envs.dataset.PreparedDataset` from ``"synthetic"``, an ``.h5ad`` path or an AnnData.

    Parameters
    ----------
    data
        ``"synthetic"`` (the generated default with known truth), a path, or an AnnData.
    perturbation_key, control_value
        obs column naming each cell's perturbation, and the control label in it. Required for
        real data; the synthetic default uses ``"perturbation"`` / ``"control"``.
    split, holdout, group_key, test_fraction
        See :func:`envs.splits.make_split`.
    n_latent
        Cell principal components of the latent space; the latent dimension is this plus the
        axes that make responses expressible (below).
    response_energy, max_response_dims, target_gene_axes
        Widen the basis (:mod:`envs.latent_basis`): the fewest principal directions of the
        training perturbations' mean changes that keep ``response_energy`` of them (at least one
        when there are any, at most ``max_response_dims``; ``response_energy=0`` adds none), and,
        with ``target_gene_axes``, the axis of every panel gene a perturbation label names (at most
        ``max_gene_axes``).
    max_gene_axes
        At most this many gene axes; above it, the panel genes whose own expression the training
        perturbations change most (a genome-wide screen names thousands of genes).
    n_top_genes
        Highly variable genes (or most accessible peaks) kept.
    n_wells
        Landscape mixture components; default ``min(32, 3 * number of groups)``.
    modality
        ``"rna"`` (scanpy normalize/log1p/HVG/PCA) or ``"atac"`` (TF-IDF + LSI).
    layer
        Layer with raw counts; default ``adata.X``.
    min_cells
        Fewest cells allowed in any group.
    ignore_values
        Labels to drop before anything else (e.g. ``"unassigned"``).
    input_kind
        ``"counts"`` (raw counts; normalized and log1p'd here) or ``"log-normalized"`` (used as is,
        for files that ship only log-normalized expression); data that do not look as declared
        are refused.
    covariate_keys
        obs columns (cell type, donor, batch) whose combinations are strata: control cells are
        OT-paired with perturbed cells of their own stratum only (:func:`envs.pairing.stratified_ot_pairs`),
        and evaluation forms control references within them. A group split's ``group_key`` is
        always one.
    max_pair_cells
        Cells per side used to compute each OT pairing.
    max_landscape_cells
        The landscape is fitted on at most this many training cells (a seeded subsample above it).
    out_of_core
        Stream an ``.h5ad`` path a block of cells at a time (:mod:`envs.out_of_core`) instead of
        reading it whole; ``None`` (default) decides by size: files with more than
        ``OUT_OF_CORE_ENTRIES`` stored matrix entries are streamed. RNA only.
    workdir
        Out of core: directory of the on-disk expression matrix until the dataset is saved
        (default: a new temporary directory; put it on the disk the dataset will be saved to,
        so saving links the file instead of copying it).
    set_separator
        Joins the members of a set in a label (``KLF1+MAP2K6``; ``A+<control>`` is ``A``); ``None``
        or ``"none"``: every label is one perturbation (:mod:`envs.perturbation_sets`).
    set_composition
        How the hints of a set never observed compose its members' (``"sequential"``, the default
        chosen on synthetic sets, or ``"additive"``; :mod:`envs.set_hints`).
    seed
        Seed of the split, the SVD, the landscape fit and the pairings.
    verbose
        Print each stage and its duration.
    """
    log = _Log(verbose)
    check_composition(set_composition)
    sets = SetSyntax(set_separator, control_value)
    split_options = dict(ignore_values=ignore_values, split=split, holdout=holdout, group_key=group_key,
                         covariate_keys=covariate_keys, test_fraction=test_fraction, seed=seed)
    basis_options = dict(response_energy=response_energy, max_response_dims=max_response_dims,
                         target_gene_axes=target_gene_axes, max_gene_axes=max_gene_axes)
    shared = dict(n_wells=n_wells, max_pair_cells=max_pair_cells, max_landscape_cells=max_landscape_cells,
                  seed=seed, log=log)
    if _streams(data, out_of_core, layer):
        if modality != "rna":
            raise DataValidationError(f"Out-of-core preparation supports modality='rna' only, got {modality!r}.")
        if perturbation_key is None or control_value is None:
            raise DataValidationError("Real data needs perturbation_key=<obs column> and control_value=<control label>.")
        from envs.h5ad_chunks import H5adChunks
        from envs.out_of_core import fit_latent_out_of_core

        with H5adChunks(data, layer=layer) as reader:
            log(f"streaming {data}: {reader.n_obs} cells x {reader.n_vars} features, {reader.stored_nnz} stored values")
            if reader.n_obs == 0:
                raise DataValidationError("The AnnData has no cells (n_obs == 0).")
            obs = canonical_obs(reader.obs, perturbation_key, sets)
            validate_labels(obs, reader.n_vars, perturbation_key=perturbation_key, control_value=control_value,
                            min_cells=min_cells, n_latent=n_latent, ignore_values=ignore_values)
            split_options["holdout"] = _holdout(holdout, obs, perturbation_key, split, sets)
            cells = annotate_cells(obs, perturbation_key=perturbation_key, control_value=control_value,
                                   **split_options)
            _check_sets(cells, reader.var_names, sets)
            log(f"split '{cells.split.kind}': {cells.split.train.sum()} train / {cells.split.test.sum()} test cells")
            basis = BasisOptions(cells.labels, control_value, **basis_options)
            where = Path(tempfile.mkdtemp(prefix=".waddington-expression-", dir=workdir))
            try:
                space, latent, expression = fit_latent_out_of_core(
                    reader, cells, n_latent=n_latent, n_top_genes=n_top_genes, input_kind=input_kind, basis=basis,
                    expression_path=where / "expression.h5", log=log)
            except BaseException:
                shutil.rmtree(where, ignore_errors=True)  # a failed or interrupted run leaves no matrix behind
                raise
            expression.own(where)  # the temporary file goes with the object; save() links it first
        source, truth = str(data), None
    else:
        if out_of_core:
            raise DataValidationError("out_of_core=True needs the path of an .h5ad file (an in-memory AnnData or "
                                      "the synthetic default is prepared in memory).")
        adata, source, perturbation_key, control_value = _load(data, perturbation_key, control_value, seed)
        truth = adata.uns.get("truth")  # the synthetic generator's known truth (also in an AnnData made by it)
        truth = truth if isinstance(truth, dict) and "conditions" in truth else None
        log(f"loaded {source}: {adata.n_obs} cells x {adata.n_vars} features")
        sets = SetSyntax(set_separator, control_value)  # the synthetic default brings its own control label
        obs = canonical_obs(adata.obs, perturbation_key, sets)
        if obs is not adata.obs:  # labels naming one set in several ways (A+ctrl and A, B+A and A+B): merged
            adata = adata.copy()
            adata.obs = obs
        validate_perturbation_data(adata, perturbation_key=perturbation_key, control_value=control_value,
                                   min_cells=min_cells, n_latent=n_latent, layer=layer, require_counts=True,
                                   ignore_values=ignore_values, input_kind=input_kind)
        split_options["holdout"] = _holdout(holdout, adata.obs, perturbation_key, split, sets)
        cells = annotate_cells(adata.obs, perturbation_key=perturbation_key, control_value=control_value,
                               **split_options)
        _check_sets(cells, adata.var_names, sets)
        log(f"split '{cells.split.kind}': {cells.split.train.sum()} train / {cells.split.test.sum()} test cells")
        adata = adata[cells.keep] if not cells.keep.all() else adata
        basis = BasisOptions(cells.labels, control_value, **basis_options)
        space, latent, expression = preprocess(
            adata, fit_mask=cells.split.train, n_latent=n_latent, n_top_features=n_top_genes, modality=modality,
            layer=layer, normalize=input_kind == "counts", basis=basis, seed=seed,
        )
    log(f"latent space: {space.n_latent} dims ({basis.added}) from {len(space.feature_names)} {modality} features")
    _check_sets(cells, space.feature_names, sets, where="genes of the panel")
    meta = {"source": source, "perturbation_key": perturbation_key, "seed": seed, "modality": modality,
            "covariate_keys": cells.covariate_keys, "input_kind": input_kind, "basis": basis.added,
            "out_of_core": not isinstance(expression, sp.spmatrix), "n_latent": n_latent, "n_top_genes": n_top_genes,
            "ignore_values": list(ignore_values), "layer": layer, "test_fraction": test_fraction,
            # policies trained on this dataset observe ShiftHints (envs.perturbation_features) and
            # correct the guide's push toward them (envs.dynamics), per cell from its neighbours' OT
            # displacements (envs.state_hints); older datasets keep what their runs saw. Calibrated hints
            # (envs.hint_calibration) stay off: with 4-5 training panel genes the leave-one-out factors
            # pointed the wrong way on both Papalexi splits measured (docs/unseen.md)
            "shift_hint": True, "guided_actions": True, "state_hints": True, "calibrated_hints": False}
    # labels joining members with the separator are sets (envs.perturbation_sets); a set never
    # observed composes its members' hints so (envs.set_hints)
    meta.update(set_separator=sets.separator, set_composition=set_composition)
    return assemble_dataset(cells, control_value, space, latent, expression, truth=truth, meta=meta, **shared)


def assemble_dataset(
    cells: CellTable,
    control_value: str,
    space: LatentSpace,
    latent: np.ndarray,
    expression: Any,
    *,
    truth: dict | None,
    meta: dict[str, Any],
    n_wells: int | None,
    max_pair_cells: int,
    max_landscape_cells: int,
    seed: int,
    log,
) -> PreparedDataset:
    """Fit the landscape and the OT pairings on the latent cells and bundle everything."""
    train_rows = np.flatnonzero(cells.split.train)
    if len(train_rows) > max_landscape_cells:  # own generator: the pairings draw the same as without it
        train_rows = np.sort(np.random.default_rng([seed, 1]).choice(train_rows, max_landscape_cells, replace=False))
        log(f"landscape fitted on a seeded subsample of {max_landscape_cells} training cells")
    n_groups = len(set(cells.labels[cells.split.train]))
    landscape = CellLandscape.fit(latent[train_rows], n_wells=n_wells or min(32, 3 * n_groups), reg_covar=0.05,
                                  seed=seed)
    log(f"landscape: {len(landscape.weights)} wells")
    pairs = _pair_training_perturbations(latent, cells, control_value, max_cells=max_pair_cells,
                                         rng=np.random.default_rng(seed))
    within = f" within {cells.covariate_keys}" if cells.covariate_keys else ""
    log(f"OT pairings for {len(pairs)} training perturbations{within}")
    return PreparedDataset(
        latent=latent, labels=cells.labels, control_value=control_value, split=cells.split, latent_space=space,
        landscape=landscape, pairs=pairs, groups=cells.groups, covariates=cells.covariates,
        obs_names=cells.obs_names, expression=expression, truth=jsonable(truth) if truth is not None else None,
        meta=meta,
    )


def _holdout(holdout: Sequence[str], obs, perturbation_key: str, split: str, sets: SetSyntax) -> list[str]:
    """Held-out perturbations in the data's spelling (a group split's value unchanged)."""
    if split != "perturbations" or perturbation_key not in obs.columns:
        return list(holdout)
    return resolve_holdout(holdout, obs[perturbation_key].astype(str).to_numpy(), sets)


def _check_sets(cells: CellTable, features, sets: SetSyntax, *, where: str = "genes of the data") -> None:
    """Every member of a held-out set is a training member or one of ``features`` (else one clear error)."""
    check_heldout_members(cells.split.heldout_perturbations or [], cells.labels[cells.split.train], features, sets,
                          where=where)


class _Log:
    """Prints ``[prepare <seconds>s] message`` when verbose."""

    def __init__(self, verbose: bool) -> None:
        self.verbose, self.started = verbose, time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.verbose:
            print(f"[prepare {time.perf_counter() - self.started:6.1f}s] {message}", flush=True)


def _streams(data, out_of_core: bool | None, layer: str | None) -> bool:
    """Whether ``data`` is prepared out of core: asked for, or a file whose matrix is too large for memory."""
    if isinstance(data, ad.AnnData) or str(data) == "synthetic":
        return False
    if out_of_core is not None:
        return bool(out_of_core)
    path = check_h5ad_path(data)
    try:
        with h5py.File(path, "r") as handle:
            if layer is not None and layer not in handle.get("layers", {}):
                return True  # the streaming reader names the missing layer before reading anything
            element = handle["X"] if layer is None else handle["layers"][layer]
            stored = element.size if isinstance(element, h5py.Dataset) else element["data"].shape[0]
    except Exception:  # a damaged or foreign file: the in-memory reader says what is wrong with it
        return False
    return stored > OUT_OF_CORE_ENTRIES


def _load(data, perturbation_key: str | None, control_value: str | None, seed: int):
    """(AnnData, its source name, perturbation key, control value); synthetic data brings its own keys."""
    if isinstance(data, ad.AnnData):
        adata, source = data, "AnnData"
    elif isinstance(data, str) and data == "synthetic":
        adata, source = make_synthetic_perturbation_data(seed=seed), "synthetic"
        perturbation_key = perturbation_key or SYNTHETIC_PERTURBATION_KEY
        control_value = control_value or SYNTHETIC_CONTROL_VALUE
    else:
        adata, source = read_h5ad(data), str(data)
    if perturbation_key is None or control_value is None:
        raise DataValidationError(
            "Real data needs perturbation_key=<obs column> and control_value=<control label> "
            f"(obs columns: {list(adata.obs.columns)})."
        )
    return adata, source, perturbation_key, control_value


def _pair_training_perturbations(
    latent: np.ndarray, cells: CellTable, control_value: str, *, max_cells: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Training perturbation -> OT pairs of training controls with its training cells, within covariates."""
    labels, train = cells.labels, cells.split.train
    names, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")  # rows grouped by label, ascending within each: one pass, not one per label
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    rows_of = {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
    control_rows = rows_of[control_value][train[rows_of[control_value]]]
    pairs = {}
    for name in names:
        target_rows = rows_of[name][train[rows_of[name]]]
        if name != control_value and len(target_rows):
            pairs[name] = stratified_ot_pairs(latent, control_rows, target_rows, cells.covariates,
                                              max_cells=max_cells, rng=rng)
    return pairs
