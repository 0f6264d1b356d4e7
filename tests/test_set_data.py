"""Sets through preparation, prediction checks and the additive baseline, on tiny data made here."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.perturbation_sets import PerturbationSetError
from experiments.evaluation import baselines as B
from experiments.prediction.predict import check_perturbations
from experiments.prediction.runs import PredictionError
from helpers import tiny_counts_adata

GROUPS = ("ctrl", "A", "B", "C", "A+C", "B+ctrl", "D+E")


def _prepare(adata, **options):
    return envs.prepare_dataset(adata, perturbation_key="perturbation", control_value="ctrl", n_latent=4,
                                n_top_genes=40, min_cells=10, seed=0, **options)


@pytest.fixture(scope="module")
def held_out_ab():
    # A+B never observed with cells? it is: held out, its members A and B are training singles
    adata = tiny_counts_adata(n_per_group=30, groups=(*GROUPS, "B+A"), seed=3)
    return _prepare(adata, split="perturbations", holdout=["A+B"])


def test_prepare_reads_sets_merges_spellings_and_pairs_observed_sets(held_out_ab):
    ds = held_out_ab
    assert ds.meta["set_separator"] == "+" and ds.meta["set_composition"] == "sequential"
    assert "B" in ds.perturbations and "B+ctrl" not in ds.perturbations  # B+ctrl is B: one group of 60 cells
    assert len(ds.cell_indices("B", "all")) == 60
    assert ds.split.heldout_perturbations == ["B+A"]  # asked as A+B: the data's spelling
    assert "A+C" in ds.pairs and "D+E" in ds.pairs  # observed sets are ordinary training perturbations
    assert ds.policy_featurizer.fallback == ["A", "B", "C", "D", "E"]  # ids go to members


def test_a_set_never_observed_composes_its_members_hints(held_out_ab):
    ds = held_out_ab
    dynamics = B.make_dynamics(ds)
    z0 = ds.latent[ds.cell_indices("ctrl", "train")[:8]].astype(np.float64)
    hints = {how: None for how in ("additive", "sequential")}
    for how in hints:
        dynamics.state_hints.composition = how
        hints[how] = dynamics.features_at("B+A", z0)[:, -ds.n_latent :]
    members = [dynamics.state_hints.at(m, z0, dynamics.hints(m)) for m in ("A", "B")]
    np.testing.assert_allclose(hints["additive"], members[0] + members[1], atol=1e-5)
    assert not np.allclose(hints["sequential"], hints["additive"])  # B's field read where A left the cell
    np.testing.assert_allclose(dynamics.hints("B+A"), dynamics.hints("A") + dynamics.hints("B"), atol=1e-6)
    np.testing.assert_allclose(dynamics.features_at("A+B", z0), dynamics.features_at("B+A", z0), atol=1e-6)


def test_additive_baseline_sums_member_deltas_and_skips_singles(held_out_ab):
    ds = held_out_ab
    context = B.EvalContext(dataset=ds, start_rows={p: ds.cell_indices("ctrl", "train") for p in ("B+A", "A")},
                            dynamics=B.make_dynamics(ds), train_delta=B.training_deltas(ds))
    prediction = B.additive(context, "B+A", np.random.default_rng(0))
    X0 = context.start_expression("B+A")
    np.testing.assert_allclose(prediction.cells, np.maximum(X0 + np.broadcast_to(
        context.train_delta["A"] + context.train_delta["B"], X0.shape), 0.0), atol=1e-9)
    with pytest.raises(KeyError, match="single"):
        B.additive(context, "A", np.random.default_rng(0))
    assert "additive" in B.BASELINES


def test_predict_accepts_sets_of_expressible_members_only(held_out_ab):
    ds = held_out_ab
    info = check_perturbations(ds, ["B+A", "C+B", "A+ctrl"], "trpo-ppo")
    assert info["B+A"]["members"] == ["B", "A"] and not info["B+A"]["seen_in_training"]
    assert "composed (sequential)" in info["C+B"]["expressed_as"]
    assert info["A+ctrl"]["seen_in_training"]
    with pytest.raises(PredictionError, match=r"member\(s\) \['Z'\] unknown"):
        check_perturbations(ds, ["A+Z"], "trpo-ppo")
    with pytest.raises(PredictionError, match="empty member"):
        check_perturbations(ds, ["A+"], "trpo-ppo")


def test_bad_set_input_is_one_error_before_fitting():
    adata = tiny_counts_adata(n_per_group=20, groups=("ctrl", "A", "B", "A+B", "X+Y"), seed=4)
    with pytest.raises(PerturbationSetError, match=r"Held-out set 'X\+Y': member\(s\) \['X', 'Y'\] cannot be"):
        _prepare(adata, split="perturbations", holdout=["X+Y"])
    clash = tiny_counts_adata(n_per_group=20, groups=("ctrl", "A", "IL4+"), seed=4)
    with pytest.raises(PerturbationSetError, match="--set-separator"):
        _prepare(clash)
    ds = _prepare(clash, set_separator="none")  # + is part of a name: sets off, every label one perturbation
    assert "IL4+" in ds.perturbations and ds.meta["set_separator"] is None
    with pytest.raises(PerturbationSetError, match="set_composition"):
        _prepare(adata, set_composition="both")


def test_datasets_prepared_before_sets_keep_their_features_and_hints(held_out_ab):
    import dataclasses

    from envs.perturbation_features import PerturbationFeaturizer, ShiftHints

    old = dataclasses.replace(held_out_ab, meta={k: v for k, v in held_out_ab.meta.items()
                                                  if k not in ("set_separator", "set_composition")})
    assert type(old.policy_featurizer) is PerturbationFeaturizer  # one id per label, as their runs saw
    assert "A+C" in old.policy_featurizer.fallback
    dynamics = B.make_dynamics(old)
    assert type(dynamics.hints) is ShiftHints


def test_data_without_sets_see_exactly_what_they_saw_before_sets():
    import dataclasses

    from helpers import tiny_prepared

    ds = tiny_prepared()
    assert ds.meta["set_separator"] == "+"
    before = dataclasses.replace(ds, meta={k: v for k, v in ds.meta.items() if k != "set_separator"})
    z0 = ds.latent[ds.cell_indices("ctrl", "train")].astype(np.float64)
    now, then = B.make_dynamics(ds), B.make_dynamics(before)
    for name in ("A", "B", "C", "g3", "nope"):
        np.testing.assert_array_equal(now.features_at(name, z0), then.features_at(name, z0))


def test_set_options_next_to_a_prepared_dataset_must_be_the_ones_it_was_prepared_with(held_out_ab, tmp_path):
    from experiments.cli.checks import quick_data_check
    from experiments.cli.errors import UsageError
    from experiments.training.settings import TwoStageSettings

    path = held_out_ab.save(tmp_path / "data")
    settings = TwoStageSettings(data=str(path))
    assert quick_data_check(settings, given={"set_composition": "sequential"}) == "dataset"
    with pytest.raises(UsageError, match="with --set-composition sequential; --set-composition additive would be"):
        quick_data_check(settings, given={"set_composition": "additive"})
    with pytest.raises(UsageError, match="--set-separator"):
        quick_data_check(settings, given={"set_separator": ";"})
