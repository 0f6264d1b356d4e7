"""Initial exploration noise of RLlib's Gaussian policies: set the action std a fresh policy starts from.

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


def _set_log_std(learner, module_id: str, log_std: float) -> int:
    import torch

    module = learner.module[module_id].unwrapped()
    linears = [m for m in module.pi.modules() if isinstance(m, torch.nn.Linear)]
    last = linears[-1]
    if last.out_features % 2:
        raise ValueError("The policy head has no log-std outputs (odd output size); set the std another way.")
    half = last.out_features // 2
    with torch.no_grad():
        last.weight[half:].zero_()
        last.bias[half:].fill_(log_std)
    return half


def set_initial_action_std(algo, std: float, *, module_id: str = DEFAULT_POLICY, timeout_s: float = 60.0) -> None:
    """Make ``algo``'s policy start with action std ``std`` on its learner and every env runner (blocking sync)."""
    if not std > 0:
        raise ValueError(f"The initial action std must be > 0, got {std!r}.")
    log_std = math.log(std)
    for result in algo.learner_group.foreach_learner(lambda learner: _set_log_std(learner, module_id, log_std)):
        result.get()  # raise a learner's error instead of hiding it
    group = algo.env_runner_group
    if group.num_remote_env_runners() > 0:
        group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True,
                           timeout_seconds=timeout_s)
    else:
        state = algo.learner_group.get_state(components="learner/rl_module", inference_only=True)["learner"]
        group.local_env_runner.set_state(state)
