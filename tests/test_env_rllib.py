"""RLlib PPO samples CellState-v0 built from real h5ad files with 2 remote env runners.

The prepared dataset goes into Ray's object store once; runners receive only the ObjectRef.
"""

from __future__ import annotations

import gymnasium as gym
import pytest

import envs
from helpers import KANG, PAPALEXI, require_file

REAL_SETS = {
    "papalexi": (PAPALEXI, {"perturbation_key": "perturbation_confident", "control_value": "non-targeting",
                            "ignore_values": ["unassigned"]}),
    "kang": (KANG, {"perturbation_key": "group_id", "control_value": "ctrl"}),
}


def _ppo_on(data_ref, *, num_env_runners: int):
    from ray.rllib.algorithms.ppo import PPOConfig

    return (
        PPOConfig()
        .environment(envs.ENV_ID, env_config={"data": data_ref})
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=8,
            gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
            rollout_fragment_length="auto",
        )
        .training(train_batch_size=320, minibatch_size=160, num_epochs=1)
        .debugging(seed=0)
        .build_algo()
    )


# Papalexi in the fast suite, Kang (the same path on other data) in the slow one
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "kang" else n
                                  for n in sorted(REAL_SETS)])
def test_ppo_samples_real_data_with_two_remote_runners(ray_local, name):
    path, keys = REAL_SETS[name]
    dataset = envs.prepare_dataset(require_file(path), n_latent=8, **keys)
    ref = ray_local.put(dataset.env_view())
    algo = _ppo_on(ref, num_env_runners=2)
    try:
        result = algo.train()
        sampled = result["env_runners"]["num_env_steps_sampled"]
        assert sampled >= 320
        # Every remote runner built the env from the shared dataset, with the dataset's shapes.
        shapes = algo.env_runner_group.foreach_env_runner(
            lambda runner: (runner.env.unwrapped.dataset.latent.shape, runner.num_envs), local_env_runner=False
        )
        assert shapes == [(dataset.latent.shape, 8)] * 2
    finally:
        algo.stop()
