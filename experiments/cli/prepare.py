"""``waddington prepare``: prepare a data set once and save it, for every later command to share.

``waddington prepare --data screen.h5ad --perturbation-key gene --control-value non-targeting -o prepared/``
validates the file, splits it, fits the latent space, the landscape and the OT pairings, and writes
the prepared dataset directory; ``train``, ``sweep``, ``evaluate --data prepared/`` then start from it
without reading the ``.h5ad`` again (a sweep of many trials prepares nothing). Files whose matrix
stores more than ``envs.preparation.OUT_OF_CORE_ENTRIES`` values are streamed a block of cells at a
time (``--out-of-core`` forces it, ``--in-memory`` forbids it). ``-o`` may be an ``s3://``, ``gs://``
or ``file://`` URI: the directory is written in a temporary directory (``$TMPDIR``: give it room for
the expression matrix), then uploaded. An existing output is refused unless ``--overwrite`` and it
holds a prepared dataset and nothing else; it is replaced whole.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from experiments.cli.checks import document_defaults
from experiments.cli.errors import UsageError
from experiments.cli.options import add_data_options

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "prepare"
HELP = ("prepare a data set once (validation, split, latent space, landscape, OT pairings) and save it; large "
        "files are streamed out of core; train/sweep/evaluate take the directory as --data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``waddington prepare``."""
    add_data_options(parser, data_help="'synthetic' (default) or the .h5ad file to prepare")
    g = parser.add_argument_group("preparation")
    g.add_argument("--config", metavar="YAML", help="YAML file with the data keys above; options override it")
    g.add_argument("--n-top-genes", type=int, default=2000, help="highly variable genes kept")
    g.add_argument("--seed", type=int, help="seed of the split, PCA, landscape and pairings (default 0)")
    route = g.add_mutually_exclusive_group()
    route.add_argument("--out-of-core", action="store_true", help="stream the file a block of cells at a time "
                       "(default: only when its matrix stores more than 200M values)")
    route.add_argument("--in-memory", action="store_true", help="read the file whole, whatever its size")
    g.add_argument("--output", "-o", required=True, metavar="DIR", help="prepared dataset directory, or an s3://, "
                   "gs://, file:// URI")
    g.add_argument("--overwrite", action="store_true", help="replace the prepared dataset already in --output")
    g.add_argument("--quiet", "-q", action="store_true", help="less progress output")
    document_defaults(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``waddington prepare``; 0 when the prepared directory is written."""
    from experiments.cli.config_file import settings_from_args
    from experiments.training.prepared_storage import is_uri

    started = time.perf_counter()
    settings, _ = settings_from_args(args)
    if settings.data != "synthetic" and not Path(settings.data).is_file():
        what = "a directory (prepare takes the .h5ad file)" if Path(settings.data).is_dir() else "not found"
        raise UsageError(f"--data '{settings.data}': {what}.")
    if args.n_top_genes < settings.n_latent + 1:
        raise UsageError(f"--n-top-genes must exceed --n-latent ({settings.n_latent}), got {args.n_top_genes}.")
    remote = is_uri(args.output)
    out = None if remote else Path(args.output).expanduser().resolve()
    _check_output(args.output if remote else out, overwrite=args.overwrite)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    # next to the output, so saving hard-links the on-disk expression instead of copying it
    staging_root = Path(tempfile.mkdtemp(prefix=".waddington-prepare-", dir=None if remote else out.parent))
    try:
        dataset = _prepare(args, settings, workdir=staging_root)
        # an empty output directory is free to use (checked above); anything else only with --overwrite
        local = dataset.save(staging_root / "dataset") if remote else dataset.save(out, overwrite=out.exists())
        if remote:
            from experiments.training.prepared_storage import upload_directory

            upload_directory(local, args.output)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    where = args.output if remote else out
    kind = "out of core (expression on disk)" if dataset.meta.get("out_of_core") else "in memory"
    print(f"wrote {where}: {len(dataset.labels)} cells, {dataset.n_latent} latent dims, "
          f"{len(dataset.latent_space.feature_names)} genes, {len(dataset.pairs)} training perturbations, "
          f"split '{dataset.split.kind}' ({int(dataset.split.train.sum())} train / {int(dataset.split.test.sum())} "
          f"test cells); prepared {kind} in {time.perf_counter() - started:.1f} s")
    print(f"next: waddington train --data {where} -o runs/my-run")
    return 0


def _prepare(args: argparse.Namespace, settings, *, workdir: Path):
    import envs
    from experiments.training.algorithm_configs import dataset_options

    route = True if args.out_of_core else (False if args.in_memory else None)
    try:
        return envs.prepare_dataset(settings.data, **dataset_options(settings), n_top_genes=args.n_top_genes,
                                    out_of_core=route, workdir=workdir, seed=settings.seed, verbose=not args.quiet)
    except ValueError as exc:  # envs.DataValidationError
        raise UsageError(f"Data failed validation: {exc}") from exc


def _check_output(out, *, overwrite: bool) -> None:
    """Refuse an output that holds anything but a prepared dataset, or one without ``--overwrite``."""
    from experiments.training.prepared_storage import (
        holds_prepared_dataset,
        is_uri,
        uri_exists,
    )

    if is_uri(out):
        try:
            exists = uri_exists(out)
            prepared = exists and holds_prepared_dataset(out)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if exists and not prepared:
            raise UsageError(f"--output '{out}' exists and holds other files than a prepared dataset; choose "
                             "another --output.")
        if exists and not overwrite:
            raise UsageError(f"--output '{out}' already holds a prepared dataset. Pass --overwrite to replace it, "
                             "or choose another --output.")
        return
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise UsageError(f"--output '{out}' exists and is not a directory.")
    if not (out / "meta.json").is_file() or not (out / "arrays.npz").is_file():
        raise UsageError(f"--output '{out}' holds other files, not a prepared dataset; choose another --output.")
    if not overwrite:
        raise UsageError(f"--output '{out}' already holds a prepared dataset. Pass --overwrite to replace it, "
                         "or choose another --output.")
