"""Helpers shared by the pipeline/CLI/cluster tests: tiny data and tiny two-stage settings."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WADDINGTON = [sys.executable, "-m", "experiments.cli"]


def tiny_settings(**overrides):
    """Settings small enough for CI: 256-step batches, 5 epochs x minibatch 128, 2 + 2 iterations."""
    s = dict(
        trpo_iters=2,
        ppo_iters=2,
        train_batch_size=256,
        ppo_minibatch_size=128,
        ppo_num_epochs=5,
        num_envs_per_env_runner=8,
        num_env_runners=0,
        fcnet_hiddens=[32, 32],
        handoff_num_obs=64,
    )
    s.update(overrides)
    return s


@functools.lru_cache(maxsize=1)
def tiny_dataset():
    """A small prepared CellState dataset (a few hundred cells), env view only."""
    import envs

    adata = envs.make_synthetic_perturbation_data(
        n_perturbations=3, n_control_cells=200, n_cells_per_perturbation=80, n_genes=60, seed=0
    )
    ds = envs.prepare_dataset(adata, perturbation_key="perturbation", control_value="control", n_latent=4,
                              n_top_genes=60, max_pair_cells=200, seed=0)
    return ds.env_view()


def subprocess_env(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env
