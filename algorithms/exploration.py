"""How a policy trained from random weights starts: its initial action std, and action means near 0.

RLlib's default continuous policy starts with a state-dependent log-std near 0, i.e. std 1 on a
[-1, 1] action box: in a many-dimensional action space that noise swamps the return signal of the
first iterations. Setting the log-std outputs to a constant ``log(std)`` (their weights zeroed, so
the initial noise is state-independent, as sb3's free log-std starts) keeps exploration scaled to
the task; learning moves it from there.
"""

from __future__ import annotations

import math

__all__ = ["set_initial_action_std"]

DEFAULT_POLICY = "default_policy"


def _init_policy_head(learner, module_id: str, log_std: float, mean_gain: float | None) -> int:
    import torch

    module = learner.module[module_id].unwrapped()
    linears = [m for m in module.pi.modules() if isinstance(m, torch.nn.Linear)]
    last = linears[-1]
    if last.out_features % 2:
        raise ValueError("The policy head has no log-std outputs (odd output size); set the std another way.")
    half = last.out_features // 2
    with torch.no_grad():
        if mean_gain is not None:
            torch.nn.init.orthogonal_(last.weight[:half], gain=mean_gain)
            last.bias[:half].zero_()
        last.weight[half:].zero_()
        last.bias[half:].fill_(log_std)
    return half


def set_initial_action_std(
    algo, std: float, *, mean_gain: float | None = 0.01, module_id: str = DEFAULT_POLICY, timeout_s: float = 60.0
) -> None:
    """Make ``algo``'s fresh policy start with action std ``std`` (and mean outputs near 0) everywhere.

    ``mean_gain``: orthogonal-init gain of the action-mean outputs (0.01: the first actions are
    close to 0 whatever the observation, as TRPO's learner and sb3 initialize them), so that a
    PPO started from random weights starts like a TRPO one; None leaves them as built. The
    learner is changed and every env runner gets its weights by a blocking sync.
    """
    if not std > 0:
        raise ValueError(f"The initial action std must be > 0, got {std!r}.")
    log_std = math.log(std)

    def apply(learner):
        return _init_policy_head(learner, module_id, log_std, mean_gain)

    for result in algo.learner_group.foreach_learner(apply):
        result.get()  # raise a learner's error instead of hiding it
    group = algo.env_runner_group
    if group.num_remote_env_runners() > 0:
        group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True,
                           timeout_seconds=timeout_s)
    else:
        state = algo.learner_group.get_state(components="learner/rl_module", inference_only=True)["learner"]
        group.local_env_runner.set_state(state)
