"""Where a command runs and writes: the output directory, the cluster address check, Ray start-up, and
(with ``-q``) the library log that keeps Ray's and RLlib's messages out of the terminal."""

from __future__ import annotations

import _thread
import argparse
import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from experiments.cli.errors import UsageError

__all__ = ["output_dir", "check_address", "init_ray", "LibraryLog", "LIBRARY_LOG_NAME", "library_log_path",
           "Interrupts", "raise_if_interrupted", "run_command"]

#: With ``-q``, Ray/RLlib/Tune logging and Python warnings go to this file in the run directory.
LIBRARY_LOG_NAME = "ray.log"


def library_log_path(output_file: Path) -> Path:
    """The library log of a command whose output is one file (``predict``): ``FILE.ray.log`` beside it."""
    return output_file.with_name(f"{output_file.stem}.{LIBRARY_LOG_NAME}")


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
    """Join ``--address``/``$RAY_ADDRESS`` (checked to answer first) or start a loopback-only local Ray.

    With ``-q`` Ray's own logger is not configured: its records go to the :class:`LibraryLog`.
    """
    import ray
    import ray.rllib  # noqa: F401  (every command that starts Ray trains: RLlib's terminal handler comes off now)

    address = check_address(getattr(args, "address", None))
    LibraryLog.quiet_ray()
    if ray.is_initialized():
        return
    quiet = {"configure_logging": False} if args.quiet else {}
    if address is None:
        from experiments.training.ray_runtime import start_local_ray

        start_local_ray(num_cpus=args.num_cpus, log_to_driver=not args.quiet, **quiet)
        return
    try:
        ray.init(address=address, log_to_driver=not args.quiet, **quiet)
    except ConnectionError as exc:
        raise UsageError(f"Could not connect to a Ray cluster at {address!r}: {exc}") from exc


class LibraryLog:
    """``-q``: every library log record (Ray, RLlib, Tune, ...) and Python warning goes to a file, not the terminal.

    :meth:`start` holds records in memory (the run directory does not exist yet while inputs are
    checked); :meth:`attach` writes them and everything after to ``DIR/ray.log``; :meth:`stop`
    restores the logging setup it found. Ray and RLlib give their loggers their own terminal
    handlers when imported, so :meth:`quiet_ray` takes those off again after each import point.
    The project's own lines are ``print``s and stay on the terminal.
    """

    _active: LibraryLog | None = None

    def __init__(self) -> None:
        self._buffer = logging.handlers.BufferingHandler(capacity=1 << 30)
        self._file: logging.Handler | None = None
        self._saved: dict[str, tuple[list[logging.Handler], bool]] = {}
        self._root_level = logging.getLogger().level
        self.path: Path | None = None

    @staticmethod
    def _is_terminal(handler: logging.Handler) -> bool:
        return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)

    def _take_off(self, name: str, *, propagate: bool) -> None:
        logger = logging.getLogger(name)
        self._saved.setdefault(name, (list(logger.handlers), logger.propagate))
        for handler in list(logger.handlers):
            if self._is_terminal(handler):
                logger.removeHandler(handler)
        logger.propagate = propagate

    @classmethod
    def quiet_ray(cls) -> None:
        """Take the terminal handlers off every ``ray*`` logger (records propagate to the file)."""
        log = cls._active
        if log is None:
            return
        names = [n for n in list(logging.root.manager.loggerDict) if n == "ray" or n.startswith("ray.")]
        for name in names:
            logger = logging.getLogger(name)
            if logger.handlers or (name in ("ray", "ray.rllib") and not logger.propagate):
                log._take_off(name, propagate=True)

    def start(self) -> LibraryLog:
        import ray  # noqa: F401  (its import installs its terminal handler, taken off below)

        self._take_off("", propagate=True)
        logging.getLogger().addHandler(self._buffer)
        logging.captureWarnings(True)
        LibraryLog._active = self
        self.quiet_ray()
        return self

    def attach(self, path: Path) -> Path:
        """Write the held records, and every later one, to ``path``."""
        self.path = path
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d -- "
                                                  "%(message)s"))
        root = logging.getLogger()
        root.addHandler(self._file)
        root.removeHandler(self._buffer)
        for record in self._buffer.buffer:
            self._file.handle(record)
        self._buffer.buffer.clear()
        return path

    @contextlib.contextmanager
    def library_prints(self) -> Iterator[None]:
        """Inside: ``print``s to stdout/stderr (Tune's progress boxes, say) go to the log file too."""
        stream = getattr(self._file, "stream", None)
        if stream is None:
            yield
            return
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield

    def stop(self) -> None:
        logging.captureWarnings(False)
        root = logging.getLogger()
        for handler in (self._buffer, self._file):
            if handler is not None:
                root.removeHandler(handler)
                handler.close()
        for name, (handlers, propagate) in self._saved.items():
            logger = logging.getLogger(name)
            for handler in handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.propagate = propagate
        root.setLevel(self._root_level)
        if LibraryLog._active is self:
            LibraryLog._active = None


class Interrupts:
    """Ctrl-C that cannot get lost while a run is in progress.

    Python raises ``KeyboardInterrupt`` wherever the main thread happens to be; when that is a
    finalizer or a weakref callback (Ray and torch run many), the exception is *swallowed* ("Exception
    ignored in ...") and training goes on. Inside this context a swallowed ``KeyboardInterrupt`` is
    raised again (``sys.unraisablehook``), and :func:`raise_if_interrupted` lets a loop check for a
    Ctrl-C at each step.
    """

    active: Interrupts | None = None

    def __init__(self) -> None:
        self.requested = False
        self._previous_signal = None
        self._previous_hook = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous_signal = signal.signal(signal.SIGINT, self._on_sigint)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable
        Interrupts.active = self
        return self

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def _on_unraisable(self, unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.requested = True
            # raised again from outside this hook (where it would be swallowed once more), a moment later
            timer = threading.Timer(0.02, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
            return
        self._previous_hook(unraisable)

    def __exit__(self, *exc) -> None:
        if Interrupts.active is self:
            Interrupts.active = None
        sys.unraisablehook = self._previous_hook
        if self._previous_signal is not None:
            signal.signal(signal.SIGINT, self._previous_signal)


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when Ctrl-C was pressed (and possibly swallowed) inside :class:`Interrupts`."""
    if Interrupts.active is not None and Interrupts.active.requested:
        raise KeyboardInterrupt


def run_command(body: Callable[[argparse.Namespace, list[LibraryLog]], int], args: argparse.Namespace) -> int:
    """Run a subcommand's ``body(args, library_log)``: its UsageErrors print plain strings, and every
    library log it started (with ``-q``) is stopped however it ends."""
    from experiments.cli.checks import plain

    library_log: list[LibraryLog] = []
    try:
        return body(args, library_log)
    except UsageError as exc:
        raise UsageError(plain(str(exc))) from exc
    finally:
        for log in library_log:
            log.stop()
