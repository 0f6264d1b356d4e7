"""Scripted reference controllers for ``CellStateEnv``: the yardsticks a learned policy is read against.

``landscape_aware`` knows the landscape drift and steers each cell to a chosen point, cancelling
the drift; pointed at the episode's OT-paired target it is the env's practical upper reference,
pointed at the perturbed population's mean it is the collapse strategy the reward must not favour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from envs.cell_state_env import CellStateEnv
from envs.dynamics import CellStateDynamics

__all__ = ["Controller", "steering_action", "landscape_aware", "toward_target", "toward_population_mean", "zero_action", "rollout_returns"]

Controller = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


def steering_action(dynamics: CellStateDynamics, z: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The push that cancels the drift at ``z`` and steps toward ``point``, clipped to the action box."""
    return dynamics.steer(z, point)


def landscape_aware(env: CellStateEnv, point_of: Callable[[dict[str, Any]], np.ndarray]) -> Controller:
    """Push toward ``point_of(info)`` by the step that cancels the drift, clipped to the action box.

    In a guided env the action is what is left of that push after the guide's, so the controller
    makes the same pushes there.
    """
    dynamics = env.dynamics

    def act(obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        z = obs[None, : dynamics.n_latent].astype(np.float64)
        push = dynamics.steer(z, point_of(info))
        if dynamics.guided:
            steps_left = round(float(obs[-1]) * dynamics.config.horizon)  # the observed time remaining
            guide = dynamics.push(z, np.zeros_like(z), dynamics.observed_goal(obs[None, :]), steps_left=steps_left)
            push = np.clip(push - guide, -dynamics.action_bound, dynamics.action_bound)
        return push[0].astype(np.float32)

    return act


def toward_target(env: CellStateEnv) -> Controller:
    """Steer every cell to its own OT-paired target cell."""
    return landscape_aware(env, lambda info: info["target"])


def toward_population_mean(env: CellStateEnv) -> Controller:
    """Steer every cell to the mean of its perturbation's training cells (collapse)."""
    dataset = env.dataset
    means = {name: dataset.latent[dataset.cell_indices(name)].mean(axis=0) for name in env.dynamics.perturbations}
    return landscape_aware(env, lambda info: means[info["perturbation"]])


def zero_action(env: CellStateEnv) -> Controller:
    """A zero action: in a plain env, doing nothing (the drift and noise alone move the cell); in a guided env, the guide alone."""
    return lambda obs, info: np.zeros(env.dynamics.n_latent, dtype=np.float32)


def rollout_returns(env: CellStateEnv, controller: Controller, *, episodes: int, seed: int = 0):
    """Run ``episodes`` episodes (reset seeds ``seed..seed+episodes-1``).

    Returns
    -------
    ``(returns, final_states, perturbations)``: per-episode return, final latent state and label.
    """
    returns, finals, names = [], [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        total, terminated, truncated = 0.0, False, False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(controller(obs, info))
            total += reward
        returns.append(total)
        finals.append(obs[: env.dynamics.n_latent])
        names.append(info["perturbation"])
    return np.array(returns), np.array(finals), names
