"""TRPO -> PPO handoff on 2 remote env runners: exact weights everywhere, and PPO really trains."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import tiny_dataset, tiny_settings


@pytest.fixture(scope="module")
def two_stage_run(ray_local, tmp_path_factory):
    import envs  # noqa: F401
    from experiments.training.two_stage import run_two_stage

    work = tmp_path_factory.mktemp("handoff")
    data = ray_local.put(tiny_dataset())
    metrics = list(run_two_stage(tiny_settings(num_env_runners=2), work_dir=work, data=data))
    return metrics, data


def test_handoff_is_exact_on_every_sampler_and_ppo_trains(two_stage_run):
    metrics, _ = two_stage_run
    assert [m["stage"] for m in metrics] == ["trpo", "trpo", "ppo", "ppo"]
    assert [m["stage_iteration"] for m in metrics] == [1, 2, 1, 2]
    final = metrics[-1]
    assert final["stage1_algorithm"] == "trpo"
    # learner + both remote env runners were compared with TRPO's final policy
    assert final["handoff_num_samplers_checked"] == 2
    assert final["handoff_max_abs_diff"] <= 1e-6
    assert final["handoff_learner_max_abs_diff"] <= 1e-6
    assert len(final["summary"]["handoff_env_runner_max_abs_diffs"]) == 2
    assert max(final["summary"]["handoff_env_runner_max_abs_diffs"]) <= 1e-6
    # what Algorithm.setup alone delivered to the runners (before our blocking sync) was exact too
    assert final["handoff_env_runner_pre_sync_max_abs_diff"] <= 1e-6
    assert final["ppo_weight_change_l2"] > 0
    assert final["trpo_weight_change_l2"] > 0
    assert final["trpo_wall_s"] > 0 and final["ppo_wall_s"] > 0
    # a checkpoint at the end of each stage
    assert "checkpoint_dir" in metrics[1] and "checkpoint_dir" in metrics[3]


def test_measurement_detects_a_missing_handoff(two_stage_run):
    """Negative control: PPO built *without* TRPO's weights differs clearly on the same observations."""
    from algorithms import handoff
    from experiments.training.algorithm_configs import build_stage2_config
    from experiments.training.settings import resolve_settings

    metrics, data = two_stage_run
    ref = np.load(f"{metrics[1]['checkpoint_dir']}/handoff_reference.npz")
    s = resolve_settings(tiny_settings(num_env_runners=0, seed=1))
    algo = build_stage2_config(s, None, data).build_algo()
    try:
        measured = handoff.sync_and_measure(algo, ref["action_dist_inputs"], ref["obs"])
    finally:
        algo.stop()
    assert measured["handoff_max_abs_diff"] > 1e-3


def test_a_broken_trpo_import_fails_loudly(monkeypatch):
    """Stage 1 never silently becomes PPO: a failing ``algorithms.trpo`` import raises."""
    import sys

    from experiments.training.algorithm_configs import build_stage1_config
    from experiments.training.settings import resolve_settings

    monkeypatch.setitem(sys.modules, "algorithms.trpo", None)  # makes `import algorithms.trpo` raise
    with pytest.raises(ImportError):
        build_stage1_config(resolve_settings(tiny_settings()))
    _, algorithm = build_stage1_config(resolve_settings(tiny_settings(stage1_algo="ppo")))
    assert algorithm == "ppo"  # the stand-in only when asked for


def test_stage1_summary_names_what_ran():
    from experiments.training.two_stage import StageProgress, stage1_summary

    progress = StageProgress(score=1.0, returns=[0.5, 1.0], weight_change_l2=2.0, env_steps=512.0, wall_s=3.0)
    trpo = stage1_summary("trpo", progress)
    assert trpo["stage1_final_return"] == trpo["trpo_final_return"] == 1.0
    ppo = stage1_summary("ppo", progress)
    assert ppo["stage1_final_return"] == 1.0 and ppo["stage1_algorithm"] == "ppo"
    assert not [key for key in ppo if key.startswith("trpo_")]
