"""Learning curves of an evaluation: return vs env steps for TRPO -> PPO, TRPO-only and PPO-only, mean and band over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["method_curves", "curve_band", "plot_learning_curves"]


def method_curves(run: dict[str, Any]) -> dict[str, np.ndarray]:
    """(env steps, return) arrays of one seed's runs, from the ``runs`` entries of ``metrics.json``.

    TRPO -> PPO continues stage 1's curve, its env steps offset by stage 1's; TRPO-only is stage 1
    alone; PPO-only is the random-init ablation.
    """
    out: dict[str, np.ndarray] = {}
    two_stage = run.get("two_stage") or {}
    stage1 = np.asarray(two_stage.get("stage1_curve") or [], dtype=float).reshape(-1, 2)
    stage2 = np.asarray(two_stage.get("ppo_curve") or [], dtype=float).reshape(-1, 2)
    if len(stage1):
        out["TRPO-only" if two_stage.get("stage1_algorithm", "trpo") == "trpo" else "stage-1 PPO"] = stage1
    if len(stage1) and len(stage2):
        offset = float(two_stage.get("stage1_env_steps") or stage1[-1, 0])
        out["TRPO->PPO"] = np.vstack([stage1, stage2 + np.array([offset, 0.0])])
    ppo_only = np.asarray((run.get("ppo_only") or {}).get("curve") or [], dtype=float).reshape(-1, 2)
    if len(ppo_only):
        out["PPO-only"] = ppo_only
    return out


def curve_band(curves: Sequence[np.ndarray], n_points: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) over seeds on a common grid up to the shortest curve's last step.

    Each curve is linearly interpolated; the band is the min..max over seeds.
    """
    end = min(float(c[-1, 0]) for c in curves)
    start = max(float(c[0, 0]) for c in curves)
    grid = np.linspace(start, end, n_points) if end > start else np.array([end])
    values = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
    return grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def plot_learning_curves(path: str | Path, runs: Sequence[dict[str, Any]]) -> Path | None:
    """``learning_curves.png``: one line (mean) and band (min..max) per method over the seeds; None without curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[np.ndarray]] = {}
    for run in runs:
        for method, curve in method_curves(run).items():
            by_method.setdefault(method, []).append(curve)
    if not by_method:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method in ("TRPO->PPO", "TRPO-only", "stage-1 PPO", "PPO-only"):
        if method not in by_method:
            continue
        steps, mean, low, high = curve_band(by_method[method])
        ax.plot(steps, mean, label=f"{method} (n={len(by_method[method])})")
        ax.fill_between(steps, low, high, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean episode return")
    ax.set_title("Learning curves: mean and min..max over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
