"""Where a command runs and writes: the output directory, the cluster address check, and Ray start-up."""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

from experiments.cli.errors import UsageError

__all__ = ["output_dir", "check_address", "init_ray"]


def output_dir(args: argparse.Namespace, prefix: str) -> Path:
    """``--output`` (default ``runs/<prefix>-<time>``) resolved; an existing non-directory is refused."""
    out = Path(args.output) if args.output else Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output '{out}' exists and is not a directory.")
    return out


def check_address(address: str | None, timeout_s: float = 3.0) -> str | None:
    """Fail fast when a given cluster address does not answer (instead of Ray's long retries)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return address
    target = address
    for scheme in ("ray://", "http://", "https://"):
        if target.startswith(scheme):
            target = target[len(scheme):]
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"Cluster address {address!r} is not host:port (e.g. 10.0.0.5:6379 or 'auto').")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UsageError(
            f"No Ray cluster answers at {address!r} ({exc.strerror or exc}). Start one with `ray start --head` "
            "or check the address."
        ) from exc
    return address


def init_ray(args: argparse.Namespace) -> None:
    """Join ``--address``/``$RAY_ADDRESS`` (checked to answer first) or start a loopback-only local Ray."""
    import ray

    address = check_address(getattr(args, "address", None))
    if ray.is_initialized():
        return
    if address is None:
        from experiments.training.ray_runtime import start_local_ray

        start_local_ray(num_cpus=args.num_cpus, log_to_driver=not args.quiet)
        return
    try:
        ray.init(address=address, log_to_driver=not args.quiet)
    except ConnectionError as exc:
        raise UsageError(f"Could not connect to a Ray cluster at {address!r}: {exc}") from exc
