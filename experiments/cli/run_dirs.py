"""Run directories a user can trust: one run per directory, replaced whole or resumed, never mixed.

* :func:`check_output_free` refuses (before any heavy work) a directory that holds another run,
  with one error naming ``--overwrite`` and ``--resume``.
* :func:`start_run` claims the directory: with ``--overwrite`` the old directory is first moved aside
  (a hidden sibling), the new one is created with its manifest (status ``running``), and only then is
  the old one deleted -- the directory never holds half of each.
* :func:`resume_run` re-opens an interrupted run's manifest.
* :func:`guarded` marks the manifest ``interrupted`` on Ctrl-C and ``failed`` on an error, then re-raises
  (``experiments.cli.main`` prints the one line and exits 130 / 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments.cli.errors import UsageError
from experiments.runs.manifest import (
    MANIFEST_NAME,
    ManifestError,
    RunManifest,
    process_is_alive,
    read_manifest,
)

__all__ = [
    "check_output_free", "start_run", "resume_run", "check_resume_settings", "guarded", "prepare_run_dataset",
    "RUN_MARKERS",
]

#: Files or folders that mark a directory written by waddington before manifests existed.
RUN_MARKERS = ("summary.json", "checkpoints", "sweep_summary.json", "metrics.json", "report.md", "dataset")


def _describe(out: Path) -> str:
    try:
        manifest = read_manifest(out)
    except ManifestError:
        manifest = None
    if manifest:
        what = {"train": "a train run", "sweep": "a sweep", "evaluate": "an evaluation"}.get(
            manifest.get("kind"), f"a {manifest.get('kind', '?')} run")
        return (f"{what} ({manifest.get('status', '?')}, started "
                f"{manifest.get('created_at', '?')}: `{manifest.get('command_line', '?')}`)")
    if any((out / m).exists() for m in RUN_MARKERS):
        return "the output of an earlier run (without a manifest)"
    return "other files"


def _is_run_dir(out: Path) -> bool:
    return (out / MANIFEST_NAME).exists() or any((out / m).exists() for m in RUN_MARKERS)


def check_output_free(out: Path, *, overwrite: bool, resume_hint: str | None) -> None:
    """Raise a UsageError when ``out`` holds another run (unless ``overwrite`` and it is a run dir).

    ``resume_hint``: how to continue that run (e.g. ``waddington train --resume DIR``); None for a
    command that cannot resume (evaluate).
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--output '{out}' exists and is not a directory.")
    if not any(out.iterdir()):
        return
    if not overwrite:
        how = (f"Pass --overwrite to replace it, {resume_hint}, or choose another --output." if resume_hint else
               "Pass --overwrite to replace it or choose another --output (an evaluation has no --resume: "
               "that is for train and sweep runs).")
        raise UsageError(f"--output '{out}' already holds {_describe(out)}. {how}")
    if not _is_run_dir(out):
        raise UsageError(f"--output '{out}' holds other files, not a waddington run (no {MANIFEST_NAME}); "
                         "--overwrite only replaces run directories. Choose another --output.")
    _refuse_live(out)


def _refuse_live(out: Path) -> None:
    try:
        manifest = read_manifest(out)
    except ManifestError:
        return
    if manifest and manifest.get("status") == "running" and process_is_alive(manifest):
        raise UsageError(f"'{out}' belongs to a run that is still running (pid {manifest.get('pid')} on this host). "
                         "Stop it first, or choose another --output.")


def start_run(
    out: Path, *, kind: str, args: argparse.Namespace, overwrite: bool, settings: dict[str, Any] | None,
    seed: Any, input: dict[str, Any] | None, **extra: Any,
) -> RunManifest:
    """Create ``out`` with a new manifest (status running); an old run there is replaced whole."""
    backup = None
    if out.exists() and any(out.iterdir()):
        check_output_free(out, overwrite=overwrite, resume_hint=None)  # the dir may have changed since the check
        backup = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(out, backup)
    try:
        out.mkdir(parents=True, exist_ok=True)
        manifest = RunManifest.create(out, kind=kind, argv=getattr(args, "argv", None), settings=settings,
                                      seed=seed, input=input, **extra)
    except BaseException:
        if backup is not None:  # the new run never started: put the old one back as it was
            shutil.rmtree(out, ignore_errors=True)
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return manifest


def resume_run(out: Path, *, kind: str, args: argparse.Namespace) -> RunManifest:
    """The manifest of an earlier ``kind`` run in ``out``, marked running again in this process."""
    if not out.is_dir():
        raise UsageError(f"Nothing to resume: '{out}' does not exist.")
    try:
        manifest = RunManifest.load(out)
    except ManifestError as exc:
        raise UsageError(f"Cannot resume '{out}': {exc} Only runs written with a manifest can be resumed; "
                         "start a new run with --overwrite.") from exc
    if manifest.data.get("kind") != kind:
        raise UsageError(f"Cannot resume '{out}' with `waddington {kind}`: it holds a "
                         f"{manifest.data.get('kind')} run.")
    _refuse_live(out)
    return manifest


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def check_resume_settings(args: argparse.Namespace, manifest: RunManifest, *, ignore: tuple[str, ...] = ()) -> None:
    """A resumed run keeps its recorded settings: an option given now that differs from them is an error."""
    from experiments.cli.checks import cli_message, given_settings

    recorded = manifest.data.get("settings") or {}
    source = (manifest.data.get("input") or {}).get("data")
    for key, value in given_settings(args).items():
        if key in ignore or key not in recorded:
            continue
        if key == "data":
            given = "synthetic" if str(value) == "synthetic" else str(Path(value).expanduser().resolve())
            if given in (source, recorded.get("data")):
                continue
            was = source
        elif _same(value, recorded[key]):
            continue
        else:
            was = recorded[key]
        raise UsageError(cli_message(
            f"'{manifest.run_dir}' is resumed with the settings it started with, but {key} is {value!r} here and "
            f"{was!r} there. Drop it to resume, or start a new run with --overwrite.", args))


def prepare_run_dataset(settings, *, verbose: bool):
    """The full prepared dataset (with expression) of a run, to be saved in its directory; None for other envs.

    Bad data is one UsageError, before the run directory is touched.
    """
    from experiments.training.settings import CELLSTATE_ENV

    if settings.env != CELLSTATE_ENV:
        return None
    import envs
    from experiments.training.algorithm_configs import dataset_options

    data = settings.data
    try:
        if isinstance(data, (str, os.PathLike)) and str(data) != "synthetic" and Path(data).is_dir():
            return envs.load_dataset(data)
        return envs.prepare_dataset(data, **dataset_options(settings), seed=settings.seed, verbose=verbose)
    except FileNotFoundError as exc:
        raise UsageError(f"Data: {exc}") from exc
    except ValueError as exc:  # envs.DataValidationError is a ValueError
        raise UsageError(f"Data failed validation: {exc}") from exc


@contextlib.contextmanager
def guarded(manifest: RunManifest) -> Iterator[RunManifest]:
    """Mark the manifest interrupted (Ctrl-C) or failed (any error), and re-raise.

    Inside, a Ctrl-C swallowed by a finalizer is raised again (:class:`~experiments.cli.runtime.Interrupts`).
    """
    from experiments.cli.runtime import Interrupts

    try:
        with Interrupts():
            yield manifest
    except KeyboardInterrupt:
        manifest.finish("interrupted")
        raise
    except BaseException as exc:
        manifest.finish("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
