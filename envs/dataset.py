"""The prepared dataset: one object that env, training and evaluation share.

``prepare_dataset`` runs h5ad -> validation -> split -> scanpy latent space -> landscape ->
perturbation features -> OT pairings once; ``PreparedDataset.save``/``load`` move it through disk,
and ``env_view()`` is the light copy (latent arrays and landscape only) that goes into Ray's
object store for env runners.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from envs.landscape import CellLandscape
from envs.pairing import stratified_ot_pairs
from envs.perturbation_features import PerturbationFeaturizer
from envs.preprocessing import BasisOptions, LatentSpace, Modality, preprocess
from envs.splits import Split, SplitKind, make_split
from envs.synthetic import (
    SYNTHETIC_CONTROL_VALUE,
    SYNTHETIC_PERTURBATION_KEY,
    make_synthetic_perturbation_data,
)
from envs.validation import DataValidationError, read_h5ad, validate_perturbation_data

__all__ = ["PreparedDataset", "prepare_dataset", "load_dataset"]

_ARRAYS = "arrays.npz"
_EXPRESSION = "expression.npz"
_META = "meta.json"


@dataclass
class PreparedDataset:
    """Latent cells, their labels, the fitted landscape and everything episodes need."""

    latent: np.ndarray  # (n_cells, n_latent) float32
    labels: np.ndarray  # (n_cells,) perturbation label
    control_value: str
    split: Split
    latent_space: LatentSpace
    landscape: CellLandscape
    pairs: dict[str, np.ndarray]  # training perturbation -> (k, 3) [control cell, target cell, weight]
    groups: np.ndarray | None = None
    covariates: np.ndarray | None = None  # per cell: its covariate combination (pairs are formed within it)
    obs_names: np.ndarray | None = None  # the input's cell names (after ignore_values)
    expression: sp.csr_matrix | None = None  # processed expression of the kept genes
    truth: dict[str, Any] | None = None  # synthetic ground truth
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_latent(self) -> int:
        return self.latent.shape[1]

    @property
    def perturbations(self) -> list[str]:
        return sorted(set(self.labels.tolist()) - {self.control_value})

    @property
    def training_perturbations(self) -> list[str]:
        return sorted(self.pairs)

    @property
    def featurizer(self) -> PerturbationFeaturizer:
        return PerturbationFeaturizer(
            self.latent_space.components, self.latent_space.feature_names, self.training_perturbations
        )

    def cell_indices(self, label: str, part: str = "train") -> np.ndarray:
        """Indices of cells with ``label`` in the ``"train"``, ``"test"`` or ``"all"`` part."""
        mask = self.labels == label
        if part != "all":
            mask &= getattr(self.split, part)
        return np.flatnonzero(mask)

    def env_view(self) -> PreparedDataset:
        """The copy env runners need: no expression matrix (the heavy part at scale)."""
        return replace(self, expression=None)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write to a directory atomically (a temp dir renamed into place); never half-writes."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"'{path}' exists; pass overwrite=True or choose another directory.")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            arrays = {
                "latent": self.latent,
                "labels": self.labels.astype(str),
                "split_train": self.split.train,
                "split_test": self.split.test,
                **self.latent_space.to_arrays(),
                **self.landscape.to_arrays(),
            }
            if self.groups is not None:
                arrays["groups"] = self.groups.astype(str)
            if self.covariates is not None:
                arrays["covariates"] = self.covariates.astype(str)
            if self.obs_names is not None:
                arrays["obs_names"] = self.obs_names.astype(str)
            for name, pairs in self.pairs.items():
                arrays[f"pairs::{name}"] = pairs
            np.savez_compressed(staging / _ARRAYS, **arrays)
            if self.expression is not None:
                sp.save_npz(staging / _EXPRESSION, self.expression)
            meta = {
                "control_value": self.control_value,
                "split": {
                    "kind": self.split.kind,
                    "heldout_perturbations": self.split.heldout_perturbations,
                    "group_key": self.split.group_key,
                    "heldout_group": self.split.heldout_group,
                },
                "meta": self.meta,
                "truth": _jsonable(self.truth),
            }
            (staging / _META).write_text(json.dumps(meta, indent=1))
            if path.exists():
                backup = path.with_name(f".{path.name}.old")
                os.replace(path, backup)
                os.replace(staging, path)
                shutil.rmtree(backup)
            else:
                os.replace(staging, path)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_dataset(path: str | Path) -> PreparedDataset:
    """Load a dataset written by :meth:`PreparedDataset.save`."""
    path = Path(path)
    if not (path / _ARRAYS).exists() or not (path / _META).exists():
        raise DataValidationError(
            f"'{path}' is not a prepared dataset directory (expected {_ARRAYS} and {_META}); "
            "create one with `envs.prepare_dataset(...).save(path)`."
        )
    meta = json.loads((path / _META).read_text())
    with np.load(path / _ARRAYS, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    split_meta = meta["split"]
    split = Split(
        split_meta["kind"],
        arrays["split_train"],
        arrays["split_test"],
        heldout_perturbations=split_meta["heldout_perturbations"],
        group_key=split_meta["group_key"],
        heldout_group=split_meta["heldout_group"],
    )
    expression = sp.load_npz(path / _EXPRESSION).tocsr() if (path / _EXPRESSION).exists() else None
    return PreparedDataset(
        latent=arrays["latent"],
        labels=arrays["labels"],
        control_value=meta["control_value"],
        split=split,
        latent_space=LatentSpace.from_arrays(arrays),
        landscape=CellLandscape.from_arrays(arrays),
        pairs={key.split("::", 1)[1]: arrays[key] for key in arrays if key.startswith("pairs::")},
        groups=arrays.get("groups"),
        covariates=arrays.get("covariates"),
        obs_names=arrays.get("obs_names"),
        expression=expression,
        truth=meta.get("truth"),
        meta=meta.get("meta", {}),
    )


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
    max_pair_cells: int = 1000,
    seed: int = 0,
    verbose: bool = False,
) -> PreparedDataset:
    """Build a :class:`PreparedDataset` from ``"synthetic"``, an ``.h5ad`` path or an AnnData.

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
        with ``target_gene_axes``, the axis of every panel gene a perturbation label names.
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
    seed
        Seed of the split, the SVD, the landscape fit and the pairings.
    verbose
        Print each stage and its duration.
    """
    started = time.perf_counter()

    def log(message: str) -> None:
        if verbose:
            print(f"[prepare {time.perf_counter() - started:6.1f}s] {message}", flush=True)

    adata, source, perturbation_key, control_value = _load(data, perturbation_key, control_value, seed)
    truth = adata.uns.get("truth")  # the synthetic generator's known truth (also in an AnnData made by it)
    truth = truth if isinstance(truth, dict) and "conditions" in truth else None
    log(f"loaded {source}: {adata.n_obs} cells x {adata.n_vars} features")
    validate_perturbation_data(
        adata,
        perturbation_key=perturbation_key,
        control_value=control_value,
        min_cells=min_cells,
        n_latent=n_latent,
        layer=layer,
        require_counts=True,
        ignore_values=ignore_values,
        input_kind=input_kind,
    )
    labels_all = adata.obs[perturbation_key].astype(str).to_numpy()
    keep = ~np.isin(labels_all, list(ignore_values))
    if not keep.all():
        adata = adata[keep]
    labels = labels_all[keep]
    groups = _obs_strings(adata, [group_key], "group_key") if group_key else None
    covariate_keys = list(dict.fromkeys([*covariate_keys, *([group_key] if split == "group" and group_key else [])]))
    covariates = _obs_strings(adata, covariate_keys, "covariate_keys") if covariate_keys else None
    cell_split = make_split(
        labels,
        control_value=control_value,
        kind=split,
        holdout=holdout,
        groups=groups,
        group_key=group_key,
        test_fraction=test_fraction,
        seed=seed,
    )
    log(f"split '{cell_split.kind}': {cell_split.train.sum()} train / {cell_split.test.sum()} test cells")
    basis = BasisOptions(labels, control_value, response_energy=response_energy,
                         max_response_dims=max_response_dims, target_gene_axes=target_gene_axes)
    space, latent, expression = preprocess(
        adata, fit_mask=cell_split.train, n_latent=n_latent, n_top_features=n_top_genes, modality=modality,
        layer=layer, normalize=input_kind == "counts", basis=basis, seed=seed,
    )
    log(f"latent space: {space.n_latent} dims ({basis.added}) from {len(space.feature_names)} {modality} features")
    n_groups = len(set(labels[cell_split.train]))
    landscape = CellLandscape.fit(
        latent[cell_split.train], n_wells=n_wells or min(32, 3 * n_groups), reg_covar=0.05, seed=seed
    )
    log(f"landscape: {len(landscape.weights)} wells")
    pairs = _pair_training_perturbations(latent, labels, control_value, cell_split.train, covariates,
                                         max_cells=max_pair_cells, rng=np.random.default_rng(seed))
    within = f" within {covariate_keys}" if covariate_keys else ""
    log(f"OT pairings for {len(pairs)} training perturbations{within}")
    return PreparedDataset(
        latent=latent,
        labels=labels,
        control_value=control_value,
        split=cell_split,
        latent_space=space,
        landscape=landscape,
        pairs=pairs,
        groups=groups,
        covariates=covariates,
        obs_names=adata.obs_names.astype(str).to_numpy(),
        expression=expression,
        truth=_jsonable(truth) if truth is not None else None,
        meta={"source": source, "perturbation_key": perturbation_key, "seed": seed, "modality": modality,
              "covariate_keys": covariate_keys, "input_kind": input_kind, "basis": basis.added},
    )


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


def _obs_strings(adata: ad.AnnData, keys: Sequence[str], option: str) -> np.ndarray:
    """One string per cell from obs columns ``keys`` (joined with ``|``); a missing column is a clear error."""
    missing = [key for key in keys if key not in adata.obs.columns]
    if missing:
        what = f"'{missing[0]}'" if len(keys) == 1 else str(missing)
        raise DataValidationError(f"{option} {what} not found in obs. Available obs columns: {list(adata.obs.columns)}.")
    columns = [adata.obs[key].astype(str).to_numpy() for key in keys]
    return columns[0] if len(columns) == 1 else np.array(["|".join(parts) for parts in zip(*columns)])


def _pair_training_perturbations(
    latent: np.ndarray,
    labels: np.ndarray,
    control_value: str,
    train: np.ndarray,
    covariates: np.ndarray | None,
    *,
    max_cells: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Training perturbation -> OT pairs of training controls with its training cells, within covariates."""
    control_rows = np.flatnonzero((labels == control_value) & train)
    pairs = {}
    for name in sorted(set(labels[train]) - {control_value}):
        target_rows = np.flatnonzero((labels == name) & train)
        pairs[name] = stratified_ot_pairs(latent, control_rows, target_rows, covariates, max_cells=max_cells, rng=rng)
    return pairs
