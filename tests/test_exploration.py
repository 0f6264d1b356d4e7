"""A policy trained from random weights starts with the set action std and action means near 0, everywhere."""

from __future__ import annotations

import math

import numpy as np
from helpers import tiny_dataset, tiny_settings


def test_fresh_ppo_starts_with_the_set_std_and_small_means(ray_local):
    import envs  # noqa: F401
    from algorithms import handoff
    from algorithms.exploration import set_initial_action_std
    from experiments.training.algorithm_configs import build_stage2_config
    from experiments.training.settings import resolve_settings

    algo = build_stage2_config(resolve_settings(tiny_settings()), None, ray_local.put(tiny_dataset())).build_algo()
    try:
        space = algo.env_runner_group.get_spaces()[handoff.DEFAULT_POLICY][0]
        obs = handoff.fixed_observations(space, n=64, seed=1)
        before = handoff.learner_action_dist_inputs(algo, obs)
        set_initial_action_std(algo, 0.3)
        learner = handoff.learner_action_dist_inputs(algo, obs)
        runner = handoff.env_runner_action_dist_inputs(algo, obs)[0]
    finally:
        algo.stop()
    half = learner.shape[1] // 2
    np.testing.assert_allclose(learner[:, half:], math.log(0.3), atol=1e-6)  # state-independent std 0.3
    assert np.abs(learner[:, :half]).max() < 0.1 < np.abs(before[:, :half]).max()
    np.testing.assert_allclose(runner, learner, atol=1e-6)  # the sampler acts with the same policy
