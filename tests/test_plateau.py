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
    # the 5-iteration mean keeps rising for 4 iterations after the last gain, then 5 flat ones stop it
    assert stop is not None and 20 < stop <= 20 + 4 + 5 + 1


def test_noise_below_min_delta_counts_as_a_plateau():
    noisy = [1.0 + (0.004 if i % 2 else -0.004) for i in range(40)]
    assert _first_stop(Plateau(patience=8, min_delta=0.05), noisy) is not None
    assert _first_stop(Plateau(patience=0, min_delta=0.05), noisy) is None  # 0: run every iteration
