"""Invariants every TRPO update must satisfy, shared by the TRPO tests."""

from __future__ import annotations

import math

MODULE = "default_policy"
KEYS = (
    "trpo_kl",
    "line_search_success",
    "line_search_backtracks",
    "line_search_step_fraction",
    "surrogate_improvement",
    "expected_improvement",
    "cg_residual",
    "cg_iterations",
    "sampling_policy_kl",
    "vf_loss",
    "vf_loss_before",
    "vf_explained_var",
    "policy_loss",
    "entropy",
)


def check_trpo_update(result: dict, kl_radius: float) -> dict:
    """Per-update invariants; returns the module's learner results."""
    lr = result["learners"][MODULE]
    for key in KEYS:
        assert key in lr, f"missing learner metric {key!r}"
        assert math.isfinite(float(lr[key])), f"{key} = {lr[key]}"
    # Trust region honoured by the accepted step (or nothing moved on failure).
    assert 0.0 <= float(lr["trpo_kl"]) <= kl_radius
    assert float(lr["line_search_success"]) in (0.0, 1.0)
    if float(lr["line_search_success"]) == 0.0:
        assert float(lr["trpo_kl"]) == 0.0
    else:
        assert float(lr["surrogate_improvement"]) > 0.0
    # The batch was sampled by exactly the learner's pre-update policy.
    assert abs(float(lr["sampling_policy_kl"])) < 1e-6
    # RLlib's own off-policyness counter: `Learner.update` bumps the weights' sequence
    # number before `_update`, so 1 means "sampled with the weights just before this update".
    assert float(lr["diff_num_grad_updates_vs_sampler_policy"]) == 1.0
    return lr
