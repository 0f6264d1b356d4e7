"""TRPO on the project's env, ``waddington/CellState-v0``, with 2 remote env runners."""

from __future__ import annotations

import gymnasium as gym
import pytest

import envs
from algorithms.trpo import TRPOConfig
from trpo_checks import check_trpo_update


@pytest.fixture(scope="module")
def cellstate_data_ref(ray_local):
    """The synthetic dataset prepared once on the driver, shared through the object store."""
    from envs.sources import resolve_dataset

    return ray_local.put(resolve_dataset("synthetic", n_latent=8, seed=0))


def test_trpo_on_cellstate_with_two_remote_env_runners(ray_local, cellstate_data_ref):
    config = (
        TRPOConfig()
        .environment(envs.ENV_ID, env_config={"data": cellstate_data_ref, "horizon": 20})
        .env_runners(
            num_env_runners=2,
            num_envs_per_env_runner=8,
            num_cpus_per_env_runner=1,
            gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
        )
        .training(train_batch_size_per_learner=960, vf_iters=3)
        .rl_module(
            model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "free_log_std": True}
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        assert algo.env_runner_group.num_remote_workers() == 2
        for _ in range(3):
            result = algo.train()
            check_trpo_update(result, config.kl_radius)
            assert result["env_runners"]["num_env_steps_sampled"] >= 960
        assert result["env_runners"]["num_episodes_lifetime"] > 0
    finally:
        algo.stop()
