"""CellState-v0: Gymnasium conformance, determinism, and a reward that only real steering wins."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import ENV_ID, load_dataset
from envs.controllers import (
    landscape_aware,
    rollout_returns,
    toward_population_mean,
    toward_start_state_map,
    toward_target,
    zero_action,
)


def test_make_with_defaults_passes_check_env():
    for guided in (False, True):
        env = gym.make(ENV_ID, guided=guided)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        messages = [str(w.message) for w in caught]
        if guided:
            # the one advisory a guided env draws, on purpose: a correction spans twice the push box
            # ([-2, 2]) so that it can undo any push of the guide (the env clips the sum to [-1, 1])
            assert len(messages) == 1 and "symmetric and normalized" in messages[0], messages
            assert env.action_space.high.max() == 2.0
        else:
            assert messages == []
        assert env.observation_space.dtype == np.float32 and env.action_space.dtype == np.float32


def _rollout(env, seed: int, steps: int = 25):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    env.action_space.seed(seed)
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trace += [obs, np.float32(reward)]
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(obs)
    return trace


def test_same_seed_same_rollout_different_seed_differs(synthetic_dataset):
    env = gym.make(ENV_ID, data=synthetic_dataset)
    first, second = _rollout(env, seed=3), _rollout(env, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = _rollout(env, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_vector_env_shapes_autoreset_and_determinism(synthetic_dataset):
    vec = gym.make_vec(ENV_ID, num_envs=16, vectorization_mode="vector_entry_point", data=synthetic_dataset)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (16, vec.single_observation_space.shape[0]) and obs.dtype == np.float32
    horizon = vec.unwrapped.dynamics.config.horizon
    ended_once = np.zeros(16, dtype=bool)
    restarted = np.zeros(16, dtype=bool)
    previous_terminated = np.zeros(16, dtype=bool)
    first_end = np.full(16, -1)
    for step in range(2 * horizon):
        obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
        assert vec.single_observation_space.contains(obs[0])
        # NEXT_STEP: the step after termination is a reset with reward 0, time remaining 1.
        if previous_terminated.any():
            assert np.all(reward[previous_terminated] == 0.0)
            assert np.all(obs[previous_terminated, -1] == 1.0)
            restarted |= previous_terminated
        first_end[terminated & ~ended_once] = step
        ended_once |= terminated
        previous_terminated = terminated
    assert ended_once.all() and restarted.any() and not truncated.any()
    # Staggered first episodes: sub-envs do not all finish on the same step.
    assert len(set(first_end.tolist())) > 1
    again = gym.make_vec(ENV_ID, num_envs=16, vectorization_mode="vector_entry_point", data=synthetic_dataset)
    a, _ = vec.reset(seed=5)
    b, _ = again.reset(seed=5)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, vec.single_action_space.shape[0]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(vec.step(actions)[0], again.step(actions)[0])


def test_landscape_aware_controller_beats_doing_nothing_random_and_collapse(synthetic_dataset):
    env = envs.make_cell_state_env({"data": synthetic_dataset, "guided": False})  # zero action: doing nothing
    dataset = env.dataset
    rng = np.random.default_rng(0)

    def mean_return(controller):
        returns, finals, names = rollout_returns(env, controller, episodes=60, seed=1000)
        return returns.mean(), finals, names

    oracle_return, finals, names = mean_return(toward_target(env))
    zero_return, _, _ = mean_return(zero_action(env))
    random_return, _, _ = mean_return(lambda obs, info: rng.uniform(-1, 1, env.dynamics.n_latent))
    collapse_return, _, _ = mean_return(toward_population_mean(env))
    assert oracle_return > zero_return + 1.0
    assert oracle_return > random_return + 1.0
    # Collapsing every cell onto the population mean loses to carrying each onto its own target.
    assert oracle_return > collapse_return + 0.5

    # The oracle reaches the true perturbed population: its decoded end states shift genes the way
    # the generator's noise-free truth says the perturbation does.
    truth = dataset.truth["conditions"]
    rows = np.array([int(name[1:]) for name in dataset.latent_space.feature_names])
    control_true = np.asarray(truth[dataset.control_value]["expression_mean"])[rows]
    names = np.array(names)
    for name in set(names.tolist()):
        if (names == name).sum() < 5:
            continue
        simulated = dataset.latent_space.decode(finals[names == name]).mean(axis=0)
        control_sim = dataset.latent_space.decode(dataset.latent[dataset.cell_indices(dataset.control_value)]).mean(0)
        true_delta = np.asarray(truth[name]["expression_mean"])[rows] - control_true
        assert np.corrcoef(simulated - control_sim, true_delta)[0, 1] > 0.8, name


def test_a_start_state_map_lies_between_the_guide_and_the_oracle_and_never_reads_its_own_target(synthetic_dataset):
    """What a policy that never sees its target can aim for: more than the mean shift, less than the oracle."""
    env = envs.make_cell_state_env({"data": synthetic_dataset, "guided": False})
    latent = env.dataset.latent.astype(np.float64)
    hints = env.dynamics.hints

    def mean_return(controller):
        return rollout_returns(env, controller, episodes=80, seed=2000)[0].mean()

    oracle = mean_return(toward_target(env))
    mapped = mean_return(toward_start_state_map(env, k=20))
    guide = mean_return(landscape_aware(env, lambda info: latent[info["start_cell"]] + hints(info["perturbation"])))
    # the synthetic truth's response depends on the cell's state: a map of the start state beats one mean shift
    assert guide + 0.3 < mapped < oracle - 0.2
    # leave-one-out: with one neighbour, a start cell aims at another start's partner, never at its own
    controller = toward_start_state_map(env, k=1)
    obs, info = env.reset(seed=3)
    z = obs[None, : env.dynamics.n_latent].astype(np.float64)
    own = env.dynamics.steer(z, info["target"][None, :].astype(np.float64))[0]
    assert not np.allclose(controller(obs, info), own)
    with pytest.raises(ValueError, match="k must be"):
        toward_start_state_map(env, k=0)


def test_unseen_perturbation_is_expressible_by_its_gene_direction():
    dataset = envs.prepare_dataset("synthetic", split="perturbations", holdout=["G069"], seed=0)
    assert "G069" not in dataset.training_perturbations
    env = envs.make_cell_state_env({"data": dataset, "perturbation": "G069", "cells": "test"})
    obs, info = env.reset(seed=0)
    d = env.dynamics.n_latent
    direction = obs[2 * d : 3 * d]
    assert info["perturbation"] == "G069" and obs[3 * d] == 1.0
    assert np.isclose(np.linalg.norm(direction), 1.0, atol=1e-5)
    # Its targets are held-out cells, never training cells.
    assert dataset.split.test[info["target_cell"]]
    with pytest.raises(ValueError, match="Unknown perturbation 'NOPE'"):
        envs.make_cell_state_env({"data": dataset, "perturbation": "NOPE"})


def test_dataset_roundtrip_and_no_overwrite(tmp_path, synthetic_dataset):
    path = synthetic_dataset.save(tmp_path / "prepared")
    loaded = load_dataset(path)
    np.testing.assert_array_equal(loaded.latent, synthetic_dataset.latent)
    np.testing.assert_array_equal(loaded.landscape.means, synthetic_dataset.landscape.means)
    assert loaded.pairs.keys() == synthetic_dataset.pairs.keys()
    assert (loaded.expression != synthetic_dataset.expression).nnz == 0
    with pytest.raises(FileExistsError):
        synthetic_dataset.save(path)
    env = gym.make(ENV_ID, data=str(path))
    obs_a, _ = env.reset(seed=0)
    obs_b, _ = gym.make(ENV_ID, data=synthetic_dataset).reset(seed=0)
    np.testing.assert_array_equal(obs_a, obs_b)


def test_unseeded_envs_differ_so_parallel_runners_do_not_duplicate(synthetic_dataset):
    first = [gym.make(ENV_ID, data=synthetic_dataset).reset()[0] for _ in range(3)]
    assert not all(np.array_equal(first[0], other) for other in first[1:])
    vectors = [
        gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", data=synthetic_dataset).reset()[0]
        for _ in range(2)
    ]
    assert not np.array_equal(*vectors)
