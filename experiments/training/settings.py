"""Typed settings of a two-stage run: one dataclass that the CLI, ``--config`` YAML and Tune param spaces share."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CELLSTATE_ENV", "SettingsError", "TwoStageSettings", "infer_split", "resolve_settings", "setting_names",
]

CELLSTATE_ENV = "waddington/CellState-v0"


class SettingsError(ValueError):
    """A setting of the two-stage run is invalid; the message names it and the allowed range."""


@dataclass(frozen=True)
class TwoStageSettings:
    """Every knob of a two-stage TRPO -> PPO run.

    Attributes
    ----------
    env, env_config
        Gymnasium env id and its extra keyword arguments (CellState: horizon, dt, action_scale, ...).
    data, perturbation_key, control_value, n_latent
        The CellState data: ``"synthetic"``, an ``.h5ad`` path or a prepared-dataset directory;
        the obs column of perturbation labels and its control label; the latent dimension.
    ignore_values, layer, input_kind
        Labels dropped before anything else (e.g. ``unassigned``); the layer holding the
        expression; ``"counts"`` (raw) or ``"log-normalized"`` (used as is).
    split, holdout, group_key, test_fraction
        The split (:func:`envs.splits.make_split`): ``"cells"``, ``"perturbations"`` (``holdout``
        names them) or ``"group"`` (``group_key`` column, ``holdout`` its one held-out value).
    covariate_keys
        obs columns (cell type, donor, batch) within whose combinations control cells are paired
        with perturbed cells; a group split's ``group_key`` is always one of them.
    set_separator, set_composition
        Labels joining members with ``set_separator`` are sets (``None``/``"none"``: no sets); a set
        never observed composes its members' hints ``"sequential"``-ly or ``"additive"``-ly
        (:mod:`envs.perturbation_sets`, :mod:`envs.set_hints`).
    trpo_iters, ppo_iters, seed
        Iterations of each stage (``train_batch_size`` env steps each; the most when a plateau
        stops a stage first) and the seed of everything.
    plateau_patience, plateau_min_delta
        A stage stops once its last ``plateau_patience`` returns average less than
        ``plateau_min_delta`` above the ``plateau_patience`` before them (0: never; run every iteration).
    kl_radius, clip_param
        The two swept hyperparameters: TRPO's KL trust-region radius and PPO's clip.
    train_batch_size, num_env_runners, num_envs_per_env_runner, gamma, lambda_
        Sampling, shared by both stages.
    fcnet_hiddens
        Policy and value network sizes (shared: weights must be interchangeable).
    initial_action_std
        Action std a policy trained from random weights starts with (stage 1 and PPO-only;
        stage 2 inherits stage 1's); None keeps RLlib's initial std of about 1.
    entropy_coeff
        Entropy bonus of both stages' policy objectives (0: none).
    cg_iters, vf_lr
        TRPO's conjugate-gradient iterations and critic learning rate.
    ppo_lr, ppo_num_epochs, ppo_minibatch_size
        PPO's learner.
    stage1_algo
        ``"trpo"``; ``"ppo"`` runs PPO as a stand-in for stage 1 (only for debugging the pipeline).
    handoff_num_obs
        Fixed observations on which the handoff is measured.
    max_num_env_runner_restarts
        Fault tolerance of env runners.
    """

    # environment
    env: str = CELLSTATE_ENV
    env_config: dict[str, Any] = field(default_factory=dict)
    data: Any = "synthetic"
    perturbation_key: str | None = None
    control_value: str | None = None
    n_latent: int = 8
    ignore_values: list[str] = field(default_factory=list)
    layer: str | None = None
    input_kind: str = "counts"
    split: str = "cells"
    holdout: list[str] = field(default_factory=list)
    group_key: str | None = None
    test_fraction: float = 0.2
    covariate_keys: list[str] = field(default_factory=list)
    set_separator: str | None = "+"
    set_composition: str = "sequential"
    # schedule: at most 40 TRPO + 200 PPO iterations; a stage ends earlier on a plateau of its return (the
    # rule needs 2 * plateau_patience returns, so at the defaults only PPO can stop early)
    trpo_iters: int = 40
    ppo_iters: int = 200
    seed: int = 0
    plateau_patience: int = 30
    plateau_min_delta: float = 0.01
    # the two swept hyperparameters
    kl_radius: float = 0.01
    clip_param: float = 0.2
    # sampling
    train_batch_size: int = 2048
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 16
    gamma: float = 0.99
    lambda_: float = 0.95
    # model (shared by both stages)
    fcnet_hiddens: list[int] = field(default_factory=lambda: [64, 64])
    initial_action_std: float | None = 0.3
    entropy_coeff: float = 0.0
    # TRPO
    cg_iters: int = 10
    vf_lr: float = 1e-3
    # PPO
    ppo_lr: float = 3e-4
    ppo_num_epochs: int = 5
    ppo_minibatch_size: int = 256
    # stage 1 algorithm
    stage1_algo: str = "trpo"
    # handoff check
    handoff_num_obs: int = 256
    # fault tolerance
    max_num_env_runner_restarts: int = 10

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> TwoStageSettings:
        """Defaults updated with ``values``, validated; unknown keys are an error, not ignored."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(setting_names()))
        if unknown:
            raise SettingsError(f"Unknown setting(s) {unknown}; known settings: {sorted(setting_names())}.")
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> TwoStageSettings:
        """A validated copy with ``changes`` applied."""
        return TwoStageSettings.from_mapping({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every setting (a deep copy), as YAML and Tune param spaces hold them."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first setting out of range."""
        _check_positive_number(self, "kl_radius", "a KL trust-region radius")
        _check_number(self, "clip_param")
        if not 0 < self.clip_param < 1:
            raise SettingsError(f"clip_param must lie in (0, 1), got {self.clip_param!r}.")
        for key in ("trpo_iters", "ppo_iters", "train_batch_size", "num_envs_per_env_runner", "ppo_num_epochs",
                    "ppo_minibatch_size", "cg_iters", "handoff_num_obs", "n_latent"):
            _check_int(self, key, minimum=1)
        _check_int(self, "num_env_runners", minimum=0)
        _check_int(self, "max_num_env_runner_restarts", minimum=0)
        _check_int(self, "plateau_patience", minimum=0)
        if _check_number(self, "plateau_min_delta") < 0:
            raise SettingsError(f"plateau_min_delta must be >= 0, got {self.plateau_min_delta!r}.")
        _check_int(self, "seed", minimum=None)
        for key in ("ppo_lr", "vf_lr"):
            _check_positive_number(self, key)
        if self.initial_action_std is not None:
            _check_positive_number(self, "initial_action_std")
        if _check_number(self, "entropy_coeff") < 0:
            raise SettingsError(f"entropy_coeff must be >= 0, got {self.entropy_coeff!r}.")
        for key in ("gamma", "lambda_"):
            _check_number(self, key)
            if not 0 <= getattr(self, key) <= 1:
                raise SettingsError(f"{key} must lie in [0, 1], got {getattr(self, key)!r}.")
        if self.stage1_algo not in ("trpo", "ppo"):
            raise SettingsError(f"stage1_algo must be 'trpo' or 'ppo', got {self.stage1_algo!r}.")
        self._validate_data_options()
        if not isinstance(self.env_config, dict):
            raise SettingsError(f"env_config must be a mapping, got {type(self.env_config).__name__}.")
        hidden = self.fcnet_hiddens
        if not isinstance(hidden, (list, tuple)) or not hidden or not all(_is_int(h) and h >= 1 for h in hidden):
            raise SettingsError(f"fcnet_hiddens must be a non-empty list of integers >= 1, got {hidden!r}.")


    def _validate_data_options(self) -> None:
        for key in ("ignore_values", "holdout", "covariate_keys"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"{key} must be a list of strings, got {value!r}.")
        if self.input_kind not in ("counts", "log-normalized"):
            raise SettingsError(f"input_kind must be 'counts' or 'log-normalized', got {self.input_kind!r}.")
        if self.split not in ("cells", "perturbations", "group"):
            raise SettingsError(f"split must be 'cells', 'perturbations' or 'group', got {self.split!r}.")
        # messages name the CLI flags; the YAML keys are the same words in snake_case
        if self.split == "cells" and self.holdout:
            raise SettingsError("--holdout needs --split perturbations or --split group (with --group-key).")
        if self.split == "perturbations" and not self.holdout:
            raise SettingsError("--split perturbations needs --holdout A,B naming perturbations to hold out.")
        if self.split == "group" and not self.group_key:
            raise SettingsError("--split group needs --group-key <obs column> and --holdout <group value>.")
        if self.split == "group" and len(self.holdout) != 1:
            raise SettingsError(f"--split group holds out exactly one group value (--holdout VALUE), "
                                f"got {list(self.holdout)}.")
        if self.set_separator is not None and not isinstance(self.set_separator, str):
            raise SettingsError(f"set_separator must be a string ('none' turns sets off), got {self.set_separator!r}.")
        if self.set_composition not in ("additive", "sequential"):
            raise SettingsError(f"set_composition must be 'additive' or 'sequential', got {self.set_composition!r}.")
        if not 0 < _check_number(self, "test_fraction") < 1:
            raise SettingsError(f"test_fraction must lie in (0, 1), got {self.test_fraction!r}.")


def infer_split(values: Mapping[str, Any]) -> str:
    """The split kind a user means when none is named: a group key -> group, held-out names -> perturbations."""
    if values.get("split"):
        return str(values["split"])
    if values.get("group_key") and values.get("holdout"):
        return "group"
    return "perturbations" if values.get("holdout") else "cells"


#: Settings a prepared dataset fixes: a run on a prepared directory cannot change them.
DATASET_FIXED_SETTINGS = ("split", "holdout", "group_key", "test_fraction", "covariate_keys", "ignore_values", "layer",
                          "n_latent", "input_kind", "set_separator",
                          "set_composition")


def dataset_settings(dataset: Any) -> dict[str, Any]:
    """The data settings that describe a prepared dataset (its keys, split and seed), for runs trained on it."""
    split = dataset.split
    keys = list(dataset.meta.get("covariate_keys") or [])
    return {
        "perturbation_key": dataset.meta.get("perturbation_key"),
        "control_value": dataset.control_value,
        "split": split.kind,
        "holdout": list(split.heldout_perturbations) if split.kind == "perturbations" else (
            [split.heldout_group] if split.kind == "group" else []),
        "group_key": split.group_key,
        "covariate_keys": [k for k in keys if k != split.group_key] if split.kind == "group" else keys,
        "seed": int(dataset.meta.get("seed", 0)),
        # recorded by preparation since out-of-core preparation came; absent from older datasets
        **{key: dataset.meta[key] for key in ("n_latent", "ignore_values", "layer", "test_fraction", "input_kind")
           if key in dataset.meta},
        # recorded since sets came (envs.perturbation_sets); older datasets have no sets
        **({"set_separator": dataset.meta.get("set_separator"),
            "set_composition": dataset.meta.get("set_composition", "sequential")} if "set_separator" in dataset.meta
           else {"set_separator": None}),
    }


def setting_names() -> tuple[str, ...]:
    """Names of every setting (the keys of YAML files and Tune param spaces)."""
    return tuple(f.name for f in dataclasses.fields(TwoStageSettings))


def resolve_settings(overrides: Mapping[str, Any] | TwoStageSettings | None = None) -> TwoStageSettings:
    """Validated settings from a mapping of overrides (or settings already built)."""
    if isinstance(overrides, TwoStageSettings):
        overrides.validate()
        return overrides
    return TwoStageSettings.from_mapping(overrides)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(settings: TwoStageSettings, key: str, *, minimum: int | None) -> None:
    value = getattr(settings, key)
    if not _is_int(value) or (minimum is not None and value < minimum):
        rule = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise SettingsError(f"{key} must be {rule}, got {value!r}.")


def _check_number(settings: TwoStageSettings, key: str) -> float:
    value = getattr(settings, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{key} must be a finite number, got {value!r}.")
    return float(value)


def _check_positive_number(settings: TwoStageSettings, key: str, meaning: str = "") -> None:
    if not _check_number(settings, key) > 0:
        suffix = f" ({meaning})" if meaning else ""
        raise SettingsError(f"{key} must be > 0{suffix}, got {getattr(settings, key)!r}.")
