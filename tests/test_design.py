"""`waddington design` and ``experiments.api.design``: the inverse question on tiny synthetic data.

The fixture is predict's pattern without the training: the forward model is the run's dataset (its
composed per-cell hints), not its policy, so a run directory holding only ``dataset/`` (what
``api.train`` saves there) is a complete design input, and no Ray is started. Targets are the data's
own held-out cells written to an ``.h5ad`` as raw counts, so they go through the projection too.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

PERTURBATIONS = ["G006", "G023", "G034", "G037", "G054"]  # the synthetic generator's labels at these settings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A run directory with a prepared synthetic dataset (5 perturbations, split by cells), and a target file."""
    import envs
    from experiments import api

    root = tmp_path_factory.mktemp("design")
    adata = envs.make_synthetic_perturbation_data(n_perturbations=5, n_control_cells=200,
                                                  n_cells_per_perturbation=80, n_genes=60, seed=0)
    dataset = api.prepare(adata, perturbation_key="perturbation", control_value="control", n_latent=4,
                          n_top_genes=40, max_pair_cells=200, seed=0)
    dataset.save(root / "run" / "dataset", overwrite=True)
    test = dataset.split.test
    held_out = adata[test & (adata.obs["perturbation"].astype(str) != "control").to_numpy()].copy()
    held_out.write_h5ad(root / "targets.h5ad")
    return {"root": root, "run": root / "run", "dataset": dataset, "adata": adata, "targets": root / "targets.h5ad"}


def _design(argv, capsys):
    """``waddington design ARGV`` through the entry point: (exit status, stdout, stderr)."""
    from experiments.cli.main import main

    rc = main(["design", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_error(capsys, argv, message):
    rc, _, err = _design(argv, capsys)
    assert rc == 2, err
    assert err.startswith("waddington design: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    return err


def test_e_distance_batch_is_evaluates_convention():
    from experiments.design.objective import e_distance_batch
    from experiments.evaluation.metrics.distances import e_distance

    rng = np.random.default_rng(0)
    clouds, target = rng.normal(size=(4, 30, 3)), rng.normal(size=(25, 3)) + 0.4
    batched = e_distance_batch(clouds, target)
    np.testing.assert_allclose(batched, [e_distance(c, target).value for c in clouds], rtol=1e-9, atol=1e-12)
    assert e_distance_batch(target[None], target)[0] == pytest.approx(0.0, abs=1e-9)


def test_targets_are_projected_as_the_runs_cells(tiny):
    from experiments.design.targets import read_target_cells

    ds = tiny["dataset"]
    targets = read_target_cells(tiny["targets"], ds, target_obs="perturbation")
    assert [t.name for t in targets] == PERTURBATIONS
    names = np.asarray(ds.obs_names)
    for target in targets:
        rows = np.array([np.flatnonzero(names == n)[0] for n in target.obs_names])
        np.testing.assert_allclose(target.latent, ds.latent[rows], atol=1e-5)
        np.testing.assert_allclose(target.expression, ds.expression[rows].toarray(), atol=1e-5)


def test_exhaustive_k1_finds_the_perturbation_whose_cells_are_the_target(tiny):
    from experiments import api

    table = api.design(tiny["run"], target_cells=tiny["targets"], target_obs="perturbation", designer="exhaustive",
                       max_size=1)
    for name in PERTURBATIONS:
        rows = table[table["target"] == name]
        assert len(rows) == len(PERTURBATIONS)  # k = 1: the whole library
        assert rows.iloc[0]["set"] == name, rows
        assert set(rows["evaluations"]) == {len(PERTURBATIONS)}
    # the naive mean-shift rule also retrieves them here, with no forward-model evaluation
    naive = api.design(tiny["run"], target_cells=tiny["targets"], target_obs="perturbation", designer="naive")
    assert [naive[naive["target"] == n].iloc[0]["set"] for n in PERTURBATIONS] == PERTURBATIONS
    assert set(naive["evaluations"]) == {0}


def test_signature_target_and_effort(tiny, tmp_path):
    from experiments import api

    table = api.design(tiny["run"], target_genes="G006:down", designer="exhaustive", max_size=1,
                       output=tmp_path / "signature")
    assert table.iloc[0]["set"] == "G006"  # a knockdown lowers its own gene most
    written = pd.read_csv(tmp_path / "signature" / "design.tsv", sep="\t")
    assert list(written["set"]) == list(table["set"]) and set(written["target"]) == {"signature"}
    costly = api.design(tiny["run"], target_genes="G006:down", designer="exhaustive", max_size=2, effort=0.5)
    np.testing.assert_allclose(costly["objective"], costly["distance"] + costly["effort"])
    sizes = costly["set"].str.count(r"\+") + 1
    np.testing.assert_allclose(costly["effort"], 0.5 * sizes)


@pytest.mark.parametrize("designer", ["greedy", "beam", "random"])
def test_designers_respect_the_budget(tiny, designer):
    from experiments import api

    budget = 7  # below the 15 sets of up to 2 of 5 members
    table = api.design(tiny["run"], target_cells=tiny["targets"], target_obs="perturbation=G023", designer=designer,
                       max_size=2, budget=budget, beam_width=2)
    assert set(table["target"]) == {"G023"}
    assert 0 < table["evaluations"].iloc[0] <= budget and len(table) <= budget
    assert len(set(table["set"])) == len(table)  # no set twice


def test_design_dir_has_every_output(tiny, tmp_path, capsys):
    import anndata as ad

    out = tmp_path / "design"
    rc, stdout, err = _design(["--run", tiny["run"], "--target-cells", tiny["targets"], "--target-obs", "perturbation",
                               "--max-size", "2", "--designer", "beam", "--beam-width", "2", "-q", "-o", out], capsys)
    assert rc == 0, err
    assert f"wrote {out}" in stdout
    table = pd.read_csv(out / "design.tsv", sep="\t")
    assert list(table.columns) == ["target", "rank", "set", "objective", "distance", "effort", "evaluations",
                                   "designer"]
    for name, rows in table.groupby("target"):
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
        assert rows["objective"].is_monotonic_increasing
        assert rows.iloc[0]["set"] == name
    assert set(table["designer"]) == {"beam"}
    cells = ad.read_h5ad(out / "design.h5ad")
    kinds = cells.obs["kind"].value_counts()
    assert kinds["start"] == 160 and kinds["predicted"] == 5 * 5 * 160
    assert kinds["target"] == len(ad.read_h5ad(tiny["targets"]))
    assert cells.obsm["X_latent_path"].shape == (cells.n_obs, 2 * tiny["dataset"].n_latent)
    best = cells[(cells.obs["kind"] == "predicted") & (cells.obs["rank"] == 1) & (cells.obs["target"] == "G006")]
    assert set(best.obs["perturbation"]) == {"G006"}
    assert (out / "design.png").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "design" and manifest["status"] == "complete"
    assert manifest["outputs"]["table"] == "design.tsv"
    _one_error(capsys, ["--run", tiny["run"], "--target-cells", tiny["targets"], "-o", out], "--overwrite")


def test_bad_inputs_are_one_error_each_before_any_work(tiny, tmp_path, capsys):
    adata = tiny["adata"]
    run, out = tiny["run"], tmp_path / "never"
    other = adata[:50].copy()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    other.write_h5ad(tmp_path / "other.h5ad")
    err = _one_error(capsys, ["--run", run, "--target-cells", tmp_path / "other.h5ad", "-o", out],
                     "is in another gene space")
    assert "has 0 of the run's 40 genes" in err
    _one_error(capsys, ["--run", run, "--target-cells", tiny["targets"], "--target-obs", "perturbation=NOPE", "-o", out],
               "the target is empty")
    adata[:0].copy().write_h5ad(tmp_path / "empty.h5ad")
    _one_error(capsys, ["--run", run, "--target-cells", tmp_path / "empty.h5ad", "-o", out], "the target is empty")
    (tmp_path / "library.txt").write_text("G006\nNOT_A_GENE\n")
    err = _one_error(capsys, ["--run", run, "--target-cells", tiny["targets"], "--library", tmp_path / "library.txt",
                              "-o", out], "member 'NOT_A_GENE' cannot be used")
    assert "Unknown perturbation" in err
    (tmp_path / "two.txt").write_text("G006\nG023\n")
    _one_error(capsys, ["--run", run, "--target-cells", tiny["targets"], "--library", tmp_path / "two.txt",
                        "--max-size", "3", "-o", out], "larger than the library (2 members)")
    _one_error(capsys, ["--run", run, "--target-cells", tiny["targets"], "--designer", "exhaustive", "--max-size", "2",
                        "--budget", "3", "-o", out], "more than the budget of 3")
    _one_error(capsys, ["--run", run, "--target-genes", "NOPE:up", "-o", out], "not in the run's gene space")
    assert not out.exists()  # nothing was written for any of them


def test_design_is_registered_and_documented():
    from experiments.cli.main import SUBCOMMANDS, build_parser

    assert "design" in SUBCOMMANDS
    with pytest.raises(SystemExit):
        build_parser().parse_args(["design", "--run", "r", "-o", "d"])  # a target is required
    assert sys.modules["experiments.cli.design"].NAME == "design"
