"""Predicting cells: pick start cells of a run (:mod:`experiments.prediction.runs`), roll them forward.

One rule for every method, shared with evaluation (:mod:`experiments.evaluation.baselines`): a
predicted cell is its start cell's observed expression plus the decoded latent change,
``x_pred = x_start + scale * (z_end - z_start) @ components``, in the run's gene space
(log-normalized highly variable genes). Policies are rolled out with their mean action for the
env's ``horizon`` steps with the env's noise, exactly as ``waddington evaluate`` scores them.

A *run* is the output directory of ``waddington train`` (or a ``sweep``: its best trial, or
``trial=``), or of one seed of ``waddington evaluate --data``. Its dataset is ``DIR/dataset/`` when
the run saved one, else it is rebuilt from the run's settings (the same call training made).

What cannot be predicted is refused up front with one :class:`PredictionError` naming what can:
an unknown perturbation, a perturbation the policy cannot tell apart (held out in training and not
a gene of the panel: its features are all zero), a set (``KLF1+MAP2K6``, :mod:`envs.perturbation_sets`)
with a member that cannot be expressed, an unknown group key or value, a missing policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset
from envs.start_range import ranged_policy
from experiments.prediction.runs import (
    FEATURE_METHODS,
    METHODS,
    POLICY_METHODS,
    PredictionError,
    Run,
)

__all__ = [
    "RunPrediction",
    "cell_names",
    "check_perturbations",
    "group_values",
    "known_group_keys",
    "parse_group",
    "predict_run",
    "select_start_rows",
]


# ---------------------------------------------------------------------------------------------
# what can be predicted
# ---------------------------------------------------------------------------------------------

def expressible_perturbations(dataset: PreparedDataset) -> list[str]:
    """Labels of the data a policy can tell apart: training perturbations and held-out panel genes."""
    featurizer = dataset.featurizer
    return [p for p in dataset.perturbations if np.any(featurizer(p))]


def _describe_expressible(dataset: PreparedDataset) -> str:
    labels = expressible_perturbations(dataset)
    genes = [str(g) for g in dataset.latent_space.feature_names]
    example = ", ".join(genes[:5])
    return (f"Expressible perturbations of this run: {labels}; or a knockdown of any of the {len(genes)} genes "
            f"of its panel (e.g. {example}).")


def check_perturbations(dataset: PreparedDataset, names: Sequence[str], method: str) -> dict[str, dict[str, Any]]:
    """Refuse what ``method`` cannot predict; return per perturbation how it is expressed.

    A set (members joined by the dataset's separator) is known when it is a label of the data, or
    when every member is known: a label or a member of one, or a gene of the panel. Feature methods
    need every member expressible; a set never observed is predicted from its members' hints,
    composed as the dataset says (:mod:`envs.set_hints`).

    A name is *known* when it is a label of the data (seen or held out) or a gene of the panel (a
    knockdown of a panel gene has a direction in latent space even if no cell was ever perturbed).
    Methods that read features (policies, ridge) also need it *expressible*: a training
    perturbation or a panel gene; a held-out label outside the panel has all-zero features.
    ``perturbation-mean`` needs the perturbation's training cells.
    """
    if not names:
        raise PredictionError("Name at least one perturbation (--perturbation A,B).")
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise PredictionError(f"Perturbations named twice: {duplicates}.")
    from envs.perturbation_sets import PerturbationSetError, members_of_all, set_syntax_of

    featurizer = dataset.featurizer
    panel = set(map(str, dataset.latent_space.feature_names))
    labels = set(dataset.perturbations)
    training = set(dataset.training_perturbations)
    sets = set_syntax_of(dataset.meta, dataset.control_value)
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        name = str(name)
        try:
            members = sets.members(name)
        except PerturbationSetError as exc:
            raise PredictionError(str(exc)) from exc
        if len(members) > 1:
            info[name] = _check_set(dataset, name, members, method, sets, members_of_all(sorted(labels), sets))
            continue
        if len(members) == 1 and members[0] != name:  # A+ctrl is A
            name_of = members[0]
        else:
            name_of = name
        if name_of != name:
            info[name] = {**check_perturbations(dataset, [name_of], method)[name_of], "same_as": name_of}
            continue
        if name == dataset.control_value:
            raise PredictionError(f"'{name}' is the control label; name a perturbation. "
                                  + _describe_expressible(dataset))
        if name not in labels and name not in panel:
            raise PredictionError(f"Unknown perturbation '{name}': not a label of the run's data and not a gene "
                                  f"of its panel. " + _describe_expressible(dataset))
        expressible = bool(np.any(featurizer(name)))
        if method in FEATURE_METHODS and not expressible:
            raise PredictionError(
                f"Perturbation '{name}' cannot be expressed: it was held out in training and is not a gene of "
                f"the panel, so its features are all zero and --method {method} cannot tell it from any other. "
                + _describe_expressible(dataset))
        if method == "perturbation-mean" and name not in training:
            raise PredictionError(f"--method perturbation-mean needs training cells of '{name}' (it was held out "
                                  f"or never observed). Training perturbations: {sorted(training)}.")
        in_panel = name in panel
        info[name] = {
            "seen_in_training": name in training,
            "in_data": name in labels,
            "in_panel": in_panel,
            "expressed_as": ("knockdown direction of a panel gene" if in_panel
                             else "one-hot id of a training perturbation" if name in training else "none"),
        }
    return info


def _check_set(dataset: PreparedDataset, name: str, members: Sequence[str], method: str, sets,
               data_members: Sequence[str]) -> dict[str, Any]:
    """How a set is expressed, or one :class:`PredictionError` naming the member that cannot be."""
    from envs.set_features import unexpressible_members

    labels = list(dataset.perturbations)
    spelled = sets.resolve(name, labels)
    training = set(dataset.training_perturbations)
    panel = set(map(str, dataset.latent_space.feature_names))
    observed = spelled in labels
    if not observed:
        unknown = [m for m in members if m not in data_members and m not in panel]
        if unknown:
            raise PredictionError(f"Set '{name}': member(s) {unknown} unknown: not a perturbation (or a member of "
                                  "one) in the run's data and not a gene of its panel. "
                                  + _describe_expressible(dataset))
    mute = unexpressible_members(dataset.featurizer, name)
    if method in FEATURE_METHODS and mute and spelled not in training:
        raise PredictionError(
            f"Set '{name}': member(s) {mute} cannot be expressed (held out in training and not genes of the panel: "
            f"their features are all zero), so --method {method} cannot tell them apart. Expressible members: "
            f"{sorted(m for m in data_members if m not in mute and not unexpressible_members(dataset.featurizer, m))}, "
            "or any gene of the panel.")
    if method == "perturbation-mean" and spelled not in training:
        raise PredictionError(f"--method perturbation-mean needs training cells of '{name}' (it was held out "
                              f"or never observed). Training perturbations: {sorted(training)}.")
    composition = dataset.meta.get("set_composition", "sequential")
    return {
        "seen_in_training": spelled in training,
        "in_data": observed,
        "in_panel": False,
        "members": list(members),
        "expressed_as": ("an observed set: its own hints" if spelled in training
                         else f"a set: its members' hints composed ({composition})"),
    }


def known_group_keys(dataset: PreparedDataset) -> list[str]:
    """obs columns the dataset knows per cell: the split's group key and the covariate keys."""
    keys = []
    if dataset.groups is not None and dataset.split.group_key:
        keys.append(str(dataset.split.group_key))
    if dataset.covariates is not None:
        keys += [str(k) for k in dataset.meta.get("covariate_keys") or [] if str(k) not in keys]
    return keys


def group_values(dataset: PreparedDataset, key: str) -> np.ndarray | None:
    """Value of obs column ``key`` per cell, where the dataset stored it (else ``None``)."""
    if dataset.groups is not None and dataset.split.group_key == key:
        return np.asarray(dataset.groups).astype(str)
    keys = [str(k) for k in dataset.meta.get("covariate_keys") or []]
    if dataset.covariates is not None and key in keys:
        covariates = np.asarray(dataset.covariates).astype(str)
        if len(keys) == 1:
            return covariates
        position = keys.index(key)
        return np.array([c.split("|")[position] for c in covariates])
    return None


def parse_group(text: str | tuple[str, str] | Mapping[str, str] | None) -> tuple[str, str] | None:
    """``"KEY=VALUE"`` (or ``(key, value)`` / ``{key: value}``) -> ``(key, value)``."""
    if text is None:
        return None
    if isinstance(text, Mapping):
        if len(text) != 1:
            raise PredictionError(f"start_group takes one KEY=VALUE, got {dict(text)}.")
        return tuple(map(str, next(iter(text.items()))))  # type: ignore[return-value]
    if isinstance(text, tuple):
        key, value = text
        return str(key), str(value)
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip() or not value.strip():
        raise PredictionError(f"--start-group takes KEY=VALUE (e.g. cell_type=CD4T), got {text!r}.")
    return key.strip(), value.strip()


def select_start_rows(dataset: PreparedDataset, *, group: tuple[str, str] | None = None,
                      n_cells: int | None = None, seed: int = 0) -> np.ndarray:
    """Row indices of the start cells: training control cells (of one group), a seeded subsample.

    These are the start cells ``waddington evaluate`` uses: control cells of the training part of the
    split (a held-out group's control cells stay in training, so ``group`` reaches them).
    """
    control = (dataset.labels == dataset.control_value) & dataset.split.train
    if group is not None:
        key, value = group
        values = group_values(dataset, key)
        if values is None:
            known = known_group_keys(dataset)
            raise PredictionError(
                f"--start-group: the run's dataset does not know obs column '{key}'. Known group keys: "
                f"{known or 'none (prepare the data with group_key=... or covariate_keys=[...] to keep one)'}.")
        present = sorted(set(values[dataset.labels == dataset.control_value].tolist()))
        if value not in set(values.tolist()):
            raise PredictionError(f"--start-group: unknown group '{value}' in '{key}'. Groups with control cells: "
                                  f"{present}.")
        control &= values == value
        if not control.any():
            raise PredictionError(f"--start-group: group '{key}={value}' has no training control cells to start "
                                  f"from. Groups with control cells: {present}.")
    rows = np.flatnonzero(control)
    if len(rows) == 0:
        raise PredictionError("The run's dataset has no training control cells to start from.")
    if n_cells is not None:
        if n_cells < 1:
            raise PredictionError(f"--n-cells must be >= 1, got {n_cells}.")
        if len(rows) > n_cells:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=n_cells, replace=False))
    return rows


# ---------------------------------------------------------------------------------------------
# names of cells
# ---------------------------------------------------------------------------------------------

def cell_names(run: Run) -> tuple[np.ndarray, str]:
    """Name of every row of the run's dataset, and how it was found.

    The prepared dataset stores the input's obs names; a dataset saved without them names its
    rows ``cell<row>``.
    """
    if run._names is None:
        run._names = _cell_names(run)
    return run._names


def _cell_names(run: Run) -> tuple[np.ndarray, str]:
    ds = run.dataset
    if ds.obs_names is not None and len(ds.obs_names) == len(ds.labels):
        return np.asarray(ds.obs_names).astype(str), "obs names of the input"
    return np.array([f"cell{i}" for i in range(len(ds.labels))]), (
        "row ids 'cell<row>' of the prepared dataset (it was saved without obs names)")


# ---------------------------------------------------------------------------------------------
# predicting
# ---------------------------------------------------------------------------------------------

@dataclass
class RunPrediction:
    """What one run predicts for each perturbation from one set of start cells.

    Attributes
    ----------
    run
        The run.
    start_rows
        Rows of the start cells in ``run.dataset``.
    start_expression
        Their observed expression (cells x genes, the run's gene space).
    start_latent
        Their latent states.
    cells, latent_end, latent_path
        Perturbation -> predicted cells x genes; latent end states (cells x d); latent paths
        (cells x (horizon + 1) x d, step 0 = start).
    perturbation_info
        Perturbation -> how it is expressed (:func:`check_perturbations`).
    latent_kind
        ``"rollout"`` when cells moved in latent space; ``"projection"`` for methods that shift
        cells in gene space (their latent change is the projection of the gene change, the path a
        straight line).
    start_score, range_constants
        Out-of-range score of each start cell and the rule's two constants
        (:class:`envs.start_range.StartRange`); ``None`` for dynamics without a start range.
    """

    run: Run
    method: str
    start_rows: np.ndarray
    start_expression: np.ndarray
    start_latent: np.ndarray
    cells: dict[str, np.ndarray]
    latent_end: dict[str, np.ndarray]
    latent_path: dict[str, np.ndarray]
    perturbation_info: dict[str, dict[str, Any]]
    latent_kind: str
    horizon: int
    start_score: np.ndarray | None = None  # out-of-range score of each start cell (envs.start_range)
    range_constants: tuple[float, float] = (float("nan"), float("nan"))  # the rule's (in range, out of range)

    @property
    def gene_names(self) -> np.ndarray:
        return np.asarray(self.run.dataset.latent_space.feature_names).astype(str)

    def delta(self, perturbation: str) -> np.ndarray:
        """Predicted mean change per gene: mean(predicted) - mean(start cells)."""
        return self.cells[perturbation].mean(axis=0) - self.start_expression.mean(axis=0)


def predict_run(run: Run, perturbations: Sequence[str], *, method: str = "trpo-ppo", start_rows: np.ndarray,
                seed: int = 0, perturbation_info: Mapping[str, dict[str, Any]] | None = None) -> RunPrediction:
    """Predict ``perturbations`` from the run's cells ``start_rows`` with ``method``.

    Rollouts use the env settings the run was trained with and the env's noise, drawn from
    ``np.random.default_rng([seed, i])`` for the i-th perturbation (reproducible).
    """
    from experiments.evaluation import baselines as B

    if method not in METHODS:
        raise PredictionError(f"Unknown method {method!r}; choose one of {list(METHODS)}.")
    ds = run.dataset
    info = dict(perturbation_info or check_perturbations(ds, list(perturbations), method))
    act = run.policy(method) if method in POLICY_METHODS else None
    needs_deltas = method in ("train-mean", "perturbation-mean", "ridge", "additive")
    try:
        dynamics = B.make_dynamics(ds, run.env_config)
    except (TypeError, ValueError) as exc:
        raise PredictionError(f"The run's env settings {run.env_config} do not fit the dynamics: {exc}") from exc
    rows = np.asarray(start_rows)
    context = B.EvalContext(dataset=ds, start_rows={p: rows for p in perturbations}, dynamics=dynamics,
                            train_delta=B.training_deltas(ds) if needs_deltas else {})
    horizon = int(dynamics.config.horizon)
    start_range = dynamics.start_range
    if act is not None and dynamics.guided and start_range is not None:
        act = ranged_policy(act, start_range, dynamics.n_latent)  # out of range the correction gives way
    X0 = np.asarray(ds.expression[rows].toarray(), dtype=np.float64)
    z0 = ds.latent[rows].astype(np.float64)
    predictors = {
        "control-mean": B.control_mean, "train-mean": B.train_mean, "perturbation-mean": B.perturbation_mean,
        "ridge": B.ridge, "drift": B.drift, "hint-controller": B.hint_controller, "additive": B.additive,
    }
    cells, ends, paths = {}, {}, {}
    kind = "rollout" if method in (*POLICY_METHODS, "drift", "hint-controller") else "projection"
    for index, name in enumerate(perturbations):
        rng = np.random.default_rng([seed, index])
        try:
            if act is not None:
                prediction = B.rollout(context, name, rng, act)
            else:
                prediction = predictors[method](context, name, rng)
        except KeyError as exc:
            raise PredictionError(f"--method {method} cannot predict '{name}': {exc.args[0]}") from exc
        except ValueError as exc:  # e.g. the policy expects another observation size
            raise PredictionError(f"--method {method} on run '{run.label}': {exc}") from exc
        X = np.asarray(prediction.cells, dtype=np.float64)
        cells[name] = X
        if prediction.latent_path is not None:
            paths[name] = np.asarray(prediction.latent_path, dtype=np.float64)
            ends[name] = paths[name][:, -1]
        else:
            # gene-space shift: its latent image is the projection of the change; a straight-line path
            space = ds.latent_space
            dz = ((X - X0) @ space.components.T) / space.scale
            steps = np.linspace(0.0, 1.0, horizon + 1)[None, :, None]
            paths[name] = z0[:, None, :] + steps * dz[:, None, :]
            ends[name] = z0 + dz
    return RunPrediction(run=run, method=method, start_rows=rows, start_expression=X0, start_latent=z0,
                         cells=cells, latent_end=ends, latent_path=paths,
                         perturbation_info={p: info[p] for p in perturbations}, latent_kind=kind, horizon=horizon,
                         start_score=None if start_range is None else start_range.score(z0),
                         range_constants=(float("nan"), float("nan")) if start_range is None
                         else (start_range.in_range, start_range.out_of_range))
