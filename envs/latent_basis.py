"""The latent basis: the cells' top principal components, widened so the observed responses can be expressed.

PCA keeps the directions along which *cells* vary most; a perturbation's response (and a
knocked-down gene's own drop) can lie largely outside them, and then no policy that moves cells
in that space, decoded through its loadings, can express it. The basis is therefore
``[cell PCs, target-gene axes, response directions]``, orthonormalized:

* target-gene axes: the unit axis of every panel gene that a perturbation label names (training
  or held out: the label is known before any perturbed cell is), so a knockdown's drop of its own
  gene is expressible; a genome-wide screen names thousands, so above ``max_gene_axes``
  (``envs.preprocessing.BasisOptions``) only the genes whose own expression the training
  perturbations change most get one;
* response directions: the principal directions of the training perturbations' mean changes
  (mean of p's training cells minus the training control mean) that the axes above miss, the
  fewest whose span keeps ``energy`` of those changes' summed squared norm (at least one, at most
  ``max_dims``).

All of it is fitted on training cells only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["response_deltas", "widen_basis"]


def response_deltas(expression, labels: np.ndarray, control_value: str) -> np.ndarray:
    """Mean change of each perturbation vs the controls among these cells (perturbations x features)."""
    labels = np.asarray(labels).astype(str)
    control = labels == control_value
    if not control.any():
        return np.zeros((0, expression.shape[1]))
    mean_control = _mean_rows(expression, control)
    names = sorted(set(labels[~control]))
    return np.stack([_mean_rows(expression, labels == name) - mean_control for name in names]) if names else (
        np.zeros((0, expression.shape[1])))


def _mean_rows(expression, mask: np.ndarray) -> np.ndarray:
    rows = expression[np.flatnonzero(mask)]
    return np.asarray(rows.mean(axis=0) if sp.issparse(rows) else rows.mean(axis=0), dtype=np.float64).ravel()


def widen_basis(
    components: np.ndarray,
    deltas: np.ndarray,
    *,
    gene_axes: Sequence[int] = (),
    energy: float = 0.9,
    max_dims: int = 16,
) -> tuple[np.ndarray, dict[str, int]]:
    """``components`` (orthonormal rows) widened by target-gene axes and response directions.

    Parameters
    ----------
    components
        Cell PCs, (k, n_features) orthonormal rows.
    deltas
        Training perturbations' mean changes, (m, n_features).
    gene_axes
        Feature indices whose unit axes join the basis (perturbed panel genes).
    energy
        Share of the deltas' summed squared norm the widened basis must keep; 0 adds no response
        direction.
    max_dims
        Most response directions added.

    Returns
    -------
    ``(basis, counts)``: orthonormal rows (cell PCs first, in their order) and how many rows of
    each kind were added (``{"cell_pcs", "gene_axes", "response_dims"}``).
    """
    rows = [np.asarray(components, dtype=np.float64)]
    n_axes = 0
    for index in gene_axes:
        axis = np.zeros(rows[0].shape[1])
        axis[index] = 1.0
        basis = np.vstack(rows)
        axis -= basis.T @ (basis @ axis)
        if np.linalg.norm(axis) > 1e-6:
            rows.append(axis[None, :] / np.linalg.norm(axis))
            n_axes += 1
    n_response = 0
    total = float(np.sum(deltas**2)) if len(deltas) else 0.0
    if energy > 0 and total > 0:
        basis = np.vstack(rows)
        residual = deltas - (deltas @ basis.T) @ basis
        _, singular, directions = np.linalg.svd(residual, full_matrices=False)
        kept = total - np.sum(residual**2)
        for value, direction in zip(singular[:max_dims], directions[:max_dims]):
            if n_response >= 1 and kept >= energy * total:
                break
            if value <= 1e-9 * np.sqrt(total):
                break
            rows.append(direction[None, :])
            kept += value**2
            n_response += 1
    stacked = np.vstack(rows)
    q, _ = np.linalg.qr(stacked.T)
    basis = q.T * np.sign(np.sum(q.T * stacked, axis=1))[:, None]  # same orientation as the inputs
    return basis, {"cell_pcs": len(components), "gene_axes": n_axes, "response_dims": n_response}
