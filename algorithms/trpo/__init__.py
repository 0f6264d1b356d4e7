"""TRPO for RLlib's new API stack (config, algorithm, Torch learner, pure optim helpers)."""

from algorithms.trpo.trpo import TRPO, TRPOConfig

__all__ = ["TRPO", "TRPOConfig"]
