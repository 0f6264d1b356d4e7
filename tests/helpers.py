"""Helpers shared by the tests: tiny data made in memory, tiny two-stage settings, the shared real data, subprocess env."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

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


SHARED_DATA = Path(os.environ.get("WADDINGTON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PAPALEXI = SHARED_DATA / "papalexi2021_thp1_crispr.h5ad"
KANG = SHARED_DATA / "kang2018_pbmc_ifnb.h5ad"


def require_file(path: Path) -> Path:
    """Skip (with the path in the reason) when a shared real data set is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set WADDINGTON_SHARED_DATA to its folder")
    return path


def tiny_counts_adata(n_per_group: int = 30, n_genes: int = 40, groups=("ctrl", "A", "B"), seed: int = 0):
    """A tiny raw-count AnnData with a perturbation column, made in memory."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for shift, name in enumerate(groups):
        rate = np.full(n_genes, 3.0)
        rate[shift % n_genes] *= 4.0
        blocks.append(rng.poisson(rate, size=(n_per_group, n_genes)))
        labels += [name] * n_per_group
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=[f"g{i}" for i in range(n_genes)])
    return ad.AnnData(X=np.vstack(blocks).astype(np.float32), obs=obs, var=var)


def tiny_two_type_adata():
    """:func:`tiny_counts_adata` with 3 perturbations (A, B, C) and a ``cell_type`` column (T, B alternating)."""
    import numpy as np

    adata = tiny_counts_adata(n_per_group=60, n_genes=40, groups=("ctrl", "A", "B", "C"), seed=1)
    adata.obs["cell_type"] = np.where(np.arange(adata.n_obs) % 2 == 0, "T", "B")
    return adata


def tiny_prepared(split: str = "cells", holdout=(), group_key: str | None = None):
    """:func:`tiny_two_type_adata` prepared (4 cell PCs, its expression kept): seconds."""
    import envs

    return envs.prepare_dataset(tiny_two_type_adata(), perturbation_key="perturbation", control_value="ctrl",
                                split=split, holdout=list(holdout), group_key=group_key, n_latent=4, n_top_genes=40,
                                min_cells=10, seed=0)


def cell_type_counts(blocks, markers: dict, responses: dict, *, n_genes: int = 30, seed: int = 0):
    """Poisson counts of cell types with their own marker genes and their own response to 'stim'.

    ``blocks``: ``(condition, cell type, n cells)`` in draw order; ``markers`` / ``responses``: cell
    type -> gene indices raised 5x in every cell of the type / 4x in its stimulated cells.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows, labels, types = [], [], []
    for condition, cell_type, count in blocks:
        rate = np.full(n_genes, 4.0)
        rate[markers[cell_type]] *= 5.0
        if condition == "stim":
            rate[responses[cell_type]] *= 4.0
        rows.append(rng.poisson(rate, size=(count, n_genes)))
        labels += [condition] * count
        types += [cell_type] * count
    obs = pd.DataFrame({"condition": labels, "cell_type": types}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=np.vstack(rows).astype(np.float32), obs=obs,
                      var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
