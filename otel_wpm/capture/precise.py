"""The precise engine: a real ``pyinstrument.Profiler`` for a budgeted share of requests.

pyinstrument's per-call hook makes profiled code several times slower when it
is call-dense, so it cannot run on every request. At start-up
:func:`measure_slowdown` times a call-dense workload with and without the
profiler on this machine; :class:`OverheadBudget` then profiles the share of
requests that keeps the worst case within ``max_performance_overhead``:
``share = max_overhead / (slowdown - 1)``. Real requests do I/O and C work that
the hook does not slow, so the true overhead is lower than the bound.

Comparing profiled with unprofiled requests at run time was tried and rejected:
under a threaded server both wall time and thread CPU time are dominated by
GIL hand-offs, and the comparison mistook profiled requests for cheap ones.

Requests the budget does not pick are still covered by the sampler, so every
slow request gets a report.

pyinstrument's ``session.cpu_time`` is the whole process's CPU time, which
under a threaded server counts other requests too; :func:`stop_profiler`
replaces it with the request thread's own, read at start and stop.
"""

from __future__ import annotations

import random
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional, Union

if TYPE_CHECKING:
    from pyinstrument import Profiler
    from pyinstrument.session import Session

# pyinstrument's own documentation and our bench: call-dense code runs ~5-6x slower
FALLBACK_SLOWDOWN = 6.0
_CALIBRATION_ROUNDS = 5


def _call_dense(depth: int) -> int:
    return depth if depth < 2 else _call_dense(depth - 1) + _call_dense(depth - 2)


def _cpu_seconds(work: Callable[[], object]) -> float:
    started = time.thread_time()
    work()
    return time.thread_time() - started


def _profiled(work: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        profiler = start_profiler(0.001)
        if profiler is None:
            raise RuntimeError("a profiler is already running on this thread")
        try:
            return work()
        finally:
            stop_profiler(profiler)

    return run


def measure_slowdown() -> float:
    """How many times slower call-dense Python runs under pyinstrument here (~10 ms to find out)."""

    def work() -> int:
        return _call_dense(14)

    if sys.getprofile() is not None:
        # A profiler already watches this thread: the "plain" runs would be profiled too.
        return FALLBACK_SLOWDOWN
    try:
        plain = min(_cpu_seconds(work) for _ in range(_CALIBRATION_ROUNDS))
        profiled = min(_cpu_seconds(_profiled(work)) for _ in range(_CALIBRATION_ROUNDS))
    except RuntimeError:
        return FALLBACK_SLOWDOWN
    if plain <= 0:
        return FALLBACK_SLOWDOWN
    return max(1.0, profiled / plain)


class OverheadBudget:
    """Decides which requests may be profiled so the worst case stays within ``max_overhead``."""

    def __init__(
        self, max_overhead: float, slowdown: float, rng: Optional[random.Random] = None
    ) -> None:
        self.max_overhead = max_overhead
        self.slowdown = slowdown
        self.share = min(1.0, max_overhead / max(slowdown - 1.0, 1e-3))
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not security

    def should_profile(self) -> bool:
        return self._rng.random() < self.share

    def estimated_overhead(self) -> float:
        """Upper bound: every profiled request as call-dense as the calibration."""
        return self.share * (self.slowdown - 1.0)

    def details(self) -> dict[str, Union[float, str]]:
        return {
            "method": "share x measured pyinstrument slowdown of call-dense code (upper bound)",
            "profiled_share": self.share,
            "profiled_request_extra_cost": self.slowdown - 1.0,
        }


class ThreadProfiler:
    """A pyinstrument profiler running on the thread that started it, and that thread's
    CPU clock when it started."""

    def __init__(self, profiler: Profiler, cpu_at_start_ns: int) -> None:
        self.profiler = profiler
        self.cpu_at_start_ns = cpu_at_start_ns


def start_profiler(interval: float) -> Optional[ThreadProfiler]:
    """Start profiling this thread; None when another profiler already runs here."""
    # Imported on first use: pyinstrument brings its renderers along (~10 ms at start-up).
    from pyinstrument import Profiler

    profiler = Profiler(interval=interval, async_mode="disabled")
    try:
        profiler.start()
    except RuntimeError:
        return None
    return ThreadProfiler(profiler, time.thread_time_ns())


def stop_profiler(running: ThreadProfiler) -> Optional[Session]:
    """Stop a profiler started on this thread; None if it cannot be stopped from here.

    The session's ``cpu_time`` is this thread's CPU time while it ran.
    """
    cpu_ns = time.thread_time_ns() - running.cpu_at_start_ns
    try:
        session = running.profiler.stop()
    except RuntimeError:
        return None
    session.cpu_time = cpu_ns / 1e9
    return session
