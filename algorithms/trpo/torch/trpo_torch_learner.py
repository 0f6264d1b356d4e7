"""TRPO's Torch learner: natural-gradient policy step + value-function regression.

Per module and per batch (``_update`` receives the whole batch once, because
``TRPO.training_step`` calls ``update`` with ``num_epochs=1, minibatch_size=None``),
``_update_module`` runs these steps, each a named function below:

1. Old policy = the learner's current (pre-update) policy, detached. Its KL to the
   sampling policy recorded by the env runners is logged as ``sampling_policy_kl``
   (0 up to float rounding when sampling and learner weights agree). See
   ``_freeze_old_policy``.
2. Surrogate ``L = mean(ratio * A) + c_ent * entropy`` and its gradient ``g`` w.r.t.
   the policy parameters (actor encoder + policy head; never the critic).
   See ``_PolicyObjective`` and ``_natural_gradient``.
3. ``x ~= F^-1 g`` by conjugate gradient on Fisher-vector products (double backward
   through mean ``KL(pi_old || pi_theta)``, plus damping). See ``_natural_gradient``.
4. Full step ``sqrt(2 * kl_radius / x^T F x) * x``; backtracking line search keeps the
   first fraction with ``KL <= kl_radius`` and ``L_new > L_old``, else restores the old
   parameters bit for bit. See ``_full_step`` and ``_trust_region_step``.
5. Value function: ``vf_iters`` Adam epochs (``vf_lr``) over minibatches on the GAE
   value targets. Only the critic's parameters are registered with an optimizer.
   See ``TRPOTorchLearner._update_value_function``; metrics: ``_update_metrics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import tree

from ray.rllib.connectors.learner import (
    AddOneTsToEpisodesAndTruncate,
    GeneralAdvantageEstimation,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override
from ray.rllib.utils.torch_utils import explained_variance
from ray.rllib.utils.typing import ModuleID

from algorithms.trpo.optim import (
    CGResult,
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
)
from algorithms.trpo.trpo import (
    CG_ITERATIONS_KEY,
    CG_RESIDUAL_KEY,
    EXPECTED_IMPROVEMENT_KEY,
    LINE_SEARCH_BACKTRACKS_KEY,
    LINE_SEARCH_STEP_FRACTION_KEY,
    LINE_SEARCH_SUCCESS_KEY,
    SAMPLING_POLICY_KL_KEY,
    SURROGATE_IMPROVEMENT_KEY,
    TRPO_KL_KEY,
    VF_EXPLAINED_VAR_KEY,
    VF_LOSS_BEFORE_KEY,
    TRPOConfig,
)


def split_policy_and_value_params(
    module: torch.nn.Module,
) -> Tuple[List[torch.nn.Parameter], List[torch.nn.Parameter]]:
    """Partition a PPO-style module's trainable parameters into (policy, value).

    Value parameters are those under the module's non-inference attributes
    (``vf`` and ``encoder.critic_encoder`` for ``DefaultPPORLModule``); everything
    else (actor encoder, policy head, free log-std) is policy.
    """
    if not isinstance(module, InferenceOnlyAPI):
        raise TypeError(
            f"TRPO needs a module implementing InferenceOnlyAPI to tell policy from "
            f"value parameters, got {type(module).__name__}."
        )
    value_ids = set()
    for attr in module.get_non_inference_attributes():
        for p in module.get_submodule(attr).parameters():
            value_ids.add(id(p))
    policy, value = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (value if id(p) in value_ids else policy).append(p)
    if not policy or not value:
        raise ValueError(
            f"Could not split {type(module).__name__} into policy ({len(policy)}) and "
            f"value ({len(value)}) parameters; TRPO needs vf_share_layers=False."
        )
    return policy, value


class _RealTimesteps(NamedTuple):
    """The batch's real timesteps (GAE's bootstrap step dropped) and their mask."""

    mask: torch.Tensor
    obs: Any
    actions: Any
    advantages: torch.Tensor
    value_targets: torch.Tensor


def _real_timesteps(batch: Dict[str, Any], device: torch.device) -> _RealTimesteps:
    """Keep only real timesteps (drop the bootstrap step GAE appended)."""
    if Columns.LOSS_MASK in batch:
        mask = batch[Columns.LOSS_MASK].bool()
    else:
        mask = torch.ones(
            batch[Postprocessing.ADVANTAGES].shape[0], dtype=torch.bool,
            device=device,
        )
    obs = tree.map_structure(lambda x: x[mask], batch[Columns.OBS])
    actions = tree.map_structure(lambda x: x[mask], batch[Columns.ACTIONS])
    advantages = batch[Postprocessing.ADVANTAGES][mask]
    value_targets = batch[Postprocessing.VALUE_TARGETS][mask]
    return _RealTimesteps(mask, obs, actions, advantages, value_targets)


@dataclass(frozen=True, eq=False)
class _PolicyObjective:
    """TRPO's surrogate, KL to the frozen old policy and entropy on a fixed batch."""

    module: torch.nn.Module
    dist_cls: Any
    fwd_batch: Dict[str, Any]
    actions: Any
    advantages: torch.Tensor
    old_dist: Any
    old_logp: torch.Tensor
    entropy_coeff: float

    def __call__(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(surrogate, mean KL(pi_old || pi_theta), mean entropy) at current params."""
        inputs = self.module.forward_train(self.fwd_batch)[Columns.ACTION_DIST_INPUTS]
        dist = self.dist_cls.from_logits(inputs)
        ratio = torch.exp(dist.logp(self.actions) - self.old_logp)
        entropy = dist.entropy().mean()
        surrogate = (ratio * self.advantages).mean() + self.entropy_coeff * entropy
        kl = self.old_dist.kl(dist).mean()
        return surrogate, kl, entropy


def _freeze_old_policy(
    module: torch.nn.Module,
    steps: _RealTimesteps,
    sampling_dist_inputs: torch.Tensor,
    entropy_coeff: float,
) -> Tuple[_PolicyObjective, float]:
    """Objective around the detached pre-update policy, and its KL to the sampler."""
    fwd_batch = {Columns.OBS: steps.obs}
    dist_cls = module.get_train_action_dist_cls()
    with torch.no_grad():
        old_inputs = module.forward_train(fwd_batch)[Columns.ACTION_DIST_INPUTS]
        old_dist = dist_cls.from_logits(old_inputs)
        old_logp = old_dist.logp(steps.actions)
        sampling_dist = module.get_exploration_action_dist_cls().from_logits(
            sampling_dist_inputs[steps.mask]
        )
        sampling_kl = sampling_dist.kl(old_dist).mean().item()
    objective = _PolicyObjective(
        module=module,
        dist_cls=dist_cls,
        fwd_batch=fwd_batch,
        actions=steps.actions,
        advantages=steps.advantages,
        old_dist=old_dist,
        old_logp=old_logp,
        entropy_coeff=entropy_coeff,
    )
    return objective, sampling_kl


class _NaturalGradient(NamedTuple):
    """Gradient ``g``, CG solution ``x ~= F^-1 g``, ``x^T F x`` and the old surrogate."""

    grad: torch.Tensor
    cg: CGResult
    x_fx: float
    surrogate_old: float


def _natural_gradient(
    objective: _PolicyObjective,
    policy_params: List[torch.nn.Parameter],
    config: TRPOConfig,
) -> _NaturalGradient:
    """Surrogate gradient and its natural-gradient direction (CG on Fisher products)."""
    # Gradient and Fisher system at the old parameters.
    surrogate_old, kl_old, _ = objective()
    grad = flat_grad(surrogate_old, policy_params, retain_graph=True)
    fvp = fisher_vector_product(kl_old, policy_params, damping=config.cg_damping)
    cg = conjugate_gradient(
        fvp,
        grad.detach(),
        max_iters=config.cg_iters,
        residual_tol=config.cg_residual_tol,
    )
    x_fx = torch.dot(cg.x, fvp(cg.x)).item()
    # Returning frees kl_old and fvp (the double-backward graph).
    return _NaturalGradient(grad, cg, x_fx, surrogate_old.item())


def _admits_policy_step(natural_grad: _NaturalGradient) -> bool:
    """Whether gradient and curvature are non-degenerate (finite x^T F x > 0, g != 0)."""
    return bool(
        math.isfinite(natural_grad.x_fx)
        and natural_grad.x_fx > 0.0
        and torch.isfinite(natural_grad.cg.x).all()
        and natural_grad.grad.abs().max().item() > 0.0
    )


def _full_step(direction: torch.Tensor, x_fx: float, kl_radius: float) -> torch.Tensor:
    """Scale ``direction`` so the quadratic KL model of the step equals ``kl_radius``."""
    return math.sqrt(2.0 * kl_radius / x_fx) * direction


def _trust_region_step(
    objective: _PolicyObjective,
    policy_params: List[torch.nn.Parameter],
    natural_grad: _NaturalGradient,
    config: TRPOConfig,
) -> Tuple[Optional[LineSearchResult], float]:
    """Line search along the KL-scaled step; (None, 0.0) when no step is possible."""
    if not _admits_policy_step(natural_grad):
        # Degenerate gradient/curvature: no policy step this batch.
        return None, 0.0
    full_step = _full_step(natural_grad.cg.x, natural_grad.x_fx, config.kl_radius)
    expected_improvement = torch.dot(natural_grad.grad, full_step).item()

    @torch.no_grad()
    def evaluate() -> Tuple[float, float]:
        """(surrogate improvement, KL to the old policy) at the trial parameters."""
        surrogate_new, kl_new, _ = objective()
        return surrogate_new.item() - natural_grad.surrogate_old, kl_new.item()

    ls = backtracking_line_search(
        policy_params,
        full_step,
        evaluate,
        max_kl=config.kl_radius,
        max_steps=config.line_search_max_steps,
        backtrack_ratio=config.line_search_backtrack_ratio,
        expected_improvement=expected_improvement,
        accept_ratio=config.line_search_accept_ratio,
    )
    return ls, expected_improvement


def _update_metrics(
    *,
    ls: Optional[LineSearchResult],
    expected_improvement: float,
    cg: CGResult,
    sampling_kl: float,
    surrogate_new: torch.Tensor,
    entropy_new: torch.Tensor,
    vf_losses: Tuple[float, float, float],
) -> Dict[str, float]:
    """Per-module learner results of one update (line-search ones 0.0 if no step)."""
    vf_loss_before, vf_explained_var, vf_loss_after = vf_losses
    return {
        TRPO_KL_KEY: ls.kl if ls is not None else 0.0,
        LINE_SEARCH_SUCCESS_KEY: float(ls.success) if ls is not None else 0.0,
        LINE_SEARCH_BACKTRACKS_KEY: float(ls.backtracks) if ls is not None else 0.0,
        LINE_SEARCH_STEP_FRACTION_KEY: ls.step_fraction if ls is not None else 0.0,
        SURROGATE_IMPROVEMENT_KEY: ls.improvement if ls is not None else 0.0,
        EXPECTED_IMPROVEMENT_KEY: expected_improvement,
        CG_RESIDUAL_KEY: cg.residual_norm,
        CG_ITERATIONS_KEY: float(cg.iterations),
        SAMPLING_POLICY_KL_KEY: sampling_kl,
        POLICY_LOSS_KEY: -surrogate_new.item(),
        ENTROPY_KEY: entropy_new.item(),
        VF_LOSS_KEY: vf_loss_after,
        VF_LOSS_BEFORE_KEY: vf_loss_before,
        VF_EXPLAINED_VAR_KEY: vf_explained_var,
    }


class TRPOTorchLearner(TorchLearner):
    """Torch learner doing one TRPO step per batch (see module docstring)."""

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        # PPO's learner connectors: bootstrap timestep per episode chunk + GAE
        # (advantages are standardized there).
        if (
            self._learner_connector is not None
            and self.config.add_default_connectors_to_learner_pipeline
        ):
            self._learner_connector.prepend(AddOneTsToEpisodesAndTruncate())
            self._learner_connector.append(
                GeneralAdvantageEstimation(
                    gamma=self.config.gamma, lambda_=self.config.lambda_
                )
            )
        for module_id in self.module.keys():
            self._init_policy_output_layer(module_id)

    def _init_policy_output_layer(self, module_id: ModuleID) -> None:
        gain = self.config.get_config_for_module(module_id).pi_output_init_gain
        if gain is None:
            return
        module = self.module[module_id].unwrapped()
        linears = [m for m in module.pi.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            return
        with torch.no_grad():
            torch.nn.init.orthogonal_(linears[-1].weight, gain=gain)
            if linears[-1].bias is not None:
                linears[-1].bias.zero_()

    @override(TorchLearner)
    def configure_optimizers_for_module(
        self, module_id: ModuleID, config: TRPOConfig = None
    ) -> None:
        # The policy moves by the natural-gradient step only; Adam sees the critic.
        module = self._module[module_id].unwrapped()
        _, value_params = split_policy_and_value_params(module)
        self.register_optimizer(
            module_id=module_id,
            optimizer=torch.optim.Adam(value_params, foreach=True),
            params=value_params,
            lr_or_lr_schedule=config.vf_lr,
        )

    @classmethod
    @override(TorchLearner)
    def rl_module_required_apis(cls) -> list[type]:
        return [ValueFunctionAPI, InferenceOnlyAPI]

    @override(TorchLearner)
    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config: TRPOConfig,
        batch: Dict[str, Any],
        fwd_out: Dict[str, Any],
    ) -> torch.Tensor:
        """Negative importance-sampled surrogate vs. the sampling policy (diagnostic).

        TRPO's update does not minimize this loss by gradient descent (see
        ``_update``); it is provided so the learner satisfies the ``Learner`` API
        and can report the surrogate for a given forward pass.
        """
        module = self.module[module_id].unwrapped()
        mask = batch[Columns.LOSS_MASK].bool() if Columns.LOSS_MASK in batch else None
        dist = module.get_train_action_dist_cls().from_logits(
            fwd_out[Columns.ACTION_DIST_INPUTS]
        )
        ratio = torch.exp(dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        surrogate = ratio * batch[Postprocessing.ADVANTAGES]
        if mask is not None:
            surrogate = surrogate[mask]
        return -surrogate.mean()

    @override(TorchLearner)
    def _update(self, batch: Dict[str, Any]) -> Tuple[Any, Any, Any]:
        self._compute_off_policyness(batch)
        loss_per_module = {}
        for module_id, module_batch in batch.items():
            loss_per_module[module_id] = self._update_module(
                module_id=module_id,
                config=self.config.get_config_for_module(module_id),
                batch=module_batch,
            )
        return {}, loss_per_module, {}

    def _update_module(
        self, *, module_id: ModuleID, config: TRPOConfig, batch: Dict[str, Any]
    ) -> torch.Tensor:
        """One TRPO update of a module: trust-region policy step, then critic epochs."""
        module = self.module[module_id].unwrapped()
        policy_params, _ = split_policy_and_value_params(module)
        steps = _real_timesteps(batch, self._device)
        objective, sampling_kl = _freeze_old_policy(
            module, steps, batch[Columns.ACTION_DIST_INPUTS], float(config.entropy_coeff)
        )
        natural_grad = _natural_gradient(objective, policy_params, config)
        ls, expected_improvement = _trust_region_step(
            objective, policy_params, natural_grad, config
        )
        with torch.no_grad():
            surrogate_new, _, entropy_new = objective()
        vf_losses = self._update_value_function(
            module_id=module_id,
            module=module,
            config=config,
            obs=steps.obs,
            value_targets=steps.value_targets,
        )
        metrics = _update_metrics(
            ls=ls,
            expected_improvement=expected_improvement,
            cg=natural_grad.cg,
            sampling_kl=sampling_kl,
            surrogate_new=surrogate_new,
            entropy_new=entropy_new,
            vf_losses=vf_losses,
        )
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return -surrogate_new.detach()

    def _update_value_function(
        self,
        *,
        module_id: ModuleID,
        module: torch.nn.Module,
        config: TRPOConfig,
        obs: Any,
        value_targets: torch.Tensor,
    ) -> Tuple[float, float, float]:
        """Adam epochs on the critic; returns (loss before, explained var before, loss after)."""
        with torch.no_grad():
            values = module.compute_values({Columns.OBS: obs})
            loss_before = torch.mean((values - value_targets) ** 2).item()
            ev = explained_variance(value_targets, values).item()

        optimizer = self.get_optimizer(module_id)
        params = self.get_parameters_for_optimizer(module_id)
        n = value_targets.shape[0]
        mb = config.vf_minibatch_size or n
        for _ in range(config.vf_iters):
            perm = torch.randperm(n, device=value_targets.device)
            for start in range(0, n, mb):
                idx = perm[start : start + mb]
                mb_obs = tree.map_structure(lambda x: x[idx], obs)
                pred = module.compute_values({Columns.OBS: mb_obs})
                loss = torch.mean((pred - value_targets[idx]) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()

        with torch.no_grad():
            values = module.compute_values({Columns.OBS: obs})
            loss_after = torch.mean((values - value_targets) ** 2).item()
        return loss_before, ev, loss_after

    def get_parameters_for_optimizer(self, module_id: ModuleID) -> List[torch.Tensor]:
        return split_policy_and_value_params(self.module[module_id].unwrapped())[1]
