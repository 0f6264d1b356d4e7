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
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    yield ray
    if started:
        ray.shutdown()
