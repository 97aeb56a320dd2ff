"""Counters of what the monitor did, readable as a dict and exported as OTel metrics.

Usage::

    stats = Stats()
    stats.count_request(threading.get_ident(), duration_ns)  # request thread, at the end
    stats.incr("slow_requests")
    stats.charge_cpu(seconds)  # a monitor thread: CPU it took while requests were served
    stats.snapshot(request_cost_seconds)  # get_stats(): counters and overhead_stats

Also what the overhead figure is made of (see :func:`overhead_stats`): the time spent
serving the watched requests, and the CPU time of the monitor's own threads (sampler,
report and alert threads) charged while requests were in flight.
"""

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


#: How ``average_overhead`` is measured, as ``get_stats()`` says it.
OVERHEAD_METHOD = (
    "(CPU time of otel-wpm's threads while requests ran + measured fixed cost of "
    "on_start and on_end x requests) / time spent serving those requests"
)


def overhead_stats(
    requests: int, served_seconds: float, monitor_cpu_seconds: float, request_cost_seconds: float
) -> dict[str, Any]:
    """What the monitor adds to the requests it watches, as a share of the time they took.

    ``average_overhead`` is a fraction (0.01 is 1 %), 0 before any request;
    ``sample_count`` is how many requests it covers (web-performance-monitor's names).
    """
    added = monitor_cpu_seconds + request_cost_seconds * requests
    return {
        "average_overhead": added / served_seconds if served_seconds > 0 else 0.0,
        "sample_count": requests,
        "method": OVERHEAD_METHOD,
        "monitor_cpu_seconds": monitor_cpu_seconds,
        "request_cost_seconds": request_cost_seconds,
        "served_seconds": served_seconds,
    }


class _Served:
    """What one thread served: written only by that thread."""

    __slots__ = ("requests", "ns")

    def __init__(self) -> None:
        self.requests = 0
        self.ns = 0


class Stats:
    """Thread-safe counters, and what the overhead figure is made of.

    Each counter is also an OpenTelemetry observable counter ``otel_wpm.<name>``
    on the global MeterProvider (unless ``export_metrics`` is false), read when
    metrics are collected, so counting costs a request no more than an integer
    increment. ``reset()`` clears what ``snapshot()`` shows (it counts from a new
    baseline), not the monotonic totals the metrics report. A process made by
    ``fork()`` counts from zero: a gunicorn worker shows its own requests, not the
    master's.
    """

    def __init__(self, export_metrics: bool = True) -> None:
        self.after_fork_in_child()
        forksafe.register(self)
        if export_metrics:
            self._export_metrics()

    def _export_metrics(self) -> None:
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
        self._served_by_thread: dict[int, _Served] = {}
        self._monitor_cpu_seconds = 0.0
        self._baseline = dict.fromkeys(COUNTERS, 0)
        self._served_ns_baseline = 0
        self._monitor_cpu_baseline = 0.0

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._totals[name] += amount

    def count_request(self, thread_id: int, duration_ns: int = 0) -> None:
        """Count one request in ``total_requests``, from the thread ``thread_id`` serving it,
        and the ``duration_ns`` it took in the time spent serving requests.

        Without a lock, as it runs on every request: each thread writes only its
        own counters, and one dict get or set is atomic. Thread ids are reused once a
        thread ends, so the keys stay about as many as threads that ever served at
        once, even under a server that starts a thread per request.
        """
        served = self._served_by_thread.get(thread_id)
        if served is None:
            served = self._served_by_thread[thread_id] = _Served()
        served.requests += 1
        served.ns += duration_ns

    def charge_cpu(self, seconds: float) -> None:
        """CPU time one of the monitor's threads took while requests were being served."""
        with self._lock:
            self._monitor_cpu_seconds += seconds

    def _total(self, name: str) -> int:
        if name == "total_requests":
            served = list(self._served_by_thread.values())
            return self._totals[name] + sum(thread.requests for thread in served)
        return self._totals[name]

    def record_slow_duration(self, seconds: float) -> None:
        self._slow_duration.record(seconds)

    def _served_ns(self) -> int:
        return sum(served.ns for served in list(self._served_by_thread.values()))

    def reset(self) -> None:
        with self._lock:
            self._baseline = {name: self._total(name) for name in COUNTERS}
            self._served_ns_baseline = self._served_ns()
            self._monitor_cpu_baseline = self._monitor_cpu_seconds

    def snapshot(self, request_cost_seconds: float = 0.0) -> dict[str, Any]:
        """The counters since the last ``reset()``, ``slow_request_rate`` (a percentage) and
        ``overhead_stats`` given the measured fixed cost of watching one request."""
        with self._lock:
            counts: dict[str, Any] = {
                name: self._total(name) - self._baseline[name] for name in COUNTERS
            }
            served_ns = self._served_ns() - self._served_ns_baseline
            monitor_cpu = self._monitor_cpu_seconds - self._monitor_cpu_baseline
        total = counts["total_requests"]
        counts["slow_request_rate"] = 100.0 * counts["slow_requests"] / total if total else 0.0
        counts["overhead_stats"] = overhead_stats(
            total, served_ns / 1e9, monitor_cpu, request_cost_seconds
        )
        return counts
