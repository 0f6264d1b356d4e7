"""Pairing and control references within covariates (cell type, donor): never across them."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from helpers import cell_type_counts

import envs
from envs.pairing import stratified_ot_pairs


def two_cell_types(seed: int = 0, n: int = 400, n_genes: int = 30) -> ad.AnnData:
    """Counts of two cell types whose responses to 'stim' differ; the types' shares differ between conditions.

    Controls are 80% type X, stimulated cells 80% type Y: a pooled comparison mistakes the change
    of composition for a response. X's base profile is high in genes 10-14, Y's in 15-19; stim
    raises genes 0-4 in X and genes 5-9 in Y.
    """
    blocks = [(condition, cell_type, count) for condition, share_x in (("ctrl", 0.8), ("stim", 0.2))
              for cell_type, count in (("X", int(n * share_x)), ("Y", n - int(n * share_x)))]
    return cell_type_counts(blocks, {"X": slice(10, 15), "Y": slice(15, 20)}, {"X": slice(0, 5), "Y": slice(5, 10)},
                            n_genes=n_genes, seed=seed)


KEYS = dict(perturbation_key="condition", control_value="ctrl", n_latent=4, n_top_genes=30, max_pair_cells=300)


def test_stratified_pairs_stay_within_their_stratum():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(40, 2))
    strata = np.array(["a"] * 20 + ["b"] * 20)
    sources = np.r_[0:10, 20:30]
    targets = np.r_[10:16, 30:40]  # 6 targets in a, 10 in b
    pairs = stratified_ot_pairs(latent, sources, targets, strata, rng=rng)
    s, t = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    assert np.all(strata[s] == strata[t])
    assert pairs[:, 2].sum() == pytest.approx(1.0)
    # strata weighted by their share of the targets: 6/16 of the mass in a
    assert pairs[strata[s] == "a", 2].sum() == pytest.approx(6 / 16)
    pooled = stratified_ot_pairs(latent, sources, targets, None, rng=rng)
    assert set(pooled[:, 1].astype(int)) == set(targets)


def test_cells_split_pairs_within_cell_type():
    ds = envs.prepare_dataset(two_cell_types(), covariate_keys=["cell_type"], seed=0, **KEYS)
    assert ds.meta["covariate_keys"] == ["cell_type"]
    pairs = ds.pairs["stim"]
    assert np.all(ds.covariates[pairs[:, 0].astype(int)] == ds.covariates[pairs[:, 1].astype(int)])
    # without covariates OT pairs the many X controls with Y-type stimulated cells
    pooled = envs.prepare_dataset(two_cell_types(), seed=0, **KEYS).pairs["stim"]
    crossing = pooled[ds.covariates[pooled[:, 0].astype(int)] != ds.covariates[pooled[:, 1].astype(int)], 2].sum()
    assert crossing > 0.3


def test_group_split_never_pairs_the_heldout_groups_controls():
    """--group-key is a covariate by default: the held-out type's controls are never paired across types."""
    ds = envs.prepare_dataset(two_cell_types(), split="group", group_key="cell_type", holdout=["X"], seed=0, **KEYS)
    assert ds.meta["covariate_keys"] == ["cell_type"]
    sources = ds.pairs["stim"][:, 0].astype(int)
    assert set(ds.groups[sources]) == {"Y"}
    assert set(ds.groups[ds.pairs["stim"][:, 1].astype(int)]) == {"Y"}


def test_training_delta_compares_within_cell_type():
    from experiments.evaluation.baselines import training_deltas

    ds = envs.prepare_dataset(two_cell_types(), covariate_keys=["cell_type"], seed=0, **KEYS)
    X = ds.expression.toarray().astype(np.float64)
    train = ds.split.train
    expect, weights = [], []
    for cell_type in ("X", "Y"):
        in_type = train & (ds.covariates == cell_type)
        stim, ctrl = in_type & (ds.labels == "stim"), in_type & (ds.labels == "ctrl")
        expect.append(X[stim].mean(axis=0) - X[ctrl].mean(axis=0))
        weights.append(stim.sum())
    delta = training_deltas(ds)["stim"]
    np.testing.assert_allclose(delta, np.average(expect, axis=0, weights=weights), rtol=1e-6, atol=1e-9)
    # the marker genes of the types (10-19) barely move within a type; a pooled delta moves them
    names = list(ds.latent_space.feature_names)
    genes = [names.index(f"g{i}") for i in range(10, 20)]
    pooled = X[train & (ds.labels == "stim")].mean(axis=0) - X[train & (ds.labels == "ctrl")].mean(axis=0)
    assert np.abs(delta[genes]).mean() < 0.3 * np.abs(pooled[genes]).mean()


def test_evaluation_starts_match_the_observed_composition():
    from experiments.evaluation.evaluate import start_rows

    ds = envs.prepare_dataset(two_cell_types(), covariate_keys=["cell_type"], seed=0, **KEYS)
    rows = start_rows(ds, max_cells=100, seed=0, perturbation="stim")
    observed = ds.cell_indices("stim", "test")
    share_y_observed = np.mean(ds.covariates[observed] == "Y")
    assert np.mean(ds.covariates[rows] == "Y") == pytest.approx(share_y_observed, abs=0.05)
    assert set(ds.labels[rows]) == {"ctrl"} and ds.split.train[rows].all()


def test_unknown_covariate_is_one_clear_error():
    with pytest.raises(envs.DataValidationError, match=r"covariate_keys 'donor' not found in obs"):
        envs.prepare_dataset(two_cell_types(), covariate_keys=["donor"], seed=0, **KEYS)
