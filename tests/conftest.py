"""Shared pytest fixtures: one local Ray instance bound to loopback for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every test process off the network and quiet: loopback only, no usage stats.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray runtime on 127.0.0.1 with 2 CPUs, started once and shut down at the end."""
    import ray

    started = False
    if not ray.is_initialized():
        from experiments.ray_runtime import start_local_ray

        start_local_ray(num_cpus=2, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


SHARED_DATA = Path(os.environ.get("WADDINGTON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PAPALEXI = SHARED_DATA / "papalexi2021_thp1_crispr.h5ad"
KANG = SHARED_DATA / "kang2018_pbmc_ifnb.h5ad"


def require_file(path: Path) -> Path:
    """Skip (with the path in the reason) when a shared real data set is not beside the checkout."""
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set WADDINGTON_SHARED_DATA to its folder")
    return path


@pytest.fixture(scope="session")
def synthetic_adata():
    """The default synthetic data set (seconds to generate, deterministic)."""
    from envs.synthetic import make_synthetic_perturbation_data

    return make_synthetic_perturbation_data(seed=0)


@pytest.fixture(scope="session")
def synthetic_dataset():
    """The synthetic default, prepared once for the session."""
    from envs.dataset import prepare_dataset

    return prepare_dataset("synthetic", seed=0)


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
