"""Learning curves from the runs of metrics.json: stage offsets, bands over seeds, the PNG."""

from __future__ import annotations

import numpy as np

from experiments.evaluation.learning_curves import curve_band, method_curves, plot_learning_curves


def _run(shift: float) -> dict:
    return {"two_stage": {"stage1_algorithm": "trpo", "stage1_env_steps": 300.0,
                          "stage1_curve": [[100, 0.0 + shift], [200, 0.5 + shift], [300, 1.0 + shift]],
                          "ppo_curve": [[100, 1.2 + shift], [200, 1.4 + shift]]},
            "ppo_only": {"curve": [[100, 0.1], [300, 0.6], [500, 0.9]]}}


def test_two_stage_curve_continues_after_stage_one():
    curves = method_curves(_run(0.0))
    np.testing.assert_allclose(curves["TRPO->PPO"][:, 0], [100, 200, 300, 400, 500])
    np.testing.assert_allclose(curves["TRPO-only"][:, 1], [0.0, 0.5, 1.0])
    assert set(curves) == {"TRPO->PPO", "TRPO-only", "PPO-only"}


def test_band_is_mean_and_range_over_seeds(tmp_path):
    steps, mean, low, high = curve_band([method_curves(_run(s))["TRPO-only"] for s in (0.0, 0.2)], n_points=3)
    np.testing.assert_allclose(steps, [100, 200, 300])
    np.testing.assert_allclose(mean, [0.1, 0.6, 1.1])
    np.testing.assert_allclose(high - low, [0.2, 0.2, 0.2])
    path = plot_learning_curves(tmp_path / "learning_curves.png", [_run(0.0), _run(0.2)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_learning_curves(tmp_path / "none.png", [{"seed": 0}]) is None
