"""Calibrated hints: an unseen perturbation's extrapolated shift is shrunk by leave-one-perturbation-out on training perturbations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.dynamics import CellStateDynamics, DynamicsConfig
from envs.hint_calibration import HintShrinkage, hint_shrinkage
from envs.perturbation_features import PerturbationFeaturizer, ShiftHints
from envs.preparation import prepare_dataset

N_LATENT, N_SHARED, N_GENES = 16, 10, 80


def _hints(rng: np.random.Generator, n_train: int, *, feature_effect: float, self_effect: float, noise: float):
    """(plain hints, calibrated hints, unseen genes, their true shift) from ``n_train`` training knockdowns.

    Truth: a shift is a mean, plus ``feature_effect`` x a linear map of the gene's features, plus
    ``self_effect`` x its own-axis loading; a training knockdown's measured shift adds ``noise``.
    """
    genes = [f"g{i}" for i in range(N_GENES)]
    training = genes[:n_train]
    featurizer = PerturbationFeaturizer(rng.normal(size=(N_LATENT, N_GENES)), genes, training,
                                        shared_rows=range(N_SHARED))
    mean, mapping = rng.normal(size=N_LATENT), rng.normal(size=(N_LATENT + 1, N_LATENT)) / np.sqrt(N_LATENT)

    def truth_at(name: str) -> np.ndarray:
        linear = featurizer(name)[: N_LATENT + 1].astype(np.float64) @ mapping
        return mean + feature_effect * linear + self_effect * featurizer.own_axis(name)

    # one control cell at the origin, one target cell per training knockdown at its measured shift
    measured = [truth_at(g) + noise * rng.normal(size=N_LATENT) for g in training]
    latent = np.vstack([np.zeros(N_LATENT)] + measured)
    pairs = {g: np.array([[0.0, i + 1.0, 1.0]]) for i, g in enumerate(training)}
    plain = ShiftHints(latent, pairs, featurizer)
    calibrated = ShiftHints(latent, pairs, featurizer, calibrate=True)
    return plain, calibrated, genes[n_train:], truth_at


def _error(hints: ShiftHints, unseen: list[str], truth_at) -> float:
    return float(np.mean([np.sum((hints(g) - truth_at(g)) ** 2) for g in unseen]))


def test_an_inflated_extrapolation_is_shrunk():
    """Features and own axes carry nothing (pure noise between perturbations): the ridge and the
    self-effect fit that noise, and taken at face value move an unseen knockdown away from the
    average; leave-one-out sees it and shrinks both, and the calibrated hint lands closer to the truth."""
    plain, calibrated, unseen, truth_at = _hints(np.random.default_rng(1), 14, feature_effect=0.0,
                                                 self_effect=0.0, noise=1.0)
    assert calibrated.shrinkage.n_left_out == 14
    assert calibrated.shrinkage.ridge < 0.3 and calibrated.shrinkage.self_effect < 0.5
    assert _error(calibrated, unseen, truth_at) < 0.8 * _error(plain, unseen, truth_at)


def test_a_calibrated_extrapolation_is_left_near_one():
    """Features and own axes say it all (little noise): the factors stay near 1 and the hint as before.

    (A self-effect large against the features' effect is not this case: the ridge then fits the
    own-axis shifts of its few training genes as noise, and leave-one-out rightly shrinks it.)
    """
    plain, calibrated, unseen, truth_at = _hints(np.random.default_rng(2), 40, feature_effect=3.0,
                                                 self_effect=0.5, noise=0.05)
    assert calibrated.shrinkage.ridge > 0.9 and calibrated.shrinkage.self_effect > 0.9
    assert _error(calibrated, unseen, truth_at) < 1.1 * _error(plain, unseen, truth_at)


def test_factors_only_shrink_and_default_without_evidence():
    rng = np.random.default_rng(3)
    features, shifts, own = rng.normal(size=(6, 4)), rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    assert hint_shrinkage(features, shifts, own, np.zeros(6, dtype=bool), 1.0) == HintShrinkage()
    # a response that is twice what the regression says asks for a factor 2: capped at 1
    doubled = hint_shrinkage(features, 2 * features @ rng.normal(size=(4, 3)), np.zeros((6, 3)),
                             np.ones(6, dtype=bool), 1e-6, with_self_effect=False)
    assert doubled.ridge == pytest.approx(1.0) and doubled.self_effect == 1.0


@pytest.fixture(scope="module")
def held_out_dataset(synthetic_adata):
    held_out = sorted(set(synthetic_adata.obs["perturbation"]) - {"control"})[:2]
    return prepare_dataset(synthetic_adata, perturbation_key="perturbation", control_value="control",
                           split="perturbations", holdout=held_out, seed=0), held_out


def test_the_factors_read_training_perturbations_only(held_out_dataset):
    ds, held_out = held_out_dataset
    hints = ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer, calibrate=True)
    assert hints.shrinkage.n_left_out == len(ds.training_perturbations)  # every synthetic one is a panel gene
    moved = ds.latent.copy()
    rows = np.concatenate([ds.cell_indices(p, "all") for p in held_out])
    moved[rows] += np.random.default_rng(0).normal(scale=3.0, size=(len(rows), ds.n_latent))
    again = ShiftHints(moved, ds.pairs, ds.policy_featurizer, calibrate=True)
    assert again.shrinkage == hints.shrinkage
    np.testing.assert_array_equal(again(held_out[0]), hints(held_out[0]))
    # not vacuous: the training perturbations' cells do set them
    trained = ds.pairs[ds.training_perturbations[0]][:, 1].astype(int)
    moved[trained] += 3.0
    assert ShiftHints(moved, ds.pairs, ds.policy_featurizer, calibrate=True).shrinkage != hints.shrinkage


def test_seen_hints_and_older_datasets_are_unchanged(held_out_dataset):
    ds, held_out = held_out_dataset
    plain = ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer)
    calibrated = ShiftHints(ds.latent, ds.pairs, ds.policy_featurizer, calibrate=True)
    for name in ds.training_perturbations:
        np.testing.assert_array_equal(calibrated(name), plain(name))
    np.testing.assert_array_equal(calibrated("not-a-gene"), plain("not-a-gene"))  # the average shift
    opted_in = dataclasses.replace(ds, meta={**ds.meta, "calibrated_hints": True})  # off by default (docs/unseen.md)
    assert CellStateDynamics(opted_in, DynamicsConfig()).hints.shrinkage == calibrated.shrinkage
    # a dataset prepared without calibration keeps the hints its runs were trained and scored with
    older = dataclasses.replace(ds, meta={k: v for k, v in ds.meta.items() if k != "calibrated_hints"})
    hints = CellStateDynamics(older, DynamicsConfig()).hints
    assert hints.shrinkage == HintShrinkage()
    np.testing.assert_array_equal(hints(held_out[0]), plain(held_out[0]))
