"""Stopping a stage on a plateau of its return (the convergence rule of the two-stage run)."""

from __future__ import annotations

from experiments.training.two_stage import Plateau


def _first_stop(plateau: Plateau, returns: list[float]) -> int | None:
    seen = []
    for i, r in enumerate(returns, start=1):
        seen.append(r)
        if plateau.update(seen):
            return i
    return None


def test_rising_return_never_stops_and_a_flat_one_does():
    rising = [0.1 * i for i in range(60)]
    assert _first_stop(Plateau(patience=5, min_delta=0.01), rising) is None
    flat = rising[:20] + [rising[19]] * 40
    stop = _first_stop(Plateau(patience=5, min_delta=0.01), flat)
    # the two 5-iteration windows differ until both lie in the flat part: 10 flat returns stop it
    assert stop is not None and 20 < stop <= 20 + 10


def test_a_slow_rise_under_noise_is_not_a_plateau():
    """One lucky high return must not end a stage whose return still climbs (the old best-so-far rule did)."""
    slow = [0.005 * i + (0.3 if i == 12 else 0.0) for i in range(120)]
    assert _first_stop(Plateau(patience=15, min_delta=0.01), slow) is None


def test_noise_below_min_delta_counts_as_a_plateau():
    noisy = [1.0 + (0.004 if i % 2 else -0.004) for i in range(40)]
    assert _first_stop(Plateau(patience=8, min_delta=0.05), noisy) == 16  # as soon as two windows are in
    assert _first_stop(Plateau(patience=0, min_delta=0.05), noisy) is None  # 0: run every iteration
