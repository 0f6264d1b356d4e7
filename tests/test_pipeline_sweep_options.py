"""Sweep options: resource sizing for small machines, grid validation, Optuna searcher + ASHA."""

from __future__ import annotations

import pytest

from helpers import tiny_dataset, tiny_settings


def test_trial_resources_fit_a_two_cpu_machine():
    from experiments.training.sweep import SweepError, check_resources
    from experiments.training.settings import resolve_settings

    s = resolve_settings(tiny_settings())
    pgf = check_resources(s, {"CPU": 2.0})
    assert sum(b.get("CPU", 0) for b in pgf.bundles) == 1  # two trials side by side on 2 CPUs
    s2 = resolve_settings(tiny_settings(num_env_runners=1))
    assert sum(b.get("CPU", 0) for b in check_resources(s2, {"CPU": 2.0}).bundles) == 2
    s3 = resolve_settings(tiny_settings(num_env_runners=2))
    with pytest.raises(SweepError, match="needs 3 CPUs .* cluster has 2"):
        check_resources(s3, {"CPU": 2.0})
    check_resources(s3, {"CPU": 2.0}, autoscaling=True)  # an autoscaling cluster may grow


def test_grid_validation():
    from experiments.training.sweep import SweepError, validate_grid

    assert validate_grid([0.01, 0.02], [0.1]) == ([0.01, 0.02], [0.1])
    for kl, clip in [([0.0], [0.2]), ([0.01], [1.0]), ([0.01], [0.0]), ([], [0.2]), ([float("nan")], [0.2])]:
        with pytest.raises(SweepError):
            validate_grid(kl, clip)


@pytest.mark.slow  # Optuna + ASHA over several trials; the grid sweep stays fast
def test_optuna_searcher_with_asha(ray_local, tmp_path):
    pytest.importorskip("optuna")
    import envs  # noqa: F401
    from experiments.training.sweep import run_sweep, summarize
    from experiments.training.settings import resolve_settings

    s = resolve_settings(tiny_settings(trpo_iters=1, ppo_iters=2))
    results = run_sweep(s, kl_radii=[0.005, 0.02], clips=[0.1, 0.3], storage_path=tmp_path, name="optuna",
                        searcher="optuna", scheduler="asha", num_samples=2, max_concurrent=2,
                        data=tiny_dataset(), verbose=0)
    summary = summarize(results)
    assert summary["num_trials"] == 2 and summary["best"] is not None
    for t in summary["trials"]:
        assert 0.005 <= t["kl_radius"] <= 0.02 and 0.1 <= t["clip_param"] <= 0.3


def test_axes_are_checked_before_anything_runs():
    from experiments.cli.options import sweep_axis
    from experiments.training.settings import resolve_settings

    assert sweep_axis("ppo-lr=3e-4,1e-3") == ("ppo_lr", [3e-4, 1e-3])
    assert sweep_axis("fcnet_hiddens=64x64,128") == ("fcnet_hiddens", [[64, 64], 128])
    assert sweep_axis("stage1_algo=trpo,ppo") == ("stage1_algo", ["trpo", "ppo"])
    from experiments.training.sweep import SweepError, validate_axes

    s = resolve_settings(tiny_settings())
    assert validate_axes(s, {"fcnet_hiddens": [[16], [32, 32]], "entropy_coeff": [0.0, 0.01]}) == {
        "fcnet_hiddens": [[16], [32, 32]], "entropy_coeff": [0.0, 0.01]}
    for axes, words in [({"no_such_setting": [1]}, "Unknown setting"), ({"n_latent": [4, 8]}, "one prepared dataset"),
                        ({"kl_radius": [0.1]}, "--kl-radius"), ({"ppo_lr": [1e-4, -1.0]}, "ppo_lr value -1.0"),
                        ({"num_env_runners": [0, 2]}, "sizes every trial's CPUs"),
                        ({"entropy_coeff": []}, "empty")]:
        with pytest.raises(SweepError, match=words):
            validate_axes(s, axes)


@pytest.mark.slow  # four trials end to end; grid parsing and validation stay fast
def test_cli_sweeps_more_settings_and_reports_them(tmp_path):
    """``--grid`` adds settings to the KL x clip grid: each trial trains with its own values, for real."""
    import json
    import subprocess

    import yaml

    from helpers import REPO, WADDINGTON, subprocess_env

    data_dir = tmp_path / "data"
    tiny_dataset().save(data_dir)
    s = tiny_settings(trpo_iters=1, ppo_iters=1)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**s, "grid": {"entropy_coeff": [0.0, 0.01]}}))
    out = tmp_path / "out"
    done = subprocess.run([*WADDINGTON, "sweep", "--config", str(cfg), "--data", str(data_dir), "--kl-radius", "0.01",
                           "--clip", "0.2", "--grid", "fcnet_hiddens=16x16,32", "--max-concurrent", "2",
                           "--num-cpus", "2", "--output", str(out), "--quiet"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "sweep_summary.json").read_text())
    swept = sorted((tuple(t["fcnet_hiddens"]), t["entropy_coeff"]) for t in summary["trials"])
    assert swept == [((16, 16), 0.0), ((16, 16), 0.01), ((32,), 0.0), ((32,), 0.01)]
    assert all(t["error"] is None and t["handoff_max_abs_diff"] <= 1e-6 for t in summary["trials"])
    assert "fcnet_hiddens" in done.stdout and "entropy_coeff" in done.stdout  # the table shows the axes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["grid"]["fcnet_hiddens"] == [[16, 16], [32]]
    # each trial's network really has its own size: its saved params say so
    sizes = set()
    for params in (out / "sweep").glob("*/params.json"):
        sizes.add(tuple(json.loads(params.read_text())["fcnet_hiddens"]))
    assert sizes == {(16, 16), (32,)}
    # a resumed sweep reports the axes it started with; other axes on resume are refused
    again = subprocess.run([*WADDINGTON, "sweep", "--output", str(out), "--resume", "--num-cpus", "2", "--quiet"],
                           cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed = json.loads((out / "sweep_summary.json").read_text())
    assert sorted((tuple(t["fcnet_hiddens"]), t["entropy_coeff"]) for t in resumed["trials"]) == swept
    other = subprocess.run([*WADDINGTON, "sweep", "--output", str(out), "--resume", "--grid", "fcnet_hiddens=8"],
                           cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "axes it started with" in other.stderr, other.stderr[-2000:]
    # a YAML grid that is not a mapping is one clear error
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grid": ["fcnet_hiddens", [16]]}))
    refused = subprocess.run([*WADDINGTON, "sweep", "--config", str(bad), "--output", str(tmp_path / "bad")],
                             cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "must map settings" in refused.stderr, refused.stderr[-2000:]
