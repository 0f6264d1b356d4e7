"""Honest evaluation: score every method on held-out cells in gene space, one row per number.

For one prepared dataset (one split, one seed) :func:`evaluate_dataset` asks every method
(:mod:`experiments.evaluation.baselines` and the trained policies) to predict, for each evaluated
perturbation, perturbed cells from the *start* control cells, and compares them with the observed
held-out perturbed cells:

* evaluated perturbations: those with test cells (held-out cells: every perturbation; held-out
  perturbations: the held-out ones; held-out group: the perturbations of that group);
* start cells (and the control reference of every delta): the *training* control cells (a
  seeded subsample of at most ``max_start_cells``), or, for a group split, the held-out group's
  own control cells (training cells too: only its perturbed cells are held out);
* observed cells: the *test* cells of the perturbation (``dataset.expression`` rows).

Metrics (:mod:`experiments.evaluation.metrics`), per perturbation, then averaged over perturbations:

* ``delta_pearson_all``, ``delta_mse_all``, ``delta_pearson_top20``, ``delta_mse_top20``: the
  predicted vs observed mean change from the start controls, on all HVGs and on the 20 genes
  with the largest observed ``|delta|``; ``delta_pearson_top100`` as scPerturBench reports it
  (100 genes, or all genes when there are fewer);
* ``r2_mean_all``, ``r2_mean_top100``: scGen's convention, the squared Pearson of the per-gene
  *mean expression* of predicted vs observed cells (not of deltas; a do-nothing prediction
  scores high when the means are alike), for comparison with published numbers;
* ``e_distance`` (squared energy distance, Euclidean) and ``wasserstein2`` (exact W2, POT)
  between predicted and observed cells in one fixed PCA space (fitted on the training cells'
  expression, at most 50 components);
* ``dtw``: DTW between the method's mean trajectory and the observed one, both in that PCA space.
  Observed trajectory: the start controls and the observed perturbed cells pooled, each given a
  pseudotime = its projection on the axis from the control mean to the perturbed mean (0 at the
  control mean, 1 at the perturbed mean), then averaged in ``horizon + 1`` equal-width pseudotime
  bins (:func:`experiments.evaluation.metrics.binned_mean_trajectory`). Simulated trajectory: the mean
  predicted state at each of the ``horizon + 1`` steps (for the non-dynamic baselines a straight
  line from the start mean to the predicted mean).
* ``de_genes``, ``de_genes_observed``: genes a Welch t-test with Benjamini-Hochberg q < 0.05 calls
  changed vs the start controls, in the predicted and in the real cells (read side by side, not
  ranked: doing nothing scores 0, a deterministic shift makes every shifted gene significant);
* ``paper_start_end`` (the seed paper's metric, mean |end - start| per latent dim): reported for
  comparison only, never to rank; a do-nothing policy scores its optimum 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset
from envs.start_range import ranged_policy
from experiments.evaluation import cell_eval_scores as CE
from experiments.evaluation import metrics as M
from experiments.evaluation.baselines import (
    BASELINES,
    EvalContext,
    Prediction,
    Predictor,
    make_dynamics,
    rollout,
    training_deltas,
)
from experiments.evaluation.references import REFERENCES

__all__ = [
    "METRICS",
    "DE_COUNTS",
    "HIGHER_IS_BETTER",
    "SPLIT_LABELS",
    "EvaluationResult",
    "build_context",
    "evaluated_perturbations",
    "observed_trajectory",
    "policy_predictor",
    "start_range_summary",
    "score_prediction",
    "evaluate_dataset",
]

#: Metrics of the report, in column order.
METRICS = (
    "delta_pearson_all",
    "delta_pearson_top20",
    "delta_pearson_top100",
    "delta_mse_all",
    "delta_mse_top20",
    "e_distance",
    "wasserstein2",
    "dtw",
    "r2_mean_all",
    "r2_mean_top100",
)
#: The field's top-k (scPerturBench: delta Pearson on the top-100 DE genes; scGen: R^2 on them).
FIELD_TOP_K = 100
#: Reported but never used to rank (the seed paper's metric; do-nothing wins it).
COMPARISON_ONLY = ("paper_start_end",)
#: DE-gene counts of the prediction and of the real cells (read side by side; a do-nothing prediction has 0).
DE_COUNTS = ("de_genes", "de_genes_observed")
HIGHER_IS_BETTER = {m: m.startswith(("delta_pearson", "r2_")) for m in METRICS + COMPARISON_ONLY + DE_COUNTS}
HIGHER_IS_BETTER.update({m: m not in CE.LOWER_IS_BETTER for m in CE.CELL_EVAL_COLUMNS})
SPLIT_LABELS = {"cells": "held-out cells", "perturbations": "held-out perturbations", "group": "held-out group"}


@dataclass
class EvaluationResult:
    """Scores of one dataset (one split, one seed).

    Attributes
    ----------
    rows
        One dict per method x metric (mean over evaluated perturbations): ``method``, ``split``,
        ``metric``, ``seed``, ``value``, ``n_perturbations``.
    per_perturbation
        One dict per method x perturbation x metric (same keys plus ``perturbation``).
    examples
        For plots: perturbation -> method -> :class:`Prediction`, plus observed/controls
        under the keys ``"_observed"`` / ``"_control"`` (only for ``keep_examples`` perturbations).
    info
        What was evaluated: perturbations, start/observed cell counts, PCA dimension, and
        ``start_range``: the share of start cells out of range (:func:`start_range_summary`).
    start_scores
        ``"start"``: the out-of-range score of every start cell; ``"reference"``: the paired
        training starts' own (leave-one-out) scores; empty without a range (unguided dynamics).
    """

    rows: list[dict[str, Any]]
    per_perturbation: list[dict[str, Any]]
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    start_scores: dict[str, np.ndarray] = field(default_factory=dict)


def evaluated_perturbations(dataset: PreparedDataset) -> list[str]:
    """Perturbations with observed test cells, which the split asks to predict."""
    names = [p for p in dataset.perturbations if len(dataset.cell_indices(p, "test"))]
    if dataset.split.kind == "perturbations":
        names = [p for p in names if p in dataset.split.heldout_perturbations]
    if not names:
        raise ValueError(
            f"The '{dataset.split.kind}' split leaves no perturbation with held-out test cells to evaluate."
        )
    return names


def start_rows(
    dataset: PreparedDataset, *, max_cells: int, seed: int, perturbation: str | None = None
) -> np.ndarray:
    """Row indices of the start control cells (see the module docstring), a seeded subsample.

    With covariates and a ``perturbation``, the start cells are drawn from each covariate
    combination in proportion to that perturbation's observed cells there (combinations without
    control cells are skipped), so the control reference of its delta matches its composition.
    """
    control = (dataset.labels == dataset.control_value) & dataset.split.train
    if dataset.split.kind == "group":
        control &= dataset.groups == dataset.split.heldout_group
    rows = np.flatnonzero(control)
    if len(rows) == 0:
        raise ValueError("No training control cells to start from.")
    rng = np.random.default_rng(seed)
    if dataset.covariates is not None and perturbation is not None:
        return _composition_matched(dataset.covariates, rows, dataset.cell_indices(perturbation, "test"),
                                    max_cells=max_cells, rng=rng)
    if len(rows) > max_cells:
        rows = np.sort(rng.choice(rows, size=max_cells, replace=False))
    return rows


def _composition_matched(
    strata: np.ndarray, rows: np.ndarray, observed: np.ndarray, *, max_cells: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``max_cells`` of ``rows``, drawn per stratum in proportion to ``observed``'s strata."""
    names, counts = np.unique(strata[observed], return_counts=True)
    available = {name: rows[strata[rows] == name] for name in names}
    keep = [i for i, name in enumerate(names) if len(available[names[i]])]
    if not keep:
        return np.sort(rng.choice(rows, size=min(max_cells, len(rows)), replace=False))
    share = counts[keep] / counts[keep].sum()
    chosen = []
    for name, fraction in zip(names[keep], share):
        pool = available[name]
        n = min(len(pool), max(1, int(round(fraction * max_cells))))
        chosen.append(rng.choice(pool, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


def build_context(
    dataset: PreparedDataset,
    *,
    env_config: Mapping[str, Any] | None = None,
    max_start_cells: int = 1000,
    seed: int = 0,
) -> EvalContext:
    """The shared inputs of every predictor for ``dataset`` (needs ``dataset.expression``)."""
    if dataset.expression is None:
        raise ValueError("Evaluation needs the dataset's expression matrix (a full prepared dataset, not env_view()).")
    names = evaluated_perturbations(dataset)
    return EvalContext(
        dataset=dataset,
        start_rows={p: start_rows(dataset, max_cells=max_start_cells, seed=seed, perturbation=p) for p in names},
        dynamics=make_dynamics(dataset, dict(env_config or {})),
        train_delta=training_deltas(dataset),
    )


def policy_predictor(act) -> Predictor:
    """A predictor that rolls the env dynamics with a policy's deterministic actions.

    With guided dynamics and a start range (:mod:`envs.start_range`), each cell's correction is
    scaled by its start cell's weight: out of range the policy gives way to the guide.
    """

    def predict(context: EvalContext, perturbation: str, rng: np.random.Generator) -> Prediction:
        dyn = context.dynamics
        ranged = ranged_policy(act, dyn.start_range, dyn.n_latent) \
            if dyn.guided and dyn.start_range is not None else act
        return rollout(context, perturbation, rng, ranged)

    return predict


def start_range_summary(context: EvalContext) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The out-of-range line of the report and the scores of its figure, for the start cells of ``context``.

    Returns ``(summary, scores)``: the share of start cells past the rule's first constant (weight
    below 1) and past its second (weight 0), the median score, the constants; the start cells' and
    the paired training starts' scores. Both empty without a start range.
    """
    start_range = context.dynamics.start_range
    if start_range is None:
        return {}, {}
    rows = np.unique(np.concatenate(list(context.start_rows.values())))
    start = start_range.score(context.dataset.latent[rows])
    reference = start_range.score(start_range.states)
    summary = {"n_start_cells": int(len(rows)), "share_out_of_range": float(np.mean(start > start_range.in_range)),
               "share_far": float(np.mean(start >= start_range.out_of_range)),
               "median_score": float(np.median(start)), "in_range": start_range.in_range,
               "out_of_range": start_range.out_of_range, "policy_shrunk": bool(context.dynamics.guided)}
    return summary, {"start": start, "reference": reference}


def observed_trajectory(X_ctrl_pc: np.ndarray, X_obs_pc: np.ndarray, *, n_bins: int) -> np.ndarray:
    """Observed pseudotime-ordered mean trajectory from controls to perturbed cells (PCA space).

    Pseudotime of a cell: its projection on the control-mean -> perturbed-mean axis, scaled so
    the control mean is 0 and the perturbed mean 1; bins of equal width over the observed range.
    """
    mu_c, mu_o = X_ctrl_pc.mean(axis=0), X_obs_pc.mean(axis=0)
    axis = mu_o - mu_c
    pooled = np.vstack([X_ctrl_pc, X_obs_pc])
    norm2 = float(axis @ axis)
    if norm2 == 0.0:
        return pooled.mean(axis=0, keepdims=True)
    pseudotime = (pooled - mu_c) @ axis / norm2
    return M.binned_mean_trajectory(pooled, pseudotime, n_bins=n_bins)


class _CellEvalInputs:
    """Seeded subsamples of each perturbation's real and predicted cells, then cell-eval's rows per method."""

    def __init__(self, n_cells: int, seed: int):
        self.n_cells, self.rng = int(n_cells), np.random.default_rng([seed, 99])
        self.control: list[np.ndarray] = []
        self.real: dict[str, np.ndarray] = {}
        self.predicted: dict[str, dict[str, np.ndarray]] = {}

    def _sample(self, X: np.ndarray) -> np.ndarray:
        if len(X) > self.n_cells:
            X = X[np.sort(self.rng.choice(len(X), size=self.n_cells, replace=False))]
        return np.asarray(X, dtype=np.float32)

    def add_real(self, perturbation: str, control: np.ndarray, observed: np.ndarray) -> None:
        self.control.append(self._sample(control))
        self.real[perturbation] = self._sample(observed)

    def add_predicted(self, method: str, perturbation: str, cells: np.ndarray) -> None:
        self.predicted.setdefault(method, {})[perturbation] = self._sample(cells)

    def rows(self, genes, *, split: str, seed: int) -> list[dict[str, Any]]:
        control = np.vstack(self.control)
        control = self._sample(control) if len(control) > 2 * self.n_cells else control
        out = []
        for method, cells in self.predicted.items():
            scores = CE.cell_eval_scores(control, self.real, cells, genes)
            out += [dict(method=method, split=split, metric=m, seed=seed, value=v, n_perturbations=len(cells))
                    for m, v in scores.items()]
        return out


def score_prediction(
    prediction: Prediction,
    X_ctrl: np.ndarray,
    X_obs: np.ndarray,
    *,
    pca,
    observed_traj_pc: np.ndarray,
    k: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """All metrics of one method on one perturbation (see the module docstring); top-k keys name ``k``."""
    d = M.delta_metrics(X_ctrl, X_obs, prediction.cells, k=k)
    wide = M.delta_metrics(X_ctrl, X_obs, prediction.cells, k=FIELD_TOP_K)
    out = {
        "delta_pearson_all": d.pearson_all,
        f"delta_pearson_top{k}": d.pearson_top_k,
        f"delta_pearson_top{FIELD_TOP_K}": wide.pearson_top_k,
        "delta_mse_all": d.mse_all,
        f"delta_mse_top{k}": d.mse_top_k,
        "r2_mean_all": M.mean_expression_r2(X_obs, prediction.cells),
        f"r2_mean_top{FIELD_TOP_K}": M.mean_expression_r2(X_obs, prediction.cells, genes=wide.top_k_genes),
    }
    P_pc = np.asarray(pca.transform(prediction.cells), dtype=np.float64)
    O_pc = np.asarray(pca.transform(X_obs), dtype=np.float64)
    out["e_distance"] = M.e_distance(P_pc, O_pc, seed=seed).value
    out["wasserstein2"] = M.wasserstein2(P_pc, O_pc, seed=seed).value
    sim_traj = np.asarray(pca.transform(prediction.trajectory), dtype=np.float64)
    out["dtw"] = M.dtw_distance(sim_traj, observed_traj_pc)
    out["de_genes"] = M.de_gene_count(X_ctrl, prediction.cells)
    out["de_genes_observed"] = M.de_gene_count(X_ctrl, X_obs)
    if prediction.latent_start is not None and prediction.latent_end is not None:
        out["paper_start_end"] = M.paper_start_end_metric(prediction.latent_start, prediction.latent_end).mean
    return out


def evaluate_dataset(
    dataset: PreparedDataset,
    methods: Mapping[str, Predictor] | None = None,
    *,
    seed: int = 0,
    env_config: Mapping[str, Any] | None = None,
    max_start_cells: int = 1000,
    n_pcs: int = 50,
    keep_examples: int = 2,
    split_label: str | None = None,
    references: bool = True,
    cell_eval: bool = False,
    cell_eval_cells: int = 200,
) -> EvaluationResult:
    """Score ``methods`` (default: :data:`experiments.evaluation.baselines.BASELINES`) on ``dataset``.

    Parameters
    ----------
    dataset
        A full prepared dataset (with ``expression``); its split says what is held out.
    methods
        Report name -> predictor. A predictor that raises ``KeyError`` for a perturbation (e.g.
        ``perturbation-mean`` for an unseen one) is skipped for it.
    seed
        Seed of the start-cell subsample, the dynamics noise and the metric subsamples; also the
        ``seed`` of every row.
    env_config
        Env settings the policies were trained with (horizon, dt, action_scale, noise_std).
    max_start_cells
        At most this many start control cells (seeded subsample).
    n_pcs
        Components of the fixed PCA (capped by the gene and cell counts).
    keep_examples
        Keep the predictions of this many perturbations (those with most test cells) for plots.
    split_label
        Name of the split in the rows (default from the split kind).
    references
        Also score the reference rows ``latent-ceiling`` and ``oracle-controller``
        (:mod:`experiments.evaluation.references`) where the perturbation has training cells.
    cell_eval, cell_eval_cells
        Also score every method with cell-eval (:mod:`experiments.evaluation.cell_eval_scores`), on
        at most ``cell_eval_cells`` predicted and real cells per perturbation (seeded subsamples).
    """
    methods = dict(BASELINES if methods is None else methods)
    if references:
        methods.update(REFERENCES)
    context = build_context(dataset, env_config=env_config, max_start_cells=max_start_cells, seed=seed)
    split = split_label or SPLIT_LABELS.get(dataset.split.kind, dataset.split.kind)
    names = sorted(context.start_rows)
    expr = dataset.expression
    train_rows = np.flatnonzero(dataset.split.train)
    rng_pca = np.random.default_rng(seed)
    if len(train_rows) > 5000:
        train_rows = np.sort(rng_pca.choice(train_rows, size=5000, replace=False))
    reference = expr[train_rows].toarray()
    pca = M.fixed_pca(reference, min(n_pcs, *reference.shape), seed=seed)
    by_size = sorted(names, key=lambda p: -len(dataset.cell_indices(p, "test")))
    example_names = set(by_size[:keep_examples])
    per_pert: list[dict[str, Any]] = []
    examples: dict[str, dict[str, Any]] = {}
    for_cell_eval = _CellEvalInputs(cell_eval_cells, seed) if cell_eval else None
    for p_index, p in enumerate(names):
        X_ctrl = context.start_expression(p)
        X_obs = expr[dataset.cell_indices(p, "test")].toarray().astype(np.float64)
        if for_cell_eval is not None:
            for_cell_eval.add_real(p, X_ctrl, X_obs)
        obs_traj = observed_trajectory(
            np.asarray(pca.transform(X_ctrl)), np.asarray(pca.transform(X_obs)), n_bins=context.horizon + 1
        )
        if p in example_names:
            examples[p] = {"_observed": X_obs, "_control": X_ctrl}
        for method, predict in methods.items():
            # the same noise stream for every method on a perturbation: paired comparisons
            rng = np.random.default_rng([seed, p_index])
            try:
                prediction = predict(context, p, rng)
            except KeyError:
                continue
            if for_cell_eval is not None:
                for_cell_eval.add_predicted(method, p, prediction.cells)
            scores = score_prediction(prediction, X_ctrl, X_obs, pca=pca, observed_traj_pc=obs_traj, seed=seed)
            for metric, value in scores.items():
                per_pert.append(dict(method=method, split=split, metric=metric, seed=seed, perturbation=p,
                                     value=float(value)))
            if p in example_names:
                examples[p][method] = prediction
    rows = []
    for method in methods:
        for metric in METRICS + COMPARISON_ONLY + DE_COUNTS:
            values = [r["value"] for r in per_pert if r["method"] == method and r["metric"] == metric]
            if values:
                rows.append(dict(method=method, split=split, metric=metric, seed=seed,
                                 value=float(np.mean(values)), n_perturbations=len(values)))
    if for_cell_eval is not None:
        rows += for_cell_eval.rows(dataset.latent_space.feature_names, split=split, seed=seed)
    range_info, range_scores = start_range_summary(context)
    info = {
        "start_range": range_info,
        "split": split,
        "split_kind": dataset.split.kind,
        "perturbations": names,
        "n_start_cells": int(len(next(iter(context.start_rows.values())))),
        "n_observed_cells": {p: int(len(dataset.cell_indices(p, "test"))) for p in names},
        "n_pcs": int(pca.n_components_),
        "horizon": context.horizon,
        "heldout_perturbations": list(dataset.split.heldout_perturbations),
        "heldout_group": dataset.split.heldout_group,
        "group_key": dataset.split.group_key,
    }
    return EvaluationResult(rows=rows, per_perturbation=per_pert, examples=examples, info=info,
                            start_scores=range_scores)
