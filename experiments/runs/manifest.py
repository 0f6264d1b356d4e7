"""The manifest of a run directory: what ran there, on which input, with which libraries, and how it ended.

Every output directory of ``waddington train``, ``sweep`` and ``evaluate`` holds ``manifest.json``. It
is the first file written into the directory (status ``running``) and the last one completed
(``complete``, ``interrupted`` or ``failed``), always atomically (a temp file renamed into place), so
a reader sees either the previous or the next version, never half of one. It records

* ``command``: the argv of the command (and ``history``: every start and resume),
* ``settings`` (:meth:`TwoStageSettings.to_dict`) and ``seed``,
* ``input``: the data as given and its sha256 (of the file; of ``arrays.npz`` for a prepared dataset dir),
* ``versions``: ray, torch, gymnasium, scanpy, anndata, numpy and this project,
* ``status`` and ``checkpoints``: the stage checkpoints that belong to this run, relative to the dir.

Evaluation reads the checkpoints from here instead of guessing by modification time. This module
imports nothing heavy (no numpy, no Ray), so the CLI can read and write manifests before its checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_NAME", "FORMAT", "STATUSES", "ManifestError", "RunManifest", "read_manifest", "write_json_atomic",
    "file_sha256", "describe_input", "library_versions", "process_is_alive",
]

MANIFEST_NAME = "manifest.json"
FORMAT = "waddington-run/1"
STATUSES = ("running", "complete", "interrupted", "failed")
#: Distributions whose versions every manifest records.
LIBRARIES = ("ray", "torch", "gymnasium", "scanpy", "anndata", "numpy", "waddington-rl")
_DATASET_ARRAYS = "arrays.npz"  # envs.dataset's arrays file (not imported: envs pulls in scanpy)


class ManifestError(ValueError):
    """A manifest is missing, unreadable or not of this format; the message names the file."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of ``run_dir``; None when it has none; :class:`ManifestError` when it is unreadable."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"'{path}' is not a readable run manifest ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"'{path}' is not a waddington run manifest (format {FORMAT!r}).")
    return manifest


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_input(data: Any) -> dict[str, Any]:
    """The input as given, its kind and sha256: of the file, or of a prepared dataset's arrays file."""
    if not isinstance(data, (str, os.PathLike)):
        return {"data": repr(data), "kind": type(data).__name__, "sha256": None}
    if str(data) == "synthetic":
        return {"data": "synthetic", "kind": "synthetic", "sha256": None}
    if "://" in str(data):
        return {"data": str(data), "kind": "prepared dataset (storage URI)", "sha256": None}
    path = Path(data).expanduser().resolve()
    if path.is_dir():
        arrays = path / _DATASET_ARRAYS
        return {"data": str(path), "kind": "prepared dataset", "sha256_of": _DATASET_ARRAYS,
                "sha256": file_sha256(arrays) if arrays.is_file() else None}
    return {"data": str(path), "kind": "file", "sha256": file_sha256(path) if path.is_file() else None}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a run depends on (None when one is not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def process_is_alive(manifest: dict[str, Any]) -> bool:
    """Whether the process that wrote a ``running`` manifest still runs here (a waddington command)."""
    pid = manifest.get("pid")
    if manifest.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid that is not a waddington command does not hold the run
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return "waddington" in cmdline or "experiments.cli" in cmdline


class RunManifest:
    """A run's manifest, rewritten atomically on every change.

    Create one with :meth:`create` (a new run; the directory must exist) or :meth:`load` (resume).
    """

    def __init__(self, run_dir: str | os.PathLike, data: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST_NAME

    @property
    def status(self) -> str:
        return self.data.get("status", "?")

    @classmethod
    def create(
        cls, run_dir: str | os.PathLike, *, kind: str, argv: list[str] | None, settings: dict[str, Any] | None,
        seed: Any, input: dict[str, Any] | None, **extra: Any,
    ) -> RunManifest:
        """Write a new manifest (status ``running``) into ``run_dir`` and return it."""
        argv = [str(a) for a in (argv or [kind])]
        data = {
            "format": FORMAT,
            "run_id": uuid.uuid4().hex,
            "kind": kind,
            "status": "running",
            "command": argv,
            "command_line": "waddington " + " ".join(argv),
            "created_at": _now(),
            "updated_at": _now(),
            "finished_at": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "settings": settings,
            "seed": seed,
            "input": input,
            "versions": library_versions(),
            "dataset": None,
            "checkpoints": [],
            "outputs": {},
            "error": None,
            "history": [{"event": "start", "at": _now(), "pid": os.getpid(), "command": argv}],
            **extra,
        }
        manifest = cls(run_dir, data)
        manifest.write()
        return manifest

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunManifest:
        data = read_manifest(run_dir)
        if data is None:
            raise ManifestError(f"'{Path(run_dir) / MANIFEST_NAME}' does not exist.")
        return cls(run_dir, data)

    def write(self) -> None:
        self.data["updated_at"] = _now()
        write_json_atomic(self.path, self.data)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run dir (as stored), or absolute when it lies elsewhere."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        """A stored (relative) path as an absolute path."""
        return (self.run_dir / stored).resolve()

    def add_checkpoint(self, stage: str, path: str | os.PathLike, **extra: Any) -> None:
        """Record a finished stage checkpoint of this run."""
        self.data.setdefault("checkpoints", []).append({"stage": stage, "path": self.relative(path), **extra})
        self.write()

    def checkpoint_paths(self) -> list[Path]:
        return [self.resolve(c["path"]) for c in self.data.get("checkpoints", [])]

    def resumed(self, argv: list[str] | None) -> None:
        """Mark a resumed run as running again (in this process)."""
        argv = [str(a) for a in (argv or [])]
        self.data.setdefault("history", []).append({"event": "resume", "at": _now(), "pid": os.getpid(),
                                                    "command": argv, "previous_status": self.status})
        self.update(status="running", pid=os.getpid(), host=socket.gethostname(), finished_at=None, error=None,
                    versions=library_versions())

    def finish(self, status: str, **fields: Any) -> None:
        """Complete the manifest: ``complete``, ``interrupted`` or ``failed``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.data.setdefault("history", []).append({"event": status, "at": _now(), "pid": os.getpid()})
        self.update(status=status, finished_at=_now(), **fields)
