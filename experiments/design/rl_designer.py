"""The RL designer: a policy trained with the project's TRPO -> PPO pipeline on ``waddington/Design-v0``.

Training is amortised: each episode draws one of many training targets, so one policy learns how
the gap to a target maps to library members (through their features,
:class:`algorithms.member_scoring_module.MemberScoringTorchRLModule`), and at query time proposes
sets for a *new* target in a few rollouts instead of a search. Stage 1 is the project's TRPO, stage
2 RLlib's PPO built from TRPO's final weights (:mod:`algorithms.handoff`; the difference of the two
policies' logits on real observations is measured and reported). ``ppo_only`` trains PPO alone for
the same total iterations (the ablation of the paper's claim).

The training targets' problems go to Ray's object store once; every env runner (``env_runners > 0``
spreads the scoring of candidate sets over Ray workers) reads them from there.

Query (:func:`propose`): a few episodes of the trained policy on the new target, and a small beam
led by its probabilities; every set they visit is scored by the target's
:class:`~experiments.design.objective.DesignObjective` (so evaluations count as every designer's
do), and the result ranks them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.design.errors import DesignError
from experiments.design.objective import DesignObjective
from experiments.design.search import DesignResult, affordable

__all__ = ["DEFAULT_ROLLOUTS", "DEFAULT_WIDTH", "TrainedDesigner", "propose", "train_designer"]

RLLIB_ENV_NAME = "waddington-design"
DEFAULT_ROLLOUTS = 32
#: Members the policy-led beam keeps and tries per step.
DEFAULT_WIDTH = 32
Log = Callable[[str], None] | None


@dataclass
class TrainedDesigner:
    """A trained design policy: its module's weights and what is needed to build it again.

    Attributes
    ----------
    library
        The action order.
    max_size
        Most members per set it was trained for.
    model_config
        The module's model config (member features included).
    state
        The module's weights (numpy arrays).
    stages
        ``"trpo->ppo"`` or ``"ppo"``.
    curve
        ``[stage, env steps, mean episode return]`` per training iteration.
    env_steps, wall_s
        Env steps sampled and seconds spent training.
    handoff_max_abs_diff
        Largest difference of the TRPO and PPO policies' logits at the handoff (``None``: PPO only).
    """

    library: list[str]
    max_size: int
    model_config: dict[str, Any]
    state: dict[str, np.ndarray]
    stages: str
    curve: list[list[Any]] = field(default_factory=list)
    env_steps: int = 0
    wall_s: float = 0.0
    handoff_max_abs_diff: float | None = None

    def module(self):
        """The policy as a torch RL module (weights loaded, eval mode)."""
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModuleSpec

        from algorithms.member_scoring_module import MemberScoringTorchRLModule
        from envs.design_env import design_spaces

        observation_space, action_space = design_spaces(len(self.library), self.n_latent)
        module = RLModuleSpec(module_class=MemberScoringTorchRLModule, observation_space=observation_space,
                              action_space=action_space, model_config=self.model_config).build()
        module.load_state_dict({k: torch.as_tensor(v) for k, v in self.state.items()})
        return module.eval()

    @property
    def n_latent(self) -> int:
        return int(self.model_config["n_latent"])

    def save(self, path: str | Path) -> Path:
        """Write the designer to ``path`` (a ``.pt`` file); returns it."""
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.__dict__, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainedDesigner:
        """A designer written by :meth:`save`."""
        import torch

        if not Path(path).is_file():
            raise DesignError(f"No trained designer at '{path}': pass the designer.pt a design with --designer rl "
                              "wrote, or leave --designer-checkpoint out to train one.")
        return cls(**torch.load(path, weights_only=False))


def _make_env(env_config: dict[str, Any]):
    import ray

    from envs.design_env import DesignEnv

    problems = env_config["problems"]
    if isinstance(problems, ray.ObjectRef):
        problems = ray.get(problems)
    return DesignEnv(problems, max_size=int(env_config["max_size"]))


def _config(algorithm: str, problems_ref: Any, model_config: dict[str, Any], *, max_size: int, batch_steps: int,
            env_runners: int, seed: int, lr: float):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from algorithms.member_scoring_module import MemberScoringTorchRLModule
    from algorithms.trpo import TRPOConfig

    if algorithm == "trpo":
        config = TRPOConfig().training(kl_radius=0.05, train_batch_size_per_learner=batch_steps, gamma=1.0,
                                       lambda_=1.0, vf_lr=3e-3)
    else:
        config = PPOConfig().training(lr=lr, train_batch_size_per_learner=batch_steps, minibatch_size=256,
                                      num_epochs=6, gamma=1.0, lambda_=1.0, entropy_coeff=0.003)
    return (config.environment(RLLIB_ENV_NAME, env_config={"problems": problems_ref, "max_size": max_size})
            .env_runners(num_env_runners=env_runners, num_envs_per_env_runner=8, rollout_fragment_length="auto")
            .learners(num_learners=0)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=MemberScoringTorchRLModule, model_config=model_config))
            .reporting(metrics_num_episodes_for_smoothing=max(20, batch_steps // max_size))
            .debugging(seed=seed))


def _handoff_observations(problems: Sequence[Any], max_size: int, n: int = 64) -> dict[str, np.ndarray]:
    """Real observations (first steps of ``n`` targets) for the handoff check."""
    from envs.design_env import DesignEnv

    env = DesignEnv(list(problems), max_size=max_size)
    rows = [env.reset(options={"problem": i % len(problems)})[0] for i in range(n)]
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


def train_designer(problems: Sequence[Any], member_features: np.ndarray, *, max_size: int, trpo_iters: int = 20,
                   ppo_iters: int = 40, ppo_only: bool = False, batch_steps: int = 2000, env_runners: int = 0,
                   hidden: int = 64, ppo_lr: float = 1e-3, seed: int = 0, log: Log = None) -> TrainedDesigner:
    """Train a design policy on ``problems`` (design targets sharing one library; see the module docstring).

    Parameters
    ----------
    problems
        Training targets, each a :class:`envs.design_env.DesignProblem`.
    member_features
        Features of each library member (members x f), in the library's order.
    max_size
        Most members per set.
    trpo_iters, ppo_iters
        Iterations of each stage; with ``ppo_only`` PPO runs ``trpo_iters + ppo_iters``.
    batch_steps
        Env steps per iteration.
    env_runners
        Remote env runners (0: sample in this process).
    """
    import ray

    from experiments.training.ray_runtime import start_local_ray

    if not problems:
        raise DesignError("The RL designer needs at least one training target.")
    library = [str(m) for m in problems[0].library]
    features = np.asarray(member_features, dtype=np.float64)
    if features.shape[0] != len(library):
        raise DesignError(f"member_features has {features.shape[0]} rows for a library of {len(library)} members.")
    started_ray = not ray.is_initialized()
    if started_ray:  # and shut down at the end: a design leaves no Ray behind
        start_local_ray(num_cpus=max(2, env_runners + 1), configure_logging=False)
    try:
        return _train(problems, features, library, max_size=max_size, trpo_iters=trpo_iters, ppo_iters=ppo_iters,
                      ppo_only=ppo_only, batch_steps=batch_steps, env_runners=env_runners, hidden=hidden,
                      ppo_lr=ppo_lr, seed=seed, log=log)
    finally:
        if started_ray:
            ray.shutdown()


def _train(problems, features, library, *, max_size, trpo_iters, ppo_iters, ppo_only, batch_steps, env_runners,
           hidden, ppo_lr, seed, log) -> TrainedDesigner:
    import ray
    from ray.tune.registry import register_env

    from algorithms import handoff

    register_env(RLLIB_ENV_NAME, _make_env)
    model_config = {"member_features": features.tolist(), "hidden": int(hidden),
                    "n_latent": int(problems[0].n_latent)}
    problems_ref = ray.put(list(problems))
    settings = dict(max_size=max_size, batch_steps=batch_steps, env_runners=env_runners, seed=seed, lr=ppo_lr)
    started = time.perf_counter()
    curve: list[list[Any]] = []
    steps_so_far = 0

    def run(algo, stage: str, iterations: int) -> None:
        nonlocal steps_so_far
        for iteration in range(1, iterations + 1):
            result = algo.train()
            runners = result.get("env_runners", {})
            steps = int(runners.get("num_env_steps_sampled_lifetime", 0)) + steps_so_far
            ret = float(runners.get("episode_return_mean", float("nan")))
            curve.append([stage, steps, ret])
            if log and (iteration % 5 == 0 or iteration == iterations):
                log(f"designer {stage} {iteration}/{iterations}: return {ret:.4g}, {steps} env steps")
        steps_so_far = curve[-1][1] if curve else steps_so_far

    handoff_diff = None
    if ppo_only:
        algo = _config("ppo", problems_ref, model_config, **settings).build_algo()
        run(algo, "ppo", trpo_iters + ppo_iters)
    else:
        trpo = _config("trpo", problems_ref, model_config, **settings).build_algo()
        run(trpo, "trpo", trpo_iters)
        obs = _handoff_observations(problems, max_size)
        reference = handoff.learner_action_dist_inputs(trpo, obs)
        with _scratch_dir() as scratch:
            trpo.save_to_path(scratch)
            ppo_config = handoff.with_initial_weights(_config("ppo", problems_ref, model_config, **settings),
                                                      handoff.module_state_path(scratch))
            algo = ppo_config.build_algo()
        trpo.stop()
        handoff_diff = float(handoff.sync_and_measure(algo, reference, obs)["handoff_max_abs_diff"])
        if log:
            log(f"designer handoff TRPO -> PPO: max |logit difference| {handoff_diff:.3g}")
        run(algo, "ppo", ppo_iters)
    state = handoff.policy_weights(algo)  # the learner's module: the env runners' lacks the critic
    algo.stop()
    return TrainedDesigner(library=library, max_size=int(max_size), model_config=model_config, state=state,
                           stages="ppo" if ppo_only else "trpo->ppo", curve=curve, env_steps=int(steps_so_far),
                           wall_s=time.perf_counter() - started, handoff_max_abs_diff=handoff_diff)


def _scratch_dir():
    import tempfile

    return tempfile.TemporaryDirectory(prefix="waddington-designer-")


def _policy_logits(module, obs: dict[str, np.ndarray]) -> np.ndarray:
    import torch
    from ray.rllib.core.columns import Columns

    batch = {Columns.OBS: {k: torch.as_tensor(v)[None] for k, v in obs.items()}}
    with torch.no_grad():
        return module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0].numpy().astype(np.float64)


def _state_of(env, members: Sequence[int]) -> dict[str, np.ndarray]:
    """The env's observation once ``members`` are in the set (sets already scored cost nothing)."""
    obs, _ = env.reset(options={"problem": 0})
    for m in members:
        obs = env.step(int(m))[0]
    return obs


def propose(designer: TrainedDesigner, objective: DesignObjective, library: Sequence[str], *, max_size: int | None = None,
            rollouts: int = DEFAULT_ROLLOUTS, width: int = DEFAULT_WIDTH, seed: int = 0) -> DesignResult:
    """Sets the trained policy proposes for ``objective``'s target, ranked.

    Two uses of the policy, both scored by ``objective``: ``rollouts`` episodes (the first greedy, the
    rest sampled), and a beam led by the policy: the ``width`` members it finds most likely from the
    empty set, each extended by the ``width`` members it finds most likely next, keeping the ``width``
    best sets by objective at each size (about ``width + (k - 1) width^2`` evaluations).
    """
    from envs.design_env import DesignEnv
    from experiments.design.env_problem import ObjectiveProblem

    library = [str(m) for m in library]
    if library != designer.library:
        raise DesignError("The trained designer's library differs from this design's library (its actions are "
                          "library members in order): train the designer on this library.")
    if rollouts < 0 or width < 0 or rollouts + width == 0:
        raise DesignError(f"--rollouts and --width must be >= 0 and not both 0, got {rollouts} and {width}.")
    max_size = designer.max_size if max_size is None else int(max_size)
    started = time.perf_counter()
    module = designer.module()
    env = DesignEnv(ObjectiveProblem(objective, library), max_size=max_size)
    rng = np.random.default_rng(seed)
    def can_afford(n: int) -> bool:
        return objective.remaining is None or objective.remaining >= n

    for rollout in range(rollouts):
        if not can_afford(max_size):  # --budget: an episode may score up to k new sets
            break
        obs, _ = env.reset(options={"problem": 0})
        done = False
        while not done:
            logits = _policy_logits(module, obs)
            probs = np.exp(logits - logits.max())
            action = int(np.argmax(logits)) if rollout == 0 else int(rng.choice(len(probs), p=probs / probs.sum()))
            obs, _, done, _, _ = env.step(action)
    beam: list[tuple[int, ...]] = [()]
    stop = len(library)
    for _ in range(max_size if width else 0):
        grown = set()
        for members in beam:
            logits = _policy_logits(module, _state_of(env, members))[:stop]
            logits[list(members)] = -np.inf
            grown |= {tuple(sorted((*members, int(m)))) for m in np.argsort(-logits)[:width]}
        candidates = [tuple(c) for c in affordable(objective, [[library[i] for i in s] for s in sorted(grown)])]
        if not candidates:
            break
        index = {m: i for i, m in enumerate(library)}
        scored = [tuple(sorted(index[m] for m in c)) for c in candidates]
        scores = objective.score(candidates)
        ranked = sorted(zip(scores, scored), key=lambda pair: (pair[0].objective, pair[1]))
        beam = [members for _, members in ranked[:width]]
    return DesignResult(designer="rl", ranked=objective.ranked(), evaluations=objective.evaluations,
                        baseline=objective.baseline(), wall_s=time.perf_counter() - started)
