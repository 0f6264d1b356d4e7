"""The neural-decoder rows of benchmarks/representation_ceiling.py on a tiny dataset (seconds)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from helpers import tiny_prepared


def _held_out_group():
    return tiny_prepared("group", "T", group_key="cell_type")


def test_the_neural_decoder_learns_from_training_cells_only():
    from benchmarks.representation_ceiling import fit_mlp_decoder

    ds = _held_out_group()
    probe = ds.latent[:50].astype(np.float64)
    before = fit_mlp_decoder(ds, (16,), seed=0).predict(probe)
    expression = ds.expression.toarray()
    expression[ds.split.test] += 5.0  # the held-out answer changes; a decoder that read it would change too
    ds.expression = sp.csr_matrix(expression)
    np.testing.assert_array_equal(fit_mlp_decoder(ds, (16,), seed=0).predict(probe), before)
    expression[ds.split.train] += 5.0
    ds.expression = sp.csr_matrix(expression)
    assert not np.allclose(fit_mlp_decoder(ds, (16,), seed=0).predict(probe), before)


def test_the_neurally_decoded_ceiling_lands_on_the_held_out_cells_and_scores():
    from benchmarks.representation_ceiling import fit_mlp_decoder, mlp_decoded_heldout_ceiling
    from experiments.evaluation.evaluate import build_context, evaluate_dataset

    ds = _held_out_group()
    predictor = mlp_decoded_heldout_ceiling(fit_mlp_decoder(ds, (16,), seed=0))
    context = build_context(ds, seed=0)
    for name in context.start_rows:
        prediction = predictor(context, name, np.random.default_rng(0))
        held_out = ds.latent[ds.cell_indices(name, "test")]
        # every end state is an observed held-out cell of the perturbation
        assert all(np.isclose(held_out, z).all(axis=1).any() for z in prediction.latent_end.astype(np.float32))
    result = evaluate_dataset(ds, {"mlp ceiling": predictor}, seed=0, n_pcs=5, references=False)
    values = [r["value"] for r in result.rows if r["metric"] == "delta_pearson_all"]
    assert len(values) == 1 and -1.0 <= values[0] <= 1.0
