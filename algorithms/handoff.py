"""Stage handoff: stage 1's final RL module weights become stage 2's initial weights -- measured.

On Ray 2.60 several ways of moving weights between algorithms fail *silently*
(measured here): ``restore_from_path(component=...)`` and ``set_state`` push weights to remote
env runners fire-and-forget, ``Learner.set_state`` ignores weights whose ``weights_seq_no`` is not
newer, and restoring a whole TRPO checkpoint into PPO breaks PPO's optimizer. The route used here:

1. stage 1 saves a full algorithm checkpoint;
2. stage 2's config gets ``RLModuleSpec(load_state_path=<ckpt>/learner_group/learner/rl_module/
   default_policy)``, so its learner *builds* from those weights, and ``Algorithm.setup`` pushes them
   to every env runner;
3. a blocking ``sync_weights`` (with a timeout) before the first sample makes sure no runner was
   skipped, and then
4. the handoff is *measured*: the action-distribution parameters on a fixed batch of observations
   are computed by stage 1's final learner module and by stage 2's learner and by every env runner
   (the modules that will sample stage 2's first batch). Their max absolute difference is the
   number reported as ``handoff_max_abs_diff``.

Nothing here assumes which algorithm stage 1 is, as long as it uses the same RL module class
(TRPO reuses PPO's ``DefaultPPOTorchRLModule``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HandoffError",
    "module_state_path",
    "with_initial_weights",
    "fixed_observations",
    "learner_action_dist_inputs",
    "env_runner_action_dist_inputs",
    "policy_weights",
    "weight_change_l2",
    "sync_and_measure",
]

DEFAULT_POLICY = "default_policy"


class HandoffError(RuntimeError):
    """The weight handoff between the two stages could not be done or verified."""


def module_state_path(checkpoint_dir: str | os.PathLike, module_id: str = DEFAULT_POLICY) -> str:
    """Path of one RL module's state inside a full ``Algorithm.save_to_path`` checkpoint."""
    path = Path(checkpoint_dir) / "learner_group" / "learner" / "rl_module" / module_id
    if not path.is_dir():
        raise HandoffError(
            f"No RL module state for '{module_id}' at '{path}'. Pass the directory written by "
            "`Algorithm.save_to_path(...)` of the stage-1 algorithm."
        )
    return str(path)


def with_initial_weights(config, state_path: str):
    """Copy of an ``AlgorithmConfig`` whose RL module is built from the weights at ``state_path``.

    The user's model config (hidden sizes, activations, ...) is kept: only ``load_state_path`` is
    added to the RL module spec, which ``Algorithm.setup`` loads into the learner group and then
    broadcasts to the env runners.
    """
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    config = copy.deepcopy(config)
    # Unfreeze if needed (Tune freezes configs handed to algorithms).
    if getattr(config, "_is_frozen", False):
        config = config.copy(copy_frozen=False)
    current = config._rl_module_spec
    if current is None:
        spec = RLModuleSpec(load_state_path=state_path)
    elif isinstance(current, RLModuleSpec):
        spec = copy.deepcopy(current)
        spec.load_state_path = state_path
    else:  # a MultiRLModuleSpec: only single-agent is supported here
        raise HandoffError("Multi-agent module specs are not supported by the stage handoff.")
    config.rl_module(rl_module_spec=spec)
    return config


def fixed_observations(observation_space, n: int = 256, seed: int = 12345) -> np.ndarray:
    """A fixed, reproducible batch of observations from a Box space (float32, shape (n, *shape)).

    Bounded dimensions are sampled uniformly, unbounded ones from a standard normal: the same
    batch for the same space and seed, whatever the algorithm.
    """
    import gymnasium as gym

    if not isinstance(observation_space, gym.spaces.Box):
        raise HandoffError(f"Fixed observations need a Box observation space, got {observation_space}.")
    rng = np.random.default_rng(seed)
    low = np.broadcast_to(observation_space.low, observation_space.shape).astype(np.float64)
    high = np.broadcast_to(observation_space.high, observation_space.shape).astype(np.float64)
    bounded = np.isfinite(low) & np.isfinite(high)
    out = rng.standard_normal((n, *observation_space.shape))
    uni = rng.uniform(size=(n, *observation_space.shape))
    out = np.where(bounded, low + uni * (np.where(bounded, high - low, 0.0)), out)
    return out.astype(np.float32)


def _module_outputs(module, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    import torch
    import tree
    from ray.rllib.core.columns import Columns

    with torch.no_grad():  # a Dict observation (e.g. with an action mask) is a dict of arrays
        out = module.forward_inference({Columns.OBS: tree.map_structure(torch.as_tensor, obs)})
    return out[Columns.ACTION_DIST_INPUTS].detach().cpu().numpy().astype(np.float64)


def _first_learner_result(algo, func):
    results = algo.learner_group.foreach_learner(func)
    for r in results:  # RemoteCallResults: raise the learner's error instead of hiding it
        return r.get()
    raise HandoffError("No healthy learner answered.")


def learner_action_dist_inputs(algo, obs: np.ndarray, module_id: str = DEFAULT_POLICY) -> np.ndarray:
    """Action-distribution parameters of the learner's module (first learner) on ``obs``."""
    return np.asarray(_first_learner_result(algo, lambda learner: _module_outputs(learner.module[module_id], obs)))


def env_runner_action_dist_inputs(
    algo, obs: np.ndarray, *, timeout_s: float = 60.0
) -> list[np.ndarray]:
    """Action-distribution parameters of every env runner that samples for ``algo``.

    With remote env runners the local one does not sample, so only the remote ones are asked;
    with none, the local env runner is the sampler. Raises if any runner does not answer.
    """
    group = algo.env_runner_group
    n_remote = group.num_remote_env_runners()
    if n_remote > 0:
        outs = group.foreach_env_runner(
            lambda runner: _module_outputs(runner.module, obs),
            local_env_runner=False,
            timeout_seconds=timeout_s,
        )
        if len(outs) != n_remote:
            raise HandoffError(f"Only {len(outs)} of {n_remote} env runners answered the handoff check.")
    else:
        outs = [_module_outputs(group.local_env_runner.module, obs)]
    return [np.asarray(o) for o in outs]


def policy_weights(algo, module_id: str = DEFAULT_POLICY) -> dict[str, np.ndarray]:
    """The learner module's parameters as numpy arrays (a copy), keyed by parameter name."""

    def _get(learner):
        module = learner.module[module_id]
        return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}

    return _first_learner_result(algo, _get)


def weight_change_l2(before: dict[str, np.ndarray], after: dict[str, np.ndarray], keys=None) -> float:
    """L2 norm of the difference of two parameter dicts (over ``keys``, default all shared ones)."""
    keys = sorted(set(before) & set(after)) if keys is None else keys
    if not keys:
        raise HandoffError("No common parameters to compare.")
    sq = sum(float(np.sum((after[k].astype(np.float64) - before[k].astype(np.float64)) ** 2)) for k in keys)
    return float(np.sqrt(sq))


def sync_and_measure(
    algo, reference: np.ndarray, obs: np.ndarray, *, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Blocking weight sync learner -> env runners, then compare every sampler with ``reference``.

    ``reference`` holds stage 1's final action-distribution parameters on ``obs``. Returns the max
    absolute differences for the learner and for each env runner, and their overall maximum.
    """
    group = algo.env_runner_group
    if group.num_remote_env_runners() > 0:
        group.sync_weights(
            from_worker_or_learner_group=algo.learner_group,
            inference_only=True,
            timeout_seconds=timeout_s,
        )
    else:
        state = algo.learner_group.get_state(components="learner/rl_module", inference_only=True)["learner"]
        group.local_env_runner.set_state(state)
    learner_out = learner_action_dist_inputs(algo, obs)
    runner_outs = env_runner_action_dist_inputs(algo, obs, timeout_s=timeout_s)
    learner_diff = float(np.max(np.abs(learner_out - reference)))
    runner_diffs = [float(np.max(np.abs(o - reference))) for o in runner_outs]
    return {
        "handoff_learner_max_abs_diff": learner_diff,
        "handoff_env_runner_max_abs_diffs": runner_diffs,
        "handoff_num_samplers_checked": len(runner_diffs),
        "handoff_max_abs_diff": max([learner_diff, *runner_diffs]),
    }
