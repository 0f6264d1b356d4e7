"""Per-cell hints: the mean OT displacement of a cell's nearest paired control cells, never its own partner's."""

from __future__ import annotations

import dataclasses

import anndata as ad
import gymnasium as gym
import numpy as np
import pytest
from helpers import cell_type_counts
from test_covariates import KEYS, two_cell_types

import envs
from envs import ENV_ID
from envs.dynamics import CellStateDynamics, DynamicsConfig
from envs.state_hints import StateHints


def _field(seed: int = 0, n: int = 30):
    """Paired control cells on a line, each moved by a displacement that grows along the line."""
    rng = np.random.default_rng(seed)
    starts = np.column_stack([np.linspace(0, 10, n), rng.normal(scale=0.01, size=n)])
    targets = starts + np.column_stack([starts[:, 0] / 10, np.ones(n)])
    latent = np.vstack([starts, targets])
    pairs = np.column_stack([np.arange(n), n + np.arange(n), np.full(n, 1.0 / n)])
    return latent, {"p": pairs}


def test_a_hint_is_the_mean_displacement_of_the_nearest_other_paired_cells():
    latent, pairs = _field()
    hints = StateHints(latent, pairs, neighbours=3)
    cell = 10
    hint = hints.at("p", latent[cell], fallback=np.zeros(2))[0]
    others = np.delete(np.arange(30), cell)
    nearest = others[np.argsort(np.linalg.norm(latent[others] - latent[cell], axis=1))[:3]]
    np.testing.assert_allclose(hint, (latent[30 + nearest] - latent[nearest]).mean(axis=0), atol=1e-9)
    # a new state between paired cells gets its neighbours' displacement too
    between = hints.at("p", [[5.05, 0.0]], fallback=np.zeros(2))[0]
    assert 0.4 < between[0] < 0.6 and between[1] == pytest.approx(1.0)


def test_a_paired_cell_never_reads_its_own_partner():
    latent, pairs = _field()
    before = StateHints(latent, pairs, neighbours=3).at("p", latent[10], fallback=np.zeros(2))
    moved = latent.copy()
    moved[30 + 10] += 100.0  # its own target
    np.testing.assert_array_equal(StateHints(moved, pairs, neighbours=3).at("p", latent[10], fallback=np.zeros(2)),
                                  before)
    moved[30 + 11] += 100.0  # a neighbour's target
    assert not np.allclose(StateHints(moved, pairs, neighbours=3).at("p", latent[10], fallback=np.zeros(2)), before)


def test_without_training_pairs_a_cell_gets_the_fallback():
    latent, pairs = _field()
    hints = StateHints(latent, pairs)
    assert not hints.covers("unseen")
    np.testing.assert_array_equal(hints.at("unseen", latent[:4], fallback=np.array([1.0, 2.0])),
                                  np.tile([1.0, 2.0], (4, 1)))
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        StateHints(latent, pairs, neighbours=0)


def test_cell_types_that_respond_differently_get_their_own_hints():
    ds = envs.prepare_dataset(two_cell_types(), covariate_keys=["cell_type"], seed=0, **KEYS)
    dynamics = CellStateDynamics(ds, DynamicsConfig())
    assert dynamics.state_hints is not None and ds.meta["state_hints"]
    pairs = ds.pairs["stim"]
    start, target = pairs[:, 0].astype(int), pairs[:, 1].astype(int)
    hints = dynamics.features_at("stim", ds.latent[start])[:, -ds.n_latent :]
    moved = ds.latent[target] - ds.latent[start]
    mean_shift = dynamics.hints("stim")
    for cell_type in ("X", "Y"):
        mine = ds.covariates[start] == cell_type
        truth = moved[mine].mean(axis=0)
        # each type's cells are hinted its own response, not the pooled one
        assert np.linalg.norm(hints[mine].mean(axis=0) - truth) < 0.5 * np.linalg.norm(mean_shift - truth)


def _three_cell_types(seed: int = 0, n: int = 150, n_genes: int = 30) -> ad.AnnData:
    """Counts of cell types X, Z (a near relative of X) and Y; stim raises genes 0-4 in X and Z, genes 5-9 in Y."""
    markers = {"X": [10, 11, 12, 13, 14], "Z": [10, 11, 12, 13, 20], "Y": [15, 16, 17, 18, 19]}
    blocks = [(condition, cell_type, n) for condition in ("ctrl", "stim") for cell_type in markers]
    responses = {"X": slice(0, 5), "Z": slice(0, 5), "Y": slice(5, 10)}
    return cell_type_counts(blocks, markers, responses, n_genes=n_genes, seed=seed)


def test_a_held_out_group_borrows_the_response_of_its_nearest_paired_cells():
    """Z's stimulated cells are held out: its controls are never paired, and borrow the response of X, their kin."""
    from experiments.evaluation.baselines import hint_controller
    from experiments.evaluation.evaluate import build_context, evaluate_dataset

    ds = envs.prepare_dataset(_three_cell_types(), split="group", group_key="cell_type", holdout=["Z"], seed=0,
                              **KEYS)
    assert build_context(ds, seed=0).dynamics.state_hints.covers("stim")
    per_cell = evaluate_dataset(ds, {"guide": hint_controller}, seed=0, n_pcs=5, references=False)
    mean_only = dataclasses.replace(ds, meta={k: v for k, v in ds.meta.items() if k != "state_hints"})
    pooled = evaluate_dataset(mean_only, {"guide": hint_controller}, seed=0, n_pcs=5, references=False)

    def score(result, metric):
        return next(r["value"] for r in result.rows if r["metric"] == metric)

    # both are scored against the observed held-out Z cells: the pooled shift mixes in Y's response
    assert score(per_cell, "delta_pearson_top20") > score(pooled, "delta_pearson_top20") + 0.15
    assert score(per_cell, "e_distance") < 0.5 * score(pooled, "e_distance")


def test_episodes_observe_their_own_cells_hint_and_older_datasets_the_mean_shift(synthetic_dataset):
    env = gym.make(ENV_ID, data=synthetic_dataset).unwrapped
    d = env.dynamics.n_latent
    obs, info = env.reset(seed=0)
    start = obs[d : 2 * d]
    hint = obs[-1 - d : -1]  # at reset the cell is at its start: the way to go is its hint
    np.testing.assert_allclose(hint, env.dynamics.features_at(info["perturbation"], start[None, :])[0, -d:], atol=1e-5)
    assert not np.allclose(hint, env.dynamics.hints(info["perturbation"]), atol=1e-3)
    vector = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", data=synthetic_dataset)
    observations, _ = vector.reset(seed=0)
    dynamics = vector.unwrapped.dynamics
    for row, index in zip(observations, vector.unwrapped._perturbation):
        expect = dynamics.features_at(dynamics.perturbations[index], row[None, d : 2 * d])[0, -d:]
        # stagger: the cell may have moved already, so compare the hint itself, not the way still to go
        np.testing.assert_allclose(row[:d] + row[-1 - d : -1] - row[d : 2 * d], expect, atol=1e-4)
    older = dataclasses.replace(synthetic_dataset, meta={k: v for k, v in synthetic_dataset.meta.items()
                                                         if k != "state_hints"})
    assert CellStateDynamics(older, DynamicsConfig()).state_hints is None
    assert CellStateDynamics(synthetic_dataset, DynamicsConfig(state_hint_neighbours=0)).state_hints is None
    with pytest.raises(ValueError, match="state_hint_neighbours must be >= 0"):
        CellStateDynamics(synthetic_dataset, DynamicsConfig(state_hint_neighbours=-1))


def test_a_start_cell_outside_the_episode_table_is_searched_for(synthetic_dataset):
    dynamics = CellStateDynamics(synthetic_dataset, DynamicsConfig())
    index = 0
    listed = dynamics.pairs[index][:, 0].astype(int)
    outside = np.setdiff1d(np.arange(len(synthetic_dataset.latent)), listed)[:3]
    rows = np.concatenate([listed[:2], outside])
    features = dynamics.episode_features(np.zeros(len(rows), dtype=int), rows)
    expect = dynamics.features_at(dynamics.perturbations[index], synthetic_dataset.latent[rows])
    np.testing.assert_allclose(features, expect, atol=1e-6)
    assert dynamics.features_at(dynamics.perturbations[index], np.zeros((0, dynamics.n_latent))).shape == (
        0, dynamics.feature_dim)


def test_leave_one_out_holds_where_the_neighbour_search_rounds():
    """Above 15 dimensions scikit-learn searches by brute force, whose distance of a cell to itself is not exactly 0."""
    rng = np.random.default_rng(0)
    n, d = 400, 30
    starts = rng.standard_t(2, size=(n, d)) * 10  # heavy tails: large norms, large rounding
    latent = np.vstack([starts, starts + rng.normal(size=(n, d))])
    pairs = {"p": np.column_stack([np.arange(n), n + np.arange(n), np.full(n, 1.0 / n)])}
    hints = StateHints(latent, pairs, neighbours=1)
    moved = latent.copy()
    moved[n:] += 1000.0 * np.eye(n, d)[np.arange(n) % d]  # every partner moves: a hint that read its own would jump
    own_partner_moved = StateHints(moved, pairs, neighbours=1).at("p", starts, fallback=np.zeros(d))
    unchanged = hints.at("p", starts, fallback=np.zeros(d))
    # each hint is one neighbour's displacement, and never the cell's own
    own = moved[n:] - starts
    assert not np.isclose(own_partner_moved, own).all(axis=1).any()
    assert unchanged.shape == (n, d)
