"""The answer as one AnnData: predicted cells next to their start cells, ranked gene changes, provenance.

Layout (see :func:`build_anndata`; README "Predict"):

* ``X``: expression in the run's gene space (log-normalized highly variable genes, float32):
  the start control cells (``obs['kind'] == 'start'``), one predicted cell per start cell and
  perturbation (``'predicted'``) and, if asked, the data's own cells of each perturbation
  (``'observed'``).
* ``obs``: ``kind``, ``perturbation`` (the control label for start cells), ``source_cell`` (obs
  name of the start cell), ``method``, ``run``, ``seed``, ``group`` (with a start group),
  ``dataset_part`` (with observed cells).
* ``obsm['X_latent_end']`` (cells x d) and ``obsm['X_latent_path']`` (cells x (horizon + 1) * d;
  ``.reshape(n_obs, horizon + 1, d)``, step 0 = start).
* ``varm['delta_<method>']``: DataFrame genes x perturbations of the predicted mean change.
* ``uns['waddington']``: ``ranked_genes`` (perturbation -> DataFrame of the top genes by
  |delta|), gene space, layout notes, per-run settings, checkpoints, input sha256, versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.prediction.predict import RunPrediction, cell_names
from experiments.prediction.runs import PredictionError

__all__ = ["build_anndata", "check_output_path", "h5ad_safe", "library_versions", "predict_anndata", "sha256_of", "write_h5ad_atomic"]

_PACKAGES = ("waddington-rl", "anndata", "scanpy", "numpy", "scipy", "pandas", "scikit-learn", "ray", "torch",
             "gymnasium")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the answer (without importing them)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 of a file (cached per path, mtime and size)."""
    p = Path(path)
    stat = p.stat()
    key = (str(p.resolve()), stat.st_mtime, stat.st_size)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with p.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def _find_sha(value: Any) -> str | None:
    """The first string under a key containing 'sha256' in a (nested) manifest."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if "sha256" in str(key).lower() and isinstance(item, str) and item:
                return item
        for item in value.values():
            found = _find_sha(item)
            if found:
                return found
    return None


def _input_of(prediction: RunPrediction) -> dict[str, str]:
    """Where the run's input came from and its sha256 where known."""
    run = prediction.run
    ds = run.dataset
    source = str(ds.meta.get("source", ""))
    out = {"source": source or "unknown"}
    if run.manifest and isinstance(run.manifest.get("input"), Mapping):
        out["manifest_input"] = json.dumps(run.manifest["input"], default=str, sort_keys=True)
    found = _find_sha(run.manifest) if run.manifest else None
    if found:
        out["sha256"], out["sha256_from"] = found, "manifest.json"
        return out
    candidates = [source, str(run.settings.get("data", ""))]
    for candidate in candidates:
        if candidate and candidate != "synthetic" and Path(candidate).is_file():
            out["sha256"], out["sha256_from"] = sha256_of(candidate), candidate
            return out
    if source == "synthetic":
        out["sha256"] = f"not applicable: generated in memory by envs.make_synthetic_perturbation_data(seed={ds.meta.get('seed', 0)})"
    elif source == "AnnData":
        out["sha256"] = "unknown: prepared from an in-memory AnnData (no file); the run recorded no hash"
    else:
        out["sha256"] = "unknown: the input file is not reachable from here and the run recorded no hash"
    return out


def h5ad_safe(value: Any) -> Any:
    """``value`` in a form ``write_h5ad`` stores in ``uns``: None -> 'None', mixed lists -> strings."""
    if isinstance(value, Mapping):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, str, np.generic)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = [h5ad_safe(v) for v in value]
        if all(isinstance(v, str) for v in items):
            return np.array(items, dtype=object) if items else np.array([], dtype=object)
        if all(isinstance(v, (bool, int, float, np.number)) for v in items) and items:
            return np.asarray(items)
        return json.dumps(value, default=str)
    if isinstance(value, np.ndarray):
        return value
    return str(value)


def _gene_space(prediction: RunPrediction) -> str:
    space = prediction.run.dataset.latent_space
    n = len(space.feature_names)
    if space.modality == "atac":
        return (f"TF-IDF (log1p) accessibility of the {n} most accessible peaks of the training cells, as "
                "envs.preprocessing prepares ATAC-like data")
    return (f"log-normalized expression (scanpy normalize_total(target_sum=1e4) then log1p) of the run's {n} "
            "highly variable genes, chosen on its training cells (seurat flavour); not raw counts")


def _common_genes(predictions: Sequence[RunPrediction]) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Genes of every run (in the first run's order) and each run's column indices of them."""
    first = predictions[0].gene_names
    common = set(first.tolist())
    for p in predictions[1:]:
        common &= set(p.gene_names.tolist())
    genes = np.array([g for g in first if g in common])
    if len(genes) == 0:
        raise PredictionError("The runs share no gene: they were trained on different data.")
    columns = []
    for p in predictions:
        index = {g: i for i, g in enumerate(p.gene_names)}
        columns.append(np.array([index[g] for g in genes]))
    dropped = max(len(p.gene_names) for p in predictions) - len(genes)
    return genes, columns, dropped


def build_anndata(
    predictions: Sequence[RunPrediction],
    *,
    group: tuple[str, str] | None = None,
    with_observed: bool = False,
    top_genes: int = 50,
    seed: int = 0,
    command: str | None = None,
):
    """Assemble one AnnData from the predictions of one or more runs (same method and perturbations).

    Parameters
    ----------
    predictions
        One :class:`RunPrediction` per run (e.g. per seed), all for the same perturbations.
    group
        ``(key, value)`` of the start group, recorded in ``obs['group']``.
    with_observed
        Also add each perturbation's own cells from the first run's dataset (``kind='observed'``,
        ``obs['dataset_part']`` = train/test), for side-by-side plots.
    top_genes
        Genes per perturbation in ``uns['waddington']['ranked_genes']``.
    seed
        The seed used (recorded).
    command
        The command line (recorded).
    """
    import anndata as ad
    import pandas as pd

    if not predictions:
        raise PredictionError("Nothing to write: no run predicted anything.")
    method = predictions[0].method
    perturbations = list(predictions[0].cells)
    shapes = {(p.horizon, p.run.dataset.n_latent) for p in predictions}
    if len(shapes) > 1:
        raise PredictionError(f"The runs differ in (horizon, latent dimension): {sorted(shapes)}; predict them "
                              "into separate files.")
    horizon, n_latent = next(iter(shapes))
    genes, columns, dropped = _common_genes(predictions)
    labels = _unique_labels([p.run.label for p in predictions])

    blocks = _Blocks()
    run_info = _add_predicted_cells(blocks, predictions, columns, labels, perturbations, horizon)
    if with_observed:
        _add_observed_cells(blocks, predictions[0], columns[0], labels[0], perturbations, horizon, n_latent)
    obs = _finish_obs(blocks.obs, predictions[0], perturbations, group=group, with_observed=with_observed)
    X_blocks, end_blocks, path_blocks = blocks.X, blocks.end, blocks.path

    X = np.vstack(X_blocks).astype(np.float32)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene")))
    adata.obsm["X_latent_end"] = np.vstack(end_blocks).astype(np.float32)
    adata.obsm["X_latent_path"] = np.vstack([p.reshape(len(p), -1) for p in path_blocks]).astype(np.float32)

    # predicted mean change per gene, averaged over runs (each run against its own start cells)
    delta = np.stack([np.mean([p.delta(name)[cols] for p, cols in zip(predictions, columns)], axis=0)
                      for name in perturbations], axis=1)
    delta_key = f"delta_{method}"
    adata.varm[delta_key] = pd.DataFrame(delta, index=adata.var_names, columns=perturbations)
    ranked = {}
    for j, name in enumerate(perturbations):
        order = np.argsort(-np.abs(delta[:, j]), kind="stable")[:top_genes]
        ranked[name] = pd.DataFrame({"gene": genes[order], "delta": delta[order, j],
                                     "rank": np.arange(1, len(order) + 1)})
    first = predictions[0]
    adata.uns["waddington"] = {
        "method": method,
        "perturbations": perturbations,
        "perturbation_info": h5ad_safe(first.perturbation_info),
        "ranked_genes": ranked,
        "delta_key": delta_key,
        "delta": (f"varm['{delta_key}'][p] = mean(predicted cells of p) - mean(start cells), per gene, in X's "
                  "gene space; averaged over runs (each against its own start cells). ranked_genes[p]: the "
                  f"top {top_genes} genes by |delta|."),
        "gene_space": _gene_space(first),
        "X": ("kind='start': observed expression of the start control cells; kind='predicted': start cell + "
              "decoded latent change, x_start + scale * (z_end - z_start) @ components (one predicted cell per "
              "start cell, obs['source_cell']); kind='observed': the data's own cells of the perturbation"),
        "out_of_range_score": ("obs['out_of_range_score'] of start and predicted cells: the start cell's mean "
                               "distance to its nearest paired training start states over their own median "
                               "spacing (envs.start_range; ~1 in range); past "
                               f"{first.range_constants[0]:g} the policy's correction and the guide's borrowed hint "
                               f"shrink, from {first.range_constants[1]:g} on they are gone (docs/out_of_range.md); "
                               "NaN for observed cells") if first.start_score is not None else "not computed",
        "latent_path_layout": (f"obsm['X_latent_path'].reshape(n_obs, {horizon + 1}, {n_latent}): latent state "
                               f"at steps 0..{horizon} (0 = start, {horizon} = obsm['X_latent_end']); NaN for "
                               "observed cells. Each run has its own latent space (PCA fitted on its training "
                               "cells): compare latent coordinates within a run only."),
        "latent_kind": first.latent_kind,
        "latent_kind_note": ("rollout: env dynamics (landscape drift + action + noise) for horizon steps; "
                             "projection: the method shifts cells in gene space; its latent end is the "
                             "projection of that shift and the path a straight line"),
        "horizon": horizon,
        "n_latent": n_latent,
        "start": "group" if group else "control",
        "start_cells": ("control cells of the training part of each run's split (the start cells of waddington "
                        "evaluate)" + (f", restricted to {group[0]}={group[1]}" if group else "")
                        + "; a seeded subsample of at most n_cells per run"),
        "group_key": group[0] if group else "None",
        "group_value": group[1] if group else "None",
        "genes_dropped_across_runs": int(dropped),
        "seed": int(seed),
        "runs": run_info,
        "versions": library_versions(),
        "command": command or "None",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return adata



@dataclass
class _Blocks:
    """Rows of the output AnnData, gathered block by block before stacking."""

    X: list = field(default_factory=list)
    obs: list = field(default_factory=list)
    end: list = field(default_factory=list)
    path: list = field(default_factory=list)


def _add_predicted_cells(blocks: _Blocks, predictions, columns, labels, perturbations, horizon: int) -> dict:
    """Each run's start cells and its predicted cells per perturbation; returns the runs' records."""
    import pandas as pd

    run_info: dict[str, Any] = {}
    for prediction, cols, label in zip(predictions, columns, labels):
        run = prediction.run
        names, names_how = cell_names(run)
        source = names[prediction.start_rows]
        base = {"run": label, "seed": run.seed}
        if prediction.start_score is not None:  # each predicted cell carries its start cell's score
            base["out_of_range_score"] = prediction.start_score
        blocks.X.append(prediction.start_expression[:, cols])
        blocks.obs.append(pd.DataFrame({"kind": "start", "perturbation": run.dataset.control_value,
                                        "source_cell": source, "method": "observed", **base},
                                       index=[f"{label}:start:{s}" for s in source]))
        blocks.end.append(prediction.start_latent)
        blocks.path.append(np.repeat(prediction.start_latent[:, None, :], horizon + 1, axis=1))
        for name in perturbations:
            blocks.X.append(prediction.cells[name][:, cols])
            blocks.obs.append(pd.DataFrame({"kind": "predicted", "perturbation": name, "source_cell": source,
                                            "method": prediction.method, **base},
                                           index=[f"{label}:{name}:{s}" for s in source]))
            blocks.end.append(prediction.latent_end[name])
            blocks.path.append(prediction.latent_path[name])
        run_info[label] = _run_record(prediction, len(source), names_how)
    return run_info


def _add_observed_cells(blocks: _Blocks, first, cols, label, perturbations, horizon: int, n_latent: int) -> None:
    """The data's own cells of each perturbation (from the first run's dataset), for side-by-side plots."""
    import pandas as pd

    ds = first.run.dataset
    names, _ = cell_names(first.run)
    for name in perturbations:
        rows = ds.cell_indices(name, "all")
        if len(rows) == 0:
            continue
        blocks.X.append(np.asarray(ds.expression[rows][:, cols].toarray(), dtype=np.float64))
        part = np.where(ds.split.test[rows], "test", "train")
        blocks.obs.append(pd.DataFrame({"kind": "observed", "perturbation": name, "source_cell": names[rows],
                                        "method": "observed", "run": label, "seed": first.run.seed,
                                        "dataset_part": part},
                                       index=[f"{label}:observed:{s}" for s in names[rows]]))
        blocks.end.append(ds.latent[rows].astype(np.float64))
        blocks.path.append(np.full((len(rows), horizon + 1, n_latent), np.nan))


def _finish_obs(obs_blocks, first, perturbations, *, group, with_observed: bool):
    """One obs table: group column, dataset parts, categorical columns, unique names checked."""
    import pandas as pd

    obs = pd.concat(obs_blocks)
    if group is not None:
        obs["group"] = np.where(obs["kind"].to_numpy() == "observed", "", group[1])
        if with_observed:
            values = _observed_groups(first, perturbations, group[0])
            if values is not None:
                obs.loc[obs["kind"] == "observed", "group"] = values
    if "dataset_part" in obs:
        obs["dataset_part"] = obs["dataset_part"].fillna("train").astype(str)
        obs.loc[obs["kind"] == "start", "dataset_part"] = "train"
    for column in ("kind", "perturbation", "source_cell", "method", "run", "group", "dataset_part"):
        if column in obs:
            obs[column] = pd.Categorical(obs[column].astype(str))
    obs["seed"] = obs["seed"].astype(int)
    if not obs.index.is_unique:
        raise PredictionError("Predicted cells would share names; give each run directory once.")
    return obs

def _unique_labels(labels: list[str]) -> list[str]:
    out, seen = [], {}
    for label in labels:
        if label in seen:
            seen[label] += 1
            out.append(f"{label}-{seen[label]}")
        else:
            seen[label] = 0
            out.append(label)
    return out


def _observed_groups(prediction: RunPrediction, perturbations: list[str], key: str) -> np.ndarray | None:
    from experiments.prediction.predict import group_values

    values = group_values(prediction.run.dataset, key)
    if values is None:
        return None
    ds = prediction.run.dataset
    return np.concatenate([values[ds.cell_indices(p, "all")] for p in perturbations
                           if len(ds.cell_indices(p, "all"))])


def _run_record(prediction: RunPrediction, n_start: int, names_how: str) -> dict[str, Any]:
    run = prediction.run
    checkpoint = run.policies.get(prediction.method)
    record = {
        "path": str(run.path) if run.path is not None else "None (in-memory)",
        "seed": run.seed,
        "n_start_cells": int(n_start),
        "n_genes": len(prediction.gene_names),
        "checkpoint": str(checkpoint) if checkpoint is not None and not callable(checkpoint) else (
            "in-memory policy" if checkpoint is not None else "None (baseline)"),
        "input": _input_of(prediction),
        "source_cell_names": names_how,
        "notes": list(run.notes),
        "split": {"kind": run.dataset.split.kind,
                  "heldout_perturbations": list(run.dataset.split.heldout_perturbations),
                  "group_key": run.dataset.split.group_key, "heldout_group": run.dataset.split.heldout_group},
        "training_perturbations": list(run.dataset.training_perturbations),
        "settings": run.settings,
        "settings_json": json.dumps(run.settings, default=str, sort_keys=True),
    }
    if run.manifest is not None:
        record["manifest_json"] = json.dumps(run.manifest, default=str, sort_keys=True)
    return h5ad_safe(record)


def check_output_path(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """The output file: ends in ``.h5ad``; an existing file is refused unless ``overwrite``."""
    out = Path(path).expanduser()
    if out.suffix != ".h5ad":
        raise PredictionError(f"-o/--output must be an .h5ad file (scanpy reads it by suffix), got '{out}'.")
    if out.is_dir():
        raise PredictionError(f"-o/--output '{out}' is a directory; name an .h5ad file.")
    if out.exists() and not overwrite:
        raise PredictionError(f"Output '{out}' exists; pass --overwrite (overwrite=True) to replace it.")
    return out


def write_h5ad_atomic(adata, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``adata`` to a temp file beside ``path``, then rename it into place (never half-written)."""
    out = check_output_path(path, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".h5ad", dir=out.parent)
    os.close(handle)
    try:
        adata.write_h5ad(staging)
        os.replace(staging, out)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return out


def predict_anndata(
    runs: Sequence[Any],
    *,
    perturbations: Sequence[str],
    method: str = "trpo-ppo",
    start_group: Any = None,
    n_cells: int | None = 1000,
    seed: int = 0,
    with_observed: bool = False,
    top_genes: int = 50,
    trial: str | None = None,
    command: str | None = None,
    log=None,
):
    """Predict ``perturbations`` from one or more runs and assemble the AnnData (CLI and API share it).

    ``runs``: run directories and/or :class:`~experiments.prediction.predict.Run` objects. Every
    input is checked (runs, perturbations, group) before any cell is rolled out.
    """
    from experiments.prediction.predict import (
        check_perturbations,
        parse_group,
        predict_run,
        select_start_rows,
    )
    from experiments.prediction.runs import METHODS, POLICY_METHODS, Run, load_run

    if method not in METHODS:
        raise PredictionError(f"Unknown method {method!r}; choose one of {list(METHODS)}.")
    if top_genes < 1:
        raise PredictionError(f"top_genes must be >= 1, got {top_genes}.")
    names = [str(p) for p in perturbations]
    group = parse_group(start_group)
    loaded: list[Run] = []
    seen: set[str] = set()
    for item in runs:
        if isinstance(item, Run):
            loaded.append(item)
            continue
        key = str(Path(item).resolve())
        if key in seen:
            raise PredictionError(f"Run '{item}' is given twice.")
        seen.add(key)
        if log:
            log(f"loading run {item}")
        loaded.append(load_run(item, trial=trial, need_checkpoints=method in POLICY_METHODS))
    if not loaded:
        raise PredictionError("Give at least one run (--run DIR).")
    plans = []
    for run in loaded:  # every check before any rollout
        if method in POLICY_METHODS and method not in run.policies:
            run.policy(method)  # raises the clear message
        info = check_perturbations(run.dataset, names, method)
        rows = select_start_rows(run.dataset, group=group, n_cells=n_cells, seed=seed)
        plans.append((run, info, rows))
    predictions = []
    for run, info, rows in plans:
        if log:
            log(f"run {run.label}: {method} on {len(rows)} start cells x {len(names)} perturbation(s)")
        predictions.append(predict_run(run, names, method=method, start_rows=rows, seed=seed,
                                       perturbation_info=info))
    return build_anndata(predictions, group=group, with_observed=with_observed, top_genes=top_genes, seed=seed,
                         command=command)
