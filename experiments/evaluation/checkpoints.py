"""Trained policies for evaluation: find the stage checkpoints of a run directory and load their policies.

A ``waddington train`` run directory holds ``checkpoints/stage1-*/`` (TRPO done) and
``checkpoints/stage2-*/`` (PPO done after TRPO), each with ``state.json`` and the full algorithm
checkpoint in ``algorithm/``. A ``waddington sweep`` directory holds the same per trial (Tune's
``checkpoint_*`` folders). :func:`find_stage_checkpoints` reads either.

Policies act deterministically (the mean of the Gaussian action distribution) on batches of
observations, on CPU, without Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RunCheckpoints",
    "CheckpointError",
    "find_stage_checkpoints",
    "load_policy",
]

MODULE_SUBPATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"


class CheckpointError(ValueError):
    """A run directory lacks the checkpoints evaluation needs; the message says what is missing."""


@dataclass
class RunCheckpoints:
    """The stage checkpoints of one two-stage run (one trial).

    Attributes
    ----------
    stage1, stage2
        Checkpoint directories (holding ``state.json`` and ``algorithm/``); ``stage1`` may be
        ``None`` when only the finished run is present.
    settings
        The run's two-stage settings (from ``state.json``).
    stage1_algorithm
        ``"trpo"`` or ``"ppo"`` (what stage 1 really ran).
    """

    stage1: Path | None
    stage2: Path
    settings: dict[str, Any]
    stage1_algorithm: str


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find_stage_checkpoints(run_dir: str | os.PathLike, *, trial: str | None = None) -> RunCheckpoints:
    """Locate stage-1 and stage-2 checkpoints of a ``train`` run (or one ``sweep`` trial).

    Parameters
    ----------
    run_dir
        Output directory of ``waddington train`` or ``waddington sweep``.
    trial
        For a sweep with several trials: a substring of the trial directory to pick. Without it
        the best trial of ``sweep_summary.json`` is used (by its kl_radius/clip_param).

    Raises
    ------
    CheckpointError
        If the directory does not exist or holds no finished stage checkpoint with module weights.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"Run directory '{root}' does not exist.")
    found: dict[Path, dict[str, Path]] = {}
    states: dict[Path, dict[str, Any]] = {}
    for state_file in sorted(root.rglob("state.json")):
        ckpt = state_file.parent
        state = _read_state(ckpt)
        if not state or state.get("stage_done") not in ("trpo", "ppo"):
            continue
        if not (ckpt / "algorithm" / MODULE_SUBPATH).is_dir():
            continue
        # train: <run>/checkpoints/stage?-*; sweep: <exp>/<trial>/checkpoint_00000k
        owner = ckpt.parent
        slot = found.setdefault(owner, {})
        stage = state["stage_done"]
        # several checkpoints of one stage in one trial (restarts): keep the newest
        if stage not in slot or ckpt.stat().st_mtime > slot[stage].stat().st_mtime:
            slot[stage] = ckpt
            states[ckpt] = state
    finished = {owner: slot for owner, slot in found.items() if "ppo" in slot}
    if not finished:
        have = sorted(str(p.relative_to(root)) for slot in found.values() for p in slot.values())
        raise CheckpointError(
            f"No finished two-stage checkpoint under '{root}': expected checkpoints/stage2-*/ with state.json "
            f"(stage_done='ppo') and algorithm/{MODULE_SUBPATH}. Found: {have or 'nothing'}. "
            "Run `waddington train -o DIR` first, or let `waddington evaluate --data ...` train what it needs."
        )
    owners = sorted(finished)
    if trial is not None:
        owners = [o for o in owners if trial in str(o)]
        if not owners:
            raise CheckpointError(f"No trial matching {trial!r} under '{root}'. Trials: {sorted(map(str, finished))}.")
    if len(owners) > 1:
        owners = [_best_trial(root, owners, finished, states)]
    slot = finished[owners[0]]
    state2 = states[slot["ppo"]]
    stage1_algorithm = (state2.get("stage1") or {}).get("stage1_algorithm", "trpo")
    return RunCheckpoints(slot.get("trpo"), slot["ppo"], state2["settings"], stage1_algorithm)


def _best_trial(root: Path, owners: list[Path], finished, states) -> Path:
    summary_files = sorted(root.rglob("sweep_summary.json"))
    if not summary_files:
        raise CheckpointError(
            f"'{root}' holds {len(owners)} finished trials and no sweep_summary.json; pick one with --trial."
        )
    best = json.loads(summary_files[0].read_text()).get("best") or {}
    for owner in owners:
        s = states[finished[owner]["ppo"]]["settings"]
        if np.isclose(s["kl_radius"], best.get("kl_radius", np.nan)) and np.isclose(
            s["clip_param"], best.get("clip_param", np.nan)
        ):
            return owner
    raise CheckpointError(f"Could not match the best trial of {summary_files[0]} to a checkpoint; use --trial.")


def load_policy(checkpoint_dir: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """Deterministic policy (mean action) of a stage checkpoint, as a batched numpy function.

    Parameters
    ----------
    checkpoint_dir
        A stage checkpoint directory (with ``algorithm/``), an ``Algorithm.save_to_path``
        directory, or the RL module directory itself.

    Returns
    -------
    ``act(obs: (n, obs_dim) float32) -> (n, action_dim) float64``, the mean of the action
    distribution clipped to [-1, 1] (the env clips too).
    """
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint_dir)
    for candidate in (path / "algorithm" / MODULE_SUBPATH, path / MODULE_SUBPATH, path):
        if (candidate / "module_state.pkl").exists() or (candidate / "metadata.json").exists():
            path = candidate
            break
    else:
        raise CheckpointError(f"No RL module state under '{checkpoint_dir}' (looked for algorithm/{MODULE_SUBPATH}).")
    module = RLModule.from_checkpoint(str(path))
    module.eval()
    obs_dim = int(module.observation_space.shape[0])
    action_dim = int(module.action_space.shape[0])

    def act(obs: np.ndarray) -> np.ndarray:
        if obs.shape[1] != obs_dim:
            raise CheckpointError(
                f"The policy at '{path}' expects {obs_dim}-d observations but the evaluation data gives "
                f"{obs.shape[1]}: the run was trained on a different dataset or latent size."
            )
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)})
        inputs = out[Columns.ACTION_DIST_INPUTS].cpu().numpy().astype(np.float64)
        return np.clip(inputs[:, :action_dim], -1.0, 1.0)

    act.obs_dim = obs_dim  # type: ignore[attr-defined]
    return act
