"""The return a scripted oracle reaches on a run's env: the yardstick a trained policy's return is read against."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["oracle_return", "policy_return"]


def oracle_return(dataset, env_config: dict[str, Any] | None = None, *, episodes: int = 200, seed: int = 0) -> float:
    """Mean episode return of the landscape-aware controller steering to each episode's OT-paired target.

    ``dataset`` is the run's prepared dataset (or its env view) and ``env_config`` the env's
    dynamics options; episodes are seeded ``seed .. seed + episodes - 1``.
    """
    from envs.cell_state_env import CellStateEnv
    from envs.controllers import rollout_returns, toward_target
    from envs.dynamics import DYNAMICS_KEYS

    # the same reward whether or not actions are guided; unguided, the oracle's push is never clipped twice
    options = {k: v for k, v in (env_config or {}).items() if k in DYNAMICS_KEYS and k != "guided"}
    env = CellStateEnv(dataset, guided=False, **options)
    returns, _, _ = rollout_returns(env, toward_target(env), episodes=episodes, seed=seed)
    return float(np.mean(returns))


def policy_return(dataset, act, env_config: dict[str, Any] | None = None, *, episodes: int = 200,
                  seed: int = 0) -> float:
    """Mean episode return of a trained policy's mean action (``act``: batched obs -> actions) on the run's env.

    What the policy predicts with (no exploration noise), on ``episodes`` episodes run as one
    batch; comparable with :func:`oracle_return`.
    """
    from envs.dynamics import DYNAMICS_KEYS
    from envs.vector_env import CellStateVectorEnv

    env = CellStateVectorEnv(episodes, stagger=False, data=dataset,
                             **{k: v for k, v in (env_config or {}).items() if k in DYNAMICS_KEYS})
    obs, _ = env.reset(seed=seed)
    total = np.zeros(episodes)
    for _ in range(env.dynamics.config.horizon):
        obs, reward, *_ = env.step(act(obs))
        total += reward
    return float(total.mean())
