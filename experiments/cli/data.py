"""Data of the commands, resolved before Ray starts: a prepared directory (local or on shared storage), a
dataset under the split asked for, or the dataset of a run."""

from __future__ import annotations

from pathlib import Path

from experiments.cli.errors import UsageError

__all__ = ["prepare_split_dataset", "dataset_of_run", "resolve_prepared_data", "checked_data_settings", "is_prepared_dir"]


def is_prepared_dir(data) -> bool:
    """Whether ``data`` names a directory written by ``waddington prepare`` (or a run's ``dataset/``)."""
    return isinstance(data, str) and data != "synthetic" and Path(data).is_dir()


def resolve_prepared_data(settings, *, keep_seed: bool = False, with_expression: bool = True):
    """Settings whose ``data`` is a local prepared directory, described by its own keys and split.

    A URI (``s3://``, ``gs://``, ``file://``) is downloaded once into the local cache. The description
    comes from the directory's ``meta.json`` alone (nothing heavy is imported); options that conflict
    with it are refused by :func:`experiments.cli.checks.quick_data_check`. ``keep_seed``: the user
    gave a training seed (it is kept; otherwise runs take the dataset's). Other data are returned
    unchanged.
    """
    import json
    from types import SimpleNamespace

    from experiments.training.prepared_storage import download_dataset, is_uri
    from experiments.training.settings import dataset_settings

    data = settings.data
    if isinstance(data, str) and is_uri(data):
        try:
            data = str(download_dataset(data, with_expression=with_expression))
        except (ValueError, OSError) as exc:
            raise UsageError(f"--data '{settings.data}': {exc}") from exc
    if not is_prepared_dir(data) or not (Path(data) / "meta.json").is_file():
        return settings.replace(data=data) if data != settings.data else settings
    try:
        stored = json.loads((Path(data) / "meta.json").read_text())
        split = SimpleNamespace(kind=stored["split"]["kind"], group_key=stored["split"]["group_key"],
                                heldout_perturbations=stored["split"]["heldout_perturbations"],
                                heldout_group=stored["split"]["heldout_group"])
        described = dataset_settings(SimpleNamespace(split=split, meta=stored.get("meta") or {},
                                                     control_value=stored["control_value"]))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--data '{data}': its meta.json cannot be read ({exc}); prepare the data again.") from exc
    if keep_seed:
        described.pop("seed")  # the training seed the user asked for; the dataset keeps its own
    return settings.replace(data=data, **described)


def checked_data_settings(settings, args, *, keep_seed: bool | None = None):
    """:func:`resolve_prepared_data`, then the quick data checks against the options the user gave.

    ``keep_seed``: keep the settings' training seed (default: when the user gave ``--seed``).
    """
    from experiments.cli.checks import given_settings, quick_data_check

    given = given_settings(args)
    settings = resolve_prepared_data(settings, keep_seed="seed" in given if keep_seed is None else keep_seed)
    quick_data_check(settings, given=given)
    return settings


def prepare_split_dataset(data: str, settings, seed: int, *, verbose: bool = False):
    """The full dataset (with expression) of ``data`` under the split and data options of ``settings``."""
    import envs
    from experiments.training.algorithm_configs import dataset_options

    if data != "synthetic" and not Path(data).exists():
        raise UsageError(f"Data: no such file or directory: '{data}'.")
    if is_prepared_dir(data):
        return _with_expression(envs.load_dataset(data), data)  # prepared once: every seed trains on it
    try:
        return envs.prepare_dataset(data, **dataset_options(settings), seed=seed, verbose=verbose)
    except ValueError as exc:  # envs.DataValidationError
        raise UsageError(f"Data failed validation: {exc}") from exc


def dataset_of_run(settings):
    """Rebuild the dataset a run was trained on (the same call as the training's ``prepare_data``)."""
    import envs

    data = settings.data
    if is_prepared_dir(data):
        return _with_expression(envs.load_dataset(data), data)
    if isinstance(data, str) and data != "synthetic" and not Path(data).exists():
        raise UsageError(f"The run's data '{data}' is not reachable from here.")
    from experiments.training.algorithm_configs import dataset_options

    try:
        return envs.prepare_dataset(data, **dataset_options(settings), seed=settings.seed)
    except ValueError as exc:
        raise UsageError(f"The run's data failed validation: {exc}") from exc


def _with_expression(dataset, data):
    if dataset.expression is None:
        raise UsageError(f"The dataset '{data}' was saved without its expression matrix (env_view); evaluation "
                         "needs gene-space cells. Prepare it again from the .h5ad.")
    return dataset
