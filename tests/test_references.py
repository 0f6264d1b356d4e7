"""Reference rows: which exist in which split, what the held-out bound measures, and that it is never crowned best."""

from __future__ import annotations

import numpy as np

from helpers import tiny_prepared


def _prepared(split: str, holdout: list[str], group_key: str | None = None):
    return tiny_prepared(split, holdout, group_key)


def _methods(result) -> set[str]:
    return {r["method"] for r in result.rows}


def test_heldout_ceiling_exists_in_every_split_and_training_references_only_where_they_can():
    from experiments.evaluation.evaluate import evaluate_dataset

    seen = evaluate_dataset(_prepared("cells", []), seed=0, n_pcs=5)
    assert {"latent-ceiling", "oracle-controller", "heldout-ceiling"} <= _methods(seen)
    for unseen in (_prepared("perturbations", ["B"]), _prepared("group", ["T"], group_key="cell_type")):
        methods = _methods(evaluate_dataset(unseen, seed=0, n_pcs=5))
        # no training cells of their own kind to land on: the training references do not exist there
        assert "heldout-ceiling" in methods
        assert not {"latent-ceiling", "oracle-controller"} & methods


def test_heldout_ceiling_lands_each_start_cell_on_a_heldout_cell_of_its_own_group(synthetic_dataset):
    from experiments.evaluation.evaluate import build_context
    from experiments.evaluation.references import heldout_ceiling, latent_ceiling

    ds = _prepared("group", ["T"], group_key="cell_type")
    context = build_context(ds, max_start_cells=1000, seed=0)
    rng = np.random.default_rng(0)
    prediction = heldout_ceiling(context, "A", rng)
    heldout = ds.cell_indices("A", "test")
    assert set(ds.groups[heldout]) == {"T"}
    latent = ds.latent.astype(np.float64)
    # every end state is exactly a held-out T cell's latent state, and every start cell moved there
    landed = (np.abs(prediction.latent_end[:, None, :] - latent[heldout][None]).max(axis=2) == 0).any(axis=1)
    assert landed.all()
    np.testing.assert_array_equal(prediction.latent_start, latent[context.start_rows["A"]])
    # on seen perturbations (held-out cells) it is the same construction as latent-ceiling, on other cells
    seen = build_context(synthetic_dataset, max_start_cells=200, seed=0)
    name = synthetic_dataset.training_perturbations[0]
    bound = heldout_ceiling(seen, name, rng).latent_end
    assert len(np.unique(bound, axis=0)) > 1
    test_states = synthetic_dataset.latent[synthetic_dataset.cell_indices(name, "test")].astype(np.float64)
    assert (np.abs(bound[:, None, :] - test_states[None]).max(axis=2) == 0).any(axis=1).all()
    assert not np.array_equal(bound, latent_ceiling(seen, name, rng).latent_end)


def test_heldout_ceiling_bounds_the_mean_shortcut_on_known_truth_data(synthetic_dataset):
    """The held-out answer moved into the latent space predicts the held-out delta better than any mean shortcut."""
    from experiments.evaluation.evaluate import evaluate_dataset

    result = evaluate_dataset(synthetic_dataset, seed=0, max_start_cells=300)
    pearson = {r["method"]: r["value"] for r in result.rows if r["metric"] == "delta_pearson_top20"}
    assert pearson["heldout-ceiling"] > pearson["train-mean"]
    assert pearson["heldout-ceiling"] > pearson["control-mean"]


def test_report_never_marks_a_row_that_reads_the_answer_as_best():
    from experiments.evaluation.report import render_tables

    rows = []
    for seed in (0, 1):
        for method, value in (("heldout-ceiling", 0.99), ("train-mean", 0.5), ("TRPO->PPO", 0.7 + 0.01 * seed)):
            rows.append(dict(method=method, split="held-out cells", metric="delta_pearson_top20", seed=seed,
                             value=value, n_perturbations=1))
    table = render_tables(rows)
    line = {row.split("|")[1].strip(): row for row in table.splitlines() if row.startswith("| ")}
    assert "**" not in line["heldout-ceiling"]
    assert "**" in line["TRPO->PPO"] and "**" not in line["train-mean"]
