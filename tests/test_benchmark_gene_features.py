"""The co-expression gene features of benchmarks/gene_features.py, and its predictors, on a tiny dataset (seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import tiny_prepared


def _tiny_heldout_dataset():
    return tiny_prepared("perturbations", ["B"])


def test_co_expression_is_read_from_training_controls_only():
    from benchmarks.gene_features import co_expression

    ds = _tiny_heldout_dataset()
    slopes, correlations = co_expression(ds)
    rows = np.flatnonzero(ds.split.train & (ds.labels == "ctrl"))
    X = ds.expression[rows].toarray().astype(np.float64)
    varied = np.flatnonzero(X.var(axis=0) > 0)
    g, h = varied[0], varied[1]
    # slope of gene h on gene g: least squares, by hand
    expect = np.polyfit(X[:, g], X[:, h], 1)[0]
    assert abs(slopes[h, g] - expect) < 1e-8
    np.testing.assert_allclose(np.diag(slopes)[varied], 1.0, atol=1e-10)
    np.testing.assert_allclose(correlations, correlations.T, atol=1e-10)
    assert np.abs(correlations[np.ix_(varied, varied)]).max() <= 1 + 1e-9
    assert abs(correlations[h, g] - np.corrcoef(X[:, g], X[:, h])[0, 1]) < 1e-8


@pytest.mark.slow  # a benchmark on Papalexi
def test_every_compared_predictor_scores_the_unseen_perturbation():
    from benchmarks.gene_features import methods_for
    from experiments.evaluation.evaluate import evaluate_dataset

    ds = _tiny_heldout_dataset()
    result = evaluate_dataset(ds, methods_for(ds), seed=0, n_pcs=5, references=False)
    assert result.info["perturbations"] == ["B"]
    scored = {r["method"] for r in result.rows if r["metric"] == "delta_pearson_all"}
    assert scored == set(methods_for(ds))
