"""Counters as a dict, and the same figures as OpenTelemetry metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from otel_wpm._runtime.stats import COUNTERS, Stats


def test_snapshot_counts_and_rate() -> None:
    stats = Stats()
    stats.incr("total_requests", 4)
    stats.incr("slow_requests")
    snapshot = stats.snapshot()
    assert snapshot["total_requests"] == 4
    assert snapshot["slow_request_rate"] == 25.0
    assert set(COUNTERS) <= set(snapshot)
    stats.reset()
    assert stats.snapshot()["total_requests"] == 0


def test_requests_counted_by_many_threads_at_once_are_all_counted() -> None:
    stats = Stats()
    stats.count_request(threading.get_ident())
    stats.reset()
    start = threading.Barrier(8)

    def serve() -> None:
        start.wait()
        for _ in range(5000):
            stats.count_request(threading.get_ident())

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats.incr("slow_requests", 400)
    snapshot = stats.snapshot()
    assert snapshot["total_requests"] == 8 * 5000
    assert snapshot["slow_request_rate"] == 1.0


def test_counters_reach_the_global_meter_provider_and_stay_monotonic() -> None:
    script = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from otel_wpm._runtime.stats import Stats

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        stats = Stats()
        stats.incr("total_requests", 2)
        stats.count_request(1)
        stats.reset()  # clears the snapshot, not the monotonic metric
        stats.incr("total_requests")
        stats.record_slow_duration(1.5)
        found = {}
        for resource_metrics in reader.get_metrics_data().resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    point = metric.data.data_points[0]
                    value = getattr(point, "value", None)
                    found[metric.name] = value if value is not None else point.sum
        print(found["otel_wpm.total_requests"], found["otel_wpm.slow_request.duration"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["4", "1.5"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_counts_from_zero() -> None:
    stats = Stats()
    stats.incr("slow_requests", 3)
    stats.incr("reports_written", 3)
    stats.count_request(threading.get_ident())
    stats.set_overhead(0.5, method="parent")
    pid = os.fork()
    if pid == 0:
        child_ok = False
        try:
            counts = stats.snapshot()
            child_ok = all(counts[name] == 0 for name in COUNTERS) and counts["overhead_stats"] == {
                "average_overhead": 0.0,
                "method": "none",
            }
            stats.incr("slow_requests")
            child_ok = child_ok and stats.snapshot()["slow_requests"] == 1
        finally:
            os._exit(0 if child_ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child saw its parent's counters"
    assert stats.snapshot()["slow_requests"] == 3  # the parent keeps its own
