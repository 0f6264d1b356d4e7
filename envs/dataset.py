"""The prepared dataset: one object that env, training and evaluation share.

``envs.preparation.prepare_dataset`` builds it once; ``PreparedDataset.save``/``load_dataset`` move it
through disk (the expression of an out-of-core dataset stays an on-disk HDF5 matrix),
and ``env_view()`` is the light copy (latent arrays and landscape only) that goes into Ray's
object store for env runners.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from envs.disk_expression import DiskExpression
from envs.landscape import CellLandscape
from envs.perturbation_features import PerturbationFeaturizer
from envs.perturbation_sets import set_syntax_of
from envs.set_features import SetFeaturizer
from envs.preprocessing import LatentSpace
from envs.splits import Split
from envs.validation import DataValidationError

__all__ = ["PreparedDataset", "load_dataset", "jsonable"]

_ARRAYS = "arrays.npz"
_EXPRESSION = "expression.npz"
_DISK_EXPRESSION = "expression.h5"
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
    expression: sp.csr_matrix | DiskExpression | None = None  # processed expression of the kept genes
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
        """Features of perturbations over every basis row (the ridge baseline's, and what can be expressed)."""
        return self._featurizer()

    @property
    def policy_featurizer(self) -> PerturbationFeaturizer:
        """The features policies observe: datasets prepared with shift hints leave out the target-gene axis rows."""
        basis = self.meta.get("basis") or {}
        if not (self.meta.get("shift_hint") and "gene_axes" in basis):  # older datasets: the features their runs saw
            return self.featurizer
        first, n_axes = int(basis.get("cell_pcs", 0)), int(basis["gene_axes"])
        shared = [row for row in range(self.n_latent) if not first <= row < first + n_axes]
        return self._featurizer(shared_rows=shared)

    def _featurizer(self, shared_rows=None) -> PerturbationFeaturizer:
        # datasets prepared with sets read a set's features member by member (envs.set_features)
        sets = set_syntax_of(self.meta, self.control_value)
        if sets.separator is None:
            return PerturbationFeaturizer(self.latent_space.components, self.latent_space.feature_names,
                                          self.training_perturbations, shared_rows=shared_rows)
        return SetFeaturizer(self.latent_space.components, self.latent_space.feature_names,
                             self.training_perturbations, sets=sets, shared_rows=shared_rows)

    def cell_indices(self, label: str, part: str = "train") -> np.ndarray:
        """Indices of cells with ``label`` in the ``"train"``, ``"test"`` or ``"all"`` part."""
        mask = self.labels == label
        if part != "all":
            mask &= getattr(self.split, part)
        return np.flatnonzero(mask)

    def env_view(self) -> PreparedDataset:
        """The copy env runners need: no expression matrix (the heavy part at scale) and no cell names."""
        return replace(self, expression=None, obs_names=None)

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
            if isinstance(self.expression, DiskExpression):
                self.expression.link_to(staging / _DISK_EXPRESSION)  # a hard link: no copy of a large matrix
            elif self.expression is not None:
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
                "truth": jsonable(self.truth),
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


def jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
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
            "create one with `waddington prepare` or `envs.prepare_dataset(...).save(path)`."
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
    if (path / _DISK_EXPRESSION).exists():
        expression = DiskExpression(path / _DISK_EXPRESSION)
    else:
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
