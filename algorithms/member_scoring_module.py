"""A masked policy over a library whose members are described by features: one logit per member.

The design env (``waddington/Design-v0``) asks, at each step, for one member of a library of
hundreds or thousands, or to stop. A flat MLP head would learn one output per member and could not
say anything about a member it rarely tried. Here a member's logit is minus the squared distance between an encoding
of the state (the gap to the target, the set so far) and an encoding of the member's *features*
(for a run: its mean-shift hint; for the planted benchmark: its pathway and strength), so what the
policy learns about one member carries over to members with similar features. The set so far
enters as the mean of its members' features: the encoding does not depend on the order members
were added (a set, not a sequence).

Masking follows RLlib's action-masking convention (``ray/rllib/examples/rl_modules/classes/
action_masking_rlm.py``): the observation is a ``Dict`` with ``observations`` and ``action_mask``,
and masked actions get a logit of ``FLOAT_MIN``. Unlike that example the batch is never modified in
place, because TRPO's learner evaluates one batch many times (Fisher-vector products).

Policy parameters live under ``pi``, the critic under ``vf`` (``InferenceOnlyAPI``), so TRPO's
learner can tell them apart, and the same module class serves TRPO and PPO: the handoff copies
weights between them exactly (:mod:`algorithms.handoff`).

Model config keys: ``member_features`` (library size x f, required), ``hidden`` (width, default 64).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.models.torch.torch_distributions import TorchCategorical
from ray.rllib.utils.torch_utils import FLOAT_MIN
from torch import nn

__all__ = ["MemberScoringTorchRLModule", "standardized_features"]


def standardized_features(features: np.ndarray) -> np.ndarray:
    """Member features centred and scaled per column (constant columns left at 0), float32."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"member_features must be a (members x features) array, got shape {features.shape}.")
    spread = features.std(axis=0)
    return ((features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)).astype(np.float32)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MemberScoringTorchRLModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Masked categorical policy ``logit_i = -|state encoding - member_i encoding|^2 / sqrt(h)`` (+ const), plus a stop logit."""

    def setup(self) -> None:
        features = self.model_config.get("member_features")
        if features is None:
            raise ValueError("MemberScoringTorchRLModule needs model_config['member_features'] (members x features).")
        features = torch.as_tensor(standardized_features(np.asarray(features)))
        n_members = int(self.action_space.n) - 1
        if features.shape[0] != n_members:
            raise ValueError(f"member_features has {features.shape[0]} rows; the action space has {n_members} members.")
        obs_dim = int(self.observation_space["observations"].shape[0])
        # observations = [gap (d), |gap|, distance, chosen (n), steps left]  (envs.design_env)
        self.n_members, self.n_latent = n_members, obs_dim - 3 - n_members
        hidden = int(self.model_config.get("hidden", 64))
        context = self.n_latent + 3 + features.shape[1]
        self.register_buffer("member_features", features)
        self.pi = nn.ModuleDict({
            "member": _mlp([features.shape[1], hidden, hidden]),
            "stop": nn.Linear(hidden, 1),
            # last, so TRPO's small output-layer init (pi_output_init_gain) starts the policy near uniform
            "context": _mlp([context, hidden, hidden]),
        })
        self.vf = _mlp([context, hidden, 1])
        self.action_dist_cls = TorchCategorical

    def _context(self, observations: torch.Tensor) -> torch.Tensor:
        d, n = self.n_latent, self.n_members
        chosen = observations[:, d + 2 : d + 2 + n]
        summary = chosen @ self.member_features / chosen.sum(dim=1, keepdim=True).clamp(min=1.0)
        return torch.cat([observations[:, : d + 2], observations[:, -1:], summary], dim=1)

    def _logits(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        state = self.pi["context"](self._context(obs["observations"]))
        members = self.pi["member"](self.member_features)
        # minus the squared distance of each member's encoding to the state's (up to a constant per state):
        # any member can be the most likely one, not only the extreme points a dot product favours
        scores = (2.0 * state @ members.T - (members**2).sum(dim=1)[None, :]) / members.shape[1] ** 0.5
        logits = torch.cat([scores, self.pi["stop"](state)], dim=1)
        return logits + torch.clamp(torch.log(obs["action_mask"]), min=FLOAT_MIN)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._logits(batch[Columns.OBS])}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward(batch)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.vf(self._context(batch[Columns.OBS]["observations"])).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["vf"]
