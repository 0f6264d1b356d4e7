"""Shift hints: the mean shift of each perturbation, observed by the policy, from training data only."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from envs import ENV_ID
from envs.dynamics import CellStateDynamics, DynamicsConfig
from envs.perturbation_features import ShiftHints
from envs.preparation import prepare_dataset


def test_training_hints_are_the_mean_paired_displacement(synthetic_dataset):
    ds = synthetic_dataset
    hints = ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer)
    for name, pairs in ds.pairs.items():
        start, target, weight = ds.latent[pairs[:, 0].astype(int)], ds.latent[pairs[:, 1].astype(int)], pairs[:, 2]
        np.testing.assert_allclose(hints(name), (weight[:, None] * (target - start)).sum(axis=0), atol=1e-5)
    # the shift of a perturbation is its own: hints differ more between perturbations than within noise
    spread = np.std(np.stack([hints(n) for n in ds.pairs]), axis=0)
    assert spread.max() > 0.1


def test_unseen_panel_gene_hint_is_regressed_from_its_loadings(synthetic_adata):
    held_out = sorted(set(synthetic_adata.obs["perturbation"]) - {"control"})[0]
    ds = prepare_dataset(synthetic_adata, perturbation_key="perturbation", control_value="control",
                         split="perturbations", holdout=[held_out], seed=0)
    hints = ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer)
    assert held_out not in hints.known
    average = np.mean(np.stack(list(hints.known.values())), axis=0)
    np.testing.assert_allclose(hints("not-a-gene"), average, atol=1e-5)  # nothing known: the average shift
    observed = ds.latent[ds.cell_indices(held_out, "all")].mean(axis=0) - ds.latent[
        ds.cell_indices("control", "train")].mean(axis=0)
    # the synthetic knockdowns move cells with their gene's loadings: regressed, the hint lands far
    # closer to the unseen shift than the average does (measured 0.47 vs 2.23 for this gene)
    assert np.linalg.norm(hints(held_out) - observed) < 0.5 * np.linalg.norm(average - observed)
    # its own target-gene axis, which no training perturbation used, is not among its features
    basis = ds.meta["basis"]
    axis_rows = slice(basis["cell_pcs"], basis["cell_pcs"] + basis["gene_axes"])
    assert not np.any(ds.policy_featurizer(held_out)[: ds.n_latent][axis_rows])
    assert np.any(ds.featurizer(held_out)[: ds.n_latent][axis_rows])  # the ridge baseline keeps every row


def test_observation_carries_the_hint_only_for_datasets_prepared_with_it(synthetic_dataset):
    # the perturbation's mean shift for every cell (per-cell hints: tests/test_state_hints.py)
    env = gym.make(ENV_ID, data=synthetic_dataset, state_hint_neighbours=0).unwrapped
    d = env.dynamics.n_latent
    base_dim = synthetic_dataset.featurizer.dim
    assert env.observation_space.shape == (2 * d + base_dim + d + 1,)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    start = obs[d : 2 * d]  # at reset the cell is at its start: the way to go is the hint itself
    np.testing.assert_allclose(obs[2 * d + base_dim : 3 * d + base_dim], env.dynamics.hints(info["perturbation"]),
                               atol=1e-5)
    obs, *_ = env.step(np.ones(d, dtype=np.float32))
    np.testing.assert_allclose(obs[2 * d + base_dim : 3 * d + base_dim],
                               start + env.dynamics.hints(info["perturbation"]) - obs[:d], atol=1e-5)
    older = dataclasses.replace(synthetic_dataset, meta={k: v for k, v in synthetic_dataset.meta.items()
                                                         if k != "shift_hint"})
    assert CellStateDynamics(older, DynamicsConfig()).feature_dim == base_dim  # a run trained before hints
    assert CellStateDynamics(older, DynamicsConfig(shift_hint=True)).feature_dim == base_dim + d


def test_an_unseen_knockdown_lowers_its_own_gene_as_the_training_knockdowns_did(synthetic_adata):
    """The self-effect: one number from the training knockdowns, along the unseen gene's own axis."""
    held_out = sorted(set(synthetic_adata.obs["perturbation"]) - {"control"})[0]
    ds = prepare_dataset(synthetic_adata, perturbation_key="perturbation", control_value="control",
                         split="perturbations", holdout=[held_out], seed=0)
    hints = ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer)
    own = ds.policy_featurizer.own_axis(held_out)
    assert np.linalg.norm(own) > 0.1  # its own axis is in the basis, and out of the policy's features
    assert not np.any(own[ds.policy_featurizer.shared_rows])
    assert hints.self_effect > 0  # the synthetic knockdowns lower their own gene
    observed = ds.latent[ds.cell_indices(held_out, "all")].mean(axis=0) - ds.latent[
        ds.cell_indices("control", "train")].mean(axis=0)
    without = hints(held_out) - hints.self_effect * own
    assert np.linalg.norm(hints(held_out) - observed) < np.linalg.norm(without - observed)
    # datasets prepared before the rule (no guided actions in their meta) keep the hints their runs saw
    assert ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer, self_effect=False).self_effect == 0.0
    older = dataclasses.replace(ds, meta={k: v for k, v in ds.meta.items() if k != "guided_actions"})
    assert CellStateDynamics(older, DynamicsConfig()).hints.self_effect == 0.0
    assert CellStateDynamics(ds, DynamicsConfig()).hints.self_effect == hints.self_effect
    # a training knockdown's hint is its own measured shift, untouched by the rule
    trained = sorted(hints.known)[0]
    np.testing.assert_allclose(hints(trained), hints.known[trained].astype(np.float32))
