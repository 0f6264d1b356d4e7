"""``waddington/Design-v0``: build a perturbation set member by member toward a target population.

The env knows no pipeline: the forward model and the objective come in as a *design problem*, any
object with the attributes of :class:`DesignProblem` (``experiments.design.env_problem`` adapts a
run's design objective to it). Observations follow RLlib's action-masking convention
(``ray/rllib/examples/envs/classes/action_mask_env.py``): a ``Dict`` with ``observations`` and
``action_mask``, so RLlib's masking module applies the mask to the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.registration import DESIGN_ENV_ID

__all__ = ["DESIGN_ENV_ID", "DesignEnv", "DesignProblem", "design_spaces"]


class DesignProblem(Protocol):
    """What the design env needs of one target (the forward model and the objective behind it).

    Attributes
    ----------
    library
        The members (their order is the action order).
    n_latent
        Latent dimension of the predicted cells.
    effort
        Cost per member.
    target_mean
        Mean of the target's latent cells (d,).
    """

    library: Sequence[str]
    n_latent: int
    effort: float
    target_mean: np.ndarray

    def predicted_mean(self, members: Sequence[str]) -> np.ndarray:
        """Mean (d,) of the set's predicted latent cells (the empty set: the start cells)."""

    def distance(self, members: Sequence[str]) -> float:
        """The objective's distance of the set (without effort)."""


def design_spaces(n_members: int, n_latent: int, bound: float = 100.0) -> tuple[spaces.Dict, spaces.Discrete]:
    """The design env's observation and action spaces for a library of ``n_members`` (see :class:`DesignEnv`)."""
    n, d = int(n_members), int(n_latent)
    high = np.concatenate([np.full(d, bound), [bound, bound], np.ones(n), [1.0]]).astype(np.float32)
    low = np.concatenate([np.full(d, -bound), [0.0, 0.0], np.zeros(n), [0.0]]).astype(np.float32)
    observation_space = spaces.Dict({
        "observations": spaces.Box(low, high, dtype=np.float32),
        "action_mask": spaces.Box(0.0, 1.0, shape=(n + 1,), dtype=np.float32),
    })
    return observation_space, spaces.Discrete(n + 1)


class DesignEnv(gym.Env):
    """
    ## Description

    One episode proposes one set for one target: each step adds a library member or stops. The
    set's predicted population comes from the problem's forward model (a run's start cells moved by
    the set's composed per-cell hints); the objective is its distance to the target plus ``effort``
    per member. Several problems (targets) with one library amortise: each reset draws one.

    ## Action Space

    ``Discrete(|library| + 1)``: action ``i < |library|`` adds member ``i``; action ``|library|`` stops.

    ## Observation Space

    ``Dict(observations=Box(float32), action_mask=Box(0, 1, (|library| + 1,)))``; ``observations``:

    | Slice                  | Observation                                                   | Min    | Max   |
    |------------------------|---------------------------------------------------------------|--------|-------|
    | ``[0, d)``             | target mean minus the current set's predicted mean (latent)   | -bound | bound |
    | ``d``                  | norm of that gap                                              | 0      | bound |
    | ``d + 1``              | the current set's distance to the target                      | 0      | bound |
    | next ``|library|``     | the current set, multi-hot                                    | 0      | 1     |
    | last                   | share of the ``max_size`` steps left                          | 0      | 1     |

    ``action_mask``: 1 for members not yet in the set, and for stop (stopping at the empty set proposes
    nothing: right when no set lowers the objective, e.g. under a high effort).

    ## Rewards

    ``r = objective(S_before) - objective(S_after)`` with ``objective = distance + effort * |S|``:
    the decrease of the distance minus ``effort`` per member added, 0 for stop. The return
    telescopes to ``objective(empty) - objective(final set)``.

    ## Starting State

    The empty set, for a problem drawn with ``self.np_random`` (or ``options={"problem": i}``).

    ## Episode End

    Terminated on stop or once the set has ``max_size`` members; never truncated.

    ## Arguments

    | Argument   | Meaning                                                        |
    |------------|----------------------------------------------------------------|
    | problems   | one :class:`DesignProblem` or several sharing one library       |
    | max_size   | most members per set (``k``), at most the library's size        |
    | bound      | observation bound (latent units; values beyond it are clipped)  |
    """

    metadata = {"render_modes": []}

    def __init__(self, problems: DesignProblem | Sequence[DesignProblem], max_size: int = 2, bound: float = 100.0):
        self.problems = [problems] if not isinstance(problems, (list, tuple)) else list(problems)
        if not self.problems:
            raise ValueError("DesignEnv needs at least one design problem.")
        self.library = [str(m) for m in self.problems[0].library]
        if any([str(m) for m in p.library] != self.library for p in self.problems[1:]):
            raise ValueError("Every design problem of one env must share one library (the action space).")
        if not 1 <= max_size <= len(self.library):
            raise ValueError(f"max_size must be in [1, {len(self.library)}] (the library's size), got {max_size}.")
        self.max_size, self.bound = int(max_size), float(bound)
        self.n_latent = int(self.problems[0].n_latent)
        self.observation_space, self.action_space = design_spaces(len(self.library), self.n_latent, self.bound)
        self._problem: DesignProblem = self.problems[0]
        self._members: list[int] = []
        self._objective = 0.0

    def _names(self) -> list[str]:
        return [self.library[i] for i in self._members]

    def _objective_of(self, names: list[str]) -> tuple[float, float]:
        distance = float(self._problem.distance(names))
        return distance + self._problem.effort * len(names), distance

    def _observe(self) -> dict[str, np.ndarray]:
        names = self._names()
        gap = np.asarray(self._problem.target_mean, dtype=np.float64) - self._problem.predicted_mean(names)
        chosen = np.zeros(len(self.library))
        chosen[self._members] = 1.0
        left = 1.0 - len(self._members) / self.max_size
        vector = np.concatenate([gap, [np.linalg.norm(gap), self._distance], chosen, [left]])
        low, high = self.observation_space["observations"].low, self.observation_space["observations"].high
        mask = np.concatenate([1.0 - chosen, [1.0]])
        return {"observations": np.clip(vector, low, high).astype(np.float32), "action_mask": mask.astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        return {"set": tuple(self._names()), "objective": self._objective, "distance": self._distance}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        index = (options or {}).get("problem")
        if index is None:
            index = int(self.np_random.integers(len(self.problems)))
        self._problem = self.problems[int(index)]
        self._members = []
        self._objective, self._distance = self._objective_of([])
        return self._observe(), self._info()

    def step(self, action: int):
        action = int(action)
        if not self.action_space.contains(action) or self._observe()["action_mask"][action] < 0.5:
            raise ValueError(f"Invalid action {action}: masked out (member already in the set {self._names()}).")
        if action == len(self.library):
            return self._observe(), 0.0, True, False, self._info()
        self._members.append(action)
        before = self._objective
        self._objective, self._distance = self._objective_of(self._names())
        done = len(self._members) >= self.max_size
        return self._observe(), float(before - self._objective), done, False, self._info()
