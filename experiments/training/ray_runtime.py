"""Starting a single-machine Ray runtime the one way this project does it: loopback only."""

from __future__ import annotations

from typing import Any

__all__ = ["start_local_ray"]


def start_local_ray(*, num_cpus: int | None = None, log_to_driver: bool = False, **options: Any) -> None:
    """Start a new local Ray that listens on 127.0.0.1 only, with no dashboard.

    Parameters
    ----------
    num_cpus
        CPUs Ray may schedule on; ``None`` means all of this machine's.
    log_to_driver
        Forward worker logs to this process.
    **options
        Further ``ray.init`` keywords (e.g. ``configure_logging=False``).

    Clusters are joined with ``ray.init(address=...)`` instead (see ``experiments.cli.runtime.init_ray``).
    """
    import ray

    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=log_to_driver,
        **options,
    )
