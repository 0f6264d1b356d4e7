"""Native numpy VectorEnv of ``waddington/CellState-v0`` (NEXT_STEP autoreset) for RLlib throughput."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.cell_state_env import CellStateEnv

__all__ = ["CellStateVectorEnv"]


class CellStateVectorEnv(VectorEnv):
    """``num_envs`` cell-state episodes stepped as one numpy batch.

    Takes the same keyword arguments as :class:`envs.cell_state_env.CellStateEnv`, plus
    ``num_envs`` and ``stagger``. With ``stagger=True`` the first episode of sub-env ``i`` starts
    part-way through the horizon (at a random step), so sub-envs do not all finish on the same
    step and every training batch holds finished episodes; later episodes are full length.
    Autoreset follows Gymnasium's NEXT_STEP mode: the step after an episode ends returns the new
    episode's first observation with reward 0 and ignores the action.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, *, stagger: bool = True, **env_kwargs: Any):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
        template = CellStateEnv(**env_kwargs)
        self.dataset = template.dataset
        self.dynamics = template.dynamics
        self.num_envs = num_envs
        self.single_observation_space = template.observation_space
        self.single_action_space = template.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = None
        self._stagger = stagger
        self._rng = np.random.default_rng()  # reset(seed=...) makes episodes reproducible
        self._latent = self.dataset.latent.astype(np.float64)
        d = self.dynamics.n_latent
        self._z = np.zeros((num_envs, d))
        self._z0 = np.zeros((num_envs, d))
        self._y = np.zeros((num_envs, d))
        self._goal = np.zeros((num_envs, d))
        self._perturbation = np.zeros(num_envs, dtype=np.int64)
        self._features = np.zeros((num_envs, self.dynamics.feature_dim), dtype=np.float32)
        self._t = np.zeros(num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    def _start(self, index: np.ndarray) -> None:
        perturbation, start, target = self.dynamics.sample_episodes(self._rng, len(index))
        self._perturbation[index] = perturbation
        self._z0[index] = self._latent[start]
        self._z[index] = self._latent[start]
        self._t[index] = 0.0
        self._features[index] = self.dynamics.episode_features(perturbation, start)
        # a paired cell, or the guide's goal for episodes at a held-out group's controls
        self._y[index] = self.dynamics.episode_targets(start, target, self._features[index])
        if self.dynamics.guided:
            self._goal[index] = self.dynamics.goal(self._z0[index], self._features[index])

    def _observe(self) -> np.ndarray:
        return self.dynamics.observe_features(self._z, self._z0, self._features, self._t)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        everyone = np.arange(self.num_envs)
        self._start(everyone)
        if self._stagger and self.num_envs > 1:
            self._t[:] = self._rng.integers(0, self.dynamics.config.horizon, size=self.num_envs)
        self._needs_reset[:] = False
        return self._observe(), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        restarting = self._needs_reset.copy()
        moved, pushes = self.dynamics.advance(self._z, actions, self._rng, self._goal,
                                              steps_left=self.dynamics.steps_left(self._t))
        rewards = self.dynamics.reward(self._z, moved, self._y, pushes)
        self._z = moved
        self._t += 1.0
        if restarting.any():
            self._start(np.flatnonzero(restarting))
            rewards[restarting] = 0.0
        terminations = (self._t >= self.dynamics.config.horizon) & ~restarting
        self._needs_reset = terminations.copy()
        truncations = np.zeros(self.num_envs, dtype=bool)
        return self._observe(), rewards.astype(np.float32), terminations, truncations, {}
