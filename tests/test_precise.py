"""The precise engine's overhead budget."""

from __future__ import annotations

import random
import threading

from otel_wpm.capture.precise import (
    FALLBACK_SLOWDOWN,
    OverheadBudget,
    measure_slowdown,
    start_profiler,
    stop_profiler,
)


def test_the_share_keeps_the_worst_case_within_the_budget() -> None:
    budget = OverheadBudget(0.05, slowdown=6.0, rng=random.Random(1))
    assert budget.share == 0.01
    assert budget.estimated_overhead() == 0.05
    picked = sum(budget.should_profile() for _ in range(10_000))
    assert 50 < picked < 150


def test_a_cheap_profiler_may_cover_every_request() -> None:
    assert OverheadBudget(0.05, slowdown=1.0).share == 1.0


def test_calibration_finds_pyinstrument_slows_call_dense_code() -> None:
    assert measure_slowdown() > 1.5


def test_calibration_under_a_running_profiler_falls_back() -> None:
    """Calibration may run on a profiled thread (a request that changes the settings).

    It cannot time unprofiled code there; an estimate near 1 would let the precise
    engine profile far more requests than the budget allows.
    """
    outer = start_profiler(0.001)
    assert outer is not None
    try:
        slowdown = measure_slowdown()
    finally:
        stop_profiler(outer)
    assert slowdown == FALLBACK_SLOWDOWN


def test_stopping_from_another_thread_is_refused_not_raised() -> None:
    profiler = start_profiler(0.001)
    assert profiler is not None
    outcome: list[object] = []
    other = threading.Thread(target=lambda: outcome.append(stop_profiler(profiler)))
    other.start()
    other.join(10)
    assert outcome == [None]
    assert stop_profiler(profiler) is not None
