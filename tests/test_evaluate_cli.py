"""`waddington evaluate`: bad input is one clear error before Ray; outputs (metrics.json rows, report.md,
PNGs) on tiny data; scoring the checkpoints of a `train`-style run directory."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from helpers import REPO, WADDINGTON, subprocess_env, tiny_settings, tiny_two_type_adata


@pytest.fixture(scope="module")
def tiny_h5ad(tmp_path_factory):
    adata = tiny_two_type_adata()
    path = tmp_path_factory.mktemp("data") / "tiny.h5ad"
    adata.write_h5ad(path)
    return path


def _evaluate(args, capsys):
    from experiments.cli import main

    rc = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _base(tiny_h5ad):
    return ["--data", tiny_h5ad, "--perturbation-key", "perturbation", "--control-value", "ctrl", "--no-rl", "-q"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--holdout", "A,ZZZ"], "Held-out perturbations ['ZZZ'] are not in the data"),
        (["--split", "group", "--group-key", "tissue", "--holdout", "T"], "group_key 'tissue' not found in obs"),
        (["--split", "group", "--group-key", "cell_type", "--holdout", "NK"], "Group 'NK' not found in obs['cell_type']"),
        (["--holdout", "A,B,C"], "leaves no training perturbation"),
        (["--split", "perturbations"], "needs --holdout"),
        (["--split", "group", "--group-key", "cell_type", "--holdout", "T,B"], "exactly one group value"),
    ],
)
def test_bad_split_input_is_one_clear_error(tiny_h5ad, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc, _, err = _evaluate([*_base(tiny_h5ad), *extra, "-o", out], capsys)
    assert rc == 2
    assert err.startswith("waddington evaluate: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "metrics.json").exists()


def test_run_dir_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "run"
    (empty / "checkpoints" / "stage1-x").mkdir(parents=True)
    (empty / "checkpoints" / "stage1-x" / "state.json").write_text(json.dumps({"stage_done": "trpo"}))
    rc, _, err = _evaluate(["--run", empty, "-o", tmp_path / "out"], capsys)
    assert rc == 2 and "No finished two-stage checkpoint" in err and "stage2-" in err, err
    rc, _, err = _evaluate(["--run", tmp_path / "nowhere", "-o", tmp_path / "out"], capsys)
    assert rc == 2 and "does not exist" in err, err


def test_errors_come_before_ray_from_the_installed_entry_point(tiny_h5ad, tmp_path):
    """`python -m experiments.cli evaluate` is registered and fails fast (no Ray started) on bad data."""
    proc = subprocess.run(
        [*WADDINGTON, "evaluate", *map(str, _base(tiny_h5ad)), "--holdout", "NOPE", "-o", str(tmp_path / "o")],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "waddington evaluate: error: " in proc.stderr and "NOPE" in proc.stderr
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr


def test_baselines_only_writes_rows_report_and_pngs(tiny_h5ad, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = _evaluate([*_base(tiny_h5ad), "--split", "group", "--group-key", "cell_type", "--holdout", "T",
                                 "--seeds", "0,1", "-o", out], capsys)
    assert rc == 0, err
    payload = json.loads((out / "metrics.json").read_text())
    rows = payload["rows"]
    keys = [(r["method"], r["split"], r["metric"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)), "one row per method x split x metric x seed"
    methods = {r["method"] for r in rows}
    # no training, but the held-out bound: whether a target is within reach shows before any policy exists
    assert methods == {"control-mean", "train-mean", "perturbation-mean", "ridge", "ridge + self-effect", "drift (a=0)",
                       "hint-controller", "heldout-ceiling"}
    main_metrics = {"delta_pearson_all", "delta_pearson_top20", "delta_mse_all", "delta_mse_top20", "e_distance",
                    "wasserstein2", "dtw"}
    for method in methods:
        for seed in (0, 1):
            got = {r["metric"] for r in rows if r["method"] == method and r["seed"] == seed}
            assert main_metrics <= got, (method, seed)
    assert {r["split"] for r in rows} == {"held-out group"}
    assert all(r["n_perturbations"] == 3 for r in rows)
    assert len(payload["per_perturbation"]) >= 3 * len(rows) - 12
    report = (out / "report.md").read_text()
    assert "## held-out group" in report and "| method | delta_pearson_all" in report
    assert " ± " in report and "**" in report  # CI over 2 seeds, best per column marked
    assert "cell_type = T" in report
    for png in ("landscape.png", "delta_top_genes.png", "metric_bars.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png


def test_scores_the_checkpoints_of_a_train_run(ray_local, tmp_path, capsys):
    """A run dir laid out like `waddington train -o DIR`: TRPO-only and TRPO->PPO rows appear."""
    import envs
    from experiments.training.two_stage import run_two_stage

    adata = envs.make_synthetic_perturbation_data(n_perturbations=3, n_control_cells=200,
                                                  n_cells_per_perturbation=80, n_genes=60, seed=0)
    ds = envs.prepare_dataset(adata, perturbation_key="perturbation", control_value="control", n_latent=4,
                              n_top_genes=60, max_pair_cells=200, seed=0)
    data_dir = ds.save(tmp_path / "dataset")  # with its expression: evaluation needs gene space
    run = tmp_path / "run"
    list(run_two_stage(tiny_settings(data=str(data_dir), trpo_iters=1, ppo_iters=1), work_dir=run / "checkpoints",
                       data=ray_local.put(ds.env_view())))
    out = tmp_path / "eval"
    rc, _, err = _evaluate(["--run", run, "--no-ablation", "-q", "-o", out], capsys)
    assert rc == 0, err
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"TRPO-only", "TRPO->PPO", "control-mean", "train-mean"} <= methods
    assert {r["split"] for r in rows} == {"held-out cells"}
    assert "TRPO -> PPO vs the train-mean baseline" in (out / "report.md").read_text()


def test_malformed_config_yaml_is_one_clear_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("trpo_iters: [1, 2\nppo_iters: 3\n")
    rc, _, err = _evaluate(["--config", cfg, "-o", tmp_path / "out"], capsys)
    assert rc == 2 and err.startswith("waddington evaluate: error: ") and "is not valid YAML" in err, err
    assert "Traceback" not in err


def test_config_yaml_data_keys_are_honoured_and_the_command_is_recorded(tiny_h5ad, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {tiny_h5ad}\nperturbation_key: perturbation\ncontrol_value: ctrl\n")
    out = tmp_path / "out"
    argv = ["evaluate", "--config", str(cfg), "--no-rl", "-q", "--max-start-cells", "50", "-o", str(out)]
    from experiments.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 0, err
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["command"] == "waddington " + " ".join(argv)
    assert {r["split"] for r in payload["rows"]} == {"held-out cells"}


def test_top_k_score_keys_name_k(tiny_h5ad):
    import envs
    from experiments.evaluation import metrics as M
    from experiments.evaluation.baselines import train_mean
    from experiments.evaluation.evaluate import build_context, observed_trajectory, score_prediction

    ds = envs.prepare_dataset(str(tiny_h5ad), perturbation_key="perturbation", control_value="ctrl", n_latent=4)
    context = build_context(ds, max_start_cells=40)
    prediction = train_mean(context, "A", np.random.default_rng(0))
    X_ctrl = context.start_expression("A")
    X_obs = ds.expression[ds.cell_indices("A", "test")].toarray()
    pca = M.fixed_pca(X_ctrl, 3)
    traj = observed_trajectory(pca.transform(X_ctrl), pca.transform(X_obs), n_bins=5)
    scores = score_prediction(prediction, X_ctrl, X_obs, pca=pca, observed_traj_pc=traj, k=5)
    assert {"delta_pearson_top5", "delta_mse_top5"} <= set(scores)
    assert not {"delta_pearson_top20", "delta_mse_top20"} & set(scores)


def test_cell_eval_scores_join_the_rows_and_the_report(tiny_h5ad, tmp_path, capsys):
    out = tmp_path / "ce"
    rc, _, err = _evaluate([*_base(tiny_h5ad), "--split", "group", "--group-key", "cell_type", "--holdout", "T",
                            "--cell-eval", "--cell-eval-cells", "60", "-o", out], capsys)
    assert rc == 0, err
    rows = json.loads((out / "metrics.json").read_text())["rows"]

    def value(method, metric):
        return next(r["value"] for r in rows if r["method"] == method and r["metric"] == metric)

    # three perturbations: discrimination is scored; doing nothing makes no DE gene, a real shift some
    assert value("control-mean", "cell_eval_de_nsig_counts_pred") <= 1
    assert value("control-mean", "cell_eval_de_nsig_counts_real") > 1
    assert value("hint-controller", "cell_eval_pearson_delta") > 0.5
    assert value("hint-controller", "cell_eval_discrimination_score_l1") >= 0
    assert value("hint-controller", "de_genes") > 0 and value("control-mean", "de_genes") <= 1
    report = (out / "report.md").read_text()
    assert "cell-eval (Arc Institute" in report and "cell_eval_pearson_delta" in report
    assert "DE genes per perturbation" in report
