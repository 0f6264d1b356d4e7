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


def test_gene_axes_are_capped_by_the_training_responses_on_their_own_gene():
    from envs.preprocessing import BasisOptions

    rng = np.random.default_rng(0)
    names = np.array([f"g{i}" for i in range(30)])
    labels = np.repeat(["ctrl", "g3", "g7", "g11", "g20", "g25"], 40)
    expression = rng.normal(5.0, 0.1, size=(len(labels), 30))
    for gene, drop in (("g3", 0.5), ("g7", 3.0), ("g11", 0.2), ("g20", 2.0)):  # g25: held out below
        expression[labels == gene, int(gene[1:])] -= drop
    fit = labels != "g25"
    components = np.linalg.qr(rng.normal(size=(30, 4)))[0].T
    capped = BasisOptions(labels, "ctrl", response_energy=0, max_gene_axes=2)
    basis = capped.widen(components, expression[fit], names, fit)
    assert capped.added["gene_axes"] == 2
    reach = {gene: np.linalg.norm(basis @ np.eye(30)[int(gene[1:])]) for gene in ("g3", "g7", "g11", "g20", "g25")}
    assert reach["g7"] > 0.999 and reach["g20"] > 0.999  # the two largest own-gene drops are expressible
    assert max(reach["g3"], reach["g11"], reach["g25"]) < 0.9  # the others only through the 4 cell PCs
    uncapped = BasisOptions(labels, "ctrl", response_energy=0)
    uncapped.widen(components, expression[fit], names, fit)
    assert uncapped.added["gene_axes"] == 5  # held-out g25 included when under the cap
