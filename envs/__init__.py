"""Data preparation, the Waddington landscape and the ``waddington/CellState-v0`` env.

Importing this package registers the env with Gymnasium and Ray Tune.
"""

from envs.dataset import PreparedDataset, load_dataset
from envs.landscape import CellLandscape
from envs.preparation import prepare_dataset
from envs.registration import ENV_ID, make_cell_state_env, register_envs
from envs.synthetic import make_synthetic_perturbation_data
from envs.validation import DataValidationError, read_h5ad

register_envs()

__all__ = [
    "ENV_ID",
    "CellLandscape",
    "DataValidationError",
    "PreparedDataset",
    "load_dataset",
    "make_cell_state_env",
    "make_synthetic_perturbation_data",
    "prepare_dataset",
    "read_h5ad",
]
