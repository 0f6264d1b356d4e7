"""`waddington predict` on a real run: a Papalexi run that never saw STAT1 predicts its knockdown (slow)."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
from helpers import PAPALEXI, require_file, tiny_settings

pytestmark = pytest.mark.slow

PAPALEXI_OPTIONS = {"perturbation_key": "perturbation_confident", "control_value": "non-targeting",
                    "ignore_values": ["unassigned"], "split": "perturbations", "holdout": ["STAT1"]}


def test_papalexi_run_predicts_an_unseen_panel_gene(ray_local, tmp_path, capsys):
    import anndata as ad

    import envs
    from experiments.cli import predict
    from experiments.evaluation.metrics.deltas import pearson_or_zero
    from experiments.training.two_stage import run_two_stage

    path = require_file(PAPALEXI)
    dataset = envs.prepare_dataset(str(path), **PAPALEXI_OPTIONS, seed=0)
    assert "STAT1" not in dataset.training_perturbations
    assert "STAT1" in set(map(str, dataset.latent_space.feature_names))  # a panel gene: expressible
    run = tmp_path / "run"
    data_dir = dataset.save(run / "dataset")
    settings = tiny_settings(data=str(data_dir), **PAPALEXI_OPTIONS)
    list(run_two_stage(settings, work_dir=run / "checkpoints", data=ray_local.put(dataset.env_view())))

    out = tmp_path / "stat1.h5ad"
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    args = parser.parse_args(["--run", str(run), "-p", "STAT1,JAK2", "--n-cells", "300", "--with-observed",
                              "-o", str(out)])
    assert predict.run(args) == 0
    stdout = capsys.readouterr().out
    assert "STAT1:" in stdout

    pred = ad.read_h5ad(out)
    info = pred.uns["waddington"]
    assert list(pred.var_names) == [str(g) for g in dataset.latent_space.feature_names]
    assert not bool(info["perturbation_info"]["STAT1"]["seen_in_training"])
    assert bool(info["perturbation_info"]["STAT1"]["in_panel"])
    assert bool(info["perturbation_info"]["JAK2"]["seen_in_training"])
    cells = pred[(pred.obs["kind"] == "predicted") & (pred.obs["perturbation"] == "STAT1")]
    start = pred[pred.obs["kind"] == "start"]
    assert cells.n_obs == start.n_obs == 300 and np.isfinite(cells.X).all()
    assert np.abs(cells.obsm["X_latent_end"] - start.obsm["X_latent_end"]).mean() > 0.01  # the policy acted
    # start cells carry the input's obs names (read from the .h5ad with the run's ignore_values)
    source = ad.read_h5ad(path, backed="r")
    try:
        assert set(start.obs["source_cell"]) <= set(source.obs_names)
    finally:
        source.file.close()
    record = info["runs"]["run"]
    assert record["input"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(info["ranked_genes"]["STAT1"]) == 50
    # the held-out cells are there to compare with; report (not assert) how close tiny training gets
    observed = pred[(pred.obs["kind"] == "observed") & (pred.obs["perturbation"] == "STAT1")]
    assert observed.n_obs > 0 and set(observed.obs["dataset_part"]) == {"test"}
    predicted_delta = np.asarray(cells.X.mean(0) - start.X.mean(0)).ravel()
    observed_delta = np.asarray(observed.X.mean(0) - start.X.mean(0)).ravel()
    print(f"STAT1 (unseen) delta Pearson vs observed after tiny training: "
          f"{pearson_or_zero(predicted_delta, observed_delta):.3f}")
