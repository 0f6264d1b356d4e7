"""Design targets: cells of an ``.h5ad`` projected into a run's latent space, or a gene signature.

Target cells go through the recipe the run's own cells went through (:func:`envs.preprocessing.preprocess`):
raw counts are ``normalize_total(target_sum=1e4)`` then ``log1p`` over all genes of the file
(log-normalized input, ``input_kind="log-normalized"``, is taken as is), then the run's genes are
picked in the run's order and encoded with the run's latent map (:meth:`envs.preprocessing.LatentSpace.encode`).
The file must hold every gene of the run's gene space; counts are normalized over the file's own
genes, so a file cut down to the run's genes is normalized differently from the run's data (say
``input_kind="log-normalized"`` for data normalized elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from envs.dataset import PreparedDataset
from experiments.design.errors import DesignError

__all__ = ["TargetCells", "parse_signature", "read_target_cells"]


@dataclass
class TargetCells:
    """One target population in the run's spaces.

    Attributes
    ----------
    name
        The ``--target-obs`` value, or ``"target"``.
    expression
        The cells' log-normalized expression of the run's genes (cells x genes).
    latent
        Their latent coordinates in the run's latent space (cells x d).
    obs_names
        The cells' names in the file.
    """

    name: str
    expression: np.ndarray
    latent: np.ndarray
    obs_names: np.ndarray


def read_target_cells(path: str | os.PathLike, dataset: PreparedDataset, *, target_obs: str | None = None,
                      input_kind: str | None = None, layer: str | None = None) -> list[TargetCells]:
    """Target populations of an ``.h5ad`` file, projected into ``dataset``'s latent space (module docstring).

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    dataset
        The run's prepared dataset (its latent space and gene space).
    target_obs
        ``"KEY=VALUE"``: the cells of that value; ``"KEY"``: one target per value of ``obs[KEY]``;
        ``None``: all cells, one target named ``"target"``.
    input_kind
        ``"counts"`` or ``"log-normalized"``; ``None``: as the run's own data.
    layer
        Layer holding the values (``None``: ``X``).

    Raises
    ------
    DesignError
        Missing file, another gene space (names the overlap), an unknown obs key or value, an empty
        target, values that are not what ``input_kind`` says.
    """
    import anndata as ad

    from envs.validation import DataValidationError, counts_matrix, validate_values

    file = Path(path).expanduser()
    if not file.is_file():
        raise DesignError(f"--target-cells '{file}' does not exist.")
    space = dataset.latent_space
    if space.modality != "rna":
        raise DesignError(f"Target cells can be projected for RNA runs only; this run's modality is {space.modality}.")
    kind = input_kind or str(dataset.meta.get("input_kind", "counts"))
    adata = ad.read_h5ad(file)
    genes = [str(g) for g in space.feature_names]
    _check_gene_space(file, genes, [str(g) for g in adata.var_names])
    groups = _select(file, adata, target_obs)
    try:
        values = counts_matrix(adata, layer=layer)
    except DataValidationError as exc:
        raise DesignError(str(exc)) from exc
    out = []
    column = {g: i for i, g in enumerate(map(str, adata.var_names))}
    picked = np.array([column[g] for g in genes])
    for name, rows in groups:
        block = sp.csr_matrix(values[rows], dtype=np.float64)
        try:
            validate_values(block.data, input_kind=kind, where=f"target cells '{name}'")
        except DataValidationError as exc:
            raise DesignError(f"--target-cells '{file}': {exc}") from exc
        if kind == "counts":  # normalize_total(1e4) + log1p over the file's genes, as the run's recipe does
            depth = np.asarray(block.sum(axis=1)).ravel()
            block = sp.diags(1e4 / np.where(depth > 0, depth, 1.0)) @ block
            block = block.log1p()
        expression = np.asarray(block[:, picked].toarray(), dtype=np.float64)
        out.append(TargetCells(name=name, expression=expression, latent=space.encode(expression).astype(np.float64),
                               obs_names=np.asarray(adata.obs_names[rows]).astype(str)))
    return out


def _check_gene_space(file: Path, genes: Sequence[str], present: Sequence[str]) -> None:
    missing = [g for g in genes if g not in set(present)]
    if not missing:
        return
    shared = len(genes) - len(missing)
    own = [g for g in present if g not in set(genes)]
    raise DesignError(
        f"--target-cells '{file}' is in another gene space: it has {shared} of the run's {len(genes)} genes "
        f"(missing e.g. {missing[:5]}; the file's {len(present)} genes include e.g. {own[:5] or list(present)[:5]}). "
        "Give cells measured on the run's genes (same gene names, e.g. the same Ensembl or symbol convention).")


def _select(file: Path, adata, target_obs: str | None) -> list[tuple[str, np.ndarray]]:
    """(name, rows) of each target in the file."""
    if adata.n_obs == 0:
        raise DesignError(f"--target-cells '{file}' holds no cells: the target is empty.")
    if target_obs is None:
        return [("target", np.arange(adata.n_obs))]
    key, sep, value = str(target_obs).partition("=")
    key, value = key.strip(), value.strip()
    if not key or (sep and not value):
        raise DesignError(f"--target-obs takes KEY=VALUE or KEY, got {target_obs!r}.")
    if key not in adata.obs:
        raise DesignError(f"--target-obs: '{file}' has no obs column '{key}'. Its obs columns: {list(adata.obs)}.")
    labels = adata.obs[key].astype(str).to_numpy()
    if sep:
        rows = np.flatnonzero(labels == value)
        if len(rows) == 0:
            raise DesignError(f"--target-obs {key}={value}: no cell of '{file}' has it, so the target is empty. "
                              f"Values of '{key}': {sorted(set(labels.tolist()))[:20]}.")
        return [(value, rows)]
    return [(name, np.flatnonzero(labels == name)) for name in sorted(set(labels.tolist()))]


def parse_signature(text: str | Mapping[str, int | str], dataset: PreparedDataset) -> dict[str, int]:
    """``"GENE:up,GENE:down"`` (or ``{gene: "up" | +1, ...}``) -> gene -> +1 / -1, genes checked against the run's.

    Raises :class:`DesignError` for an empty signature, a direction other than up/down, a gene named
    twice or a gene outside the run's gene space.
    """
    if isinstance(text, Mapping):
        items = [(str(g), str(d)) for g, d in text.items()]
    else:
        items = []
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            gene, sep, direction = part.rpartition(":")
            if not sep or not gene.strip():
                raise DesignError(f"--target-genes takes GENE:up,GENE:down,...; got {part!r} in {text!r}.")
            items.append((gene.strip(), direction.strip()))
    if not items:
        raise DesignError("--target-genes names no gene: the target is empty (GENE:up,GENE:down,...).")
    signs = {"up": 1, "+1": 1, "1": 1, "+": 1, "down": -1, "-1": -1, "-": -1}
    genes = set(map(str, dataset.latent_space.feature_names))
    out: dict[str, int] = {}
    for gene, direction in items:
        if direction.lower() not in signs:
            raise DesignError(f"--target-genes: direction of '{gene}' must be up or down, got {direction!r}.")
        if gene in out:
            raise DesignError(f"--target-genes names '{gene}' twice.")
        out[gene] = signs[direction.lower()]
    outside = [g for g in out if g not in genes]
    if outside:
        raise DesignError(f"--target-genes: {outside} not in the run's gene space ({len(genes)} genes, e.g. "
                          f"{sorted(genes)[:5]}).")
    return out
