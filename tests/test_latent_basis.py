"""The widened latent basis: cell PCs kept, target-gene axes and the fewest response directions added."""

from __future__ import annotations

import numpy as np

from envs.latent_basis import response_deltas, widen_basis


def _setup(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_features = 30
    q, _ = np.linalg.qr(rng.normal(size=(n_features, n_features)))
    components = q[:, :4].T  # 4 orthonormal "cell PCs"
    # responses: mostly along two directions outside the PCs, plus a little noise
    outside = q[:, 10:12].T
    deltas = rng.normal(size=(12, 2)) @ outside * 3.0 + 0.01 * rng.normal(size=(12, n_features))
    return components, deltas


def test_basis_is_orthonormal_and_keeps_the_cell_pcs():
    components, deltas = _setup()
    basis, counts = widen_basis(components, deltas, gene_axes=[5], energy=0.9)
    np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-10)
    np.testing.assert_allclose(basis[:4], components, atol=1e-10)  # same rows, same orientation
    assert counts["cell_pcs"] == 4 and counts["gene_axes"] == 1
    axis = np.zeros(components.shape[1])
    axis[5] = 1.0
    assert np.linalg.norm(basis @ axis) > 0.999  # the gene's own axis is expressible


def test_fewest_response_directions_that_keep_the_energy():
    components, deltas = _setup()
    basis, counts = widen_basis(components, deltas, energy=0.9)
    kept = np.sum((deltas @ basis.T) ** 2) / np.sum(deltas**2)
    assert kept >= 0.9 and counts["response_dims"] == 2  # two directions carry the responses
    one_fewer = basis[:-1]
    assert np.sum((deltas @ one_fewer.T) ** 2) / np.sum(deltas**2) < 0.9
    capped, capped_counts = widen_basis(components, deltas, energy=0.9, max_dims=1)
    assert capped_counts["response_dims"] == 1 and len(capped) == 5
    plain, plain_counts = widen_basis(components, deltas, energy=0.0)
    assert plain_counts["response_dims"] == 0 and len(plain) == 4


def test_response_deltas_are_means_against_the_controls():
    X = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 3.0], [6.0, 5.0]])
    labels = np.array(["ctrl", "ctrl", "A", "A"])
    np.testing.assert_allclose(response_deltas(X, labels, "ctrl"), [[4.0, 3.0]])
