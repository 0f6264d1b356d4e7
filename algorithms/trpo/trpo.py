"""Trust Region Policy Optimization (TRPO) on RLlib's new API stack.

Schulman et al. 2015, https://arxiv.org/abs/1502.05477

Structure follows ``ray.rllib.algorithms.ppo``: :class:`TRPOConfig` (fluent
configuration with ``validate()``), :class:`TRPO` (sample -> learner update -> weight
sync) and a Torch learner (``algorithms/trpo/torch/trpo_torch_learner.py``) that does
the natural-gradient step. The RL module is PPO's ``DefaultPPOTorchRLModule``, so a
TRPO module's state loads into a PPO module with the same model config unchanged.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Type, Union

from typing_extensions import Self

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

if TYPE_CHECKING:
    from ray.rllib.core.learner.learner import Learner

logger = logging.getLogger(__name__)

# Keys of the per-module learner results (``result["learners"][module_id][KEY]``).
TRPO_KL_KEY = "trpo_kl"
LINE_SEARCH_SUCCESS_KEY = "line_search_success"
LINE_SEARCH_BACKTRACKS_KEY = "line_search_backtracks"
LINE_SEARCH_STEP_FRACTION_KEY = "line_search_step_fraction"
SURROGATE_IMPROVEMENT_KEY = "surrogate_improvement"
EXPECTED_IMPROVEMENT_KEY = "expected_improvement"
CG_RESIDUAL_KEY = "cg_residual"
CG_ITERATIONS_KEY = "cg_iterations"
SAMPLING_POLICY_KL_KEY = "sampling_policy_kl"
VF_LOSS_BEFORE_KEY = "vf_loss_before"
VF_EXPLAINED_VAR_KEY = "vf_explained_var"

# TRPO's own keyword arguments of ``TRPOConfig.training`` (set when provided).
_TRPO_TRAINING_ARGS = (
    "lambda_",
    "kl_radius",
    "cg_iters",
    "cg_damping",
    "cg_residual_tol",
    "line_search_max_steps",
    "line_search_backtrack_ratio",
    "line_search_accept_ratio",
    "entropy_coeff",
    "pi_output_init_gain",
    "vf_lr",
    "vf_iters",
    "vf_minibatch_size",
    "weights_sync_timeout_s",
)


class TRPOConfig(AlgorithmConfig):
    """Configuration for :class:`TRPO`.

    .. code-block:: python

        from algorithms.trpo import TRPOConfig

        config = (
            TRPOConfig()
            .environment("Pendulum-v1")
            .env_runners(num_env_runners=0, num_envs_per_env_runner=16)
            .training(train_batch_size=2048, kl_radius=0.01, cg_iters=15, vf_iters=10)
            .rl_module(model_config={"fcnet_hiddens": [64, 64], "free_log_std": True})
        )
        algo = config.build_algo()
        result = algo.train()
        result["learners"]["default_policy"]["trpo_kl"]  # <= 0.01
    """

    def __init__(self, algo_class: Optional[type] = None):
        super().__init__(algo_class=algo_class or TRPO)

        # Batch collection (same conventions as PPO).
        self.rollout_fragment_length = "auto"
        self.train_batch_size = 2048
        self.train_batch_size_per_learner = 2048

        # GAE (PPO's learner connector).
        self.gamma = 0.99
        self.lambda_ = 0.95

        # Natural-gradient step.
        self.kl_radius = 0.01
        self.cg_iters = 15
        self.cg_damping = 0.1
        self.cg_residual_tol = 1e-10
        self.line_search_max_steps = 10
        self.line_search_backtrack_ratio = 0.8
        # Minimum actual/predicted surrogate improvement for a step to be accepted
        # (0: any improvement, as in sb3-contrib; baselines' TRPO uses 0.1).
        self.line_search_accept_ratio = 0.0
        self.entropy_coeff = 0.0
        # Re-initialize the policy head's output layer (orthogonal, this gain, zero
        # bias) when the learner is built; ``None`` keeps RLlib's default init.
        self.pi_output_init_gain: Optional[float] = 0.01

        # Value function: Adam epochs over minibatches of the same batch.
        self.vf_lr = 1e-3
        self.vf_iters = 10
        self.vf_minibatch_size: Optional[int] = 128
        self.grad_clip = None  # applies to the value-function optimizer only

        # Sync weights to remote env runners blocking, so that every sample is drawn
        # from the learner's current (pre-update) policy.
        self.weights_sync_timeout_s = 60.0

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        if self.framework_str != "torch":
            raise ValueError(
                f"TRPO supports framework='torch' only, got {self.framework_str!r}."
            )
        from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
            DefaultPPOTorchRLModule,
        )

        return RLModuleSpec(module_class=DefaultPPOTorchRLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> Union[Type["Learner"], str]:
        if self.framework_str != "torch":
            raise ValueError(
                f"TRPO supports framework='torch' only, got {self.framework_str!r}."
            )
        from algorithms.trpo.torch.trpo_torch_learner import TRPOTorchLearner

        return TRPOTorchLearner

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        lambda_: Optional[float] = NotProvided,
        kl_radius: Optional[float] = NotProvided,
        cg_iters: Optional[int] = NotProvided,
        cg_damping: Optional[float] = NotProvided,
        cg_residual_tol: Optional[float] = NotProvided,
        line_search_max_steps: Optional[int] = NotProvided,
        line_search_backtrack_ratio: Optional[float] = NotProvided,
        line_search_accept_ratio: Optional[float] = NotProvided,
        entropy_coeff: Optional[float] = NotProvided,
        pi_output_init_gain: Optional[float] = NotProvided,
        vf_lr: Optional[float] = NotProvided,
        vf_iters: Optional[int] = NotProvided,
        vf_minibatch_size: Optional[int] = NotProvided,
        weights_sync_timeout_s: Optional[float] = NotProvided,
        **kwargs,
    ) -> Self:
        """Sets the training-related configuration.

        Args:
            lambda_: GAE lambda.
            kl_radius: Trust-region radius: maximum mean KL(pi_old || pi_new) per update.
            cg_iters: Conjugate-gradient iterations (Fisher-vector products) per update.
            cg_damping: Damping added to the Fisher matrix (``F + damping * I``).
            cg_residual_tol: CG stops early once the squared residual is below this.
            line_search_max_steps: Step sizes tried by the backtracking line search.
            line_search_backtrack_ratio: Shrink factor between tries, in (0, 1).
            line_search_accept_ratio: A step is kept only if its surrogate improvement
                is >= this times the linear prediction (0: any improvement > 0).
            entropy_coeff: Entropy bonus added to the surrogate objective.
            pi_output_init_gain: Orthogonal-init gain of the policy output layer at
                build time (small values start near a uniform/zero-mean policy);
                ``None`` keeps RLlib's default initialization.
            vf_lr: Adam learning rate of the value function.
            vf_iters: Epochs of value-function regression per batch.
            vf_minibatch_size: Minibatch size of that regression (None: full batch).
            weights_sync_timeout_s: Seconds to wait for remote env runners to confirm
                the new weights after each update.
            kwargs: Passed to ``AlgorithmConfig.training`` (``gamma``,
                ``train_batch_size_per_learner``, ``grad_clip``, ...).

        Returns:
            This updated config.
        """
        super().training(**kwargs)
        arguments = locals()
        for name in _TRPO_TRAINING_ARGS:
            if arguments[name] is not NotProvided:
                setattr(self, name, arguments[name])
        return self

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        self.validate_train_batch_size_vs_rollout_fragment_length()
        # Order matters only for which error a config with several bad values raises.
        self._validate_api_stack()
        self._validate_step_sizes_and_counts()
        self._validate_trust_region()
        self._validate_objective_and_value_function()
        self._validate_learners()
        self._validate_batching()
        self._validate_model()

    def _check_positive_number(self, name: str) -> None:
        """Raise unless ``self.<name>`` is a finite int/float (not a bool) > 0."""
        value = getattr(self, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            self._value_error(f"`{name}` must be a finite number > 0, got {value!r}.")

    def _check_positive_int(self, name: str) -> None:
        """Raise unless ``self.<name>`` is an int (not a bool) >= 1."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self._value_error(f"`{name}` must be an int >= 1, got {value!r}.")

    def _validate_api_stack(self) -> None:
        """TRPO runs on the new API stack (RLModule + Learner) only."""
        if not self.enable_rl_module_and_learner:
            self._value_error(
                "TRPO runs on RLlib's new API stack only; "
                "`enable_rl_module_and_learner` is False."
            )

    def _validate_step_sizes_and_counts(self) -> None:
        """KL radius, critic learning rate, CG tolerance and iteration counts are > 0."""
        self._check_positive_number("kl_radius")
        self._check_positive_number("vf_lr")
        self._check_positive_number("cg_residual_tol")
        self._check_positive_int("cg_iters")
        self._check_positive_int("line_search_max_steps")
        self._check_positive_int("vf_iters")

    def _validate_trust_region(self) -> None:
        """CG damping >= 0, backtrack ratio in (0, 1), line-search accept ratio >= 0."""
        if (
            not isinstance(self.cg_damping, (int, float))
            or not math.isfinite(self.cg_damping)
            or self.cg_damping < 0
        ):
            self._value_error(
                f"`cg_damping` must be a finite number >= 0, got {self.cg_damping!r}."
            )
        if not (
            isinstance(self.line_search_backtrack_ratio, (int, float))
            and 0.0 < self.line_search_backtrack_ratio < 1.0
        ):
            self._value_error(
                "`line_search_backtrack_ratio` must be in (0, 1), got "
                f"{self.line_search_backtrack_ratio!r}."
            )
        if not (
            isinstance(self.line_search_accept_ratio, (int, float))
            and math.isfinite(self.line_search_accept_ratio)
            and self.line_search_accept_ratio >= 0
        ):
            self._value_error(
                "`line_search_accept_ratio` must be a finite number >= 0, got "
                f"{self.line_search_accept_ratio!r}."
            )

    def _validate_objective_and_value_function(self) -> None:
        """Critic minibatch size, GAE lambda, entropy bonus, policy output init gain."""
        if self.vf_minibatch_size is not None:
            self._check_positive_int("vf_minibatch_size")
        if not (0.0 <= self.lambda_ <= 1.0):
            self._value_error(f"`lambda_` must be in [0, 1], got {self.lambda_!r}.")
        if not isinstance(self.entropy_coeff, (int, float)) or self.entropy_coeff < 0:
            self._value_error(
                f"`entropy_coeff` must be a number >= 0, got {self.entropy_coeff!r}."
            )
        if self.pi_output_init_gain is not None and not (
            isinstance(self.pi_output_init_gain, (int, float))
            and self.pi_output_init_gain > 0
        ):
            self._value_error(
                "`pi_output_init_gain` must be None or a number > 0, got "
                f"{self.pi_output_init_gain!r}."
            )

    def _validate_learners(self) -> None:
        """At most one learner: the Fisher system and line search are not all-reduced."""
        if self.num_learners > 1:
            self._value_error(
                f"TRPO supports at most 1 learner, got num_learners={self.num_learners}:"
                " with several learners each would solve its own Fisher system on its "
                "shard (Fisher-vector products and the line search are not all-reduced "
                "across learners), which is not TRPO."
            )

    def _validate_batching(self) -> None:
        """One epoch on the whole batch per update (no PPO-style epochs/minibatches)."""
        if self.num_epochs != 1:
            self._value_error(
                f"`num_epochs` must be 1 for TRPO (one natural-gradient step per batch), "
                f"got {self.num_epochs!r}; use `vf_iters` for value-function epochs."
            )
        if self.minibatch_size is not None:
            self._value_error(
                f"`minibatch_size` must be None for TRPO (the policy step uses the whole "
                f"batch), got {self.minibatch_size!r}; use `vf_minibatch_size`."
            )

    def _validate_model(self) -> None:
        """Separate policy and value networks, and no recurrent model."""
        model_config = self.model_config
        if model_config.get("vf_share_layers"):
            self._value_error(
                "TRPO needs separate policy and value networks, got "
                "vf_share_layers=True (a `DefaultModelConfig` object sets it to True by "
                "default: pass a dict or `DefaultModelConfig(vf_share_layers=False)`)."
            )
        if model_config.get("use_lstm") or model_config.get("use_attention"):
            self._value_error(
                "TRPO does not support recurrent models (use_lstm/use_attention), got "
                f"use_lstm={model_config.get('use_lstm')!r}."
            )

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> Dict[str, Any]:
        return super()._model_config_auto_includes | {"vf_share_layers": False}


class TRPO(Algorithm):
    """TRPO: one natural-gradient policy step per sampled batch, then critic epochs."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> TRPOConfig:
        return TRPOConfig()

    @override(Algorithm)
    def training_step(self) -> None:
        if not self.config.enable_env_runner_and_connector_v2:
            raise ValueError("TRPO runs on RLlib's new API stack only.")
        # Sample -> one TRPO update -> blocking weight sync (as PPO's training_step).
        episodes = self._sample_episodes()
        if not episodes:
            return
        learner_results = self._update_learners(episodes)
        self._sync_env_runner_weights(learner_results)

    def _sample_episodes(self) -> list:
        """Sample one train batch with the current weights (empty: nothing sampled)."""
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            sample_kwargs = (
                {"max_agent_steps": self.config.total_train_batch_size}
                if self.config.count_steps_by == "agent_steps"
                else {"max_env_steps": self.config.total_train_batch_size}
            )
            episodes, env_runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
                **sample_kwargs,
            )
            if episodes:
                self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        return episodes

    def _update_learners(self, episodes: list) -> list:
        """One TRPO update on the whole batch (no minibatching, one epoch)."""
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)
                    ),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME),
                        default=0,
                    ),
                },
                num_epochs=1,
                minibatch_size=None,
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        return learner_results

    def _sync_env_runner_weights(self, learner_results: list) -> None:
        """Push the new weights to all env runners and wait until they confirm them."""
        # So the next batch is sampled from exactly the policy the learner starts from.
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            modules_to_update = set(learner_results[0].keys()) - {ALL_MODULES}
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=modules_to_update,
                inference_only=True,
            )
            if self.env_runner_group.num_remote_workers() > 0:
                # `sync_weights` only sends `set_state` requests; wait for all of them
                # (Ray runs an actor's calls in submission order, so the next `sample`
                # would queue behind them anyway, but a request still in flight could
                # make the next sync drop its own request for that runner).
                self.env_runner_group.fetch_ready_async_reqs(
                    tags="set_state",
                    timeout_seconds=self.config.weights_sync_timeout_s,
                )
                pending = self.env_runner_group.num_in_flight_async_reqs("set_state")
                if pending:
                    logger.warning(
                        "%d env runner(s) did not confirm the new weights within "
                        "%.1f s; their next samples may come from older weights.",
                        pending,
                        self.config.weights_sync_timeout_s,
                    )
