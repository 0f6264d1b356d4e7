"""Two-stage training: TRPO for ``trpo_iters`` iterations, then RLlib's PPO from TRPO's exact weights.

One run = one Tune trial. The same generator, :func:`run_two_stage`, drives both the ``waddington
train`` CLI (in the driver, no Tune) and the Tune trainable :func:`two_stage_trainable` (sweeps), so
what the sweep measures is what ``train`` measures.

Per iteration it yields a flat metrics dict with its ``stage`` ("trpo" or "ppo"); the last iteration
of each stage also carries a checkpoint directory holding the full algorithm checkpoint plus a
``state.json`` that lets a restarted trial resume after stage 1 (or report a finished stage 2)
instead of retraining.

The paper this project comes from had a PPO stage that never updated. Here the handoff is measured
(``handoff_max_abs_diff``: stage-1 final policy vs. stage-2 learner and every env runner, before the
first PPO sample) and so is PPO's own progress (``ppo_weight_change_l2``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from experiments import handoff

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULTS",
    "SettingsError",
    "resolve_settings",
    "build_stage1_config",
    "build_stage2_config",
    "run_two_stage",
    "two_stage_trainable",
    "trial_bundles",
]

CELLSTATE_ENV = "waddington/CellState-v0"

#: Every knob of a two-stage run. Tune param spaces, the CLI and ``--config`` YAML use these keys.
DEFAULTS: dict[str, Any] = {
    # environment
    "env": CELLSTATE_ENV,
    "env_config": {},
    "data": "synthetic",
    "perturbation_key": None,
    "control_value": None,
    "n_latent": 8,
    # schedule
    # 40 + 40 iterations take ~40 s on 2 quiet cores and roughly double the return of 10 + 10.
    "trpo_iters": 40,
    "ppo_iters": 40,
    "seed": 0,
    # the two swept hyperparameters
    "kl_radius": 0.01,
    "clip_param": 0.2,
    # sampling
    "train_batch_size": 2048,
    "num_env_runners": 0,
    "num_envs_per_env_runner": 16,
    "gamma": 0.99,
    "lambda_": 0.95,
    # model (shared by both stages: weights must be interchangeable)
    "fcnet_hiddens": [64, 64],
    # TRPO
    "cg_iters": 10,
    "vf_lr": 1e-3,
    # PPO
    "ppo_lr": 3e-4,
    "ppo_num_epochs": 5,
    "ppo_minibatch_size": 256,
    # stage 1 algorithm: "trpo" (default) or "ppo" (stand-in, only for debugging the pipeline)
    "stage1_algo": "trpo",
    # handoff check
    "handoff_num_obs": 256,
    # fault tolerance
    "max_num_env_runner_restarts": 10,
}


class SettingsError(ValueError):
    """A setting of the two-stage run is invalid; the message names it and the allowed range."""


def resolve_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults updated with ``overrides``, validated. Unknown keys are an error, not ignored."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise SettingsError(f"Unknown setting(s) {unknown}; known settings: {sorted(DEFAULTS)}.")
    s = copy.deepcopy(DEFAULTS)
    s.update(copy.deepcopy(overrides))
    validate_settings(s)
    return s


def validate_settings(s: dict[str, Any]) -> None:
    def _num(key):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SettingsError(f"{key} must be a finite number, got {v!r}.")
        return v

    if not _num("kl_radius") > 0:
        raise SettingsError(f"kl_radius must be > 0 (a KL trust-region radius), got {s['kl_radius']!r}.")
    if not 0 < _num("clip_param") < 1:
        raise SettingsError(f"clip_param must lie in (0, 1), got {s['clip_param']!r}.")
    for key in ("trpo_iters", "ppo_iters"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise SettingsError(f"{key} must be an integer >= 1, got {s[key]!r}.")
    for key in ("train_batch_size", "num_envs_per_env_runner", "ppo_num_epochs", "ppo_minibatch_size",
                "cg_iters", "handoff_num_obs"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise SettingsError(f"{key} must be an integer >= 1, got {s[key]!r}.")
    if not isinstance(s["num_env_runners"], int) or s["num_env_runners"] < 0:
        raise SettingsError(f"num_env_runners must be an integer >= 0, got {s['num_env_runners']!r}.")
    for key in ("ppo_lr", "vf_lr"):
        if not _num(key) > 0:
            raise SettingsError(f"{key} must be > 0, got {s[key]!r}.")
    if not isinstance(s["seed"], int):
        raise SettingsError(f"seed must be an integer, got {s['seed']!r}.")
    if s["stage1_algo"] not in ("trpo", "ppo"):
        raise SettingsError(f"stage1_algo must be 'trpo' or 'ppo', got {s['stage1_algo']!r}.")
    if not isinstance(s["env_config"], dict):
        raise SettingsError(f"env_config must be a mapping, got {type(s['env_config']).__name__}.")


# --------------------------------------------------------------------------------------------
# Algorithm configs
# --------------------------------------------------------------------------------------------

def trpo_available() -> bool:
    try:
        from algorithms.trpo import TRPOConfig  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_data(s: dict[str, Any], *, verbose: bool = False):
    """Prepare the CellState dataset once (validating the data) and return its env view.

    Raises ``envs.DataValidationError`` (a ValueError) with a clear message for bad data, before
    any training starts. Returns None for other envs.
    """
    if s["env"] != CELLSTATE_ENV:
        return None
    import envs

    if isinstance(s["data"], (str, os.PathLike)) and str(s["data"]) != "synthetic" and Path(s["data"]).is_dir():
        return envs.load_dataset(s["data"]).env_view()  # a directory written by PreparedDataset.save
    ds = envs.prepare_dataset(
        s["data"],
        perturbation_key=s["perturbation_key"],
        control_value=s["control_value"],
        n_latent=s["n_latent"],
        seed=s["seed"],
        verbose=verbose,
    )
    return ds.env_view()


def env_config_for(s: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """The env_config handed to RLlib: explicit ``env_config`` plus the data keys for CellState.

    ``data`` (a prepared dataset or an ObjectRef to one) replaces ``s["data"]`` so env runners
    fetch the prepared arrays from the object store instead of preparing the data again.
    """
    cfg = dict(s["env_config"])
    if s["env"] == CELLSTATE_ENV:
        cfg.setdefault("data", s["data"] if data is None else data)
        if s["perturbation_key"] is not None:
            cfg.setdefault("perturbation_key", s["perturbation_key"])
        if s["control_value"] is not None:
            cfg.setdefault("control_value", s["control_value"])
        cfg.setdefault("n_latent", s["n_latent"])
        cfg.setdefault("seed", s["seed"])
    return cfg


def _common(config, s: dict[str, Any], data: Any = None):
    import gymnasium as gym

    env_runner_kwargs = dict(
        num_env_runners=s["num_env_runners"],
        num_envs_per_env_runner=s["num_envs_per_env_runner"],
        # "auto": fragment = batch / (runners * envs); otherwise vectorized runners oversample.
        rollout_fragment_length="auto",
        num_cpus_per_env_runner=1,
    )
    env_kwargs: dict[str, Any] = {}
    if s["env"] == CELLSTATE_ENV:
        # The CellState env ships a native numpy VectorEnv.
        env_runner_kwargs["gym_env_vectorize_mode"] = gym.VectorizeMode.VECTOR_ENTRY_POINT
        # Its action box is [-1, 1] and it clips actions itself, so RLlib's unsquash/clip
        # connector is an identity that costs ~40% of sampling time (benchmarks/env_throughput.py).
        env_kwargs = {"normalize_actions": False, "clip_actions": False}
    return (
        config.environment(s["env"], env_config=env_config_for(s, data), **env_kwargs)
        .env_runners(**env_runner_kwargs)
        .learners(num_learners=0)
        .rl_module(model_config={"fcnet_hiddens": list(s["fcnet_hiddens"]), "vf_share_layers": False})
        .debugging(seed=s["seed"])
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=s["max_num_env_runner_restarts"],
            delay_between_env_runner_restarts_s=1.0,
            env_runner_health_probe_timeout_s=10.0,
            env_runner_restore_timeout_s=60.0,
        )
        .reporting(metrics_num_episodes_for_smoothing=20)
    )


def build_stage1_config(s: dict[str, Any], data: Any = None):
    """Stage 1: TRPO with the swept KL radius (PPO stand-in only when asked for, or TRPO is absent)."""
    algo = s["stage1_algo"]
    if algo == "trpo" and not trpo_available():
        warnings.warn(
            "algorithms.trpo is not importable: stage 1 falls back to PPO as a stand-in. "
            "The summary records stage1_algorithm='ppo'.",
            stacklevel=2,
        )
        algo = "ppo"
    if algo == "trpo":
        from algorithms.trpo import TRPOConfig

        config = TRPOConfig().training(
            kl_radius=s["kl_radius"],
            cg_iters=s["cg_iters"],
            vf_lr=s["vf_lr"],
            train_batch_size_per_learner=s["train_batch_size"],
            gamma=s["gamma"],
            lambda_=s["lambda_"],
        )
    else:
        config = _ppo_config(s)
    return _common(config, s, data), algo


def _ppo_config(s: dict[str, Any]):
    """RLlib's PPO with this run's PPO settings (stage 2, or the stage-1 stand-in)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    return PPOConfig().training(
        lr=s["ppo_lr"],
        clip_param=s["clip_param"],
        num_epochs=s["ppo_num_epochs"],
        minibatch_size=s["ppo_minibatch_size"],
        train_batch_size_per_learner=s["train_batch_size"],
        gamma=s["gamma"],
        lambda_=s["lambda_"],
    )


def build_stage2_config(s: dict[str, Any], stage1_module_state: str | None = None, data: Any = None):
    """Stage 2: RLlib's built-in PPO with the swept clip, starting from stage 1's module state."""
    config = _common(_ppo_config(s), s, data)
    if stage1_module_state is not None:
        config = handoff.with_initial_weights(config, stage1_module_state)
    return config


def trial_bundles(s: dict[str, Any]) -> list[dict[str, float]]:
    """Placement-group bundles of one trial: the trainable (holds the learner) + 1 CPU per runner.

    With ``num_env_runners=0`` (sampling in the trainable's process) a trial needs one CPU, so two
    trials run side by side on a 2-CPU machine; PPO's own default request (3 CPUs) never would.
    """
    return [{"CPU": 1.0}] + [{"CPU": 1.0}] * int(s["num_env_runners"])


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

_RESULT_KEYS = {
    "episode_return_mean": ("env_runners", "episode_return_mean"),
    "episode_len_mean": ("env_runners", "episode_len_mean"),
    "num_episodes": ("env_runners", "num_episodes"),
    "num_env_steps_sampled": ("env_runners", "num_env_steps_sampled"),
    "num_env_steps_sampled_lifetime": ("env_runners", "num_env_steps_sampled_lifetime"),
    "num_healthy_env_runners": ("fault_tolerance", "num_healthy_workers"),
    "num_env_runner_restarts": ("fault_tolerance", "num_remote_worker_restarts"),
}


def _dig(result: dict, path: tuple[str, ...]):
    cur: Any = result
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _flat_metrics(result: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in _RESULT_KEYS.items():
        v = _dig(result, path)
        if isinstance(v, (int, float, np.floating, np.integer)):
            out[name] = float(v)
    learner = _dig(result, ("learners", handoff.DEFAULT_POLICY)) or {}
    for k, v in learner.items():
        if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            out[f"learner/{k}"] = float(v)
    return out


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


class _StageTracker:
    """Per-stage bookkeeping: last finite return (vectorized envs can leave NaN iterations)."""

    def __init__(self):
        self.returns: list[float] = []
        self.last_return: float | None = None

    def add(self, ret):
        r = _finite(ret)
        if r is not None:
            self.returns.append(r)
            self.last_return = r


def _train_iteration(algo, tracker: _StageTracker, score: float, **labels: Any) -> tuple[dict[str, Any], float]:
    """One ``algo.train()``, flattened and labelled; ``score`` carries the last finite return."""
    result = algo.train()
    m = _flat_metrics(result)
    tracker.add(m.get("episode_return_mean"))
    score = tracker.last_return if tracker.last_return is not None else score
    m.update(score=score, time_this_iter_s=float(result.get("time_this_iter_s", 0.0)), **labels)
    return m, score


def _write_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    (ckpt_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))


def read_checkpoint_state(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(ckpt_dir) / "state.json").read_text())


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray
        return None


def run_two_stage(
    settings: dict[str, Any],
    *,
    work_dir: str | os.PathLike,
    resume_from: str | os.PathLike | None = None,
    data: Any = None,
    stop_algorithms: bool = True,
) -> Iterator[dict[str, Any]]:
    """Train stage 1 then PPO; yield one flat metrics dict per iteration.

    The last iteration of each stage has ``"checkpoint_dir"`` (a directory under ``work_dir``) and
    the very last one carries the summary keys (``handoff_max_abs_diff``, ``ppo_weight_change_l2``,
    per-stage returns and wall seconds). ``resume_from`` is such a checkpoint directory: after
    stage 1 it continues with PPO, after stage 2 it yields the finished summary again.
    ``data``: the prepared dataset (or an ObjectRef to it) for the CellState env; prepared here
    once when not given. Env runners get it through the object store.
    """
    s = resolve_settings(settings)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    node = _node_id()
    labels: dict[str, Any] = {"node_id": node, "pid": os.getpid()}  # on every reported iteration
    # The learner runs in this process with 64x64 nets: extra torch threads only contend with the
    # samplers (one 2048-step TRPO update took 7.4 s with 2 threads vs 0.33 s with 1 on 2 cores).
    import torch

    torch.set_num_threads(1)

    state: dict[str, Any] = {}
    # "score": the latest finite mean episode return, carried over NaN iterations and across the
    # stage boundary; what schedulers and the best-trial choice compare.
    score = float("nan")
    if resume_from is not None:
        state = read_checkpoint_state(resume_from)
        if state.get("stage_done") == "ppo":
            done = state["summary"]
            yield {**done, "score": done.get("ppo_final_return") if done.get("ppo_final_return") is not None
                   else float("nan"), "stage": "ppo", "stage_iteration": s["ppo_iters"], "resumed": True,
                   "node_id": node, "done_before_resume": True}
            return

    if s["env"] == CELLSTATE_ENV:
        import ray

        if data is None:
            data = prepare_data(s)
        if type(data).__name__ != "ObjectRef":
            data = ray.put(data)

    # ---------------- stage 1 ----------------
    if state.get("stage_done") == "trpo":
        stage1_dir = Path(resume_from) / "algorithm"
        reference = np.load(Path(resume_from) / "handoff_reference.npz")
        obs, ref_out = reference["obs"], reference["action_dist_inputs"]
        stage1_summary = state["stage1"]
        stage1_algo_name = stage1_summary["stage1_algorithm"]
        labels["stage1_algorithm"] = stage1_algo_name
        score = stage1_summary["trpo_final_return"] if stage1_summary["trpo_final_return"] is not None else score
    else:
        config1, stage1_algo_name = build_stage1_config(s, data)
        labels["stage1_algorithm"] = stage1_algo_name
        t0 = time.perf_counter()
        algo1 = config1.build_algo()
        try:
            obs = handoff.fixed_observations(
                _observation_space(algo1),
                n=s["handoff_num_obs"],
                seed=s["seed"] + 12345,
            )
            w_start = handoff.policy_weights(algo1)
            tracker = _StageTracker()
            for it in range(1, s["trpo_iters"] + 1):
                m, score = _train_iteration(algo1, tracker, score, stage="trpo", stage_iteration=it, **labels)
                if it == s["trpo_iters"]:
                    wall1 = time.perf_counter() - t0
                    ref_out = handoff.learner_action_dist_inputs(algo1, obs)
                    stage1_summary = {
                        "stage1_algorithm": stage1_algo_name,
                        "trpo_wall_s": wall1,
                        "trpo_final_return": tracker.last_return,
                        "trpo_returns": tracker.returns,
                        "trpo_weight_change_l2": handoff.weight_change_l2(w_start, handoff.policy_weights(algo1)),
                        "trpo_env_steps": m.get("num_env_steps_sampled_lifetime"),
                    }
                    ckpt = Path(tempfile.mkdtemp(prefix="stage1-", dir=work_dir))
                    algo1.save_to_path(str(ckpt / "algorithm"))
                    np.savez(ckpt / "handoff_reference.npz", obs=obs, action_dist_inputs=ref_out)
                    _write_state(ckpt, {"stage_done": "trpo", "stage1": stage1_summary, "settings": _jsonable(s)})
                    stage1_dir = ckpt / "algorithm"
                    m.update({k: v for k, v in stage1_summary.items() if not isinstance(v, list)})
                    m["checkpoint_dir"] = str(ckpt)
                yield m
        finally:
            if stop_algorithms:
                algo1.stop()

    # ---------------- handoff + stage 2 ----------------
    state_path = handoff.module_state_path(stage1_dir)
    config2 = build_stage2_config(s, state_path, data)
    t0 = time.perf_counter()
    algo2 = config2.build_algo()
    try:
        pre = handoff.env_runner_action_dist_inputs(algo2, obs)
        measured = handoff.sync_and_measure(algo2, ref_out, obs)
        measured["handoff_env_runner_pre_sync_max_abs_diff"] = max(
            float(np.max(np.abs(o - ref_out))) for o in pre
        )
        w_start = handoff.policy_weights(algo2)
        tracker = _StageTracker()
        for it in range(1, s["ppo_iters"] + 1):
            m, score = _train_iteration(algo2, tracker, score, stage="ppo", stage_iteration=it,
                                        handoff_max_abs_diff=measured["handoff_max_abs_diff"], **labels)
            if it == s["ppo_iters"]:
                w_end = handoff.policy_weights(algo2)
                summary = {
                    **stage1_summary,
                    **measured,
                    "ppo_wall_s": time.perf_counter() - t0,
                    "ppo_final_return": tracker.last_return,
                    "ppo_returns": tracker.returns,
                    "ppo_weight_change_l2": handoff.weight_change_l2(w_start, w_end),
                    "kl_radius": s["kl_radius"],
                    "clip_param": s["clip_param"],
                    "seed": s["seed"],
                    "trpo_iters": s["trpo_iters"],
                    "ppo_iters": s["ppo_iters"],
                }
                summary["total_wall_s"] = summary["trpo_wall_s"] + summary["ppo_wall_s"]
                ckpt = Path(tempfile.mkdtemp(prefix="stage2-", dir=work_dir))
                algo2.save_to_path(str(ckpt / "algorithm"))
                _write_state(ckpt, {"stage_done": "ppo", "stage1": stage1_summary, "summary": _jsonable(summary),
                                    "settings": _jsonable(s)})
                m.update({k: v for k, v in summary.items() if not isinstance(v, list)})
                m["summary"] = _jsonable(summary)
                m["checkpoint_dir"] = str(ckpt)
            yield m
    finally:
        if stop_algorithms:
            algo2.stop()


def _observation_space(algo):
    spaces = algo.env_runner_group.get_spaces()
    return spaces[handoff.DEFAULT_POLICY][0]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


# --------------------------------------------------------------------------------------------
# Tune trainable
# --------------------------------------------------------------------------------------------

def two_stage_trainable(config: dict[str, Any], data: Any = None) -> None:
    """Tune function trainable: one two-stage run, reports every iteration, checkpoints per stage.

    On a retry or after ``Tuner.restore`` it resumes from the trial's latest checkpoint: after
    stage 1 it goes straight to PPO (TRPO is not retrained), after stage 2 it only re-reports.
    ``data`` (bound with ``tune.with_parameters``) is the dataset the driver prepared once.
    """
    import envs  # noqa: F401  (registers waddington/CellState-v0 in this worker process)
    from ray import tune

    s = resolve_settings({k: v for k, v in config.items() if k in DEFAULTS})
    work_dir = Path(tempfile.mkdtemp(prefix="two-stage-"))
    resume_dir = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume_dir = checkpoint.to_directory(str(work_dir / "restored"))
    try:
        for m in run_two_stage(s, work_dir=work_dir, resume_from=resume_dir, data=data):
            ckpt_dir = m.pop("checkpoint_dir", None)
            m.pop("summary", None)
            if ckpt_dir is not None:
                tune.report(m, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
            else:
                tune.report(m)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
