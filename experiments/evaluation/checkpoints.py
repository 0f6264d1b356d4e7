"""Trained policies for evaluation: find the stage checkpoints of a run directory and load their policies.

A ``waddington train`` run directory holds ``manifest.json``, which lists the run's own stage
checkpoints (``checkpoints/stage1-*/``: TRPO done; ``checkpoints/stage2-*/``: PPO done after TRPO),
each with ``state.json`` and the full algorithm checkpoint in ``algorithm/``, and the prepared
dataset the policy learned on (``dataset/``). A ``waddington sweep`` directory holds the same per
trial (Tune's ``checkpoint_*`` folders). :func:`find_stage_checkpoints` reads either, and directories
written before manifests existed.

It never guesses by modification time: a run whose manifest is not ``complete``, a directory with
checkpoints its manifest does not list, or (without a manifest) stage checkpoints of different runs
in one directory are refused with a :class:`CheckpointError` that says what to do.

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


def _has_module(ckpt: Path) -> bool:
    return (ckpt / "algorithm" / MODULE_SUBPATH).is_dir()


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _tune_index(ckpt: Path) -> int | None:
    """The index of a Tune ``checkpoint_00000k`` folder (None for other names)."""
    name = ckpt.name
    if name.startswith("checkpoint_") and name[len("checkpoint_"):].isdigit():
        return int(name[len("checkpoint_"):])
    return None


def _run_fix(root: Path) -> str:
    return (f"Evaluate one run per directory: re-run it with `waddington train -o NEW_DIR` (or `--overwrite` "
            f"to replace '{root}').")


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
        If the directory does not exist, is not complete (its manifest says running, interrupted or
        failed), mixes checkpoints of different runs, or holds no finished stage checkpoint.
    """
    from experiments.runs.manifest import ManifestError, read_manifest

    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"Run directory '{root}' does not exist.")
    try:
        manifest = read_manifest(root)
    except ManifestError as exc:
        raise CheckpointError(str(exc)) from exc
    if manifest is not None:
        kind, status = manifest.get("kind"), manifest.get("status")
        if kind not in ("train", "sweep"):
            raise CheckpointError(f"'{root}' holds a `waddington {kind}` output, not a train or sweep run.")
        if status != "complete":
            hint = (f"finish it with `waddington train --resume {root}`" if kind == "train"
                    else f"finish it with `waddington sweep --output {root} --resume`")
            raise CheckpointError(f"Run '{root}' is incomplete (manifest status '{status}'): {hint}, then evaluate it.")
        if kind == "train":
            return _from_train_manifest(root, manifest)
    return _from_scan(root, trial, manifest)


def _from_train_manifest(root: Path, manifest: dict[str, Any]) -> RunCheckpoints:
    """The checkpoints a complete ``train`` manifest lists, checked to be the only ones and to belong together."""
    listed: dict[str, Path] = {}
    for entry in manifest.get("checkpoints") or []:
        listed[entry["stage"]] = (root / entry["path"]).resolve()  # a later one of a stage supersedes
    if "ppo" not in listed:
        raise CheckpointError(f"Run '{root}' lists no stage-2 (PPO) checkpoint in its manifest although it is "
                              f"complete; the directory was changed after the run. {_run_fix(root)}")
    states = {}
    for stage, ckpt in listed.items():
        state = _read_state(ckpt)
        if state is None or state.get("stage_done") != stage or not _has_module(ckpt):
            raise CheckpointError(f"Run '{root}': its manifest lists '{ckpt}' as the {stage} checkpoint, but it is "
                                  f"missing or incomplete. {_run_fix(root)}")
        states[stage] = state
    own = set(listed.values())
    foreign = sorted(str(p.parent.relative_to(root)) for p in root.rglob("state.json")
                     if p.parent.resolve() not in own
                     and (_read_state(p.parent) or {}).get("stage_done") in ("trpo", "ppo"))
    if foreign:
        raise CheckpointError(f"Run '{root}' is mixed: it holds stage checkpoints its manifest does not list "
                              f"(another run wrote into it): {foreign}. {_run_fix(root)}")
    stage1 = listed.get("trpo")
    if stage1 is not None and not _same_json(states["trpo"].get("stage1"), states["ppo"].get("stage1")):
        raise CheckpointError(f"Run '{root}' is mixed: its stage-2 checkpoint did not start from its stage-1 "
                              f"checkpoint. {_run_fix(root)}")
    settings = dict(manifest.get("settings") or states["ppo"].get("settings") or {})
    if manifest.get("dataset") and (root / manifest["dataset"]).is_dir():
        settings["data"] = str((root / manifest["dataset"]).resolve())  # the space the policy learned, wherever DIR is
    stage1_algorithm = (states["ppo"].get("stage1") or {}).get("stage1_algorithm", "trpo")
    return RunCheckpoints(stage1, listed["ppo"], settings, stage1_algorithm)


def _from_scan(root: Path, trial: str | None, manifest: dict[str, Any] | None) -> RunCheckpoints:
    """Sweep dirs and dirs without a manifest: every stage checkpoint under ``root``, grouped by trial.

    Within a Tune trial the highest ``checkpoint_k`` of each stage is its latest (a restarted trial
    saves again); a ``train`` dir without a manifest must hold exactly one run.
    """
    owners: dict[Path, dict[str, list[Path]]] = {}
    states: dict[Path, dict[str, Any]] = {}
    for state_file in sorted(root.rglob("state.json")):
        ckpt = state_file.parent
        state = _read_state(ckpt)
        if not state or state.get("stage_done") not in ("trpo", "ppo") or not _has_module(ckpt):
            continue
        # train: <run>/checkpoints/stage?-*; sweep: <exp>/<trial>/checkpoint_00000k
        owners.setdefault(ckpt.parent, {}).setdefault(state["stage_done"], []).append(ckpt)
        states[ckpt] = state
    found: dict[Path, dict[str, Path]] = {}
    for owner, stages in owners.items():
        slot = {}
        ppo = stages.get("ppo", [])
        if ppo:
            if all(_tune_index(c) is not None for c in ppo):
                slot["ppo"] = max(ppo, key=_tune_index)
            elif len(ppo) > 1:
                raise CheckpointError(
                    f"'{owner}' is mixed: it holds {len(ppo)} finished runs' stage-2 checkpoints "
                    f"({sorted(c.name for c in ppo)}) and no manifest says which one belongs to it. {_run_fix(root)}")
            else:
                slot["ppo"] = ppo[0]
        trpo = stages.get("trpo", [])
        if "ppo" in slot and trpo:
            wanted = states[slot["ppo"]].get("stage1")
            matching = [c for c in trpo if _same_json(states[c].get("stage1"), wanted)]
            if not matching:
                raise CheckpointError(
                    f"'{owner}' is mixed: none of its stage-1 checkpoints ({sorted(c.name for c in trpo)}) is the one "
                    f"its stage-2 checkpoint '{slot['ppo'].name}' started from. {_run_fix(root)}")
            slot["trpo"] = max(matching, key=lambda c: (_tune_index(c) or 0, c.name))
        elif trpo:
            slot["trpo"] = trpo[0]
        found[owner] = slot
    finished = {owner: slot for owner, slot in found.items() if "ppo" in slot}
    if not finished:
        have = sorted(str(p.relative_to(root)) for slot in found.values() for p in slot.values())
        raise CheckpointError(
            f"No finished two-stage checkpoint under '{root}': expected checkpoints/stage2-*/ with state.json "
            f"(stage_done='ppo') and algorithm/{MODULE_SUBPATH}. Found: {have or 'nothing'}. "
            "Run `waddington train -o DIR` first, or let `waddington evaluate --data ...` train what it needs."
        )
    names = sorted(finished)
    if trial is not None:
        names = [o for o in names if trial in str(o)]
        if not names:
            raise CheckpointError(f"No trial matching {trial!r} under '{root}'. Trials: {sorted(map(str, finished))}.")
    if len(names) > 1:
        names = [_best_trial(root, names, finished, states)]
    slot = finished[names[0]]
    state2 = states[slot["ppo"]]
    settings = dict(state2["settings"])
    if manifest is not None and manifest.get("dataset") and (root / manifest["dataset"]).is_dir():
        settings["data"] = str((root / manifest["dataset"]).resolve())
    stage1_algorithm = (state2.get("stage1") or {}).get("stage1_algorithm", "trpo")
    return RunCheckpoints(slot.get("trpo"), slot["ppo"], settings, stage1_algorithm)


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
    distribution clipped to the module's action box (the env clips too).
    """
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint_dir).expanduser().resolve()  # RLlib reads a relative path as a URI without a scheme and fails
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
    low, high = np.asarray(module.action_space.low, np.float64), np.asarray(module.action_space.high, np.float64)

    def act(obs: np.ndarray) -> np.ndarray:
        if obs.shape[1] != obs_dim:
            raise CheckpointError(
                f"The policy at '{path}' expects {obs_dim}-d observations but the evaluation data gives "
                f"{obs.shape[1]}: the run was trained on a different dataset or latent size."
            )
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)})
        inputs = out[Columns.ACTION_DIST_INPUTS].cpu().numpy().astype(np.float64)
        return np.clip(inputs[:, :action_dim], low, high)

    act.obs_dim = obs_dim  # type: ignore[attr-defined]
    return act
