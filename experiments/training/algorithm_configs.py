"""RLlib configs of the two stages (TRPO, then PPO from TRPO's weights) and the data they train on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from algorithms import handoff
from experiments.training.settings import CELLSTATE_ENV, TwoStageSettings

__all__ = [
    "prepare_data",
    "dataset_options",
    "env_config_for",
    "build_stage1_config",
    "build_stage2_config",
    "trial_bundles",
]


def prepare_data(settings: TwoStageSettings, *, verbose: bool = False):
    """Prepare the CellState dataset once (validating the data) and return its env view.

    Raises ``envs.DataValidationError`` (a ValueError) with a clear message for bad data, before
    any training starts. Returns None for other envs.
    """
    if settings.env != CELLSTATE_ENV:
        return None
    import envs

    data = settings.data
    if isinstance(data, (str, os.PathLike)) and str(data) != "synthetic" and Path(data).is_dir():
        return envs.load_dataset(data).env_view()  # a directory written by PreparedDataset.save
    return envs.prepare_dataset(data, **dataset_options(settings), seed=settings.seed, verbose=verbose).env_view()


def dataset_options(settings: TwoStageSettings) -> dict[str, Any]:
    """The keyword options of ``envs.prepare_dataset`` that the settings hold (all but data and seed)."""
    return dict(
        perturbation_key=settings.perturbation_key,
        control_value=settings.control_value,
        n_latent=settings.n_latent,
        split=settings.split,
        holdout=list(settings.holdout),
        group_key=settings.group_key,
        test_fraction=settings.test_fraction,
        layer=settings.layer,
        input_kind=settings.input_kind,
        ignore_values=list(settings.ignore_values),
        covariate_keys=list(settings.covariate_keys),
        set_separator=settings.set_separator,
        set_composition=settings.set_composition,
    )


def env_config_for(settings: TwoStageSettings, data: Any = None) -> dict[str, Any]:
    """The env_config handed to RLlib: explicit ``env_config`` plus the data keys for CellState.

    ``data`` (a prepared dataset or an ObjectRef to one) replaces ``settings.data`` so env runners
    fetch the prepared arrays from the object store instead of preparing the data again.
    """
    config = dict(settings.env_config)
    if settings.env == CELLSTATE_ENV:
        config.setdefault("data", settings.data if data is None else data)
        if settings.perturbation_key is not None:
            config.setdefault("perturbation_key", settings.perturbation_key)
        if settings.control_value is not None:
            config.setdefault("control_value", settings.control_value)
        config.setdefault("n_latent", settings.n_latent)
        config.setdefault("seed", settings.seed)
    return config


def _with_shared_settings(config, settings: TwoStageSettings, data: Any = None):
    """Env, runners, model, seed and fault tolerance: identical in both stages."""
    import gymnasium as gym

    env_runner_kwargs: dict[str, Any] = dict(
        num_env_runners=settings.num_env_runners,
        num_envs_per_env_runner=settings.num_envs_per_env_runner,
        # "auto": fragment = batch / (runners * envs); otherwise vectorized runners oversample.
        rollout_fragment_length="auto",
        num_cpus_per_env_runner=1,
    )
    env_kwargs: dict[str, Any] = {}
    if settings.env == CELLSTATE_ENV:
        # The CellState env ships a native numpy VectorEnv.
        env_runner_kwargs["gym_env_vectorize_mode"] = gym.VectorizeMode.VECTOR_ENTRY_POINT
        # It clips actions to its own box ([-1, 1], guided [-2, 2]) itself, so RLlib's unsquash/clip
        # connector would only cost time (~40% of sampling, benchmarks/env_throughput.py).
        env_kwargs = {"normalize_actions": False, "clip_actions": False}
    return (
        config.environment(settings.env, env_config=env_config_for(settings, data), **env_kwargs)
        .env_runners(**env_runner_kwargs)
        .learners(num_learners=0)
        # a plain dict: it overrides the algorithm's auto-included vf_share_layers
        .rl_module(model_config={"fcnet_hiddens": list(settings.fcnet_hiddens), "vf_share_layers": False})
        .debugging(seed=settings.seed)
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=settings.max_num_env_runner_restarts,
            delay_between_env_runner_restarts_s=1.0,
            env_runner_health_probe_timeout_s=10.0,
            env_runner_restore_timeout_s=60.0,
        )
        .reporting(metrics_num_episodes_for_smoothing=_episodes_per_iteration(settings))
    )


def _episodes_per_iteration(settings: TwoStageSettings) -> int:
    # the reported return averages about one iteration's episodes: over RLlib's default few, the
    # noise of single paired targets hid what an iteration changed, and plateau stops came by chance
    if settings.env != CELLSTATE_ENV:
        return 20
    return max(20, settings.train_batch_size // int(settings.env_config.get("horizon", 20)))


def build_stage1_config(settings: TwoStageSettings, data: Any = None):
    """Stage 1: TRPO with the swept KL radius (PPO stand-in only when ``stage1_algo='ppo'``).

    Returns ``(config, algorithm name)``. A broken ``algorithms.trpo`` import raises: stage 1 never
    silently becomes PPO.
    """
    if settings.stage1_algo == "ppo":
        return _with_shared_settings(_ppo_config(settings), settings, data), "ppo"
    from algorithms.trpo import TRPOConfig

    config = TRPOConfig().training(
        kl_radius=settings.kl_radius,
        cg_iters=settings.cg_iters,
        vf_lr=settings.vf_lr,
        train_batch_size_per_learner=settings.train_batch_size,
        gamma=settings.gamma,
        lambda_=settings.lambda_,
        entropy_coeff=settings.entropy_coeff,
    )
    return _with_shared_settings(config, settings, data), "trpo"


def _ppo_config(settings: TwoStageSettings):
    """RLlib's PPO with this run's PPO settings (stage 2, the PPO-only ablation, or the stand-in)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return PPOConfig().training(
        lr=settings.ppo_lr,
        clip_param=settings.clip_param,
        num_epochs=settings.ppo_num_epochs,
        minibatch_size=settings.ppo_minibatch_size,
        train_batch_size_per_learner=settings.train_batch_size,
        gamma=settings.gamma,
        lambda_=settings.lambda_,
        entropy_coeff=settings.entropy_coeff,
    )


def build_stage2_config(settings: TwoStageSettings, stage1_module_state: str | None = None, data: Any = None):
    """Stage 2: RLlib's built-in PPO with the swept clip, starting from stage 1's module state.

    Without ``stage1_module_state`` PPO starts from random weights (the PPO-only ablation).
    """
    config = _with_shared_settings(_ppo_config(settings), settings, data)
    if stage1_module_state is not None:
        config = handoff.with_initial_weights(config, stage1_module_state)
    return config


def trial_bundles(settings: TwoStageSettings) -> list[dict[str, float]]:
    """Placement-group bundles of one trial: the trainable (holds the learner) + 1 CPU per runner.

    With ``num_env_runners=0`` (sampling in the trainable's process) a trial needs one CPU, so two
    trials run side by side on a 2-CPU machine; PPO's own default request (3 CPUs) never would.
    """
    return [{"CPU": 1.0}] + [{"CPU": 1.0}] * int(settings.num_env_runners)
