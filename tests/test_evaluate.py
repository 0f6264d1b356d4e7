"""Evaluation pipeline: baselines against hand computations, split semantics, do-nothing == control-mean,
and a short TRPO -> PPO run beating the control-mean and train-mean baselines on the synthetic default."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from helpers import tiny_prepared

DELTA_METRICS = ("delta_pearson_all", "delta_pearson_top20", "delta_mse_all", "delta_mse_top20")


def _table(result, metric):
    return {r["method"]: r["value"] for r in result.rows if r["metric"] == metric}


def _zero_policy(obs: np.ndarray) -> np.ndarray:
    return np.zeros((obs.shape[0], _zero_policy.action_dim))


@functools.lru_cache(maxsize=None)
def _tiny(split: str = "cells", holdout: tuple = (), group: bool = False):
    """A tiny real-count dataset (3 perturbations, 2 groups), prepared with its expression."""
    return tiny_prepared(split, holdout, "cell_type" if group else None)


def test_do_nothing_policy_scores_exactly_like_control_mean(synthetic_dataset):
    """A policy whose cells end where they started is the control-mean baseline, metric for metric."""
    from experiments.evaluation.baselines import control_mean, train_mean
    from experiments.evaluation.evaluate import evaluate_dataset, policy_predictor, start_rows

    _zero_policy.action_dim = synthetic_dataset.n_latent
    methods = {"control-mean": control_mean, "do-nothing policy": policy_predictor(_zero_policy),
               "train-mean": train_mean}
    # dt = 0, no noise, no guide: the env's own dynamics leave a zero-action cell exactly where it started
    result = evaluate_dataset(synthetic_dataset, methods, seed=0, env_config={"dt": 0.0, "noise_std": 0.0, "guided": False},
                              max_start_cells=300)
    per = {(r["method"], r["perturbation"], r["metric"]): r["value"] for r in result.per_perturbation}
    names = result.info["perturbations"]
    assert len(names) == 8
    for p in names:
        for metric in (*DELTA_METRICS, "e_distance", "wasserstein2", "dtw"):
            assert per[("do-nothing policy", p, metric)] == per[("control-mean", p, metric)], (p, metric)
        assert per[("control-mean", p, "delta_pearson_all")] == 0.0
        # the seed paper's metric crowns doing nothing: exactly its optimum, 0
        assert per[("do-nothing policy", p, "paper_start_end")] == 0.0
    # control-mean's delta MSE is the observed delta's mean square, computed here independently
    X = synthetic_dataset.expression.astype(np.float64)
    rows = start_rows(synthetic_dataset, max_cells=300, seed=0)
    assert result.info["n_start_cells"] == len(rows) == 300
    assert set(rows) <= set(synthetic_dataset.cell_indices("control", "train"))
    ctrl = X[rows].toarray().mean(axis=0)
    expected = np.mean([np.mean((X[synthetic_dataset.cell_indices(p, "test")].toarray().mean(axis=0) - ctrl) ** 2)
                        for p in names])
    assert _table(result, "delta_mse_all")["control-mean"] == pytest.approx(expected, rel=1e-9)
    # and the comparison has teeth: train-mean is a different, better-correlated prediction
    assert _table(result, "delta_pearson_all")["train-mean"] > 0.1


def test_baselines_match_hand_computed_deltas():
    from experiments.evaluation.baselines import EvalContext, make_dynamics, perturbation_mean, ridge, train_mean, training_deltas

    ds = _tiny()
    X = ds.expression.toarray().astype(np.float64)
    train = ds.split.train
    ctrl_mean = X[train & (ds.labels == "ctrl")].mean(axis=0)
    by_hand = {p: X[train & (ds.labels == p)].mean(axis=0) - ctrl_mean for p in ("A", "B", "C")}
    deltas = training_deltas(ds)
    assert sorted(deltas) == ["A", "B", "C"]
    for p in by_hand:
        np.testing.assert_allclose(deltas[p], by_hand[p], rtol=1e-5, atol=1e-6)
    rows = ds.cell_indices("ctrl", "train")
    ctx = EvalContext(ds, {p: rows for p in "ABC"}, make_dynamics(ds), deltas)
    X0 = X[rows]
    rng = np.random.default_rng(0)
    pred = train_mean(ctx, "A", rng)
    # start cells + the mean delta, floored at 0 (log-expression is never negative)
    np.testing.assert_allclose(pred.cells, np.maximum(X0 + np.mean([by_hand[p] for p in "ABC"], axis=0), 0.0),
                               atol=1e-5)
    np.testing.assert_allclose(pred.trajectory[0], X0.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(perturbation_mean(ctx, "B", rng).cells, np.maximum(X0 + by_hand["B"], 0.0), atol=1e-5)
    # ridge on one-hot features (tiny genes are not perturbations): strong shrinkage toward the mean
    r = ridge(ctx, "C", rng).cells.mean(axis=0) - X0.mean(axis=0)
    mean_delta = np.mean([by_hand[p] for p in "ABC"], axis=0)
    assert np.linalg.norm(r - mean_delta) < np.linalg.norm(by_hand["C"] - mean_delta)
    assert np.linalg.norm(r - by_hand["C"]) < np.linalg.norm(mean_delta - by_hand["C"])


def test_heldout_perturbation_split_scores_only_unseen_ones_without_their_training_mean():
    from experiments.evaluation.evaluate import evaluate_dataset

    ds = _tiny("perturbations", ("B",))
    result = evaluate_dataset(ds, seed=0, n_pcs=5)
    assert result.info["perturbations"] == ["B"]
    methods = {r["method"] for r in result.rows}
    assert "perturbation-mean" not in methods  # B has no training cells: that baseline does not exist
    assert {"control-mean", "train-mean", "ridge", "drift (a=0)"} <= methods
    assert {r["split"] for r in result.rows} == {"held-out perturbations"}
    assert all(r["n_perturbations"] == 1 for r in result.rows)


def test_group_split_predicts_the_group_from_its_own_controls():
    from experiments.evaluation.baselines import training_deltas
    from experiments.evaluation.evaluate import evaluate_dataset, start_rows

    ds = _tiny("group", ("T",), group=True)
    rows = start_rows(ds, max_cells=10_000, seed=0)
    assert set(ds.groups[rows]) == {"T"} and set(ds.labels[rows]) == {"ctrl"}
    assert len(rows) == int(((ds.groups == "T") & (ds.labels == "ctrl")).sum())
    # training deltas compare perturbed cells outside T with controls outside T
    X = ds.expression.toarray().astype(np.float64)
    outside = ds.groups == "B"
    expect = X[outside & (ds.labels == "A")].mean(axis=0) - X[outside & (ds.labels == "ctrl")].mean(axis=0)
    np.testing.assert_allclose(training_deltas(ds)["A"], expect, rtol=1e-5, atol=1e-6)
    result = evaluate_dataset(ds, seed=0, n_pcs=5)
    assert result.info["split"] == "held-out group" and result.info["heldout_group"] == "T"
    assert result.info["perturbations"] == ["A", "B", "C"]
    observed = sum(result.info["n_observed_cells"].values())
    assert observed == int(((ds.groups == "T") & (ds.labels != "ctrl")).sum())


def test_trpo_ppo_beats_control_and_train_mean_on_synthetic_heldout_cells(ray_local, synthetic_dataset, tmp_path):
    """Known-truth synthetic default, held-out cells: a short TRPO -> PPO run must beat both shortcuts."""
    import envs  # noqa: F401
    from experiments.evaluation.baselines import control_mean, train_mean
    from experiments.evaluation.evaluate import evaluate_dataset, policy_predictor
    from experiments.evaluation.checkpoints import find_stage_checkpoints, load_policy
    from experiments.training.two_stage import run_two_stage

    settings = dict(trpo_iters=5, ppo_iters=5, train_batch_size=1024, num_envs_per_env_runner=16,
                    ppo_minibatch_size=256, ppo_num_epochs=5, num_env_runners=0, handoff_num_obs=64, seed=0)
    data = ray_local.put(synthetic_dataset.env_view())
    list(run_two_stage(settings, work_dir=tmp_path / "checkpoints", data=data))
    ckpts = find_stage_checkpoints(tmp_path)
    assert ckpts.stage1 is not None and ckpts.stage1_algorithm == "trpo"
    methods = {"control-mean": control_mean, "train-mean": train_mean,
               "TRPO->PPO": policy_predictor(load_policy(ckpts.stage2))}
    result = evaluate_dataset(synthetic_dataset, methods, seed=0, max_start_cells=300)
    pearson, edist = _table(result, "delta_pearson_top20"), _table(result, "e_distance")
    assert pearson["TRPO->PPO"] > max(pearson["control-mean"], pearson["train-mean"]), pearson
    assert edist["TRPO->PPO"] < min(edist["control-mean"], edist["train-mean"]), edist


def test_ridge_self_effect_changes_only_an_unseen_panel_genes_own_expression(synthetic_adata, synthetic_dataset):
    from envs.preparation import prepare_dataset
    from experiments.evaluation.baselines import ridge, ridge_self_effect
    from experiments.evaluation.evaluate import build_context

    held_out = sorted(set(synthetic_adata.obs["perturbation"]) - {"control"})[0]
    ds = prepare_dataset(synthetic_adata, perturbation_key="perturbation", control_value="control",
                         split="perturbations", holdout=[held_out], seed=0)
    context = build_context(ds, max_start_cells=100, seed=0)
    rng = np.random.default_rng(0)
    plain, with_self = ridge(context, held_out, rng).cells, ridge_self_effect(context, held_out, rng).cells
    gene = ds.featurizer.gene_index[held_out]
    changed = np.flatnonzero(np.abs(with_self - plain).max(axis=0) > 0)
    assert list(changed) == [gene]
    # the synthetic knockdowns lower their own gene: so does the rule, by one shared amount
    # (where the plain ridge leaves the gene above the floor at 0: below it both are 0)
    above = plain[:, gene] > 0
    assert above.sum() > 10 and np.all(with_self[above, gene] < plain[above, gene])
    seen = build_context(synthetic_dataset, max_start_cells=100, seed=0)  # held-out cells: every gene was trained
    for name in seen.start_rows:
        np.testing.assert_array_equal(ridge(seen, name, rng).cells, ridge_self_effect(seen, name, rng).cells)
