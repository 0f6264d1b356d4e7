"""Scripted reference controllers for ``CellStateEnv``: the yardsticks a learned policy is read against.

``landscape_aware`` knows the landscape drift and steers each cell to a chosen point, cancelling
the drift; pointed at the episode's OT-paired target it is the env's practical upper reference,
pointed at the perturbed population's mean it is the collapse strategy the reward must not favour,
pointed at a k-nearest-neighbour estimate of the target from the start cell alone it is what a
policy (which never observes its episode's target) can at best aim for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from envs.cell_state_env import CellStateEnv
from envs.dynamics import CellStateDynamics

__all__ = ["Controller", "steering_action", "landscape_aware", "toward_target", "toward_population_mean",
           "toward_start_state_map", "zero_action", "rollout_returns"]

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


def toward_start_state_map(env: CellStateEnv, k: int = 20) -> Controller:
    """Steer every cell to the mean OT target of the ``k`` training start cells nearest its own (itself left out).

    A policy observes its start cell but never which of the start's OT partners its episode
    drew: the target it can aim for is a function of the start state. This controller aims at
    a k-nearest-neighbour estimate of that function, fitted per perturbation on the OT pairs of
    the *other* start cells (leaving a cell's own partners out, so it cannot read its answer):
    its return, as a share of :func:`toward_target`'s, estimates how much of the oracle's return
    any policy can reach.
    """
    from sklearn.neighbors import NearestNeighbors

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    latent = env.dataset.latent.astype(np.float64)
    estimates: dict[tuple[str, int], np.ndarray] = {}
    for name, pairs in zip(env.dynamics.perturbations, env.dynamics.pairs):
        starts, targets, weights = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), pairs[:, 2]
        cells, row_of = np.unique(starts, return_inverse=True)
        # each start's weighted mean partner: what the OT plan sends it to on average
        total = np.bincount(row_of, weights=weights)
        mean_target = np.stack([np.bincount(row_of, weights=weights * latent[targets, j]) for j in
                                range(latent.shape[1])], axis=1) / total[:, None]
        n_neighbours = min(k + 1, len(cells))
        _, index = NearestNeighbors(n_neighbors=n_neighbours).fit(latent[cells]).kneighbors(latent[cells])
        for row, neighbours in enumerate(index):
            others = neighbours[neighbours != row][: n_neighbours - 1]
            chosen = others if len(others) else [row]  # a perturbation paired with one start cell: its own
            estimates[(name, int(cells[row]))] = mean_target[chosen].mean(axis=0)
    return landscape_aware(env, lambda info: estimates[(info["perturbation"], info["start_cell"])])


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
