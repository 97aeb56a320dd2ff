"""The precise engine's overhead budget."""

from __future__ import annotations

import random
import threading

from otel_wpm.precise import OverheadBudget, start_profiler, stop_profiler


def test_budget_starts_cautious_and_follows_the_measured_cost() -> None:
    budget = OverheadBudget(0.05, rng=random.Random(1))
    assert budget.share == 0.05
    for _ in range(40):
        budget.observe(0.010, profiled=False)
        budget.observe(0.060, profiled=True)  # profiled requests take 6x as long
    assert budget.extra_cost() == 5.0
    assert budget.share == 0.05 / 5.0
    assert budget.estimated_overhead() == 0.05


def test_cheap_profiling_may_cover_every_request() -> None:
    budget = OverheadBudget(0.05)
    for _ in range(40):
        budget.observe(0.010, profiled=False)
        budget.observe(0.010, profiled=True)
    assert budget.share == 1.0


def test_stopping_from_another_thread_is_refused_not_raised() -> None:
    profiler = start_profiler(0.001)
    assert profiler is not None
    outcome: list[object] = []
    other = threading.Thread(target=lambda: outcome.append(stop_profiler(profiler)))
    other.start()
    other.join(10)
    assert outcome == [None]
    assert stop_profiler(profiler) is not None
