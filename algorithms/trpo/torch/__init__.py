"""Torch implementation of TRPO's learner."""

from algorithms.trpo.torch.trpo_torch_learner import TRPOTorchLearner

__all__ = ["TRPOTorchLearner"]
