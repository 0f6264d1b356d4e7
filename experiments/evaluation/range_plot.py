"""The report's out-of-range figure: start cells' scores beside the paired training starts' own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.evaluation.evaluate import EvaluationResult

__all__ = ["plot_start_range"]


def plot_start_range(path: str | Path, result: EvaluationResult) -> Path | None:
    """Histogram of the start cells' out-of-range scores (:mod:`envs.start_range`) with the rule's constants.

    Returns ``None`` (no file) when the evaluation had no start range.
    """
    scores = result.start_scores
    r = result.info.get("start_range") or {}
    if not scores or not r:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, reference = np.asarray(scores["start"]), np.asarray(scores["reference"])
    top = max(float(np.max(start)), float(np.max(reference)), r["out_of_range"]) * 1.05
    bins = np.linspace(0.0, top, 60)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    ax.hist(reference, bins=bins, density=True, alpha=0.5, color="grey", label="paired training starts (own)")
    ax.hist(start, bins=bins, density=True, alpha=0.6, color="tab:blue", label="start cells of the prediction")
    ax.axvline(r["in_range"], color="tab:green", ls="--", label=f"weight < 1 past {r['in_range']:g}")
    ax.axvline(r["out_of_range"], color="tab:red", ls="--", label=f"weight 0 from {r['out_of_range']:g}")
    ax.set_xlabel("out-of-range score (k-NN distance to paired starts / their own median)")
    ax.set_ylabel("density")
    ax.set_title(f"Start cells out of range: {100 * r['share_out_of_range']:.1f}% (far: {100 * r['share_far']:.1f}%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
