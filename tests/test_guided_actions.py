"""Guided actions: a policy corrects a scripted push toward the start cell moved by the shift hint."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

from envs import ENV_ID
from envs.controllers import rollout_returns, toward_target, zero_action
from envs.dynamics import CellStateDynamics, DynamicsConfig
from envs.vector_env import CellStateVectorEnv


def test_a_zero_action_carries_the_cell_to_its_hinted_goal(synthetic_dataset):
    env = gym.make(ENV_ID, data=synthetic_dataset, noise_std=0.0).unwrapped
    assert env.dynamics.guided  # new datasets are prepared with guided actions
    d = env.dynamics.n_latent
    obs, info = env.reset(seed=3)
    start = obs[d : 2 * d]
    goal = start + env.dynamics.features_at(info["perturbation"], start[None, :])[0, -d:]  # its own cell's hint
    start_gap = np.linalg.norm(goal - obs[:d])
    for _ in range(env.dynamics.config.horizon):
        obs, *_ = env.step(np.zeros(d, dtype=np.float32))
    # the guide cancels the drift and steps at most action_scale per dim: it ends near its goal
    assert np.linalg.norm(goal - obs[:d]) < 0.1 * start_gap
    np.testing.assert_allclose(env.dynamics.observed_goal(obs[None, :])[0], goal, atol=1e-4)
    # unguided, the same zero action is the drift alone: the cell stays far from the goal
    idle = gym.make(ENV_ID, data=synthetic_dataset, noise_std=0.0, guided=False).unwrapped
    obs, _ = idle.reset(seed=3)
    for _ in range(idle.dynamics.config.horizon):
        obs, *_ = idle.step(np.zeros(d, dtype=np.float32))
    assert np.linalg.norm(goal - obs[:d]) > 0.5 * start_gap


def test_the_push_is_the_guide_plus_the_action_clipped(synthetic_dataset):
    dyn = CellStateDynamics(synthetic_dataset, DynamicsConfig())
    rng = np.random.default_rng(0)
    z = synthetic_dataset.latent[:16].astype(np.float64)
    goal = z + rng.normal(size=z.shape)
    action = rng.uniform(-1, 1, size=z.shape)
    np.testing.assert_allclose(dyn.push(z, action, goal), np.clip(dyn.steer(z, goal) + action, -1, 1))
    # with k steps left the guide steers a 1/k share of the way
    np.testing.assert_allclose(dyn.push(z, action, goal, steps_left=4.0),
                               np.clip(dyn.steer(z, z + (goal - z) / 4.0) + action, -1, 1))
    np.testing.assert_allclose(dyn.push(z, action, goal, guided=False), action)
    with pytest.raises(ValueError, match="goal"):
        dyn.push(z, action)


def test_guided_actions_need_hints_and_older_datasets_keep_plain_actions(synthetic_dataset):
    with pytest.raises(ValueError, match="shift_hint"):
        CellStateDynamics(synthetic_dataset, DynamicsConfig(shift_hint=False, guided=True))
    assert not CellStateDynamics(synthetic_dataset, DynamicsConfig(shift_hint=False)).guided
    older = dataclasses.replace(synthetic_dataset, meta={k: v for k, v in synthetic_dataset.meta.items()
                                                         if k != "guided_actions"})
    assert not CellStateDynamics(older, DynamicsConfig()).guided  # a run trained before guided actions


def test_guided_single_and_vector_envs_step_alike(synthetic_dataset):
    single = gym.make(ENV_ID, data=synthetic_dataset).unwrapped
    vector = CellStateVectorEnv(num_envs=1, stagger=False, data=synthetic_dataset)
    obs_s, _ = single.reset(seed=11)
    obs_v, _ = vector.reset(seed=11)
    single.np_random = np.random.default_rng(5)
    vector._rng = np.random.default_rng(5)
    np.testing.assert_allclose(obs_v[0], obs_s, atol=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(5):
        action = rng.uniform(-1, 1, size=single.action_space.shape).astype(np.float32)
        obs_s, r_s, *_ = single.step(action)
        obs_v, r_v, *_ = vector.step(action[None, :])
        np.testing.assert_allclose(obs_v[0], obs_s, atol=1e-5)
        assert r_v[0] == pytest.approx(r_s, abs=1e-5)


def test_the_oracle_still_beats_the_guide_and_the_guide_beats_doing_nothing(synthetic_dataset):
    guided = gym.make(ENV_ID, data=synthetic_dataset).unwrapped
    plain = gym.make(ENV_ID, data=synthetic_dataset, guided=False).unwrapped
    guide, _, _ = rollout_returns(guided, zero_action(guided), episodes=40)
    oracle_in_guided, _, _ = rollout_returns(guided, toward_target(guided), episodes=40)
    oracle, _, _ = rollout_returns(plain, toward_target(plain), episodes=40)
    nothing, _, _ = rollout_returns(plain, zero_action(plain), episodes=40)
    # same episodes (same reset seeds): the learning problem keeps headroom above the guide
    assert oracle.mean() > guide.mean() > nothing.mean()
    assert oracle_in_guided.mean() > guide.mean()


def test_a_guided_correction_can_undo_any_push_of_the_guide(synthetic_dataset):
    guided = gym.make(ENV_ID, data=synthetic_dataset).unwrapped
    plain = gym.make(ENV_ID, data=synthetic_dataset, guided=False).unwrapped
    assert guided.action_space.high.max() == 2.0 and plain.action_space.high.max() == 1.0
    dyn = guided.dynamics
    z = synthetic_dataset.latent[:8].astype(np.float64)
    goal = z - 50.0  # far below: the guide pushes -1 in every dimension
    assert np.all(dyn.push(z, np.zeros_like(z), goal) == -1.0)
    np.testing.assert_allclose(dyn.push(z, np.full_like(z, 2.0), goal), 1.0)  # the full opposite push
    np.testing.assert_allclose(dyn.push(z, np.full_like(z, 5.0), goal), 1.0)  # beyond the box: clipped
