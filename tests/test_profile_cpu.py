"""CPU vs waiting, and coverage from the start, in reports of a real threaded server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import requests
from apps.helpers import report_metadata, wait_until
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from wsgi_servers import serve_threaded

from otel_wpm import Config, ProfilingSpanProcessor

PHASE_SECONDS = 0.3  # how long the test lets each phase run before opening its gate


def spin_on_cpu(gate: threading.Event) -> int:
    count = 0
    while not gate.is_set():
        for i in range(200):  # no generator: every sample is in this function's frame
            count += i * i
    return count


def wait_for_io(gate: threading.Event) -> None:
    gate.wait(30)


def make_app(gates: dict[str, threading.Event], started: threading.Event):
    def app(environ, start_response):
        started.set()
        spin_on_cpu(gates["cpu"])
        wait_for_io(gates["io"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    return app


@contextmanager
def served(config: Config) -> Iterator[tuple[str, ProfilingSpanProcessor, dict]]:
    gates = {"cpu": threading.Event(), "io": threading.Event()}
    started = threading.Event()
    processor = ProfilingSpanProcessor(config)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    app = OpenTelemetryMiddleware(make_app(gates, started), tracer_provider=provider)
    try:
        with serve_threaded(app) as url:
            yield url, processor, {"gates": gates, "started": started}
    finally:
        for gate in gates.values():
            gate.set()
        provider.shutdown()


def request_in_phases(url: str, state: dict) -> None:
    """One request: it spins on the CPU, then waits, each phase ended by a timer."""
    gates = state["gates"]
    timers = [
        threading.Timer(PHASE_SECONDS, gates["cpu"].set),
        threading.Timer(2 * PHASE_SECONDS, gates["io"].set),
    ]
    for timer in timers:
        timer.start()
    try:
        assert requests.get(url + "/work", timeout=30).text == "done"
    finally:
        for timer in timers:
            timer.cancel()


class HotTable(HTMLParser):
    """The rows of the report's "Where the time went" table: function -> cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._in_table = False
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table" and ("class", "hot") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self._row = []
        elif self._row is not None and tag == "td":
            self._row.append("")

    def handle_endtag(self, tag) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "tr" and self._row:
            self.rows[self._row[0]] = self._row
            self._row = None

    def handle_data(self, data) -> None:
        if self._row:
            self._row[-1] += data


def seconds(cell: str) -> float:
    return float(cell.split()[0])


def only_report(directory: Path) -> Path:
    return wait_until(lambda: next(iter(directory.glob("*.html")), None), "a report")


def test_the_report_tells_cpu_from_waiting_per_function(tmp_path: Path) -> None:
    config = Config(
        threshold_seconds=0.2, local_output_dir=str(tmp_path), early_sampling_interval_seconds=0.01
    )
    with served(config) as (url, processor, state):
        request_in_phases(url, state)
        processor.force_flush()
    report = only_report(tmp_path)
    table = HotTable()
    table.feed(report.read_text(encoding="utf-8"))
    spin_cpu, spin_wait = (seconds(cell) for cell in table.rows["spin_on_cpu"][2:4])
    wait_cpu, wait_wait = (seconds(cell) for cell in table.rows["wait_for_io"][2:4])
    assert spin_cpu > 0
    assert wait_wait > wait_cpu  # a thread blocked on a lock uses no CPU
    assert spin_cpu / (spin_cpu + spin_wait) > wait_cpu / (wait_cpu + wait_wait)
    meta = report_metadata(report)
    assert 0 < meta["cpu_seconds"] < meta["duration_seconds"]
    assert meta["cpu_seconds"] + meta["wait_seconds"] <= meta["duration_seconds"]
    page = report.read_text(encoding="utf-8")
    assert f"CPU {meta['cpu_seconds']:.3f} s, waiting {meta['wait_seconds']:.3f} s" in page


def test_a_phase_over_before_full_rate_sampling_starts_is_in_the_report(tmp_path: Path) -> None:
    # Full-rate sampling starts at the threshold, after the CPU phase is over: only
    # early sampling, from the request's start, sees that phase.
    config = Config(
        threshold_seconds=1.6 * PHASE_SECONDS,
        sample_after_fraction=1.0,
        local_output_dir=str(tmp_path),
        early_sampling_interval_seconds=0.01,
    )
    with served(config) as (url, processor, state):
        request_in_phases(url, state)
        processor.force_flush()
    table = HotTable()
    table.feed(only_report(tmp_path).read_text(encoding="utf-8"))
    assert "spin_on_cpu" in table.rows
    assert "wait_for_io" in table.rows
