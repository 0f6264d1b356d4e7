"""Batched numpy core shared by the single and the vectorized cell-state env.

Step: ``z' = z + dt * (-grad U(z)) + action_scale * p + noise_std * xi``, with the push ``p`` the
action itself or, with guided actions, the action added to the guide's push (the push that cancels
the drift and steps, at an even pace over the horizon, toward the start cell moved by the
perturbation's shift hint); reward: progress toward the episode's OT-paired target cell minus an
energy cost of the push. Holding this in one place keeps ``CellStateEnv``, ``CellStateVectorEnv``
and evaluation rollouts bit-identical for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from envs.dataset import PreparedDataset
from envs.pairing import stratified_ot_pairs
from envs.perturbation_features import ShiftHints
from envs.set_hints import with_set_shift_hints, with_set_state_hints
from envs.start_range import StartRange
from envs.state_hints import DEFAULT_NEIGHBOURS, StateHints

__all__ = ["DynamicsConfig", "CellStateDynamics", "DYNAMICS_KEYS"]


@dataclass(frozen=True)
class DynamicsConfig:
    """Step sizes and episode settings (latent units: training cells have mean per-dim variance 1)."""

    horizon: int = 20
    dt: float | None = None  # None: the landscape's stable step (half the narrowest well variance)
    action_scale: float = 0.3
    noise_std: float = 0.05
    action_cost: float = 0.05
    shift_hint: bool | None = None  # observe each perturbation's mean shift; None: as the dataset says
    guided: bool | None = None  # actions correct the guide's push toward start + hint; None: as the dataset says
    # per-cell hints from this many neighbouring paired cells (envs.state_hints); 0: the perturbation's mean
    # shift for every cell; None: as the dataset says (datasets prepared before them keep the mean shift)
    state_hint_neighbours: int | None = None
    # out of range (envs.start_range), hints shrink toward the mean shift; None: on with guided actions
    start_range: bool | None = None
    # share of episodes that start at a held-out group's control cells, steered to the guide's goal
    # (a prediction starts there); None: their share of the start cells, at most HELDOUT_START_SHARE
    heldout_start_share: float | None = None

    def validate(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}.")
        for name in ("action_scale", "noise_std", "action_cost"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.state_hint_neighbours is not None and self.state_hint_neighbours < 0:
            raise ValueError(f"state_hint_neighbours must be >= 0, got {self.state_hint_neighbours}.")
        if self.heldout_start_share is not None and not 0.0 <= self.heldout_start_share < 1.0:
            raise ValueError(f"heldout_start_share must be in [0, 1), got {self.heldout_start_share}.")
        if self.dt is not None and self.dt < 0:
            raise ValueError(f"dt must be >= 0 (or None for the stable default), got {self.dt}.")


#: Env options that set the dynamics (``DynamicsConfig`` fields): the keys of a run's ``env_config`` they read.
DYNAMICS_KEYS = tuple(f.name for f in fields(DynamicsConfig))
#: Most episodes that start at held-out group controls by default: paired episodes, the only ones with
#: observed targets, keep at least three quarters of the samples.
HELDOUT_START_SHARE = 0.25


class CellStateDynamics:
    """Episode sampling, landscape dynamics, reward and observations for a batch of cells."""

    def __init__(
        self,
        dataset: PreparedDataset,
        config: DynamicsConfig,
        *,
        perturbation: str | None = None,
        cells: str = "train",
    ):
        config.validate()
        self.dataset = dataset
        self.config = config
        self.dt = dataset.landscape.stable_dt() if config.dt is None else float(config.dt)
        self.n_latent = dataset.n_latent
        featurizer = dataset.policy_featurizer
        hinted = dataset.meta.get("shift_hint", False) if config.shift_hint is None else config.shift_hint
        # datasets prepared before hints existed keep their observation layout (their policies expect it)
        # the self-effect came with guided actions: older datasets keep the hints their runs saw
        # and calibrated hints (unseen perturbations' extrapolations shrunk) came later still
        self.hints = ShiftHints(dataset.latent, dataset.pairs, featurizer,
                                self_effect=bool(dataset.meta.get("guided_actions", False)),
                                calibrate=bool(dataset.meta.get("calibrated_hints", False))) if hinted else None
        self.hints = with_set_shift_hints(dataset, self.hints)  # sets never observed: their members' hints
        guided = hinted and dataset.meta.get("guided_actions", False) if config.guided is None else config.guided
        if guided and not hinted:
            raise ValueError("guided actions steer toward the shift hint: they need shift_hint on.")
        # a policy then learns a correction to a known-good push, not the push itself: its untrained
        # (near-zero) mean already moves cells by the training data's mean shift, cancelling the drift
        self.guided = bool(guided)
        # guided, a correction must reach any push in the box whatever the guide says: twice as wide
        self.action_bound = 2.0 if self.guided else 1.0
        self._featurizer = featurizer
        self.feature_dim = featurizer.dim + (self.n_latent if hinted else 0)
        self.bound = float(np.ceil(1.5 * np.abs(dataset.latent).max()))
        if cells not in ("train", "test"):
            raise ValueError(f"cells must be 'train' or 'test', got {cells!r}.")
        if perturbation is None:
            names = dataset.training_perturbations
        else:
            known = dataset.perturbations
            if str(perturbation) not in known:
                raise ValueError(
                    f"Unknown perturbation {perturbation!r}. Known perturbations: {known}."
                )
            names = [str(perturbation)]
        self.perturbations = names
        self.features = np.stack([self.feature_of(name) for name in names]).astype(np.float32)
        self.pairs = [self._pairs_for(name, cells) for name in names]
        neighbours = config.state_hint_neighbours
        if neighbours is None:
            neighbours = DEFAULT_NEIGHBOURS if dataset.meta.get("state_hints") else 0
        self.state_hints = StateHints(dataset.latent, dataset.pairs, neighbours=neighbours) \
            if hinted and neighbours > 0 else None
        self.state_hints = with_set_state_hints(dataset, self.state_hints, self.hints)
        ranged = self.guided if config.start_range is None else config.start_range
        self.start_range = StartRange(dataset.latent, dataset.pairs) if ranged and dataset.pairs else None
        self.heldout_starts, self.heldout_share = self._heldout_starts(cells)
        # episodes start at paired control cells: their hints are looked up, not searched for, at every reset
        self._start_rows, self._start_weights = self._start_rows_and_weights()
        self._start_hints = [self._hints_of_starts(i) for i in range(len(names))] if self.state_hints else None
        self.obs_dim = 2 * self.n_latent + self.feature_dim + 1

    def _pairs_for(self, name: str, cells: str) -> np.ndarray:
        if cells == "train" and name in self.dataset.pairs:
            return self.dataset.pairs[name]
        controls = self.dataset.cell_indices(self.dataset.control_value, "train")
        targets = self.dataset.cell_indices(name, cells)
        if len(targets) == 0:
            targets = self.dataset.cell_indices(name, "all")
        return stratified_ot_pairs(self.dataset.latent, controls, targets, self.dataset.covariates,
                                   rng=np.random.default_rng(0))

    def _heldout_starts(self, cells: str) -> tuple[np.ndarray, float]:
        """A held-out group's training control rows and the share of episodes that start there.

        A group split predicts the held-out group from its control cells, which no OT pair starts
        at (their stratum has no training targets). Episodes start there too, rewarded for reaching
        the guide's goal (:meth:`episode_targets`): the policy then learns its correction on every
        start state a prediction uses instead of extrapolating to them.
        """
        split = self.dataset.split
        share = self.config.heldout_start_share
        if not self.guided or cells != "train" or split.kind != "group" or self.dataset.groups is None \
                or share == 0.0:
            return np.zeros(0, dtype=np.int64), 0.0
        rows = np.flatnonzero((self.dataset.labels == self.dataset.control_value) & split.train
                              & (self.dataset.groups == split.heldout_group))
        paired = np.unique(np.concatenate([p[:, 0].astype(int) for p in self.pairs]))
        rows = np.setdiff1d(rows, paired)
        if len(rows) == 0:
            return rows, 0.0
        if share is None:
            share = min(HELDOUT_START_SHARE, len(rows) / (len(rows) + len(paired)))
        return rows, float(share)

    def _start_rows_and_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every episode start row (of any perturbation) and its start-range weight, scored once: the
        perturbations share most of their paired control cells."""
        if self.start_range is None or not self.state_hints or not self.pairs:
            return np.zeros(0, dtype=np.int64), None
        rows = np.union1d(np.unique(np.concatenate([p[:, 0].astype(int) for p in self.pairs])), self.heldout_starts)
        return rows, self.start_range.weight(self.dataset.latent[rows])

    def _hints_of_starts(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.union1d(np.unique(self.pairs[index][:, 0].astype(int)), self.heldout_starts)
        fallback = self.features[index, -self.n_latent :]
        states = self.dataset.latent[rows]
        hints = self.state_hints.at(self.perturbations[index], states, fallback)
        if self.start_range is not None:
            weight = self._start_weights[np.searchsorted(self._start_rows, rows)]
            hints = self.start_range.blend_hints(hints, fallback, weight=weight)
        return rows, hints.astype(np.float32)

    def features_at(self, perturbation: str, starts: np.ndarray) -> np.ndarray:
        """Feature rows (cells x ``feature_dim``) of cells starting at latent ``starts`` under any perturbation.

        The hint part is per cell where :class:`envs.state_hints.StateHints` covers the perturbation,
        shrunk toward the mean shift out of range (:class:`envs.start_range.StartRange`).
        """
        starts = np.asarray(starts, dtype=np.float64).reshape(-1, self.n_latent)
        base = self.feature_of(perturbation)
        features = np.repeat(base[None, :], len(starts), axis=0).astype(np.float32)
        if self.state_hints is not None and len(starts):
            hints = self.state_hints.at(perturbation, starts, base[-self.n_latent :])
            if self.start_range is not None and self.state_hints.covers(perturbation):
                hints = self.start_range.blend_hints(hints, base[-self.n_latent :], starts)
            features[:, -self.n_latent :] = hints
        return features

    def episode_features(self, perturbation: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Feature rows of episodes given as perturbation ids and start cell rows (from :meth:`sample_episodes`)."""
        features = self.features[perturbation].copy()
        if self._start_hints is not None:
            for index in np.unique(perturbation):
                mine = np.flatnonzero(perturbation == index)
                rows, hints = self._start_hints[index]
                at = np.minimum(np.searchsorted(rows, start[mine]), max(len(rows) - 1, 0))
                listed = rows[at] == start[mine] if len(rows) else np.zeros(len(mine), dtype=bool)
                features[mine[listed], -self.n_latent :] = hints[at[listed]]
                if not listed.all():  # a start cell outside the env's pairs: searched for, not looked up
                    name = self.perturbations[index]
                    features[mine[~listed]] = self.features_at(name, self.dataset.latent[start[mine[~listed]]])
        return features

    def feature_of(self, perturbation: str) -> np.ndarray:
        """The features of any perturbation (seen or not), then its shift hint (observed as ``start + hint - z``)."""
        base = self._featurizer(perturbation)
        return base if self.hints is None else np.concatenate([base, self.hints(perturbation)]).astype(np.float32)

    def observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        hint_dims = self.n_latent if self.hints is not None else 0
        high = np.concatenate(
            [np.full(2 * self.n_latent, self.bound), np.ones(self.feature_dim - hint_dims),
             np.full(hint_dims, 3 * self.bound), np.ones(1)]
        ).astype(np.float32)
        low = -high
        low[-1] = 0.0
        return low, high

    def sample_episodes(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw (perturbation id, start cell, target cell) for ``n`` episodes.

        Target ``-1``: an episode at a held-out group's control cell, steered to the guide's goal
        (:meth:`episode_targets`).
        """
        perturbation = rng.integers(len(self.perturbations), size=n)
        start = np.empty(n, dtype=np.int64)
        target = np.empty(n, dtype=np.int64)
        for i, p in enumerate(perturbation):
            if self.heldout_share > 0.0 and rng.random() < self.heldout_share:
                start[i], target[i] = int(self.heldout_starts[rng.integers(len(self.heldout_starts))]), -1
                continue
            pairs = self.pairs[p]
            row = rng.choice(len(pairs), p=pairs[:, 2])
            start[i], target[i] = int(pairs[row, 0]), int(pairs[row, 1])
        return perturbation, start, target

    def episode_targets(self, start: np.ndarray, target: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Target states of episodes (:meth:`sample_episodes`): the paired cell, or the guide's goal where ``target`` is -1."""
        latent = self.dataset.latent
        y = latent[np.maximum(target, 0)].astype(np.float64)
        goalward = np.asarray(target) < 0
        if goalward.any():
            y[goalward] = self.goal(latent[start[goalward]].astype(np.float64), features[goalward])
        return y

    def steer(self, z: np.ndarray, point: np.ndarray, drift: np.ndarray | None = None) -> np.ndarray:
        """The push that cancels the drift at ``z`` (``drift``, when already evaluated) and steps toward ``point``, clipped to the action box."""
        drift = self.dataset.landscape.drift(z) if drift is None else drift
        need = point - z - self.dt * drift
        return np.clip(need / self.config.action_scale, -1.0, 1.0)

    def steps_left(self, t: np.ndarray) -> np.ndarray:
        """Steps that remain in an episode at step ``t``."""
        return self.config.horizon - np.asarray(t, dtype=np.float64)

    def goal(self, start: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Where the guide steers cells that started at ``start``: the start moved by the perturbation's hint."""
        if self.hints is None:
            raise ValueError("No shift hints in these dynamics: there is no guide goal.")
        return start + features[:, -self.n_latent :]

    def observed_goal(self, obs: np.ndarray) -> np.ndarray:
        """The guide's goal read off observations (:meth:`observe_features`): ``z`` plus the way still to go."""
        if self.hints is None:
            raise ValueError("No shift hints in these dynamics: there is no guide goal.")
        d = self.n_latent
        return obs[:, :d].astype(np.float64) + obs[:, -1 - d : -1].astype(np.float64)

    def push(self, z: np.ndarray, action: np.ndarray, goal: np.ndarray | None = None, *,
             steps_left: np.ndarray | float = 1.0, guided: bool | None = None,
             drift: np.ndarray | None = None) -> np.ndarray:
        """The push an action makes at ``z``: the action, or with guided actions, the guide's push plus it, clipped to the box.

        A guided action lies in ``[-2, 2]`` (so it can undo any guide's push), a plain one in ``[-1, 1]``.

        The guide steers an even share of the way to ``goal`` (:meth:`goal`) per step, cancelling
        the drift: ``steps_left`` steps (per cell) remain before the episode ends. ``guided``
        overrides the dynamics' setting.
        """
        guided = self.guided if guided is None else guided
        action = np.clip(action, -2.0, 2.0) if guided else np.clip(action, -1.0, 1.0)
        if not guided:
            return action
        if goal is None:
            raise ValueError("Guided dynamics need the guide's goal to turn an action into a push.")
        # an even pace, not the whole way at once: the guide rarely fills the action box, so the
        # policy's correction is rarely clipped away (and the path is a straight line, not a jump)
        share = 1.0 / np.maximum(np.asarray(steps_left, dtype=np.float64), 1.0).reshape(-1, 1)
        return np.clip(self.steer(z, z + share * (goal - z), drift) + action, -1.0, 1.0)

    def move(self, z: np.ndarray, push: np.ndarray, rng: np.random.Generator,
             drift: np.ndarray | None = None) -> np.ndarray:
        """One step of pushed, noisy downhill motion (``push`` as :meth:`push` makes it), clipped to the observation box."""
        push = np.clip(push, -1.0, 1.0)
        drift = self.dataset.landscape.drift(z) if drift is None else drift
        noise = rng.normal(size=z.shape) * self.config.noise_std
        moved = z + self.dt * drift + self.config.action_scale * push + noise
        return np.clip(moved, -self.bound, self.bound)

    def advance(self, z: np.ndarray, action: np.ndarray, rng: np.random.Generator, goal: np.ndarray | None = None, *,
                steps_left: np.ndarray | float = 1.0, guided: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One step of an action from ``z``: (the moved cells, the push made); :meth:`push` then :meth:`move`.

        The drift, the costly part, is evaluated once for both.
        """
        drift = self.dataset.landscape.drift(z)
        push = self.push(z, action, goal, steps_left=steps_left, guided=guided, drift=drift)
        return self.move(z, push, rng, drift), push

    def reward(self, z: np.ndarray, moved: np.ndarray, target: np.ndarray, push: np.ndarray) -> np.ndarray:
        """Distance progress toward the paired target minus mean squared push times the cost."""
        progress = np.linalg.norm(z - target, axis=1) - np.linalg.norm(moved - target, axis=1)
        energy = np.mean(np.square(np.clip(push, -1.0, 1.0)), axis=1)
        return progress - self.config.action_cost * energy

    def observe_features(self, z: np.ndarray, start: np.ndarray, features: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Observations of cells at ``z`` that started at ``start``, at steps ``t``, under the perturbation
        feature rows ``features`` (:meth:`episode_features`, :meth:`features_at`)."""
        remaining = 1.0 - np.asarray(t, dtype=np.float64) / self.config.horizon
        if self.hints is not None:
            # the hint is observed as the way still to go to start + hint: a policy reads a step off it directly
            features = np.concatenate([features[:, : -self.n_latent], start + features[:, -self.n_latent :] - z],
                                      axis=1)
        return np.concatenate([z, start, features, remaining[:, None]], axis=1).astype(np.float32)
