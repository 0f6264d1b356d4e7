"""The two-stage run: TRPO for ``trpo_iters`` iterations, then RLlib's PPO from TRPO's exact weights.

One run = one Tune trial. The same generator, :func:`run_two_stage`, drives both ``waddington
train`` (in the driver, no Tune) and the Tune trainable (sweeps), so what the sweep measures is
what ``train`` measures. The PPO-only ablation (:func:`train_ppo_only`) runs the same stage loop.

Per iteration it yields a flat metrics dict with its ``stage`` ("trpo" or "ppo"); the last iteration
of each stage also carries a checkpoint directory holding the full algorithm checkpoint plus a
``state.json`` that lets a restarted trial resume after stage 1 (or report a finished stage 2)
instead of retraining.

The paper this project comes from had a PPO stage that never updated. Here the handoff is measured
(``handoff_max_abs_diff``: stage-1 final policy vs. stage-2 learner and every env runner, before the
first PPO sample) and so is PPO's own progress (``ppo_weight_change_l2``).

Summary keys of stage 1 are ``stage1_*`` (final_return, returns, wall_s, weight_change_l2,
env_steps); when stage 1 really ran TRPO they are also given as ``trpo_*``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from algorithms import handoff
from algorithms.exploration import set_initial_action_std
from experiments.training.algorithm_configs import build_stage1_config, build_stage2_config, prepare_data
from experiments.training.settings import CELLSTATE_ENV, TwoStageSettings, resolve_settings

__all__ = ["run_two_stage", "train_ppo_only", "read_checkpoint_state", "jsonable", "STAGE1_SUMMARY_FIELDS"]

#: Stage-1 summary fields, stored as ``stage1_<field>`` (and ``trpo_<field>`` when TRPO ran).
STAGE1_SUMMARY_FIELDS = ("final_return", "returns", "curve", "iterations", "wall_s", "weight_change_l2", "env_steps")

_RESULT_KEYS = {
    "episode_return_mean": ("env_runners", "episode_return_mean"),
    "episode_len_mean": ("env_runners", "episode_len_mean"),
    "num_episodes": ("env_runners", "num_episodes"),
    "num_env_steps_sampled": ("env_runners", "num_env_steps_sampled"),
    "num_env_steps_sampled_lifetime": ("env_runners", "num_env_steps_sampled_lifetime"),
    "num_healthy_env_runners": ("fault_tolerance", "num_healthy_workers"),
    "num_env_runner_restarts": ("fault_tolerance", "num_remote_worker_restarts"),
}


# --------------------------------------------------------------------------------------------
# One stage: the loop shared by TRPO, PPO after TRPO and the PPO-only ablation
# --------------------------------------------------------------------------------------------

@dataclass
class StageProgress:
    """What one stage's loop measured.

    Attributes
    ----------
    returns
        Finite mean episode returns, one per iteration that had finished episodes.
    curve
        ``[env steps sampled so far, return]`` of those iterations: the learning curve.
    iterations
        Iterations run (fewer than asked when the return plateaued first).
    score
        The latest finite return, carried over NaN iterations and across the stage boundary;
        what schedulers and the best-trial choice compare.
    weight_change_l2
        L2 norm of the policy's weight change over the stage.
    env_steps
        Env steps sampled by the end of the stage (lifetime counter).
    wall_s
        Wall seconds of the stage, algorithm build included.
    last_metrics
        The flat metrics of the last iteration (not yet yielded by the loop).
    """

    score: float
    returns: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)
    iterations: int = 0
    weight_change_l2: float = 0.0
    env_steps: float | None = None
    wall_s: float = 0.0
    last_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final_return(self) -> float | None:
        return self.returns[-1] if self.returns else None


def _dig(result: dict, path: tuple[str, ...]):
    current: Any = result
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def _flat_metrics(result: dict) -> dict[str, Any]:
    out = {name: float(v) for name, path in _RESULT_KEYS.items() if _is_number(v := _dig(result, path))}
    learner = _dig(result, ("learners", handoff.DEFAULT_POLICY)) or {}
    out.update({f"learner/{k}": float(v) for k, v in learner.items() if _is_number(v)})
    return out


class Plateau:
    """Stop when the last ``patience`` returns average less than ``min_delta`` above the ``patience`` before them.

    Two adjacent windows, not a best-so-far: one noisy high return cannot hold a slowly rising
    stage to a mark it then takes ``patience`` iterations to beat (measured: stages stopped while
    their return still rose). Decided once ``2 * patience`` returns are in; ``patience=0`` never stops.
    """

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta

    def update(self, returns: list[float]) -> bool:
        """Record one iteration; True when the stage should stop."""
        if self.patience <= 0 or len(returns) < 2 * self.patience:
            return False
        recent = float(np.mean(returns[-self.patience:]))
        before = float(np.mean(returns[-2 * self.patience : -self.patience]))
        return recent - before < self.min_delta


def run_stage(
    algo, iterations: int, *, score: float, started: float, plateau: Plateau | None = None, **labels: Any
) -> Generator[dict[str, Any], None, StageProgress]:
    """Train ``algo`` for ``iterations`` (or until ``plateau`` says stop); yield every iteration but the last.

    Returns the stage's progress; the caller adds the stage's checkpoint and summary to
    ``progress.last_metrics`` and yields it.
    """
    progress = StageProgress(score=score)
    plateau = plateau or Plateau(patience=0, min_delta=0.0)
    weights_before = handoff.policy_weights(algo)
    for iteration in range(1, iterations + 1):
        result = algo.train()
        metrics = _flat_metrics(result)
        progress.env_steps = metrics.get("num_env_steps_sampled_lifetime", progress.env_steps)
        ret = metrics.get("episode_return_mean")
        if ret is not None and math.isfinite(ret):
            progress.returns.append(float(ret))
            progress.curve.append([float(progress.env_steps or 0.0), float(ret)])
            progress.score = float(ret)
        progress.iterations = iteration
        stop = plateau.update(progress.returns) if ret is not None and math.isfinite(ret) else False
        metrics.update(score=progress.score, time_this_iter_s=float(result.get("time_this_iter_s", 0.0)),
                       stage_iteration=iteration, **labels)
        if stop or iteration == iterations:
            progress.last_metrics = metrics
            break
        yield metrics
    progress.weight_change_l2 = handoff.weight_change_l2(weights_before, handoff.policy_weights(algo))
    progress.wall_s = time.perf_counter() - started
    return progress


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def _write_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    (ckpt_dir / "state.json").write_text(json.dumps(jsonable(state), indent=2, sort_keys=True))


def read_checkpoint_state(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``state.json`` of a stage checkpoint: which stage is done, its summary and the settings."""
    return json.loads((Path(ckpt_dir) / "state.json").read_text())


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars made plain and unknown objects replaced by their repr."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _save_stage(algo, work_dir: Path, prefix: str, state: dict[str, Any], **arrays: np.ndarray) -> Path:
    """Full algorithm checkpoint + ``state.json`` (+ arrays) in a new ``<prefix>-*`` directory."""
    ckpt = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=work_dir))
    algo.save_to_path(str(ckpt / "algorithm"))
    if arrays:
        np.savez(ckpt / "handoff_reference.npz", **arrays)
    _write_state(ckpt, state)
    return ckpt


# --------------------------------------------------------------------------------------------
# The two stages
# --------------------------------------------------------------------------------------------

@dataclass
class Stage1Outcome:
    """What stage 2 needs from stage 1: its weights, the handoff reference and its summary."""

    algorithm_dir: Path
    observations: np.ndarray
    reference_outputs: np.ndarray
    summary: dict[str, Any]

    @classmethod
    def from_checkpoint(cls, ckpt: str | os.PathLike) -> Stage1Outcome:
        ckpt = Path(ckpt)
        reference = np.load(ckpt / "handoff_reference.npz")
        return cls(ckpt / "algorithm", reference["obs"], reference["action_dist_inputs"],
                   read_checkpoint_state(ckpt)["stage1"])

    @property
    def score(self) -> float | None:
        return self.summary.get("stage1_final_return")


def stage1_summary(algorithm: str, progress: StageProgress) -> dict[str, Any]:
    """Stage-1 summary keys: ``stage1_*``, and the same as ``trpo_*`` when TRPO really ran."""
    values = {name: getattr(progress, name) for name in STAGE1_SUMMARY_FIELDS}
    summary: dict[str, Any] = {"stage1_algorithm": algorithm, **{f"stage1_{k}": v for k, v in values.items()}}
    if algorithm == "trpo":
        summary.update({f"trpo_{k}": v for k, v in values.items()})
    return summary


def _run_stage1(
    settings: TwoStageSettings, work_dir: Path, data: Any, labels: dict[str, Any], score: float
) -> Generator[dict[str, Any], None, Stage1Outcome]:
    config, algorithm = build_stage1_config(settings, data)
    labels["stage1_algorithm"] = algorithm
    started = time.perf_counter()
    algo = config.build_algo()
    try:
        _start_exploration(algo, settings)
        obs = handoff.fixed_observations(_observation_space(algo), n=settings.handoff_num_obs,
                                         seed=settings.seed + 12345)
        progress = yield from run_stage(algo, settings.trpo_iters, score=score, started=started,
                                        plateau=_plateau(settings), stage="trpo", **labels)
        reference = handoff.learner_action_dist_inputs(algo, obs)
        summary = stage1_summary(algorithm, progress)
        ckpt = _save_stage(algo, work_dir, "stage1", {"stage_done": "trpo", "stage1": summary,
                                                      "settings": settings.to_dict()},
                           obs=obs, action_dist_inputs=reference)
    finally:
        algo.stop()
    last = progress.last_metrics
    last.update({k: v for k, v in summary.items() if not isinstance(v, list)}, checkpoint_dir=str(ckpt))
    yield last
    return Stage1Outcome(ckpt / "algorithm", obs, reference, summary)


def _measure_handoff(algo, stage1: Stage1Outcome) -> dict[str, Any]:
    """Stage 1's final policy vs stage 2's learner and every sampler, before and after a blocking sync."""
    before_sync = handoff.env_runner_action_dist_inputs(algo, stage1.observations)
    measured = handoff.sync_and_measure(algo, stage1.reference_outputs, stage1.observations)
    measured["handoff_env_runner_pre_sync_max_abs_diff"] = max(
        float(np.max(np.abs(o - stage1.reference_outputs))) for o in before_sync
    )
    return measured


def _run_stage2(
    settings: TwoStageSettings, work_dir: Path, data: Any, labels: dict[str, Any], stage1: Stage1Outcome,
    score: float,
) -> Iterator[dict[str, Any]]:
    config = build_stage2_config(settings, handoff.module_state_path(stage1.algorithm_dir), data)
    started = time.perf_counter()
    algo = config.build_algo()
    try:
        measured = _measure_handoff(algo, stage1)
        progress = yield from run_stage(algo, settings.ppo_iters, score=score, started=started,
                                        plateau=_plateau(settings), stage="ppo",
                                        handoff_max_abs_diff=measured["handoff_max_abs_diff"], **labels)
        summary = {
            **stage1.summary,
            **measured,
            "ppo_wall_s": progress.wall_s,
            "ppo_final_return": progress.final_return,
            "ppo_returns": progress.returns,
            "ppo_curve": progress.curve,
            "ppo_iterations": progress.iterations,
            "ppo_weight_change_l2": progress.weight_change_l2,
            "kl_radius": settings.kl_radius,
            "clip_param": settings.clip_param,
            "seed": settings.seed,
            "trpo_iters": settings.trpo_iters,
            "ppo_iters": settings.ppo_iters,
        }
        summary["total_wall_s"] = summary["stage1_wall_s"] + summary["ppo_wall_s"]
        ckpt = _save_stage(algo, work_dir, "stage2", {"stage_done": "ppo", "stage1": stage1.summary,
                                                      "summary": summary, "settings": settings.to_dict()})
    finally:
        algo.stop()
    last = progress.last_metrics
    last.update({k: v for k, v in summary.items() if not isinstance(v, list)})
    last.update(summary=jsonable(summary), checkpoint_dir=str(ckpt))
    yield last


def _start_exploration(algo, settings: TwoStageSettings) -> None:
    """A policy trained from random weights (stage 1, PPO-only) starts from the same action std."""
    if settings.initial_action_std is not None:
        set_initial_action_std(algo, settings.initial_action_std)


def _plateau(settings: TwoStageSettings) -> Plateau:
    return Plateau(settings.plateau_patience, settings.plateau_min_delta)


def _observation_space(algo):
    return algo.env_runner_group.get_spaces()[handoff.DEFAULT_POLICY][0]


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray
        return None


def _pin_torch_threads() -> None:
    # The learner runs in this process with 64x64 nets: extra torch threads only contend with the
    # samplers (one 2048-step TRPO update took 7.4 s with 2 threads vs 0.33 s with 1 on 2 cores).
    import torch

    torch.set_num_threads(1)


def _shared_data(settings: TwoStageSettings, data: Any) -> Any:
    """The CellState dataset as an object-store reference (prepared here when not given)."""
    if settings.env != CELLSTATE_ENV:
        return data
    import ray

    if data is None:
        data = prepare_data(settings)
    return data if type(data).__name__ == "ObjectRef" else ray.put(data)


def _finished_report(state: dict[str, Any], settings: TwoStageSettings, node: str | None) -> dict[str, Any]:
    done = state["summary"]
    score = done.get("ppo_final_return")
    return {**done, "score": score if score is not None else float("nan"), "stage": "ppo",
            "stage_iteration": settings.ppo_iters, "resumed": True, "node_id": node, "done_before_resume": True}


def run_two_stage(
    settings: TwoStageSettings | dict[str, Any],
    *,
    work_dir: str | os.PathLike,
    resume_from: str | os.PathLike | None = None,
    data: Any = None,
) -> Iterator[dict[str, Any]]:
    """Train stage 1 then PPO; yield one flat metrics dict per iteration.

    The last iteration of each stage has ``"checkpoint_dir"`` (a directory under ``work_dir``) and
    the very last one carries the summary keys (``handoff_max_abs_diff``, ``ppo_weight_change_l2``,
    per-stage returns and wall seconds). ``resume_from`` is such a checkpoint directory: after
    stage 1 it continues with PPO, after stage 2 it yields the finished summary again.
    ``data``: the prepared dataset (or an ObjectRef to it) for the CellState env; prepared here
    once when not given. Env runners get it through the object store.
    """
    settings = resolve_settings(settings)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    node = _node_id()
    labels: dict[str, Any] = {"node_id": node, "pid": os.getpid()}  # on every reported iteration
    _pin_torch_threads()
    state = read_checkpoint_state(resume_from) if resume_from is not None else {}
    if state.get("stage_done") == "ppo":
        yield _finished_report(state, settings, node)
        return
    data = _shared_data(settings, data)
    score = float("nan")
    if state.get("stage_done") == "trpo":
        stage1 = Stage1Outcome.from_checkpoint(resume_from)
        labels["stage1_algorithm"] = stage1.summary["stage1_algorithm"]
    else:
        stage1 = yield from _run_stage1(settings, work_dir, data, labels, score)
    score = stage1.score if stage1.score is not None else score
    yield from _run_stage2(settings, work_dir, data, labels, stage1, score)


def train_ppo_only(
    settings: TwoStageSettings | dict[str, Any],
    *,
    work_dir: str | os.PathLike,
    data: Any = None,
    iterations: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The ablation: RLlib PPO from random initialisation for as many env steps as TRPO -> PPO.

    Same settings, network, batch size and stage loop as the two-stage run; ``iterations``
    defaults to ``trpo_iters + ppo_iters`` (equal total env steps, since both stages use
    ``train_batch_size`` steps per iteration). Needs a running Ray.

    Returns
    -------
    (checkpoint directory with ``algorithm/`` and ``state.json``, summary dict).
    """
    settings = resolve_settings(settings)
    n_iter = int(iterations or (settings.trpo_iters + settings.ppo_iters))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    algo = build_stage2_config(settings, None, data).build_algo()
    try:
        _start_exploration(algo, settings)
        progress = _drain(run_stage(algo, n_iter, score=float("nan"), started=started, plateau=_plateau(settings),
                                    stage="ppo_only"))
        summary = {
            "algorithm": "ppo",
            "init": "random",
            "iterations": progress.iterations,
            "max_iterations": n_iter,
            "env_steps": progress.env_steps,
            "final_return": progress.final_return,
            "returns": progress.returns,
            "curve": progress.curve,
            "weight_change_l2": progress.weight_change_l2,
            "wall_s": progress.wall_s,
        }
        algo.save_to_path(str(work / "algorithm"))
    finally:
        algo.stop()
    _write_state(work, {"stage_done": "ppo_only", "summary": summary, "settings": settings.to_dict()})
    return work, summary


def _drain(generator: Generator[Any, None, StageProgress]) -> StageProgress:
    """Run a stage loop to its end, discarding the per-iteration metrics; return its progress."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
