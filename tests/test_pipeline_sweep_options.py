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
