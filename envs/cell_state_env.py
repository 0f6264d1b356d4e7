"""``waddington/CellState-v0``: steer a control cell across a learned Waddington landscape."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.dynamics import CellStateDynamics, DynamicsConfig
from envs.sources import resolve_dataset

__all__ = ["CellStateEnv"]


class CellStateEnv(gym.Env):
    """
    ## Description

    A cell is a point ``z`` in a latent space fitted to single-cell data (PCA of log-normalized
    highly variable genes; decodable back to genes). A landscape potential ``U(z)`` (negative log
    density of a Gaussian mixture fitted to the observed cells) pulls it downhill into the nearest
    valley. Each episode applies one perturbation: the cell starts at an observed control cell and
    the agent pushes it, over ``horizon`` pseudotime steps, toward the perturbed cell that optimal
    transport pairs with that start, spending as little action as it can.

    ## Action Space

    ``Box(-1, 1, (n_latent,), float32)``: a push in each latent direction, scaled by ``action_scale``.
    With ``guided`` actions (the default for datasets prepared with shift hints) the action is a
    correction in ``Box(-2, 2)`` added to the guide's push: the push that cancels the drift and
    steps an even share of the way (``1 / steps left``) toward ``z_0 + hint`` (the start cell moved
    by the perturbation's mean training shift); the sum is clipped to ``[-1, 1]``. A zero action
    then already carries the cell by the mean shift, and a correction can undo any push of the guide.

    ## Observation Space

    ``Box(float32)`` of size ``2 * n_latent + feature_dim + 1``:

    | Slice                              | Observation                                          | Min    | Max   |
    |------------------------------------|------------------------------------------------------|--------|-------|
    | ``[0, d)``                         | current latent state ``z``                           | -bound | bound |
    | ``[d, 2d)``                        | the episode's start cell ``z_0``                     | -bound | bound |
    | ``[2d, 2d + d)``                   | knockdown direction of the perturbed gene (unit)     | -1     | 1     |
    | ``2d + d``                         | 1 if the perturbation is a gene in the panel         | 0      | 1     |
    | next ``m``                         | one-hot id of non-gene training perturbations        | 0      | 1     |
    | next ``d`` (with ``shift_hint``)   | ``z_0 + hint - z``: the way to the start cell moved by the perturbation's shift in the training data (per cell: how its nearest paired control cells moved, ``state_hint_neighbours``) | -3 bound | 3 bound |
    | last                               | fraction of the horizon remaining                    | 0      | 1     |

    ## Transition

    ``z' = clip(z - dt * grad U(z) + action_scale * p + noise_std * xi, -bound, bound)``, ``xi ~ N(0, I)``,
    with the push ``p = a`` or, guided, ``p = clip(guide(z) + a, -1, 1)``.

    ## Rewards

    ``r = |z - y| - |z' - y| - action_cost * mean(p^2)``, with ``y`` the OT-paired target cell. It
    telescopes to the total distance gained, so staying put earns nothing (and drift back into the
    control valley costs), and because every start cell has its own target the best policy
    carries the control population onto the whole perturbed population rather than onto its mean.

    ## Starting State

    A (control cell, perturbed cell) pair drawn from the exact OT plan between training control
    cells and the cells of a perturbation drawn uniformly from the training perturbations (or the
    fixed ``perturbation``). With a held-out group (guided actions), a share of episodes starts at
    that group's control cells instead, with the guide's goal as ``y`` (``info["target_cell"]`` -1):
    a prediction starts there (``envs.dynamics``, ``docs/out_of_range.md``).

    ## Episode End

    Terminates after ``horizon`` steps (the time remaining is part of the observation). Never truncates.

    ## Arguments

    | Argument           | Default        | Meaning                                                         |
    |--------------------|----------------|-----------------------------------------------------------------|
    | ``data``           | ``"synthetic"``| ``"synthetic"``, ``.h5ad`` path, saved dataset dir, ``PreparedDataset`` or Ray ``ObjectRef`` |
    | ``perturbation_key``| ``None``      | obs column with perturbation labels (required for real data)    |
    | ``control_value``  | ``None``       | control label in that column (required for real data)           |
    | ``perturbation``   | ``None``       | fix one perturbation (may be a held-out one); else sampled      |
    | ``cells``          | ``"train"``    | draw target cells from the ``"train"`` or ``"test"`` part       |
    | ``n_latent``       | ``8``          | latent dimension when the data must be prepared                 |
    | ``horizon``        | ``20``         | steps per episode                                               |
    | ``dt``             | ``None``       | drift step; ``None`` = half the narrowest well's variance       |
    | ``action_scale``   | ``0.3``        | latent distance of a full push                                  |
    | ``noise_std``      | ``0.05``       | per-step diffusion                                              |
    | ``action_cost``    | ``0.05``       | weight of the action-energy cost                                |
    | ``shift_hint``     | ``None``       | observe the perturbation's mean shift (``envs.perturbation_features.ShiftHints``); ``None``: on for datasets prepared with it (all new ones) |
    | ``guided``         | ``None``       | actions correct the guide's push toward ``z_0 + hint``; ``None``: on for datasets prepared with it (all new ones); needs ``shift_hint`` |
    | ``state_hint_neighbours`` | ``None`` | the hint of a cell is the mean OT displacement of this many neighbouring paired control cells (``envs.state_hints``); ``0``: the perturbation's mean shift for every cell; ``None``: 20 for datasets prepared with it (all new ones) |
    | ``start_range``    | ``None``       | out-of-range start cells' hints shrink toward the mean shift (``envs.start_range``); ``None``: on with guided actions |
    | ``heldout_start_share`` | ``None``  | share of episodes starting at a held-out group's control cells, toward the guide's goal; ``None``: their share of the starts, at most 0.25; ``0``: none |
    | ``seed``           | ``0``          | seed of data preparation (split, fits); episodes follow ``reset(seed=)`` |
    | ``dataset_options``| ``None``       | more keyword options for ``envs.prepare_dataset``               |

    ```python
    import gymnasium as gym, envs
    env = gym.make("waddington/CellState-v0")
    env = gym.make("waddington/CellState-v0", data="cells.h5ad",
                   perturbation_key="perturbation", control_value="non-targeting")
    ```
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        data: Any = "synthetic",
        *,
        perturbation_key: str | None = None,
        control_value: str | None = None,
        perturbation: str | None = None,
        cells: str = "train",
        n_latent: int = 8,
        horizon: int = 20,
        dt: float | None = None,
        action_scale: float = 0.3,
        noise_std: float = 0.05,
        action_cost: float = 0.05,
        shift_hint: bool | None = None,
        guided: bool | None = None,
        state_hint_neighbours: int | None = None,
        start_range: bool | None = None,
        heldout_start_share: float | None = None,
        seed: int = 0,
        dataset_options: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ):
        self.dataset = resolve_dataset(
            data,
            perturbation_key=perturbation_key,
            control_value=control_value,
            n_latent=n_latent,
            seed=seed,
            **(dataset_options or {}),
        )
        config = DynamicsConfig(horizon=horizon, dt=dt, action_scale=action_scale, noise_std=noise_std,
                                action_cost=action_cost, shift_hint=shift_hint, guided=guided,
                                state_hint_neighbours=state_hint_neighbours, start_range=start_range,
                                heldout_start_share=heldout_start_share)
        self.dynamics = CellStateDynamics(self.dataset, config, perturbation=perturbation, cells=cells)
        low, high = self.dynamics.observation_bounds()
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        n = self.dynamics.n_latent
        bound = self.dynamics.action_bound
        self.action_space = spaces.Box(-bound, bound, shape=(n,), dtype=np.float32)
        self.render_mode = render_mode
        self._state: dict[str, np.ndarray] = {}

    def _observation(self) -> np.ndarray:
        s = self._state
        return self.dynamics.observe_features(s["z"], s["z0"], s["features"], s["t"])[0]

    def _info(self) -> dict[str, Any]:
        s = self._state
        return {
            "perturbation": self.dynamics.perturbations[int(s["perturbation"][0])],
            "start_cell": int(s["start"][0]),
            "target_cell": int(s["target"][0]),
            "target": s["y"][0].astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)  # unseeded: fresh entropy, so parallel runners differ
        perturbation, start, target = self.dynamics.sample_episodes(self.np_random, 1)
        latent = self.dataset.latent.astype(np.float64)
        z0 = latent[start]
        features = self.dynamics.episode_features(perturbation, start)
        self._state = {
            "perturbation": perturbation,
            "start": start,
            "target": target,
            "z0": z0,
            "z": z0.copy(),
            "y": self.dynamics.episode_targets(start, target, features),  # a paired cell, or the guide's goal
            "t": np.zeros(1),
            "features": features,
        }
        if self.dynamics.guided:
            self._state["goal"] = self.dynamics.goal(z0, self._state["features"])
        return self._observation(), self._info()

    def step(self, action):
        if not self._state:
            raise RuntimeError("Call reset() before step().")
        s = self._state
        action = np.asarray(action, dtype=np.float64).reshape(1, -1)
        moved, push = self.dynamics.advance(s["z"], action, self.np_random, s.get("goal"),
                                            steps_left=self.dynamics.steps_left(s["t"]))
        reward = float(self.dynamics.reward(s["z"], moved, s["y"], push)[0])
        s["z"] = moved
        s["t"] = s["t"] + 1
        terminated = bool(s["t"][0] >= self.dynamics.config.horizon)
        return self._observation(), reward, terminated, False, self._info()
