"""Resolve the env's ``data`` option into a :class:`PreparedDataset`, once per process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from envs.dataset import PreparedDataset, load_dataset
from envs.preparation import prepare_dataset

__all__ = ["resolve_dataset"]

_cache: dict[tuple, PreparedDataset] = {}
_lock = threading.Lock()


def resolve_dataset(data: Any = "synthetic", **prepare_options: Any) -> PreparedDataset:
    """Turn ``data`` into a prepared dataset.

    Parameters
    ----------
    data
        A :class:`PreparedDataset`; a Ray ``ObjectRef`` to one (fetched from the object store);
        a directory written by ``PreparedDataset.save``; ``"synthetic"``; or an ``.h5ad`` path.
    **prepare_options
        Passed to :func:`envs.preparation.prepare_dataset` when data must be prepared.

    Prepared results are cached per process, so the many envs of a vectorized runner share one.
    """
    if isinstance(data, PreparedDataset):
        return data
    if type(data).__name__ == "ObjectRef":
        import ray

        return ray.get(data)
    if not isinstance(data, (str, Path)):
        raise TypeError(
            f"data must be 'synthetic', a path, a PreparedDataset or a Ray ObjectRef, got {type(data).__name__}."
        )
    key = (str(data), tuple(sorted((k, repr(v)) for k, v in prepare_options.items())))
    with _lock:
        if key not in _cache:
            if str(data) != "synthetic" and Path(data).is_dir():
                _cache[key] = load_dataset(data).env_view()
            else:
                _cache[key] = prepare_dataset(data, **prepare_options).env_view()
        return _cache[key]
