"""Counters of what the monitor did, readable as a dict and exported as OTel metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Callable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from . import forksafe

COUNTERS = (
    "total_requests",
    "slow_requests",
    "blacklisted_requests",
    "reports_written",
    "reports_failed",
    "alerts_sent",
    "alerts_suppressed",
    "alerts_failed",
    "alerts_dropped",
    "profiles_precise",
    "internal_errors",
)


class Stats:
    """Thread-safe counters plus the overhead estimate.

    Each counter is also an OpenTelemetry observable counter ``otel_wpm.<name>``
    on the global MeterProvider, read when metrics are collected, so counting
    costs a request no more than an integer increment. ``reset()`` clears what
    ``snapshot()`` shows (it counts from a new baseline), not the monotonic totals
    the metrics report. A process made by ``fork()`` counts from zero: a gunicorn
    worker shows its own requests, not the master's.
    """

    def __init__(self) -> None:
        self.after_fork_in_child()
        forksafe.register(self)
        meter = metrics.get_meter("otel_wpm")
        for name in COUNTERS:
            meter.create_observable_counter(f"otel_wpm.{name}", callbacks=[self._observer(name)])
        self._slow_duration = meter.create_histogram(
            "otel_wpm.slow_request.duration", unit="s", description="Duration of slow requests"
        )

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(self._total(name))]

        return observe

    def after_fork_in_child(self) -> None:
        """A new process counts from zero (also the lock: a parent's thread may have held it)."""
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(COUNTERS, 0)
        self._requests_by_thread: dict[int, int] = {}
        self._baseline = dict.fromkeys(COUNTERS, 0)
        self._overhead: dict[str, Any] = {"average_overhead": 0.0, "method": "none"}

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._totals[name] += amount

    def count_request(self, thread_id: int) -> None:
        """Count one request in ``total_requests``, from the thread ``thread_id`` serving it.

        Without a lock, as it runs on every request: each thread writes only its
        own key, and one dict get or set is atomic. Thread ids are reused once a
        thread ends, so the keys stay about as many as threads that ever served at
        once, even under a server that starts a thread per request.
        """
        by_thread = self._requests_by_thread
        by_thread[thread_id] = by_thread.get(thread_id, 0) + 1

    def _total(self, name: str) -> int:
        if name == "total_requests":
            return self._totals[name] + sum(list(self._requests_by_thread.values()))
        return self._totals[name]

    def record_slow_duration(self, seconds: float) -> None:
        self._slow_duration.record(seconds)

    def set_overhead(self, average_overhead: float, **details: Any) -> None:
        with self._lock:
            self._overhead = {"average_overhead": average_overhead, **details}

    def reset(self) -> None:
        with self._lock:
            self._baseline = {name: self._total(name) for name in COUNTERS}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts: dict[str, Any] = {
                name: self._total(name) - self._baseline[name] for name in COUNTERS
            }
            overhead = dict(self._overhead)
        total = counts["total_requests"]
        counts["slow_request_rate"] = 100.0 * counts["slow_requests"] / total if total else 0.0
        counts["overhead_stats"] = overhead
        return counts
