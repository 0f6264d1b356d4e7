"""PNG figures of an evaluation (matplotlib, Agg backend; no display needed).

* ``landscape.png``: the landscape potential on the plane of the first two latent dimensions
  (other dimensions held at the training mean), observed control and held-out perturbed cells,
  and simulated trajectories of the best-available policy for one perturbation.
* ``delta_top_genes.png``: observed vs predicted delta on that perturbation's top-20 DE genes.
* ``metric_bars.png``: each method's mean ± 95% CI over seeds for the main metrics.
* ``learning_curves.png``: return vs env steps of the trained methods (:mod:`experiments.evaluation.learning_curves`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.dataset import PreparedDataset
from experiments.evaluation.evaluate import HIGHER_IS_BETTER, EvaluationResult
from experiments.evaluation.learning_curves import plot_learning_curves
from experiments.evaluation.metrics import top_k_de_genes
from experiments.evaluation.range_plot import plot_start_range

__all__ = ["plot_landscape", "plot_delta_top_genes", "plot_metric_bars", "write_figures"]

_POLICY_PREFERENCE = ("TRPO->PPO", "TRPO-only", "PPO-only", "drift (a=0)")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _example(result: EvaluationResult) -> tuple[str, dict[str, Any]]:
    if not result.examples:
        raise ValueError("The evaluation kept no example predictions (keep_examples=0).")
    name = sorted(result.examples)[0]
    return name, result.examples[name]


def plot_landscape(path: str | Path, dataset: PreparedDataset, result: EvaluationResult, *, n_paths: int = 40) -> Path:
    """Potential contours in latent dims (0, 1), cells and simulated trajectories of one perturbation."""
    plt = _plt()
    name, ex = _example(result)
    method = next((m for m in _POLICY_PREFERENCE if m in ex and ex[m].latent_path is not None), None)
    train = dataset.latent[dataset.split.train].astype(np.float64)
    lo, hi = np.percentile(train[:, :2], 0.5, axis=0) - 1.0, np.percentile(train[:, :2], 99.5, axis=0) + 1.0
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    grid = np.repeat(train.mean(axis=0)[None, :], gx.size, axis=0)
    grid[:, 0], grid[:, 1] = gx.ravel(), gy.ravel()
    potential = dataset.landscape.potential(grid).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    levels = np.percentile(potential, np.linspace(0, 95, 25))
    cs = ax.contourf(gx, gy, potential, levels=np.unique(levels), cmap="viridis_r", alpha=0.8)
    fig.colorbar(cs, ax=ax, label="U(z) = -log density (other dims at training mean)")
    control = dataset.latent[dataset.cell_indices(dataset.control_value, "train")]
    observed = dataset.latent[dataset.cell_indices(name, "test")]
    ax.scatter(control[:, 0], control[:, 1], s=3, c="white", alpha=0.4, label="control (train)")
    ax.scatter(observed[:, 0], observed[:, 1], s=5, c="red", alpha=0.6, label=f"{name} (held-out)")
    if method is not None:
        paths = ex[method].latent_path
        pick = np.random.default_rng(0).choice(len(paths), size=min(n_paths, len(paths)), replace=False)
        for i in pick:
            ax.plot(paths[i, :, 0], paths[i, :, 1], c="orange", lw=0.7, alpha=0.8)
        ends = paths[pick, -1]
        ax.scatter(ends[:, 0], ends[:, 1], s=10, c="orange", marker="x", label=f"{method}: simulated end")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("latent dim 1")
    ax.set_ylabel("latent dim 2")
    ax.set_title(f"Landscape and simulated trajectories: {name}")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_delta_top_genes(path: str | Path, dataset: PreparedDataset, result: EvaluationResult, *, k: int = 20) -> Path:
    """Observed vs predicted delta (from the start controls) on one perturbation's top-k DE genes."""
    plt = _plt()
    name, ex = _example(result)
    X_ctrl, X_obs = ex["_control"], ex["_observed"]
    top = top_k_de_genes(X_ctrl, X_obs, k=k)
    mu_c = X_ctrl.mean(axis=0)
    genes = np.asarray(dataset.latent_space.feature_names)[top]
    methods = [m for m in ex if not m.startswith("_")]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(top) + 2), 4.5))
    x = np.arange(len(top))
    ax.bar(x, X_obs.mean(axis=0)[top] - mu_c[top], color="lightgray", edgecolor="black", label="observed (held-out)")
    markers = "osD^v<>ph*"
    for i, m in enumerate(methods):
        delta = ex[m].cells.mean(axis=0)[top] - mu_c[top]
        ax.scatter(x + (i - len(methods) / 2) * 0.06, delta, s=18, marker=markers[i % len(markers)], label=m, zorder=3)
    ax.axhline(0, c="black", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(genes, rotation=70, fontsize=7)
    ax.set_ylabel("delta vs start controls (log-norm.)")
    ax.set_title(f"Predicted vs observed delta, top-{len(top)} DE genes of {name}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_metric_bars(
    path: str | Path,
    rows: Sequence[dict[str, Any]],
    *,
    metrics: Sequence[str] = ("delta_pearson_top20", "delta_mse_top20", "e_distance", "wasserstein2"),
) -> Path:
    """Per metric (and split), each method's mean with 95% CI error bars over seeds."""
    from experiments.evaluation.report import _methods, summarize

    plt = _plt()
    stats = summarize(rows)
    splits = sorted({r["split"] for r in rows})
    fig, axes = plt.subplots(len(splits), len(metrics), figsize=(4.2 * len(metrics), 3.6 * len(splits)), squeeze=False)
    for i, split in enumerate(splits):
        methods = _methods(rows, split)
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            means = [stats.get((split, m, metric), {}).get("mean", np.nan) for m in methods]
            cis = [stats.get((split, m, metric), {}).get("ci", np.nan) for m in methods]
            colors = ["tab:orange" if m in ("TRPO->PPO", "TRPO-only", "PPO-only") else "tab:gray" for m in methods]
            ax.bar(np.arange(len(methods)), means, yerr=np.nan_to_num(cis), color=colors, capsize=3)
            ax.set_xticks(np.arange(len(methods)))
            ax.set_xticklabels(methods, rotation=60, ha="right", fontsize=7)
            arrow = "↑ better" if HIGHER_IS_BETTER[metric] else "↓ better"
            ax.set_title(f"{metric} ({arrow})\n{split}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_figures(
    out: str | Path, dataset: PreparedDataset, result: EvaluationResult, rows, runs: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """Write the PNGs into ``out`` (learning curves where ``runs`` carry them); returns their file names."""
    out = Path(out)
    names = [
        plot_landscape(out / "landscape.png", dataset, result).name,
        plot_delta_top_genes(out / "delta_top_genes.png", dataset, result).name,
        plot_metric_bars(out / "metric_bars.png", rows).name,
    ]
    curves = plot_learning_curves(out / "learning_curves.png", runs)
    in_range = plot_start_range(out / "start_range.png", result)
    return names + [p.name for p in (curves, in_range) if p is not None]
