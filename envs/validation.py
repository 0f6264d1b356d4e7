"""Loading an ``.h5ad`` by path and checking it before anything is fitted.

Every problem is raised as one :class:`DataValidationError` whose message says what is wrong
and how to fix it. Nothing here writes to the user's file: it is read fully into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

__all__ = [
    "DataValidationError", "read_h5ad", "check_h5ad_path", "validate_perturbation_data", "validate_labels",
    "validate_values", "counts_matrix",
]


class DataValidationError(ValueError):
    """The input data cannot be used as given; the message names the fix."""


def read_h5ad(path: str | Path) -> ad.AnnData:
    """Read an AnnData file into memory, with clear errors for missing or foreign files.

    Parameters
    ----------
    path
        Path to an ``.h5ad`` file. The file is opened read-only and never modified.

    Returns
    -------
    The AnnData object, fully loaded (not backed).
    """
    path = check_h5ad_path(path)
    try:
        # backed="r" would keep an open handle on the user's file; read once into memory instead.
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for foreign HDF5 layouts
        raise DataValidationError(
            f"'{path}' is an HDF5 file but not a readable AnnData .h5ad ({type(exc).__name__}: {exc}). "
            "Write it with `adata.write_h5ad(...)`."
        ) from exc


def check_h5ad_path(path: str | Path) -> Path:
    """The path of an existing HDF5 file, or one clear error (missing, a directory, not HDF5)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataValidationError(f"Data file not found: '{path}'. Pass the path to an existing .h5ad file.")
    if path.is_dir():
        raise DataValidationError(f"'{path}' is a directory; pass the path to an .h5ad file inside it.")
    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic != b"\x89HDF\r\n\x1a\n":
        raise DataValidationError(
            f"'{path}' is not an .h5ad (HDF5) file. Convert it first, e.g. "
            "`anndata.read_csv(...)`/`scanpy.read_10x_h5(...)` followed by `adata.write_h5ad('cells.h5ad')`."
        )
    return path


def counts_matrix(adata: ad.AnnData, *, layer: str | None = None):
    """Return the matrix holding raw counts: ``adata.layers[layer]`` or ``adata.X``."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise DataValidationError(
            f"Layer '{layer}' not found; available layers: {sorted(adata.layers.keys()) or 'none'}. "
            "Pass layer=None to use adata.X."
        )
    return adata.layers[layer]


#: What ``adata.X`` (or the layer) may hold.
INPUT_KINDS = ("counts", "log-normalized")
# log1p of counts normalized to 1e4-1e6 per cell stays far below this; raw counts of a deep
# cell exceed it.
_LOG_NORMALIZED_MAX = 20.0


def _check_log_normalized(values: np.ndarray) -> None:
    if values.size and _all_integers(values):
        raise DataValidationError(
            "input_kind='log-normalized' was declared, but every value is an integer: these look like raw "
            "counts. Use input_kind='counts' (the default; the recipe normalizes and log1p's them itself)."
        )
    if values.size and values.max() > _LOG_NORMALIZED_MAX:
        raise DataValidationError(
            f"input_kind='log-normalized' was declared, but the largest value is {values.max():.3g} "
            f"(log1p-normalized data stay below {_LOG_NORMALIZED_MAX:g}): these are neither log-normalized "
            "nor raw counts as declared. Pass layer=<the log-normalized or raw-count layer>."
        )


def _values(matrix) -> np.ndarray:
    return matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()


def _all_integers(values: np.ndarray, chunk: int = 1 << 24) -> bool:
    # Chunked so a 2M-cell matrix needs no full-size temporaries.
    return all(
        np.array_equal(block, np.round(block)) for block in (values[i : i + chunk] for i in range(0, values.size, chunk))
    )


def validate_perturbation_data(
    adata: ad.AnnData,
    *,
    perturbation_key: str,
    control_value: str,
    min_cells: int = 20,
    n_latent: int = 16,
    layer: str | None = None,
    require_counts: bool = True,
    ignore_values: Sequence[str] = (),
    input_kind: str = "counts",
) -> None:
    """Check that an AnnData can define perturbation episodes; raise one clear error if not.

    Parameters
    ----------
    adata
        Cells x genes (or peaks).
    perturbation_key
        Column of ``adata.obs`` naming each cell's perturbation.
    control_value
        The label of control cells in that column (e.g. ``"non-targeting"``, ``"ctrl"``).
    min_cells
        Fewest cells any kept perturbation (and the control) may have.
    n_latent
        Latent dimension that will be fitted; the data needs more features than this.
    layer
        Layer holding raw counts; ``None`` uses ``adata.X``.
    require_counts
        Whether values must be non-negative integers (raw counts).
    ignore_values
        Labels in ``perturbation_key`` to leave out (e.g. ``"unassigned"``).
    input_kind
        ``"counts"`` (raw counts) or ``"log-normalized"`` (``log1p`` of library-size-normalized
        counts, as many published perturbation ``.h5ad`` files ship): the data must look like it.
    """
    if adata.n_obs == 0:
        raise DataValidationError("The AnnData has no cells (n_obs == 0).")
    validate_labels(adata.obs, adata.n_vars, perturbation_key=perturbation_key, control_value=control_value,
                    min_cells=min_cells, n_latent=n_latent, ignore_values=ignore_values)
    validate_values(_values(counts_matrix(adata, layer=layer)), input_kind=input_kind, require_counts=require_counts,
                    layers=sorted(adata.layers.keys()))


def validate_labels(
    obs,
    n_features: int,
    *,
    perturbation_key: str,
    control_value: str,
    min_cells: int = 20,
    n_latent: int = 16,
    ignore_values: Sequence[str] = (),
) -> None:
    """The checks that need only obs and the feature count (see :func:`validate_perturbation_data`)."""
    if perturbation_key not in obs.columns:
        raise DataValidationError(
            f"obs column '{perturbation_key}' not found. Available obs columns: {list(obs.columns)}. "
            "Pass perturbation_key=<the column that names each cell's perturbation>."
        )
    labels = obs[perturbation_key].astype(str)
    labels = labels[~labels.isin(list(ignore_values))]
    counts = labels.value_counts()
    if control_value not in counts.index:
        shown = list(counts.index[:20])
        raise DataValidationError(
            f"Control label '{control_value}' not found in obs['{perturbation_key}']. "
            f"Values present (most frequent first): {shown}. Pass control_value=<one of these>."
        )
    if len(counts) < 2:
        raise DataValidationError(
            f"obs['{perturbation_key}'] holds only the control '{control_value}'; at least one perturbation is needed."
        )
    small = counts[counts < min_cells]
    if len(small):
        listed = ", ".join(f"{name} ({n} cells)" for name, n in small.items())
        raise DataValidationError(
            f"These groups have fewer than min_cells={min_cells} cells: {listed}. "
            "Lower min_cells, or drop them with ignore_values=[...]."
        )
    if n_features <= n_latent:
        raise DataValidationError(
            f"The data has {n_features} genes/features but n_latent={n_latent}; "
            f"choose n_latent < {n_features} (the latent space is fitted from the features)."
        )


def validate_values(
    values: np.ndarray,
    *,
    input_kind: str = "counts",
    require_counts: bool = True,
    layers: Sequence[str] = (),
    where: str = "",
) -> None:
    """Check stored matrix values (all of them, or one block's: ``where`` names the block in the message)."""
    at = f" ({where})" if where else ""
    if values.size and not np.all(np.isfinite(values)):
        raise DataValidationError(
            f"The expression matrix contains NaN or infinite values{at}. Remove or impute them before loading "
            "(e.g. `adata.X = np.nan_to_num(adata.X)` only if zeros are what they mean)."
        )
    if values.size and values.min() < 0:
        raise DataValidationError(
            f"The expression matrix has negative values (min {values.min():.3g}){at}; raw counts are required. "
            "Pass layer=<name of the raw-count layer> if adata.X holds scaled data."
        )
    if input_kind not in INPUT_KINDS:
        raise DataValidationError(f"input_kind must be one of {list(INPUT_KINDS)}, got {input_kind!r}.")
    if input_kind == "log-normalized":
        _check_log_normalized(values)
        return
    if require_counts and values.size and not _all_integers(values):
        hint = f"Layers present: {list(layers)}. " if len(layers) else ""
        raise DataValidationError(
            f"The expression matrix does not hold raw counts (non-integer values found{at}); this recipe "
            f"normalizes counts itself. {hint}Pass layer=<name of the raw-count layer> to prepare_dataset "
            "if the raw counts are kept in a layer."
        )
