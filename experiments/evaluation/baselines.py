"""Predictors judged by ``waddington evaluate``: the baselines and the shared gene-space mapping.

Every method answers the same question: given a perturbation and a set of *start* control cells,
which perturbed cells does it predict? The answer is a :class:`Prediction`: predicted cells in gene
space (log-normalized HVG expression, the space the metrics judge), their mean trajectory in gene
space and, where the method moves cells in latent space, the latent start/end states.

Gene-space mapping (one rule for every method): a predicted cell is its start cell's *observed*
expression plus the decoded latent change,

    x_pred = x_start + decode(z_end) - decode(z_start) = x_start + scale * (z_end - z_start) @ components,

so the part of each cell's expression outside the latent span is kept, and a method that does
not move a cell predicts exactly that cell. Hence a do-nothing policy and the control-mean
baseline are the *same* prediction (identical metrics), by construction rather than by luck.

Baselines (all fitted on training cells only):

* ``control-mean``: no change; the start control cells themselves.
* ``train-mean``: start cells + the mean over training perturbations of their gene-space deltas
  (``mean(train cells of p) - mean(training control cells)``); the shortcut that recent benchmarks
  found competitive with published models on unseen perturbations.
* ``perturbation-mean``: start cells + the *same* perturbation's training delta (only where the
  perturbation was seen in training, e.g. held-out cells; for held-out perturbations it does
  not exist and is skipped).
* ``ridge``: ``sklearn.linear_model.Ridge`` from the perturbation features
  (:class:`envs.perturbation_features.PerturbationFeaturizer`) to the gene-space delta, one
  sample per training perturbation.
* ``ridge + self-effect``: ridge, plus for a panel gene unseen in training the drop of its own
  expression that the training knockdowns showed at theirs (one shared number).
* ``additive``: for a set (``A+B``, :mod:`envs.perturbation_sets`), start cells + the sum of its
  members' training deltas; a member without training cells contributes its ``ridge + self-effect``
  delta. The field's strongest baseline on combinations (Ahlmann-Eltze et al. 2025). Sets only:
  for a single the row is omitted.
* ``drift``: the landscape alone: the env dynamics rolled for ``horizon`` steps with zero push.
* ``hint-controller``: the guide alone: the scripted push toward each start cell moved by the
  its hint, per cell where the perturbation has training pairs (what a guided policy does with a
  zero action).

With a group split (a held-out cell type), training deltas are measured against the training
control cells *outside* the held-out group, so each delta compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset
from envs.dynamics import DYNAMICS_KEYS, CellStateDynamics, DynamicsConfig

__all__ = [
    "Prediction",
    "EvalContext",
    "Predictor",
    "latent_change_to_genes",
    "shifted_by",
    "knockdown_self_effect",
    "training_deltas",
    "control_mean",
    "train_mean",
    "perturbation_mean",
    "ridge",
    "ridge_self_effect",
    "additive",
    "drift",
    "hint_controller",
    "rollout",
    "make_dynamics",
    "BASELINES",
]


@dataclass
class Prediction:
    """What a method predicts for one perturbation.

    Attributes
    ----------
    cells
        Predicted perturbed cells x genes (log-normalized expression).
    trajectory
        Mean predicted state at each pseudotime step, steps x genes (first row: start mean).
    latent_start, latent_end
        Latent start/end state of each predicted cell, where the method moves cells in latent
        space (for the seed paper's start-vs-end metric); ``None`` otherwise.
    latent_path
        Latent states (cells x steps x d) of the simulated trajectories, where there are any.
    """

    cells: np.ndarray
    trajectory: np.ndarray
    latent_start: np.ndarray | None = None
    latent_end: np.ndarray | None = None
    latent_path: np.ndarray | None = None


@dataclass
class EvalContext:
    """Everything a predictor may use for one dataset/split: all fitted on training cells.

    Attributes
    ----------
    dataset
        The prepared dataset (with ``expression``).
    start_rows
        Perturbation -> row indices of the start control cells (training control cells, or the
        held-out group's control cells for a group split).
    dynamics
        Landscape dynamics with the env settings the policies were trained with.
    train_delta
        Training perturbation -> gene-space delta (see :func:`training_deltas`).
    """

    dataset: PreparedDataset
    start_rows: dict[str, np.ndarray]
    dynamics: CellStateDynamics
    train_delta: dict[str, np.ndarray]
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # per-dataset work shared by predictors

    @property
    def horizon(self) -> int:
        return int(self.dynamics.config.horizon)

    def start_expression(self, perturbation: str) -> np.ndarray:
        """Observed expression (dense cells x genes) of the start cells of ``perturbation``."""
        if perturbation not in self.cache:
            rows = self.start_rows[perturbation]
            self.cache[perturbation] = np.asarray(self.dataset.expression[rows].toarray(), dtype=np.float64)
        return self.cache[perturbation]

    def start_latent(self, perturbation: str) -> np.ndarray:
        return self.dataset.latent[self.start_rows[perturbation]].astype(np.float64)


#: A method: ``(context, perturbation, rng) -> Prediction``.
Predictor = Callable[[EvalContext, str, np.random.Generator], Prediction]


def latent_change_to_genes(dataset: PreparedDataset, dz: np.ndarray) -> np.ndarray:
    """Gene-space change of a latent change ``dz`` (..., d): ``scale * dz @ components``."""
    space = dataset.latent_space
    return (np.asarray(dz, dtype=np.float64) * space.scale) @ space.components


def shifted_cells(start: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Start cells' expression plus a change, floored where expression ends (cells x genes).

    Log-normalized expression is never below 0, so a predicted cell is not either: a decoded shift
    that would take a gene below the lowest value of the start cells (0 for log1p data) stops
    there. Without the floor, a DE test or cell-eval reads the predicted cells as impossible data
    (they refuse negative log-expression).
    """
    start = np.asarray(start, dtype=np.float64)
    floor = min(0.0, float(start.min())) if start.size else 0.0
    return np.maximum(start + change, floor)


def training_deltas(dataset: PreparedDataset) -> dict[str, np.ndarray]:
    """Gene-space delta of every training perturbation, from training cells only.

    ``delta_p = mean(expression of training cells of p) - mean(expression of reference controls)``
    where the reference controls are the training control cells, minus the held-out group's
    control cells for a group split (the training perturbed cells all lie outside that group).
    With covariates (``dataset.covariates``) the difference is taken within each covariate
    combination and averaged with the weights of p's cells there, so a shift in composition
    (cell types, donors) between controls and perturbed cells is not counted as a response.
    """
    expr = dataset.expression
    train = dataset.split.train
    ref = train & (dataset.labels == dataset.control_value)
    if dataset.split.kind == "group" and dataset.groups is not None:
        outside = dataset.groups != dataset.split.heldout_group
        if (ref & outside).any():
            ref &= outside
    strata = dataset.covariates if dataset.covariates is not None else np.zeros(len(dataset.labels), dtype=int)
    out = {}
    reference_means: dict = {}  # per stratum, read once (an on-disk matrix is read a row at a time)
    for name in dataset.training_perturbations:
        rows = train & (dataset.labels == name)
        parts, weights = [], []
        for stratum in np.unique(strata[rows]):
            here_ref, here = ref & (strata == stratum), rows & (strata == stratum)
            if here_ref.any():
                if stratum not in reference_means:
                    reference_means[stratum] = _mean_rows(expr, here_ref)
                parts.append(_mean_rows(expr, here) - reference_means[stratum])
                weights.append(int(here.sum()))
        if parts:
            out[name] = np.average(np.stack(parts), axis=0, weights=weights)
    return out


def _mean_rows(expr, mask: np.ndarray) -> np.ndarray:
    return np.asarray(expr[np.flatnonzero(mask)].astype(np.float64).mean(axis=0)).ravel()


def shifted_by(context: EvalContext, perturbation: str, delta: np.ndarray) -> Prediction:
    """Start cells + a constant gene-space delta, trajectory a straight line over the horizon."""
    X0 = context.start_expression(perturbation)
    steps = np.linspace(0.0, 1.0, context.horizon + 1)[:, None]
    trajectory = X0.mean(axis=0)[None, :] + steps * delta[None, :]
    return Prediction(cells=shifted_cells(X0, delta[None, :]), trajectory=trajectory)


def control_mean(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """No change: the start control cells themselves (their mean is the control mean)."""
    X0 = context.start_expression(perturbation)
    z0 = context.start_latent(perturbation)
    trajectory = np.repeat(X0.mean(axis=0)[None, :], context.horizon + 1, axis=0)
    return Prediction(cells=X0.copy(), trajectory=trajectory, latent_start=z0, latent_end=z0.copy())


def train_mean(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """Start cells + the mean of the training perturbations' gene-space deltas."""
    delta = np.mean(np.stack(list(context.train_delta.values())), axis=0)
    return shifted_by(context, perturbation, delta)


def perturbation_mean(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """Start cells + this perturbation's own training delta (seen perturbations only)."""
    if perturbation not in context.train_delta:
        raise KeyError(f"perturbation-mean needs training cells of {perturbation!r}.")
    return shifted_by(context, perturbation, context.train_delta[perturbation])


def ridge(context: EvalContext, perturbation: str, rng: np.random.Generator, *, alpha: float = 1.0) -> Prediction:
    """Start cells + a ridge regression's delta from the perturbation's features.

    ``Ridge(alpha)`` is fitted with one sample per training perturbation: features
    (``dataset.featurizer``) -> gene-space training delta. With a single training perturbation it
    predicts that perturbation's delta (the intercept).
    """
    return shifted_by(context, perturbation, _ridge_delta(context, perturbation, alpha))


def ridge_self_effect(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """:func:`ridge`, plus the knockdown's effect on its own gene for a panel gene unseen in training.

    A gene's features cannot say that knocking it down lowers its own expression: each gene's
    own axis is a feature no other gene shares. The self-effect is one number fitted on the training
    knockdowns of panel genes: how far each moved its own gene beyond what the other training
    perturbations did to that gene, averaged. It is the gene-space counterpart of the self-effect
    in the policies' shift hints (:class:`envs.perturbation_features.ShiftHints`), so the policies'
    lead over this row is not that rule.
    """
    delta = _ridge_delta(context, perturbation, 1.0)
    gene = context.dataset.featurizer.gene_index.get(str(perturbation))
    if gene is not None and perturbation not in context.train_delta:
        delta = delta.copy()
        delta[gene] += knockdown_self_effect(context)
    return shifted_by(context, perturbation, delta)


def additive(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """Start cells + the sum of a set's members' gene-space training deltas (``ridge + self-effect`` for an unseen member).

    Raises ``KeyError`` for a single perturbation (the row is omitted) and for datasets prepared
    without sets.
    """
    from envs.perturbation_sets import set_syntax_of

    sets = set_syntax_of(context.dataset.meta, context.dataset.control_value)
    members = sets.members(perturbation) if sets.separator is not None else (str(perturbation),)
    if len(members) < 2:
        raise KeyError(f"additive composes the members of a set; {perturbation!r} is a single perturbation.")
    return shifted_by(context, perturbation, np.sum([_member_delta(context, m) for m in members], axis=0))


def _member_delta(context: EvalContext, member: str) -> np.ndarray:
    """A member's training delta, or its ``ridge + self-effect`` prediction when it has no training cells."""
    if member in context.train_delta:
        return context.train_delta[member]
    delta = _ridge_delta(context, member, 1.0).copy()
    gene = context.dataset.featurizer.gene_index.get(member)
    if gene is not None:
        delta[gene] += knockdown_self_effect(context)
    return delta


def knockdown_self_effect(context: EvalContext) -> float:
    """Mean over training panel knockdowns: their own gene's change minus the other perturbations' mean change of it."""
    if "self-effect" not in context.cache:
        index = context.dataset.featurizer.gene_index
        names = [n for n in sorted(context.train_delta) if n in index]
        effects = []
        for name in names:
            others = [context.train_delta[o][index[name]] for o in context.train_delta if o != name]
            if others:
                effects.append(context.train_delta[name][index[name]] - float(np.mean(others)))
        context.cache["self-effect"] = float(np.mean(effects)) if effects else 0.0
    return context.cache["self-effect"]


def _ridge_delta(context: EvalContext, perturbation: str, alpha: float) -> np.ndarray:
    from sklearn.linear_model import Ridge

    key = ("ridge", alpha)
    if key not in context.cache:
        featurizer = context.dataset.featurizer
        names = sorted(context.train_delta)
        F = np.stack([featurizer(n) for n in names]).astype(np.float64)
        Y = np.stack([context.train_delta[n] for n in names])
        context.cache[key] = Ridge(alpha=alpha).fit(F, Y)
    model = context.cache[key]
    return model.predict(context.dataset.featurizer(perturbation).astype(np.float64)[None, :])[0]


ActionFn = Callable[[np.ndarray], np.ndarray]


def rollout(
    context: EvalContext,
    perturbation: str,
    rng: np.random.Generator,
    action_fn: ActionFn | None = None,
    *,
    guided: bool | None = None,
) -> Prediction:
    """Roll the env dynamics from the start cells for ``horizon`` steps, all cells as one batch.

    Observations are built by the env's own ``CellStateDynamics.observe_features``;
    ``action_fn`` maps a batch of observations to actions (``None``: zero actions). Actions become
    pushes by ``CellStateDynamics.push`` as the env's do: guided dynamics add the guide's push.
    ``guided`` overrides the dynamics' setting (``False``: actions are the pushes themselves, as
    scripted controllers give them). Transitions include the env's noise (drawn from ``rng``).
    """
    dyn = context.dynamics
    ds = context.dataset
    z0 = context.start_latent(perturbation)
    n = z0.shape[0]
    z = z0.copy()
    path = [z0.copy()]
    features = dyn.features_at(perturbation, z0)
    goal = dyn.goal(z0, features) if (dyn.guided if guided is None else guided) else None
    for t in range(context.horizon):
        if action_fn is None:
            action = np.zeros_like(z)
        else:
            obs = dyn.observe_features(z, z0, features, np.full(n, t))
            action = np.asarray(action_fn(obs), dtype=np.float64)
        z, _ = dyn.advance(z, action, rng, goal, steps_left=dyn.steps_left(np.full(n, t)), guided=guided)
        path.append(z.copy())
    latent_path = np.stack(path, axis=1)  # cells x steps x d
    X0 = context.start_expression(perturbation)
    cells = shifted_cells(X0, latent_change_to_genes(ds, z - z0))
    mean_change = latent_path.mean(axis=0) - z0.mean(axis=0)[None, :]
    trajectory = X0.mean(axis=0)[None, :] + latent_change_to_genes(ds, mean_change)
    return Prediction(cells=cells, trajectory=trajectory, latent_start=z0, latent_end=z, latent_path=latent_path)


def drift(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """The landscape alone: env dynamics with zero push for ``horizon`` steps."""
    return rollout(context, perturbation, rng, None, guided=False)


def hint_controller(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
    """The guide alone: the scripted push toward each start cell moved by its hint (per cell: ``envs.state_hints``), through the env dynamics.

    It is what a guided policy does with a zero action, so a policy's lead over it is what the
    learning added. Raises ``KeyError`` for dynamics without shift hints (the row is omitted).
    """
    if context.dynamics.hints is None:
        raise KeyError("hint-controller needs shift hints.")
    return rollout(context, perturbation, rng, None, guided=True)


#: Baselines by report name, in report order.
BASELINES: dict[str, Predictor] = {
    "control-mean": control_mean,
    "train-mean": train_mean,
    "perturbation-mean": perturbation_mean,
    "ridge": ridge,
    "ridge + self-effect": ridge_self_effect,
    "additive": additive,
    "drift (a=0)": drift,
    "hint-controller": hint_controller,
}


def make_dynamics(dataset: PreparedDataset, env_config: dict | None = None) -> CellStateDynamics:
    """Dynamics with the env settings of ``env_config`` (keys as the env's arguments)."""
    env_config = env_config or {}
    config = DynamicsConfig(**{k: env_config[k] for k in DYNAMICS_KEYS if k in env_config})
    return CellStateDynamics(dataset, config)
