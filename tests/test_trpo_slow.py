"""Slow TRPO trainings: CartPole-v1 to >= 400 within 100k steps, Pendulum-v1 clear gain
within 200k steps. The trust region is checked on every update, not on one."""

from __future__ import annotations

import math

import pytest

from algorithms.trpo import TRPOConfig

pytestmark = pytest.mark.slow
MODULE = "default_policy"


def _train_until(algo, *, max_steps: int, kl_radius: float, stop_return: float | None = None):
    """Train until ``max_steps`` env steps (or ``stop_return``); returns [(steps, return)]."""
    curve = []
    steps = 0
    while steps < max_steps:
        result = algo.train()
        lr = result["learners"][MODULE]
        assert 0.0 <= float(lr["trpo_kl"]) <= kl_radius
        assert abs(float(lr["sampling_policy_kl"])) < 1e-6
        steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
        ret = result["env_runners"].get("episode_return_mean", float("nan"))
        curve.append((steps, ret))
        recent = [r for _, r in curve[-3:]]
        # Stop on a sustained level: the last 3 iterations' smoothed returns average it.
        if stop_return is not None and len(recent) == 3 and sum(recent) / 3 >= stop_return:
            break
    return curve


def test_cartpole_reaches_400_within_100k_steps(ray_local):
    config = (
        TRPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .training(train_batch_size_per_learner=2048)
        .rl_module(model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"})
        .reporting(metrics_num_episodes_for_smoothing=20)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        curve = _train_until(
            algo, max_steps=100_000, kl_radius=config.kl_radius, stop_return=400.0
        )
    finally:
        algo.stop()
    print("CartPole curve (steps, return):", curve)
    last3 = [r for _, r in curve[-3:]]
    assert sum(last3) / 3 >= 400.0 and curve[-1][0] <= 100_000 + 2048, curve


def test_pendulum_improves_clearly_within_200k_steps(ray_local):
    config = (
        TRPOConfig()
        .environment("Pendulum-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=16)
        .training(train_batch_size_per_learner=2048, gamma=0.9)
        .rl_module(
            model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh", "free_log_std": True}
        )
        .reporting(metrics_num_episodes_for_smoothing=20)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        curve = _train_until(algo, max_steps=200_000, kl_radius=config.kl_radius)
    finally:
        algo.stop()
    returns = [r for _, r in curve if not math.isnan(r)]
    # 16 envs x 128 steps: the first 200-step episodes finish in the second iteration.
    first = returns[0]
    last = sum(returns[-5:]) / 5
    # Random Pendulum play scores about -1200; "clearly" = at least 500 better.
    print("Pendulum curve (steps, return):", curve)
    assert last >= first + 500.0, (first, last, curve)
