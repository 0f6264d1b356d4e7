"""The main job shows the answer: predicted vs true gene-level effect of every synthetic perturbation.

The synthetic default (:func:`envs.make_synthetic_perturbation_data`) knows each population's
noise-free mean log-normalized expression (``dataset.truth['conditions'][name]['expression_mean']``,
over all generated genes). The check is the one ``tests/test_env.py`` applies to the scripted
controller: the Pearson correlation, over the run's genes, of

* the predicted change: mean(predicted cells) - mean(their start control cells), and
* the true change: ``expression_mean[p] - expression_mean[control]`` on the same genes,

both in the same log-normalized gene space. :func:`summarize_truth` predicts every perturbation of
the data, prints one row per perturbation (delta Pearson, its top genes; the train-mean shortcut
and the landscape's drift alone as references), and writes ``truth_check.tsv`` and
``truth_check.png`` (predicted vs true delta on each perturbation's top genes).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset
from experiments.evaluation.metrics.deltas import pearson_or_zero
from experiments.prediction.predict import RunPrediction, predict_run, select_start_rows
from experiments.prediction.runs import (
    POLICY_METHODS,
    PredictionError,
    Run,
    load_run,
    run_from_dataset,
)

__all__ = ["TruthCheck", "format_truth_table", "summarize_truth", "true_deltas", "truth_rows"]

#: Reference methods scored next to the policy.
REFERENCES = ("train-mean", "drift")


@dataclass
class TruthCheck:
    """Result of :func:`summarize_truth`: one row per perturbation and the files written."""

    rows: list[dict[str, Any]]
    table: Path
    figure: Path | None
    method: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.table, self.figure) if p is not None]


def _truth_gene_rows(dataset: PreparedDataset) -> np.ndarray:
    """Index of each of the run's genes in the generator's gene order (names ``G000``, ``G001``, ...)."""
    names = [str(g) for g in dataset.latent_space.feature_names]
    try:
        return np.array([int(name[1:]) for name in names])
    except ValueError as exc:
        raise PredictionError("The dataset's genes are not the synthetic generator's (G000, G001, ...).") from exc


def true_deltas(dataset: PreparedDataset) -> dict[str, np.ndarray]:
    """Perturbation -> noise-free true mean change per gene of the run (vs control), from ``dataset.truth``."""
    if not dataset.truth or "conditions" not in dataset.truth:
        raise PredictionError("This dataset has no generator truth: only the synthetic default "
                              "(envs.make_synthetic_perturbation_data) knows the true effects.")
    conditions = dataset.truth["conditions"]
    rows = _truth_gene_rows(dataset)
    control = np.asarray(conditions[dataset.control_value]["expression_mean"], dtype=np.float64)[rows]
    return {name: np.asarray(c["expression_mean"], dtype=np.float64)[rows] - control
            for name, c in conditions.items() if name != dataset.control_value}


def truth_rows(prediction: RunPrediction, *, top_k: int = 5,
               references: dict[str, RunPrediction] | None = None) -> list[dict[str, Any]]:
    """One row per predicted perturbation: delta Pearson vs the truth and the top genes."""
    ds = prediction.run.dataset
    truth = true_deltas(ds)
    genes = prediction.gene_names
    rows = []
    for name in prediction.cells:
        if name not in truth:
            continue
        predicted, true = prediction.delta(name), truth[name]
        top_true = np.argsort(-np.abs(true), kind="stable")[:top_k]
        top_pred = np.argsort(-np.abs(predicted), kind="stable")[:top_k]
        row = {
            "perturbation": name,
            "seen_in_training": bool(prediction.perturbation_info[name]["seen_in_training"]),
            "method": prediction.method,
            "delta_pearson": pearson_or_zero(predicted, true),
            "top_true_genes": ",".join(f"{genes[i]}:{true[i]:+.2f}/{predicted[i]:+.2f}" for i in top_true),
            "top_predicted_genes": ",".join(f"{genes[i]}:{predicted[i]:+.2f}" for i in top_pred),
            "top_genes_sign_agreement": float(np.mean(np.sign(predicted[top_true]) == np.sign(true[top_true]))),
            "n_cells": len(prediction.start_rows),
        }
        for label, ref in (references or {}).items():
            row[f"{label}_delta_pearson"] = pearson_or_zero(ref.delta(name), true)
        rows.append(row)
    return rows


def format_truth_table(rows: Sequence[dict[str, Any]]) -> str:
    """The printed table: perturbation, held out?, delta Pearson (method and references), top genes."""
    if not rows:
        return "(no perturbation with known truth)"
    refs = [k for k in rows[0] if k.endswith("_delta_pearson")]
    method = rows[0]["method"]
    header = ["perturbation", "in training", f"r ({method})", *[f"r ({k[:-len('_delta_pearson')]})" for k in refs],
              "top genes by true |delta| (gene:true/predicted delta)"]
    lines = []
    for r in rows:
        lines.append([r["perturbation"], "yes" if r["seen_in_training"] else "held out", f"{r['delta_pearson']:.3f}",
                      *[f"{r[k]:.3f}" for k in refs], ",".join(r["top_true_genes"].split(",")[:3])])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    out = [fmt.format(*header), fmt.format(*["-" * w for w in widths], "-" * len(header[-1]))]
    out += [fmt.format(*line) for line in lines]
    mean = np.mean([r["delta_pearson"] for r in rows])
    out.append(f"mean delta Pearson vs the generator's noise-free truth ({method}): {mean:.3f}")
    return "\n".join(out)


def _write_table(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def _plot(path: Path, prediction: RunPrediction, rows: Sequence[dict[str, Any]], *, n_genes: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = true_deltas(prediction.run.dataset)
    genes = prediction.gene_names
    names = [r["perturbation"] for r in rows]
    ncols = min(4, len(names))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows):
        name = row["perturbation"]
        true, predicted = truth[name], prediction.delta(name)
        top = np.argsort(-np.abs(true), kind="stable")[:n_genes]
        x = np.arange(len(top))
        ax.bar(x - 0.2, true[top], width=0.4, color="0.35", label="true (noise-free)")
        ax.bar(x + 0.2, predicted[top], width=0.4, color="tab:orange", label=f"predicted ({prediction.method})")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(x)
        ax.set_xticklabels(genes[top], rotation=60, fontsize=7)
        held = "" if row["seen_in_training"] else ", held out"
        ax.set_title(f"{name}{held}: r = {row['delta_pearson']:.2f}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0, 0].set_ylabel("delta log-normalized expression", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("Predicted vs true mean change of each perturbation's top genes (r: delta Pearson, all genes)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summarize_truth(
    source: str | os.PathLike | Run | tuple[PreparedDataset, Any],
    *,
    out_dir: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    method: str = "trpo-ppo",
    perturbations: Sequence[str] | None = None,
    n_cells: int = 500,
    seed: int = 0,
    top_k: int = 5,
    references: Sequence[str] = REFERENCES,
    verbose: bool = True,
    print_fn: Callable[[str], None] = print,
) -> TruthCheck:
    """Predict every synthetic perturbation and compare with the generator's truth; write a table and a PNG.

    Parameters
    ----------
    source
        A run directory (``waddington train -o DIR`` on the synthetic default), a loaded
        :class:`~experiments.prediction.predict.Run`, or ``(dataset, policy)`` where ``policy`` is an
        ``act(obs) -> actions`` function or a checkpoint directory (scored as ``method``).
    out_dir
        Where ``truth_check.tsv`` and ``truth_check.png`` go (created if needed).
    settings
        With ``(dataset, policy)``: the run's settings (``TwoStageSettings.to_dict()``); their
        ``env_config`` (horizon, dt, ...) sets the rollout dynamics. A run directory brings its own.
    method
        The method to judge (default the TRPO -> PPO policy).
    perturbations
        Default: every perturbation of the data.
    n_cells, seed
        Start control cells (seeded subsample of the training controls; 500 keep the check to a few
        seconds on 2 cores, and the mean change of 500 cells is stable to ~0.01 in r) and the rollout seed.
    top_k
        Top genes per perturbation in the table.
    references
        Baselines scored on the same start cells for context (``train-mean``, ``drift``; ``()``: none).
    verbose
        Print the table and the line saying where the files are.

    Returns
    -------
    :class:`TruthCheck` with ``rows`` (``perturbation``, ``seen_in_training``, ``delta_pearson``,
    ``<reference>_delta_pearson``, ``top_true_genes``, ``top_predicted_genes``, ...) and the paths.
    """
    if isinstance(source, Run):
        run = source
    elif isinstance(source, tuple):
        dataset, policy = source
        run = run_from_dataset(dataset, policies={method: policy} if method in POLICY_METHODS else {},
                               settings=settings)
    else:
        run = load_run(source, need_checkpoints=method in POLICY_METHODS)
    truth = true_deltas(run.dataset)
    names = list(perturbations) if perturbations is not None else [p for p in run.dataset.perturbations if p in truth]
    rows_idx = select_start_rows(run.dataset, n_cells=n_cells, seed=seed)
    prediction = predict_run(run, names, method=method, start_rows=rows_idx, seed=seed)
    refs = {ref: predict_run(run, names, method=ref, start_rows=rows_idx, seed=seed) for ref in references
            if ref != method}
    rows = truth_rows(prediction, top_k=top_k, references=refs)
    if not rows:
        raise PredictionError(f"None of {names} has a known truth.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = _write_table(out / "truth_check.tsv", rows)
    figure: Path | None
    try:
        figure = _plot(out / "truth_check.png", prediction, rows)
    except Exception as exc:  # a figure must not lose the numbers
        print_fn(f"warning: truth_check.png failed: {exc!r}")
        figure = None
    if verbose:
        print_fn("\nPredicted vs true effect of each perturbation (delta Pearson over genes, "
                 "generator's noise-free truth)")
        print_fn(format_truth_table(rows))
        where = f"{table}" + (f" and {figure}" if figure else "")
        print_fn(f"truth check: {where}")
    return TruthCheck(rows=rows, table=table, figure=figure, method=method)
