"""The fitted landscape: analytic gradient, and wells recovered where the synthetic truth put them."""

from __future__ import annotations

import numpy as np

from envs.landscape import CellLandscape


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    cells = np.vstack([rng.normal(loc=c, scale=0.4, size=(200, 3)) for c in ([0, 0, 0], [2, 1, 0], [-1, 2, 1])])
    landscape = CellLandscape.fit(cells, n_wells=3, seed=0)
    points = rng.normal(size=(10, 3)) * 1.5
    eps = 1e-5
    numeric = np.stack(
        [
            (landscape.potential(points + eps * e) - landscape.potential(points - eps * e)) / (2 * eps)
            for e in np.eye(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(landscape.gradient(points), numeric, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(landscape.drift(points[0]), -numeric[0], rtol=1e-5, atol=1e-6)


def test_fit_recovers_known_wells():
    truth = CellLandscape.from_wells([0.5, 0.3, 0.2], [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], [0.3, 0.3, 0.3])
    rng = np.random.default_rng(1)
    component = rng.choice(3, size=3000, p=truth.weights)
    cells = truth.means[component] + rng.normal(scale=0.3, size=(3000, 2))
    fitted = CellLandscape.fit(cells, n_wells=3, seed=0)
    for mean in truth.means:
        assert np.min(np.linalg.norm(fitted.means - mean, axis=1)) < 0.05
    # The potential is lowest at the wells: each true centre is a local minimum of U.
    for mean in truth.means:
        assert np.linalg.norm(fitted.gradient(mean)) < 0.6


def test_synthetic_wells_recovered_in_latent_space():
    """True wells mapped through the generator and the fitted encoder sit near fitted wells.

    Tolerance: 0.5 latent units (cells have mean per-dimension variance 1 there; true wells are
    >= 1.2 apart), against the nearest fitted well.
    """
    from envs.synthetic import _log_normalized

    # the cell-PC space alone (8 dims): the known wells live there; the widened basis adds
    # response axes in which the per-dimension fit noise adds up (checked by the env tests)
    from envs.preparation import prepare_dataset

    synthetic_dataset = prepare_dataset("synthetic", seed=0, response_energy=0.0, target_gene_axes=False)
    truth = synthetic_dataset.truth
    loadings, baseline = np.asarray(truth["loadings"]), np.asarray(truth["baseline"])
    space = synthetic_dataset.latent_space
    gene_rows = np.array([int(name[1:]) for name in space.feature_names])
    fitted_means = synthetic_dataset.landscape.means
    distances = []
    for name, condition in truth["conditions"].items():
        if name not in synthetic_dataset.training_perturbations + [synthetic_dataset.control_value]:
            continue
        log_rate = baseline + np.asarray(condition["means"]) @ loadings.T
        if condition["gene_index"] >= 0:
            log_rate[:, condition["gene_index"]] -= truth["knockdown_log_fold"]
        true_wells = space.encode(_log_normalized(log_rate)[:, gene_rows])
        distances += [np.min(np.linalg.norm(fitted_means - well, axis=1)) for well in true_wells]
    assert np.median(distances) < 0.5, distances
    assert np.max(distances) < 1.0, distances
