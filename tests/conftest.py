"""Shared pytest fixtures: one local Ray instance bound to loopback for the whole session."""

from __future__ import annotations

import os

import pytest

# Keep every test process off the network and quiet: loopback only, no usage stats.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray runtime on 127.0.0.1 with 2 CPUs, started once and shut down at the end."""
    import ray

    started = False
    if not ray.is_initialized():
        from experiments.training.ray_runtime import start_local_ray

        start_local_ray(num_cpus=2, configure_logging=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_adata():
    """The default synthetic data set (seconds to generate, deterministic)."""
    from envs.synthetic import make_synthetic_perturbation_data

    return make_synthetic_perturbation_data(seed=0)


@pytest.fixture(scope="session")
def synthetic_dataset():
    """The synthetic default, prepared once for the session."""
    from envs.preparation import prepare_dataset

    return prepare_dataset("synthetic", seed=0)
