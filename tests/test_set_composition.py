"""Composition of sets never observed on synthetic pairs of known truth (envs.synthetic_sets, envs.set_hints).

Sequential composition must beat additive where one member's response depends on the state the
other leaves the cell in (synergy, buffering), and must make the same prediction where it does
not (members acting on different states, or shifting the whole landscape).
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.preparation import prepare_dataset
from envs.synthetic_sets import INTERACTING_KINDS, make_synthetic_set_data
from experiments.evaluation import baselines as B


@pytest.fixture(scope="module")
def held_out_pairs():
    adata = make_synthetic_set_data(seed=0)
    kinds = dict(adata.uns["truth"]["pairs"])
    ds = prepare_dataset(adata, perturbation_key="perturbation", control_value="control", split="perturbations",
                         holdout=sorted(kinds), n_top_genes=adata.n_vars, seed=0)
    return ds, kinds, B.make_dynamics(ds)


def _predicted_deltas(ds, dynamics, label):
    """Gene-space mean delta of the training controls moved by the pair's composed hints, per composition."""
    z0 = ds.latent[ds.cell_indices("control", "train")].astype(np.float64)
    out = {}
    for how in ("additive", "sequential"):
        dynamics.state_hints.composition = how
        hint = dynamics.features_at(label, z0)[:, -ds.n_latent :]
        out[how] = B.latent_change_to_genes(ds, hint).mean(axis=0)
    return out


def _observed_delta(ds, label):
    mean = lambda rows: np.asarray(ds.expression[rows].mean(axis=0)).ravel()
    return mean(ds.cell_indices(label, "test")) - mean(ds.cell_indices("control", "train"))


def test_synthetic_sets_hold_out_pairs_whose_members_were_seen(held_out_pairs):
    ds, kinds, _ = held_out_pairs
    assert sorted(kinds.values()) == ["buffering", "disjoint", "synergy", "uniform"]
    assert set(ds.split.heldout_perturbations) == set(kinds)
    assert all(len(ds.cell_indices(member, "train")) for label in kinds for member in label.split("+"))


def test_sequential_beats_additive_on_interacting_pairs_and_equals_it_otherwise(held_out_pairs):
    ds, kinds, dynamics = held_out_pairs
    for label, kind in kinds.items():
        observed = _observed_delta(ds, label)
        predicted = _predicted_deltas(ds, dynamics, label)
        error = {how: float(np.mean((delta - observed) ** 2)) for how, delta in predicted.items()}
        gap = float(np.mean((predicted["sequential"] - predicted["additive"]) ** 2))
        size = float(np.mean(observed ** 2))
        if kind in INTERACTING_KINDS:  # measured at seed 0: 0.57 (synergy), 0.08 (buffering); seeds 1-3 at most 0.56
            assert error["sequential"] < 0.75 * error["additive"], (kind, error)
        else:  # the two compositions predict nearly the same change (measured 0.2-0.5% of its size at seed 0)
            assert gap < 0.05 * size, (kind, gap, size)
        if kind == "disjoint":  # and neither is closer to the truth (measured ratio 1.07)
            assert 0.75 < error["sequential"] / error["additive"] < 1.33, error
