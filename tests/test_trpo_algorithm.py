"""TRPO end to end on RLlib (fast suite): invariants checked on every update, weights
interchangeable with PPO, forced line-search failure, 0 and 2 remote env runners."""

from __future__ import annotations


import gymnasium as gym
import numpy as np
import torch

from algorithms.trpo import TRPOConfig
from trpo_checks import MODULE, check_trpo_update

def _cartpole_config(**training) -> TRPOConfig:
    return (
        TRPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .training(**{"train_batch_size_per_learner": 2048, **training})
        .rl_module(model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"})
        .debugging(seed=0)
    )


def _learner_module_state(algo) -> dict[str, np.ndarray]:
    state = algo.learner_group.get_state(components="learner/rl_module")
    return state["learner"]["rl_module"][MODULE]


def test_cartpole_every_update_within_trust_region_and_return_rises(ray_local):
    config = _cartpole_config(vf_iters=5)
    algo = config.build_algo()
    try:
        returns, successes = [], []
        for _ in range(5):
            result = algo.train()
            lr = check_trpo_update(result, config.kl_radius)
            successes.append(float(lr["line_search_success"]))
            returns.append(result["env_runners"]["episode_return_mean"])
        assert sum(successes) >= 4, successes
        # A uniform CartPole policy scores ~20; five 2048-step TRPO updates about triple it.
        assert returns[-1] > 1.5 * returns[0] and returns[-1] > 35.0, returns
    finally:
        algo.stop()


def test_pendulum_two_remote_env_runners(ray_local):
    config = (
        TRPOConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=2, num_envs_per_env_runner=4, num_cpus_per_env_runner=1)
        .training(train_batch_size_per_learner=1600, vf_iters=3)
        .rl_module(
            model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "free_log_std": True}
        )
        .debugging(seed=1)
    )
    algo = config.build_algo()
    try:
        assert algo.env_runner_group.num_remote_workers() == 2
        for _ in range(3):
            result = algo.train()
            check_trpo_update(result, config.kl_radius)
            assert result["env_runners"]["num_env_steps_sampled"] >= 1600
        # After the blocking sync, both runners hold the learner's policy weights exactly.
        learner_state = _learner_module_state(algo)
        runner_states = algo.env_runner_group.foreach_env_runner(
            lambda r: r.module.get_state(inference_only=True), local_env_runner=False
        )
        assert len(runner_states) == 2
        for rs in runner_states:
            for key, value in rs.items():
                np.testing.assert_array_equal(np.asarray(value), learner_state[key])
    finally:
        algo.stop()


def test_forced_line_search_failure_leaves_policy_bit_identical(ray_local):
    # No real step can deliver a billion times its linear prediction: every search fails.
    config = _cartpole_config(line_search_accept_ratio=1e9, train_batch_size_per_learner=512)
    algo = config.build_algo()
    try:
        before = _learner_module_state(algo)
        for _ in range(2):
            lr = check_trpo_update(algo.train(), config.kl_radius)
            assert float(lr["line_search_success"]) == 0.0
            assert float(lr["line_search_backtracks"]) == config.line_search_max_steps
            assert float(lr["expected_improvement"]) > 0.0
        after = _learner_module_state(algo)
        assert before.keys() == after.keys()
        policy_keys = [k for k in before if not k.startswith(("vf.", "encoder.critic_encoder."))]
        value_keys = [k for k in before if k not in policy_keys]
        assert policy_keys and value_keys
        for k in policy_keys:
            assert before[k].tobytes() == after[k].tobytes(), k
        # The critic did train.
        assert any(not np.array_equal(before[k], after[k]) for k in value_keys)
    finally:
        algo.stop()


def test_trpo_module_state_loads_into_ppo_module_without_key_changes(ray_local, tmp_path):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    model_config = {"fcnet_hiddens": [32, 32], "fcnet_activation": "tanh", "free_log_std": True}
    trpo = (
        TRPOConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4)
        .training(train_batch_size_per_learner=400, vf_iters=2)
        .rl_module(model_config=model_config)
        .debugging(seed=2)
    ).build_algo()
    try:
        trpo.train()
        trpo_state = _learner_module_state(trpo)
        trpo_module = trpo.learner_group._learner.module[MODULE]
        ckpt = trpo.save_to_path(str(tmp_path / "trpo"))
    finally:
        trpo.stop()

    ppo_config = (
        PPOConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=400, minibatch_size=100, num_epochs=1)
        .rl_module(model_config=model_config)
    )
    env = gym.make("Pendulum-v1")
    ppo_module = RLModuleSpec(
        module_class=ppo_config.get_default_rl_module_spec().module_class,
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config=ppo_config.model_config,
    ).build()
    assert type(ppo_module) is type(trpo_module)
    assert set(ppo_module.get_state().keys()) == set(trpo_state.keys())
    ppo_module.set_state(trpo_state)
    for k, v in ppo_module.get_state().items():
        np.testing.assert_array_equal(v, trpo_state[k])
    obs = torch.as_tensor(
        np.stack([env.observation_space.sample() for _ in range(16)]), dtype=torch.float32
    )
    with torch.no_grad():
        out_ppo = ppo_module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        out_trpo = trpo_module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        assert torch.equal(out_ppo, out_trpo)
        assert torch.equal(
            ppo_module.compute_values({Columns.OBS: obs}),
            trpo_module.compute_values({Columns.OBS: obs}),
        )

    # The pipeline's route: PPO algorithm starting from the checkpointed module, then training.
    ppo = ppo_config.rl_module(
        rl_module_spec=RLModuleSpec(
            load_state_path=f"{ckpt}/learner_group/learner/rl_module/{MODULE}"
        )
    ).build_algo()
    try:
        loaded = _learner_module_state(ppo)
        for k, v in trpo_state.items():
            np.testing.assert_array_equal(loaded[k], v)
        ppo.train()
        trained = _learner_module_state(ppo)
        assert any(not np.array_equal(trained[k], trpo_state[k]) for k in trpo_state)
    finally:
        ppo.stop()
