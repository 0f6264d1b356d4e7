"""Prepared dataset directories on shared storage: ``s3://``, ``gs://``, ``file://`` URIs, through pyarrow.

``waddington prepare -o s3://bucket/prepared`` writes the directory locally and uploads it once;
``--data s3://bucket/prepared`` downloads it once per machine into a cache (the driver only: env
runners get the light env view through Ray's object store, never the file). pyarrow's filesystems
are what Ray Tune uses for its own storage, so the same credentials work.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["is_uri", "upload_directory", "download_dataset", "uri_exists", "CACHE_ENV"]

#: Environment variable naming the download cache (default ``~/.cache/waddington/prepared``).
CACHE_ENV = "WADDINGTON_CACHE"
_DATASET_FILES = ("meta.json", "arrays.npz")
_EXPRESSION_FILES = ("expression.h5", "expression.npz")


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` names remote (or ``file://``) storage rather than a local path."""
    return "://" in str(location)


def _filesystem(uri: str):
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for unknown schemes and missing credentials
        raise ValueError(f"Cannot open storage '{uri}' ({type(exc).__name__}: {exc}). Check the URI scheme "
                         "(s3://, gs://, file://) and the credentials of this machine.") from exc


def uri_exists(uri: str) -> bool:
    """Whether anything exists at ``uri``."""
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def holds_prepared_dataset(uri: str) -> bool:
    """Whether ``uri`` is a directory holding a prepared dataset and nothing else."""
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    names = {info.base_name for info in filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))}
    return set(_DATASET_FILES) <= names <= set(_DATASET_FILES) | set(_EXPRESSION_FILES)


def upload_directory(local: str | os.PathLike, uri: str) -> None:
    """Copy the directory ``local`` to ``uri``, replacing a prepared dataset there (never anything else).

    Object stores have no atomic directory rename: an interrupted replacement leaves ``uri`` without
    ``meta.json`` (refused by every reader) rather than a mix of two datasets.
    """
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    if filesystem.get_file_info(path).type != fs.FileType.NotFound:
        if not holds_prepared_dataset(uri):
            raise ValueError(f"'{uri}' holds other files than a prepared dataset; it is not replaced.")
        filesystem.delete_file(f"{path}/meta.json")  # first: a half-replaced dataset is never read as whole
        filesystem.delete_dir(path)
    filesystem.create_dir(path, recursive=True)
    fs.copy_files(str(Path(local).resolve()), path, source_filesystem=fs.LocalFileSystem(),
                  destination_filesystem=filesystem)


def download_dataset(uri: str, *, with_expression: bool = True) -> Path:
    """A local copy of the prepared dataset at ``uri`` (cached; fetched whole, then renamed into place).

    Parameters
    ----------
    uri
        Directory written by ``waddington prepare -o URI``.
    with_expression
        Also fetch the expression matrix (evaluation and a run directory need it; env runners never do).

    The cached copy is used again while the remote ``meta.json`` is unchanged (a dataset prepared
    again at the same URI is fetched again).
    """
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "waddington" / "prepared")
    target = root / hashlib.sha1(uri.encode()).hexdigest()[:16]
    wanted = list(_DATASET_FILES) + (list(_EXPRESSION_FILES) if with_expression else [])
    present = {info.base_name for info in filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))}
    missing = [name for name in _DATASET_FILES if name not in present]
    if missing:
        raise ValueError(f"'{uri}' is not a prepared dataset (missing {missing}); write one with "
                         f"`waddington prepare --data FILE.h5ad -o {uri}`.")
    with filesystem.open_input_stream(f"{path}/meta.json") as stream:
        remote_meta = stream.read()
    cached_meta = target / "meta.json"
    if (cached_meta.is_file() and cached_meta.read_bytes() == remote_meta
            and all((target / name).exists() for name in wanted if name in present)):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        for name in wanted:
            if name in present:
                fs.copy_files(f"{path}/{name}", str(staging / name), source_filesystem=filesystem,
                              destination_filesystem=fs.LocalFileSystem())
        if target.exists():  # moved aside first: the new copy takes the name in one rename
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=root))
            os.replace(target, old / "dataset")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
