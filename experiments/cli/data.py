"""Data of evaluate, prepared before Ray starts: a dataset under the split asked for, or the dataset of a run."""

from __future__ import annotations

from pathlib import Path

from experiments.cli.errors import UsageError

__all__ = ["prepare_split_dataset", "dataset_of_run"]


def prepare_split_dataset(data: str, settings, seed: int, *, verbose: bool = False):
    """The full dataset (with expression) of ``data`` under the split and data options of ``settings``."""
    import envs
    from experiments.training.algorithm_configs import dataset_options

    if data != "synthetic" and not Path(data).exists():
        raise UsageError(f"Data: no such file or directory: '{data}'.")
    if data != "synthetic" and Path(data).is_dir():
        raise UsageError("--data with a prepared dataset dir: its split is fixed; use `--run` on a train output "
                         "of it, or pass the .h5ad to choose the split here.")
    try:
        return envs.prepare_dataset(data, **dataset_options(settings), seed=seed, verbose=verbose)
    except ValueError as exc:  # envs.DataValidationError
        raise UsageError(f"Data failed validation: {exc}") from exc


def dataset_of_run(settings):
    """Rebuild the dataset a run was trained on (the same call as the training's ``prepare_data``)."""
    import envs

    data = settings.data
    if isinstance(data, str) and data != "synthetic" and Path(data).is_dir():
        dataset = envs.load_dataset(data)
        if dataset.expression is None:
            raise UsageError(f"The run's dataset '{data}' was saved without its expression matrix "
                             "(env_view); evaluation needs gene-space cells. Re-run with --data.")
        return dataset
    if isinstance(data, str) and data != "synthetic" and not Path(data).exists():
        raise UsageError(f"The run's data '{data}' is not reachable from here.")
    from experiments.training.algorithm_configs import dataset_options

    try:
        return envs.prepare_dataset(data, **dataset_options(settings), seed=settings.seed)
    except ValueError as exc:
        raise UsageError(f"The run's data failed validation: {exc}") from exc
