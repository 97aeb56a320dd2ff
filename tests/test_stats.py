"""Counters as a dict, the same figures as OpenTelemetry metrics, and the overhead figure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from apps.helpers import wait_until
from apps.watched import served
from flask import Flask

from otel_wpm._runtime.stats import COUNTERS, Stats
from otel_wpm._runtime.worker import BackgroundWorker
from otel_wpm.active_settings import ActiveSettings
from otel_wpm.capture.inflight import InFlightRequests
from otel_wpm.capture.sampler import StackSampler
from otel_wpm.config import Config


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
    stats.count_request(threading.get_ident(), 10**9)
    stats.charge_cpu(0.5)
    pid = os.fork()
    if pid == 0:
        child_ok = False
        try:
            counts = stats.snapshot()
            overhead = counts["overhead_stats"]
            child_ok = all(counts[name] == 0 for name in COUNTERS) and (
                overhead["served_seconds"],
                overhead["monitor_cpu_seconds"],
                overhead["average_overhead"],
            ) == (0, 0, 0)
            stats.incr("slow_requests")
            child_ok = child_ok and stats.snapshot()["slow_requests"] == 1
        finally:
            os._exit(0 if child_ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child saw its parent's counters"
    assert stats.snapshot()["slow_requests"] == 3  # the parent keeps its own


# --- what the overhead figure is made of -----------------------------------------------


def test_overhead_is_what_the_monitor_adds_over_the_time_spent_serving() -> None:
    stats = Stats(export_metrics=False)
    for _ in range(4):
        stats.count_request(threading.get_ident(), 2_000_000)  # 4 requests of 2 ms
    stats.charge_cpu(0.0001)
    overhead = stats.snapshot(request_cost_seconds=0.000001)["overhead_stats"]
    assert overhead["sample_count"] == 4
    assert overhead["served_seconds"] == pytest.approx(0.008)
    # (0.1 ms of the monitor's threads + 4 x 1 µs) / 8 ms
    assert overhead["average_overhead"] == pytest.approx(0.013)

    stats.reset()
    overhead = stats.snapshot(request_cost_seconds=0.000001)["overhead_stats"]
    assert (overhead["sample_count"], overhead["average_overhead"]) == (0, 0.0)
    stats.count_request(threading.get_ident(), 1_000_000)
    overhead = stats.snapshot(request_cost_seconds=0.000001)["overhead_stats"]
    assert overhead["average_overhead"] == pytest.approx(0.001)  # the CPU charged before reset


def busy_for(cpu_seconds: float) -> None:
    started = time.thread_time()
    while time.thread_time() - started < cpu_seconds:
        pass


def test_a_background_worker_charges_the_cpu_of_its_jobs() -> None:
    charged: list[float] = []
    worker: BackgroundWorker[float] = BackgroundWorker(
        "test-worker", busy_for, queue_size=10, on_cpu=charged.append
    )
    worker.submit(0.002)
    worker.submit(0.003)
    assert worker.flush(10)
    worker.shutdown(10)
    assert len(charged) == 2
    assert sum(charged) >= 0.005


class CountingClock:
    """The sampler's clock: a fixed time, and how many ticks asked for it."""

    def __init__(self) -> None:
        self.ticks = 0
        self._ticked = threading.Condition()

    def __call__(self) -> int:
        with self._ticked:
            self.ticks += 1
            self._ticked.notify_all()
        return 10**18

    def wait_for(self, ticks: int) -> None:
        with self._ticked:
            assert self._ticked.wait_for(lambda: self.ticks >= ticks, 10), "the sampler stopped"


class SettableClock(CountingClock):
    """A counting clock that reads ``now``."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 10**18

    def __call__(self) -> int:
        super().__call__()
        return self.now


def test_an_idle_sampler_ticks_on_for_a_second_before_it_sleeps() -> None:
    """A stream of short requests, each over before a tick sees it, does not wake it for
    each one: waking it costs a request more than a tick costs."""
    settings = ActiveSettings.from_config(
        Config(
            sampling_interval_seconds=0.005,
            early_sampling_interval_seconds=0.01,
            enable_local_file=False,
        )
    )
    clock = SettableClock()
    sampler = StackSampler(
        InFlightRequests(),
        admit=lambda request, frame: True,
        on_threshold_crossed=lambda request: None,
        on_hung=lambda request: None,
        settings=settings,
        clock_ns=clock,
    )
    sampler.wake()
    try:
        clock.wait_for(clock.ticks + 20)  # idle ticks, the clock standing still
        assert not sampler.asleep
        clock.now += 1_000_000_000
        wait_until(lambda: sampler.asleep, "the sampler sleeps after a second without requests")
    finally:
        sampler.stop()


def test_the_sampler_charges_its_ticks_only_while_requests_are_in_flight() -> None:
    settings = ActiveSettings.from_config(
        Config(threshold_seconds=0.02, sampling_interval_seconds=0.005, enable_local_file=False)
    )
    in_flight, clock, charged = InFlightRequests(), CountingClock(), []
    sampler = StackSampler(
        in_flight,
        admit=lambda request, frame: True,
        on_threshold_crossed=lambda request: None,
        on_hung=lambda request: None,
        settings=settings,
        clock_ns=clock,
        on_cpu=charged.append,
        stay_awake_seconds=0,
    )
    sampler.wake()
    try:
        wait_until(lambda: sampler.asleep, "the idle sampler falls asleep")
        assert clock.ticks >= 1 and charged == []  # idle: nothing to slow down
        span = SimpleNamespace(start_time=0, end_time=None, context=SimpleNamespace(span_id=1))
        in_flight.start(span, span.context, threading.get_ident(), threading.get_ident(), settings)
        if sampler.asleep:  # as a request starting does
            sampler.wake()
        clock.wait_for(clock.ticks + 3)
        wait_until(lambda: len(charged) >= 2, "ticks charged while a request runs")
    finally:
        sampler.stop()
    assert all(seconds >= 0 for seconds in charged)


def slow_and_fast_app() -> Flask:
    app = Flask(__name__)

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    @app.route("/slow")
    def slow() -> str:
        time.sleep(0.3)
        return "slow"

    return app


def measured_part(overhead: dict[str, Any]) -> float:
    """``average_overhead`` recomputed from its parts, as the README says it is made."""
    added = overhead["monitor_cpu_seconds"]
    added += overhead["request_cost_seconds"] * overhead["sample_count"]
    return float(added / overhead["served_seconds"])


def test_get_stats_charges_the_report_thread_and_each_request(tmp_path: Path) -> None:
    config = Config(threshold_seconds=0.2, local_output_dir=str(tmp_path))
    with served(slow_and_fast_app(), config) as watched:
        for path in ["/fast"] * 5 + ["/slow"]:
            requests.get(watched.url + path, timeout=10).raise_for_status()
        watched.server_spans(6)
        overhead = watched.processor.get_stats()["overhead_stats"]

    assert overhead["sample_count"] == 6
    assert overhead["served_seconds"] >= 0.3
    assert overhead["request_cost_seconds"] > 0
    assert overhead["monitor_cpu_seconds"] > 0  # the report was rendered and written
    assert overhead["average_overhead"] == pytest.approx(measured_part(overhead))


def test_the_precise_engine_adds_its_budget_to_what_is_measured(tmp_path: Path) -> None:
    config = Config(engine="pyinstrument", local_output_dir=str(tmp_path))
    with served(slow_and_fast_app(), config) as watched:
        for _ in range(10):
            requests.get(watched.url + "/fast", timeout=10).raise_for_status()
        watched.server_spans(10)
        overhead = watched.processor.get_stats()["overhead_stats"]
        budget = watched.processor.settings.budget

    assert budget is not None
    assert overhead["profiled_share"] == budget.share
    assert overhead["average_overhead"] == pytest.approx(
        measured_part(overhead) + budget.estimated_overhead()
    )
