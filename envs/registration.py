"""Register ``waddington/CellState-v0`` with Gymnasium (string entry points) and Ray Tune."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["DESIGN_ENV_ID", "ENV_ID", "register_envs", "make_cell_state_env"]

ENV_ID = "waddington/CellState-v0"
DESIGN_ENV_ID = "waddington/Design-v0"  # envs.design_env: build a perturbation set toward a target


def make_cell_state_env(config: dict[str, Any] | None = None):
    """RLlib/Tune env creator: a VectorEnv when RLlib passes ``num_envs``, else a single env."""
    from envs.cell_state_env import CellStateEnv
    from envs.vector_env import CellStateVectorEnv

    config = dict(config or {})
    if "num_envs" in config:
        return CellStateVectorEnv(**config)
    return CellStateEnv(**config)


def register_envs() -> None:
    """Idempotently register the env id in Gymnasium and, when Ray is installed, in Tune."""
    if ENV_ID not in gym.registry:
        gym.register(
            id=ENV_ID,
            entry_point="envs.cell_state_env:CellStateEnv",
            vector_entry_point="envs.vector_env:CellStateVectorEnv",
        )
    if DESIGN_ENV_ID not in gym.registry:
        gym.register(id=DESIGN_ENV_ID, entry_point="envs.design_env:DesignEnv")
    try:
        from ray.tune.registry import register_env
    except ImportError:  # Gymnasium-only use needs no Ray
        return
    register_env(ENV_ID, make_cell_state_env)
