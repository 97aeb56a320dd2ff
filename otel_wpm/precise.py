"""The precise engine: a real ``pyinstrument.Profiler`` for a budgeted share of requests.

pyinstrument's per-call hook makes profiled requests several times slower on
call-dense code, so it cannot run on every request. :class:`OverheadBudget`
compares the mean CPU time of profiled and unprofiled requests on their own
thread (chosen at random, so both groups see the same mix of routes) and keeps
the share of profiled requests at ``max_overhead / (slowdown - 1)``. Requests it does not pick
are still covered by the sampler, so every slow request gets a report.
"""

from __future__ import annotations

import random
import threading
from typing import Optional

from pyinstrument import Profiler
from pyinstrument.session import Session

_MIN_OBSERVATIONS = 20
_SMOOTHING = 0.05  # weight of one new duration in the running means


class OverheadBudget:
    """Decides which requests may be profiled, from the overhead it measures."""

    def __init__(self, max_overhead: float, rng: Optional[random.Random] = None) -> None:
        self.max_overhead = max_overhead
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not security
        self._lock = threading.Lock()
        self._means = {True: 0.0, False: 0.0}
        self._counts = {True: 0, False: 0}
        self.share = max_overhead  # cautious until both groups have been measured

    def should_profile(self) -> bool:
        return self._rng.random() < self.share

    def observe(self, cpu_seconds: float, profiled: bool) -> None:
        with self._lock:
            count = self._counts[profiled] = self._counts[profiled] + 1
            weight = max(_SMOOTHING, 1.0 / count)
            self._means[profiled] += weight * (cpu_seconds - self._means[profiled])
            if min(self._counts.values()) >= _MIN_OBSERVATIONS:
                self.share = min(1.0, self.max_overhead / max(self.extra_cost(), 1e-3))

    def extra_cost(self) -> float:
        """How much longer a profiled request takes, as a fraction (0.5 = 50 % longer)."""
        if not self._means[False]:
            return 0.0
        return max(0.0, self._means[True] / self._means[False] - 1.0)

    def estimated_overhead(self) -> float:
        return self.share * self.extra_cost()

    def details(self) -> dict[str, float | str]:
        return {
            "method": "mean thread CPU time of profiled vs unprofiled requests (random split)",
            "profiled_share": self.share,
            "profiled_request_extra_cost": self.extra_cost(),
        }


def start_profiler(interval: float) -> Optional[Profiler]:
    """Start profiling this thread; None when another profiler already runs here."""
    profiler = Profiler(interval=interval, async_mode="disabled")
    try:
        profiler.start()
    except RuntimeError:
        return None
    return profiler


def stop_profiler(profiler: Profiler) -> Optional[Session]:
    """Stop a profiler started on this thread; None if it cannot be stopped from here."""
    try:
        return profiler.stop()
    except RuntimeError:
        return None
