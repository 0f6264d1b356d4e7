"""A trained run for prediction: its dataset (``DIR/dataset`` or rebuilt from its settings) and its policies.

A *run* is the output directory of ``waddington train`` (or a ``sweep``: its best trial, or
``trial=``), or of one seed of ``waddington evaluate --data``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset

__all__ = ["METHODS", "POLICY_METHODS", "FEATURE_METHODS", "PredictionError", "Run", "load_run", "run_from_dataset"]

#: ``--method`` choices: the run's policies, then the baselines of ``waddington evaluate``.
METHODS = ("trpo-ppo", "trpo", "ppo-only", "train-mean", "perturbation-mean", "ridge", "drift", "hint-controller",
           "control-mean", "additive")
#: Methods that roll a trained policy (need checkpoints).
POLICY_METHODS = ("trpo-ppo", "trpo", "ppo-only")
#: Methods that read the perturbation's features (an unseen non-panel label is all zeros for them).
FEATURE_METHODS = (*POLICY_METHODS, "ridge", "hint-controller")

Policy = Callable[[np.ndarray], np.ndarray]


class PredictionError(ValueError):
    """Input that cannot be predicted (the message says what can); the CLI prints it as one error line."""


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A trained model to predict with: its dataset, settings and policies.

    Attributes
    ----------
    label
        Name of the run in the output (``obs['run']``): the run directory's name, made unique.
    dataset
        The full prepared dataset the run was trained on (with ``expression``).
    settings
        The run's two-stage settings as a plain dict (``TwoStageSettings.to_dict()``), or ``{}``.
    path
        The run directory (``None`` for an in-memory model).
    policies
        Method -> checkpoint directory or a ready ``act(obs) -> actions`` function.
    manifest
        ``DIR/manifest.json`` when the run wrote one.
    notes
        Remarks recorded in the output (e.g. where the dataset came from).
    """

    label: str
    dataset: PreparedDataset
    settings: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    policies: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    _loaded: dict[str, Policy] = field(default_factory=dict, repr=False)
    _names: tuple[np.ndarray, str] | None = field(default=None, repr=False)

    @property
    def seed(self) -> int:
        return int(self.settings.get("seed", self.dataset.meta.get("seed", 0)))

    @property
    def env_config(self) -> dict[str, Any]:
        return dict(self.settings.get("env_config") or {})

    def policy(self, method: str) -> Policy:
        """The ``act`` function of a policy method (loaded once)."""
        if method in self._loaded:
            return self._loaded[method]
        if method not in self.policies:
            raise PredictionError(_missing_policy_message(self, method))
        source = self.policies[method]
        if callable(source):
            act = source
        else:
            from experiments.evaluation.checkpoints import CheckpointError, load_policy

            try:
                act = load_policy(source)
            except CheckpointError as exc:
                raise PredictionError(str(exc)) from exc
        self._loaded[method] = act
        return act


def _missing_policy_message(run: Run, method: str) -> str:
    where = f"run '{run.path}'" if run.path is not None else f"model '{run.label}'"
    have = sorted(run.policies)
    if method == "ppo-only":
        hint = ("the PPO-only ablation is trained by `waddington evaluate --data ...` (it writes "
                "<seed dir>/ppo_only/); pass that seed directory as --run")
    elif method == "trpo":
        hint = "the run kept no stage-1 checkpoint (checkpoints/stage1-*/)"
    else:
        hint = "train one with `waddington train -o DIR`"
    baselines = ", ".join(m for m in METHODS if m not in POLICY_METHODS)
    return (f"--method {method}: {where} has no such policy ({hint}). Policies it has: {have or 'none'}; "
            f"baselines need none: {baselines}.")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_run(run_dir: str | os.PathLike, *, trial: str | None = None, label: str | None = None,
             need_checkpoints: bool = True) -> Run:
    """Load a run directory: its settings, policies (not yet their weights) and full dataset.

    Parameters
    ----------
    run_dir
        Output of ``waddington train`` / ``sweep`` (best trial unless ``trial``), or one seed
        directory of ``waddington evaluate --data`` (which also holds ``ppo_only/``).
    trial
        For a sweep: a substring of the trial directory.
    label
        Name of the run in the output (default: the directory name).
    need_checkpoints
        Refuse a directory without a finished two-stage checkpoint (else baselines may still run
        on the run's dataset).

    Raises
    ------
    PredictionError
        The directory is missing, holds no finished checkpoint (and no ``ppo_only/``), or its
        dataset can neither be loaded nor rebuilt.
    """
    from experiments.evaluation.checkpoints import (
        CheckpointError,
        find_stage_checkpoints,
    )

    root = Path(run_dir)
    if not root.is_dir():
        raise PredictionError(f"Run directory '{root}' does not exist.")
    policies: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    notes: list[str] = []
    ckpt_error = None
    try:
        ckpts = find_stage_checkpoints(root, trial=trial)
    except CheckpointError as exc:
        ckpt_error = exc
    else:
        settings = dict(ckpts.settings)
        policies["trpo-ppo"] = ckpts.stage2
        if ckpts.stage1 is not None:
            policies["trpo"] = ckpts.stage1
            if ckpts.stage1_algorithm != "trpo":
                notes.append(f"stage 1 of this run ran {ckpts.stage1_algorithm!r}, not TRPO (debug setting "
                             "stage1_algo); --method trpo uses that stage-1 policy")
    ppo_only = root / "ppo_only"
    ppo_state = _read_json(ppo_only / "state.json")
    if ppo_state is not None and (ppo_only / "algorithm").is_dir():
        policies["ppo-only"] = ppo_only
        settings = settings or dict(ppo_state.get("settings") or {})
    if not policies and (need_checkpoints or not (root / "dataset").is_dir()):
        raise PredictionError(f"{ckpt_error} (Nor a PPO-only checkpoint at '{ppo_only}'.)")
    manifest = _read_json(root / "manifest.json")
    dataset, how = _dataset_of(root, settings)
    notes.append(how)
    return Run(label=label or root.resolve().name, dataset=dataset, settings=settings, path=root.resolve(),
               policies=policies, manifest=manifest, notes=notes)


def _dataset_of(root: Path, settings: Mapping[str, Any]) -> tuple[PreparedDataset, str]:
    """The run's full dataset: ``DIR/dataset`` if saved, else rebuilt from the settings."""
    import envs

    saved = root / "dataset"
    if saved.is_dir():
        try:
            dataset = envs.load_dataset(saved)
        except ValueError as exc:
            raise PredictionError(f"The run's dataset '{saved}' cannot be read: {exc}") from exc
        if dataset.expression is None:
            raise PredictionError(f"The run's dataset '{saved}' was saved without its expression matrix "
                                  "(env_view()); predictions need gene-space cells.")
        return dataset, f"dataset loaded from {saved}"
    if not settings:
        raise PredictionError(f"Run '{root}' has neither a saved dataset ('{saved}') nor settings to rebuild it.")
    from experiments.training.algorithm_configs import dataset_options
    from experiments.training.settings import TwoStageSettings, setting_names

    names = set(setting_names())
    s = TwoStageSettings.from_mapping({k: v for k, v in settings.items() if k in names})
    data = s.data
    if isinstance(data, str) and data != "synthetic":
        path = Path(data)
        if not path.exists():
            raise PredictionError(f"Run '{root}' has no saved dataset ('{saved}') and its data '{data}' is not "
                                  "reachable from here; copy the data back or re-train.")
        if path.is_dir():
            dataset = envs.load_dataset(path)
            if dataset.expression is None:
                raise PredictionError(f"The run's dataset '{path}' was saved without its expression matrix.")
            return dataset, f"dataset loaded from the run's data {path}"
    try:
        dataset = envs.prepare_dataset(data, **dataset_options(s), seed=s.seed)
    except ValueError as exc:
        raise PredictionError(f"The run's data failed validation: {exc}") from exc
    return dataset, f"dataset rebuilt from the run's settings (data={data!r}, seed={s.seed})"


def run_from_dataset(dataset: PreparedDataset, *, policies: Mapping[str, Any] | None = None,
                     settings: Mapping[str, Any] | None = None, label: str = "model") -> Run:
    """An in-memory model: a full dataset plus policies (method -> ``act`` function or checkpoint dir)."""
    if dataset.expression is None:
        raise PredictionError("Predictions need the dataset's expression matrix (a full prepared dataset, "
                              "not env_view()).")
    return Run(label=label, dataset=dataset, settings=dict(settings or {}), policies=dict(policies or {}),
               notes=["in-memory dataset"])
