"""PerformanceMonitor, and the processor on a provider shared with other processors.

Real Flask apps on werkzeug's threaded server, real SDK providers and exporters.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Callable

import pytest
import requests
from apps.helpers import report_files, report_metadata, wait_until
from apps.watched import served, watch
from flask import Flask, request
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from wsgi_servers import serve_threaded

from otel_wpm import Config, ConfigError, PerformanceMonitor, ProfilingSpanProcessor
from otel_wpm.capture import attributes
from otel_wpm.install import installed_processor

pytestmark = pytest.mark.usefixtures("fresh_globals")


@pytest.fixture
def global_exporter() -> InMemorySpanExporter:
    """A global SDK provider exporting to memory, set before any monitor exists."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def slow_work(seconds: float) -> None:
    time.sleep(seconds)


def make_app() -> Flask:
    app = Flask(__name__)

    @app.route("/slow")
    def slow() -> str:
        slow_work(float(request.args.get("seconds", "0.5")))
        return "slow"

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    return app


def get(base_url: str, path: str) -> str:
    response = requests.get(base_url + path, timeout=10)
    response.raise_for_status()
    return response.text


def wait_finished(monitor: PerformanceMonitor, count: int) -> None:
    """Wait until ``count`` watched spans have ended, and their reports are written."""
    wait_until(lambda: monitor.get_stats()["total_requests"] >= count, f"{count} requests")
    assert monitor.flush(10)


def server_spans(exporter: InMemorySpanExporter, path: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.SERVER and (span.attributes or {}).get("http.target") == path
    ]


# --- the middleware --------------------------------------------------------------------


def test_one_liner_without_opentelemetry(
    make_monitor: Callable[..., PerformanceMonitor], tmp_path: Path
) -> None:
    monitor = make_monitor()
    with served(make_app(), monitor=monitor) as watched:
        assert get(watched.url, "/fast") == "fast"
        assert get(watched.url, "/slow") == "slow"
        wait_finished(monitor, 2)

    reports = report_files(tmp_path)
    assert len(reports) == 1
    meta = report_metadata(reports[0])
    assert (meta["method"], meta["route"]) == ("GET", "/slow")
    assert "slow_work" in reports[0].read_text(encoding="utf-8")
    stats = monitor.get_stats()
    assert (stats["total_requests"], stats["slow_requests"]) == (2, 1)
    # The global provider is still the API's proxy: a provider set later is not hijacked.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert installed_processor(monitor.tracer_provider) is monitor.processor


def test_global_sdk_provider_gets_the_processor_once(
    make_monitor: Callable[..., PerformanceMonitor],
    global_exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    monitor = make_monitor()
    assert monitor.tracer_provider is trace.get_tracer_provider()
    assert make_monitor().processor is monitor.processor
    with served(make_app(), monitor=monitor) as watched:
        get(watched.url, "/fast")
        get(watched.url, "/slow")
        wait_finished(monitor, 2)

    (slow_span,) = server_spans(global_exporter, "/slow")
    (fast_span,) = server_spans(global_exporter, "/fast")
    (report,) = report_files(tmp_path)
    assert slow_span.attributes[attributes.SLOW] is True  # type: ignore[index]
    assert slow_span.attributes[attributes.REPORT_URL] == str(report)  # type: ignore[index]
    assert attributes.SLOW not in fast_span.attributes  # type: ignore[operator]
    assert report_metadata(report)["trace_id"] == trace.format_trace_id(slow_span.context.trace_id)


@pytest.mark.parametrize(
    "monitor_first", [False, True], ids=["instrumented-first", "monitor-first"]
)
def test_flask_instrumented_app_gets_one_server_span(
    make_monitor: Callable[..., PerformanceMonitor],
    global_exporter: InMemorySpanExporter,
    tmp_path: Path,
    monitor_first: bool,
) -> None:
    monitor = make_monitor()
    app = make_app()
    if monitor_first:
        watch(app, monitor=monitor)
    FlaskInstrumentor().instrument_app(app)
    try:
        if not monitor_first:
            watch(app, monitor=monitor)
        with serve_threaded(app) as url:
            get(url, "/fast")
            get(url, "/slow")
            wait_finished(monitor, 2)
    finally:
        FlaskInstrumentor().uninstrument_app(app)

    kinds = [span.kind for span in global_exporter.get_finished_spans()]
    assert kinds.count(SpanKind.SERVER) == 2  # one per request
    (report,) = report_files(tmp_path)
    assert report_metadata(report)["route"] == "/slow"


def test_outer_opentelemetry_middleware_is_not_doubled(
    make_monitor: Callable[..., PerformanceMonitor],
    global_exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    monitor = make_monitor()
    watched = watch(make_app(), monitor=monitor)
    with serve_threaded(OpenTelemetryMiddleware(watched.wsgi)) as url:
        get(url, "/slow")
        wait_finished(monitor, 1)
    spans = global_exporter.get_finished_spans()
    assert [span.kind for span in spans] == [SpanKind.SERVER]
    assert len(report_files(tmp_path)) == 1


# --- the decorator ---------------------------------------------------------------------


def test_decorator_outside_a_request(
    make_monitor: Callable[..., PerformanceMonitor], tmp_path: Path
) -> None:
    monitor = make_monitor()

    @monitor.create_decorator()
    def compute(seconds: float, *, label: str = "x") -> str:
        """Sleeps, then says so."""
        slow_work(seconds)
        return f"{label}:{seconds}"

    assert compute.__name__ == "compute"
    assert compute.__doc__ == "Sleeps, then says so."
    assert str(inspect.signature(compute)) == "(seconds: 'float', *, label: 'str' = 'x') -> 'str'"
    assert compute(0.0, label="fast") == "fast:0.0"
    assert compute(0.4) == "x:0.4"
    wait_finished(monitor, 2)

    (report,) = report_files(tmp_path)
    meta = report_metadata(report)
    assert meta["method"] == "CALL"
    assert meta["route"].endswith("compute")
    assert "slow_work" in report.read_text(encoding="utf-8")


@pytest.mark.parametrize("when", ["from the start", "at run time"])
def test_a_disabled_monitor_does_not_profile_decorated_functions(
    make_monitor: Callable[..., PerformanceMonitor], tmp_path: Path, when: str
) -> None:
    monitor = make_monitor(enabled=when == "at run time")
    if when == "at run time":
        monitor.update_config(enabled=False)

    @monitor.create_decorator()
    def compute() -> str:
        slow_work(0.3)
        return "done"

    assert compute() == "done"
    assert monitor.flush(10)
    stats = monitor.get_stats()
    assert (stats["total_requests"], stats["slow_requests"]) == (0, 0)
    assert report_files(tmp_path) == []
    assert not (tmp_path / "alerts.jsonl").exists()


def test_decorator_keeps_exceptions_and_names_its_span(
    make_monitor: Callable[..., PerformanceMonitor], global_exporter: InMemorySpanExporter
) -> None:
    monitor = make_monitor()

    @monitor.create_decorator(name="checkout")
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        fail()
    (span,) = global_exporter.get_finished_spans()
    assert span.name == "checkout"
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes[attributes.PROFILE] is True  # type: ignore[index]
    assert not span.status.is_ok


def test_decorator_inside_a_slow_request(
    make_monitor: Callable[..., PerformanceMonitor],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = make_monitor()

    @monitor.create_decorator()
    def render_invoice() -> str:
        slow_work(0.4)
        return "invoice"

    app = make_app()

    @app.route("/invoice")
    def invoice() -> str:
        slow_work(0.1)
        return render_invoice()

    with caplog.at_level(logging.WARNING), served(app, monitor=monitor) as watched:
        assert get(watched.url, "/invoice") == "invoice"
        wait_finished(monitor, 2)

    routes = sorted(report_metadata(path)["route"] for path in report_files(tmp_path))
    assert len(routes) == 2
    assert routes[0] == "/invoice"
    assert routes[1].endswith("render_invoice")
    trace_ids = {report_metadata(path)["trace_id"] for path in report_files(tmp_path)}
    assert len(trace_ids) == 1  # the function's span is a child of the request's
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- settings at runtime ---------------------------------------------------------------


def test_update_config_changes_the_threshold_at_runtime(
    make_monitor: Callable[..., PerformanceMonitor], tmp_path: Path
) -> None:
    monitor = make_monitor(threshold_seconds=2.0)
    with served(make_app(), monitor=monitor) as watched:
        get(watched.url, "/slow?seconds=0.3")
        wait_finished(monitor, 1)
        assert report_files(tmp_path) == []

        new_config = monitor.update_config(threshold_seconds=0.1)
        assert monitor.config is new_config
        assert monitor.processor.config.threshold_seconds == 0.1
        get(watched.url, "/slow?seconds=0.3")
        wait_finished(monitor, 2)
    assert len(report_files(tmp_path)) == 1
    assert monitor.get_stats()["slow_requests"] == 1


def test_update_config_rebuilds_only_what_a_change_needs(
    make_monitor: Callable[..., PerformanceMonitor],
) -> None:
    monitor = make_monitor(engine="pyinstrument")
    processor = monitor.processor
    before, dispatcher = processor.settings, processor.reporter.alerts
    assert before.budget is not None

    monitor.update_config(threshold_seconds=0.3, log_level="DEBUG")
    after = processor.settings
    assert after.threshold_ns == 300_000_000
    assert after.budget is before.budget  # pyinstrument is not calibrated again
    assert (after.store, after.masker) == (before.store, before.masker)
    assert processor.reporter.alerts is dispatcher

    monitor.update_config(max_performance_overhead=0.5)
    budget = processor.settings.budget
    assert budget is not None and budget.max_overhead == 0.5
    assert budget.slowdown == before.budget.slowdown

    monitor.update_config(alert_window_days=1)
    assert processor.reporter.alerts is not dispatcher
    assert processor.reporter.alerts.window_seconds == 86400


def test_shutdown_on_a_shared_provider_disables_without_rebuilding(
    make_monitor: Callable[..., PerformanceMonitor], global_exporter: InMemorySpanExporter
) -> None:
    monitor = make_monitor(engine="pyinstrument")
    processor = monitor.processor
    budget, dispatcher = processor.settings.budget, processor.reporter.alerts
    monitor.shutdown()
    assert not processor.config.enabled
    assert processor.settings.budget is budget
    assert processor.reporter.alerts is dispatcher


def test_bad_update_config_raises_and_keeps_the_old_settings(
    make_monitor: Callable[..., PerformanceMonitor],
) -> None:
    monitor = make_monitor(threshold_seconds=0.7)
    before = monitor.config
    with pytest.raises(ConfigError, match="threshold_seconds"):
        monitor.update_config(threshold_seconds=-1)
    with pytest.raises(ConfigError, match="engine"):
        monitor.update_config(engine="turbo")
    assert monitor.config is before
    assert monitor.config.threshold_seconds == 0.7


def test_blacklist_at_runtime_through_the_monitor(
    make_monitor: Callable[..., PerformanceMonitor], tmp_path: Path
) -> None:
    monitor = make_monitor()
    assert monitor.add_blacklist_url("^/slow")
    assert not monitor.add_blacklist_url("([")
    assert monitor.is_url_blacklisted("http://shop.example.com/slow?seconds=1")
    with served(make_app(), monitor=monitor) as watched:
        get(watched.url, "/slow")
        wait_finished(monitor, 1)
        assert report_files(tmp_path) == []
        assert monitor.get_stats()["blacklisted_requests"] == 1

        monitor.update_config(threshold_seconds="0.3")  # text, as os.getenv gives it
        assert monitor.config.threshold_seconds == 0.3
        assert monitor.is_url_blacklisted("/slow")  # kept across update_config
        get(watched.url, "/slow")
        wait_finished(monitor, 2)
        assert report_files(tmp_path) == []

        assert monitor.remove_blacklist_url("^/slow")
        assert not monitor.is_url_blacklisted("/slow")
        get(watched.url, "/slow")
        wait_finished(monitor, 3)
    assert len(report_files(tmp_path)) == 1


def test_blacklist_at_runtime_on_the_config_given_to_the_monitor(tmp_path: Path) -> None:
    # web-performance-monitor's documentation manages the black-list on its Config.
    config = Config(threshold_seconds=0.2, local_output_dir=str(tmp_path))
    monitor = PerformanceMonitor(config)
    try:
        config.add_blacklist_url("^/slow")
        with served(make_app(), monitor=monitor) as watched:
            get(watched.url, "/slow")
            wait_finished(monitor, 1)
            assert report_files(tmp_path) == []

            monitor.update_config(alert_window_days=1)
            assert config.is_url_blacklisted("/slow")
            assert config.remove_blacklist_url("^/slow")
            assert not config.is_url_blacklisted("/slow")
            get(watched.url, "/slow")
            wait_finished(monitor, 2)
        assert len(report_files(tmp_path)) == 1
    finally:
        monitor.shutdown()


def test_stats_reset_and_test_alert(
    make_monitor: Callable[..., PerformanceMonitor], tmp_path: Path
) -> None:
    monitor = make_monitor()
    result = monitor.test_alert_system()
    assert result["success"] is True
    assert result["notifier_results"] == {"local_file": True}
    assert (tmp_path / "alerts.jsonl").exists()
    monitor.processor.stats.incr("total_requests")
    monitor.reset_stats()
    assert monitor.get_stats()["total_requests"] == 0


# --- the processor on a provider shared with other processors ---------------------------


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "ours-last"])
def test_processor_with_other_processors_in_any_order(tmp_path: Path, ours_first: bool) -> None:
    simple_exporter, batch_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    ours = ProfilingSpanProcessor(Config(threshold_seconds=0.2, local_output_dir=str(tmp_path)))
    others = [
        SimpleSpanProcessor(simple_exporter),
        BatchSpanProcessor(batch_exporter, schedule_delay_millis=50),
    ]
    provider = TracerProvider()
    for processor in [ours, *others] if ours_first else [*others, ours]:
        provider.add_span_processor(processor)
    watched = watch(make_app(), provider=provider)
    try:
        with serve_threaded(watched.wsgi) as url:
            get(url, "/fast")
            get(url, "/slow")
            wait_until(lambda: ours.stats.snapshot()["total_requests"] >= 2, "both requests")
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    (report,) = report_files(tmp_path)
    for exporter in (simple_exporter, batch_exporter):
        (slow_span,) = server_spans(exporter, "/slow")
        (fast_span,) = server_spans(exporter, "/fast")
        assert slow_span.attributes[attributes.SLOW] is True  # type: ignore[index]
        assert slow_span.attributes[attributes.REPORT_URL] == str(report)  # type: ignore[index]
        assert attributes.REPORT_URL not in fast_span.attributes  # type: ignore[operator]
