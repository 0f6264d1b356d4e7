"""A differentiable Waddington landscape fitted to observed latent cells.

The potential is the negative log density of a Gaussian mixture,

    U(z) = -log sum_k w_k N(z; mu_k, Sigma_k),

so its valleys sit at the observed cell states and its drift ``-grad U(z)`` (the score of the
mixture) has a closed form: ``-grad U(z) = -sum_k r_k(z) P_k (z - mu_k)`` with responsibilities
``r_k`` and precisions ``P_k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

__all__ = ["CellLandscape"]

_LOG_2PI = np.log(2.0 * np.pi)


@dataclass
class CellLandscape:
    """Gaussian-mixture potential with analytic gradient.

    ``precision_cholesky[k]`` is ``L_k`` with ``P_k = L_k L_k^T`` (scikit-learn's convention).
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    precision_cholesky: np.ndarray  # (K, d, d)

    @classmethod
    def fit(
        cls,
        latent: np.ndarray,
        *,
        n_wells: int = 8,
        reg_covar: float = 1e-3,
        seed: int = 0,
    ) -> CellLandscape:
        """Fit the mixture to latent cells (cells x d) by EM with k-means initialisation.

        Parameters
        ----------
        latent
            Observed latent cell states.
        n_wells
            Number of mixture components (wells); capped at the number of cells / 5.
        reg_covar
            Added to covariance diagonals; floors how narrow a well can be.
        seed
            Random state of the initialisation.
        """
        latent = np.asarray(latent, dtype=np.float64)
        n_wells = max(1, min(n_wells, latent.shape[0] // 5))
        gmm = GaussianMixture(
            n_components=n_wells, covariance_type="full", reg_covar=reg_covar, random_state=seed, n_init=1
        )
        # EM on many small (d x d) matrices: BLAS/OpenMP threads cost more than they share (7x slower
        # on 2 busy cores, same result), so the fit runs on one thread
        with threadpool_limits(limits=1):
            gmm.fit(latent)
        return cls(gmm.weights_.copy(), gmm.means_.copy(), gmm.precisions_cholesky_.copy())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covariances(self) -> np.ndarray:
        precisions = np.einsum("kij,klj->kil", self.precision_cholesky, self.precision_cholesky)
        return np.linalg.inv(precisions)

    def _component_terms(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-component log weighted densities (n, K) and whitened offsets y = L^T (z - mu) (n, K, d)."""
        diff = z[:, None, :] - self.means[None, :, :]
        whitened = np.einsum("nkd,kde->nke", diff, self.precision_cholesky)
        return -0.5 * (whitened**2).sum(axis=2) + self._log_normalizers, whitened

    @cached_property
    def _log_normalizers(self) -> np.ndarray:
        # Constant per component; computed once, since gradient() runs on every env step.
        log_det = np.log(np.abs(np.diagonal(self.precision_cholesky, axis1=1, axis2=2))).sum(axis=1)
        return log_det - 0.5 * self.dim * _LOG_2PI + np.log(self.weights)

    def potential(self, z: np.ndarray) -> np.ndarray:
        """U(z) = -log density, for z of shape (n, d) or (d,)."""
        z2 = np.atleast_2d(np.asarray(z, dtype=np.float64))
        log_prob, _ = self._component_terms(z2)
        value = -logsumexp(log_prob, axis=1)
        return value if np.ndim(z) == 2 else value[0]

    def gradient(self, z: np.ndarray) -> np.ndarray:
        """grad U(z), same shape as ``z``; the drift is its negative."""
        z2 = np.atleast_2d(np.asarray(z, dtype=np.float64))
        log_prob, whitened = self._component_terms(z2)
        # softmax over wells by hand: scipy's logsumexp (array-API dispatch) was half of this function's
        # time, and this runs on every env step
        responsibility = np.exp(log_prob - log_prob.max(axis=1, keepdims=True))
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        # P_k (z - mu_k) = L_k y_k with y_k = L_k^T (z - mu_k)
        pulled = np.einsum("kde,nke->nkd", self.precision_cholesky, whitened)
        grad = np.einsum("nk,nkd->nd", responsibility, pulled)
        return grad if np.ndim(z) == 2 else grad[0]

    def drift(self, z: np.ndarray) -> np.ndarray:
        """-grad U(z): the direction cells roll downhill."""
        return -self.gradient(z)

    def stable_dt(self) -> float:
        """A drift step that cannot overshoot the narrowest well: half its smallest variance."""
        smallest_variance = np.min(np.linalg.eigvalsh(self.covariances))
        return float(0.5 * smallest_variance)

    def to_arrays(self, prefix: str = "landscape_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}weights": self.weights,
            f"{prefix}means": self.means,
            f"{prefix}precision_cholesky": self.precision_cholesky,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "landscape_") -> CellLandscape:
        return cls(
            np.asarray(arrays[f"{prefix}weights"]),
            np.asarray(arrays[f"{prefix}means"]),
            np.asarray(arrays[f"{prefix}precision_cholesky"]),
        )

    @classmethod
    def from_wells(cls, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> CellLandscape:
        """An isotropic-well landscape (used for the synthetic ground truth)."""
        dim = np.asarray(means).shape[1]
        chol = np.stack([np.eye(dim) / s for s in np.asarray(stds, dtype=np.float64)])
        w = np.asarray(weights, dtype=np.float64)
        return cls(w / w.sum(), np.asarray(means, dtype=np.float64), chol)
