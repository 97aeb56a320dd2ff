"""The core engine against a real Flask app on werkzeug's threaded server."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apps.helpers import Gates, report_metadata, wait_until
from apps.watched import Watched, served
from flask import Flask, request
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind, format_trace_id

from otel_wpm import Config, ProfilingSpanProcessor
from otel_wpm._runtime.stats import COUNTERS
from otel_wpm.capture import attributes

ENGINES = ["sampling", "pyinstrument"]


def busy_alpha_work(gate: threading.Event) -> None:
    """Burns CPU until the gate opens, so the profile has something to show."""
    while not gate.wait(0.001):
        sum(i * i for i in range(200))


def busy_beta_work(gate: threading.Event) -> None:
    while not gate.wait(0.001):
        sorted(str(i) for i in range(200))


def make_app(gates: Gates) -> Flask:
    """``/alpha/<item>`` and ``/beta`` burn CPU until their gate opens; ``/echo`` reads the
    body, then waits for its gate."""
    app = Flask(__name__)

    @app.route("/alpha/<int:item>", methods=["GET", "POST"])
    def alpha(item: int):
        gates.started("alpha").set()
        busy_alpha_work(gates.release("alpha"))
        return {"item": item}

    @app.route("/beta", methods=["GET", "POST"])
    def beta():
        gates.started("beta").set()
        busy_beta_work(gates.release("beta"))
        return {"ok": True}

    @app.route("/echo", methods=["POST"])
    def echo():
        body = request.get_data()
        gates.release("echo").wait(10)
        return {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}

    @app.route("/fast")
    def fast():
        return "fast"

    @app.route("/marked")
    def marked():
        """Waits until its own span is marked slow by the sampler, then for its gate."""
        span = trace.get_current_span()
        wait_until(lambda: span.attributes.get(attributes.SLOW), "the span marked slow")  # type: ignore[attr-defined]
        gates.started("marked").set()
        gates.release("marked").wait(10)
        return "marked"

    return app


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture(params=ENGINES)
def watched(request: pytest.FixtureRequest, tmp_path: Path, gates: Gates) -> Iterator[Watched]:
    config = Config(
        threshold_seconds=0.2,
        engine=request.param,
        max_performance_overhead=100,  # the precise engine profiles every request
        local_output_dir=str(tmp_path / "reports"),
        trace_url_template="http://localhost:16686/trace/{trace_id}",
        capture_body_bytes=1024,
        alert_window_days=0,
    )
    with served(make_app(gates), config) as watched:
        yield watched
        gates.release_all()


def timed_request(url: str, gate: threading.Event, **kwargs) -> requests.Response:
    """Request ``url`` of a route that runs until ``gate`` opens, 0.5 s from now."""
    gate.clear()
    timer = threading.Timer(0.5, gate.set)
    timer.start()
    try:
        return requests.request(kwargs.pop("method", "GET"), url, timeout=30, **kwargs)
    finally:
        timer.cancel()
        gate.set()


def test_slow_request_gives_a_report_with_its_own_trace_id(watched: Watched, gates: Gates) -> None:
    response = timed_request(watched.url + "/alpha/7", gates.release("alpha"))
    assert response.status_code == 200

    [span] = watched.server_spans()
    trace_id = format_trace_id(span.context.trace_id)
    [report] = watched.reports()
    assert trace_id in report.name
    meta = report_metadata(report)
    assert meta["trace_id"] == trace_id
    assert meta["method"] == "GET"
    assert meta["status"] == 200
    assert meta["duration_seconds"] >= 0.2
    assert meta["trace_url"] == f"http://localhost:16686/trace/{trace_id}"
    text = report.read_text()
    assert "busy_alpha_work" in text
    hot_spots = text[text.index("Where the time went") : text.index("Slowest spans")]
    assert "busy_alpha_work" in hot_spots
    # pyinstrument's viewer sits in its own box below our header, not over it
    assert '<div id="otel-wpm-profile"><div id="app"></div></div>' in text


def test_fast_request_gives_no_report(watched: Watched) -> None:
    assert requests.get(watched.url + "/fast", timeout=10).text == "fast"
    [span] = watched.server_spans()
    assert attributes.SLOW not in span.attributes
    assert watched.reports() == []
    assert watched.processor.get_stats()["total_requests"] == 1
    assert watched.processor.get_stats()["slow_requests"] == 0


def test_exported_slow_span_links_to_its_report(watched: Watched, gates: Gates) -> None:
    timed_request(watched.url + "/alpha/1", gates.release("alpha"))
    [span] = watched.server_spans()
    assert span.attributes[attributes.SLOW] is True
    link = Path(span.attributes[attributes.REPORT_URL])
    assert link.exists()
    assert link.parent == Path(watched.processor.config.local_output_dir).absolute()
    assert span.attributes[attributes.REPORT_FILE] == link.name
    assert format_trace_id(span.context.trace_id) in link.read_text()


def test_concurrent_slow_requests_get_isolated_profiles(watched: Watched, gates: Gates) -> None:
    results: dict[str, int] = {}

    def call(path: str, name: str) -> None:
        results[name] = requests.get(watched.url + path, timeout=30).status_code

    threads = [
        threading.Thread(target=call, args=("/alpha/2", "alpha")),
        threading.Thread(target=call, args=("/beta", "beta")),
    ]
    for thread in threads:
        thread.start()
    assert gates.started("alpha").wait(10) and gates.started("beta").wait(10)
    releaser = threading.Timer(0.6, gates.release_all)
    releaser.start()
    for thread in threads:
        thread.join(30)
    assert results == {"alpha": 200, "beta": 200}

    watched.server_spans(2)
    reports = {report_metadata(r)["route"]: r.read_text() for r in watched.reports()}
    assert set(reports) == {"/alpha/<int:item>", "/beta"}  # the template, under any way in
    assert "busy_alpha_work" in reports["/alpha/<int:item>"]
    assert "busy_beta_work" not in reports["/alpha/<int:item>"]
    assert "busy_beta_work" in reports["/beta"]
    assert "busy_alpha_work" not in reports["/beta"]


SECRETS = {
    "query": "q-secret-9f8e7d",
    "form": "form-secret-1a2b3c",
    "header": "header-secret-4d5e6f",
    "cookie": "cookie-secret-7a8b9c",
}


def test_secrets_are_masked_in_the_report(watched: Watched, gates: Gates) -> None:
    timed_request(
        watched.url + f"/alpha/3?api_key={SECRETS['query']}&page=2",
        gates.release("alpha"),
        method="POST",
        data={"password": SECRETS["form"], "user": "ada"},
        headers={
            "Authorization": f"Bearer {SECRETS['header']}",
            "Cookie": f"sid={SECRETS['cookie']}",
        },
    )
    watched.server_spans()
    [report] = watched.reports()
    text = report.read_text()
    for secret in SECRETS.values():
        assert secret not in text
    assert "[MASKED]" in text
    assert "page" in text


def test_a_slow_get_has_its_headers_in_the_report(watched: Watched, gates: Gates) -> None:
    """No recorder for a GET: the sampler thread finds the environ on the request's stack."""
    timed_request(
        watched.url + "/alpha/5",
        gates.release("alpha"),
        headers={"Authorization": f"Bearer {SECRETS['header']}", "X-Request-Tag": "tag-5"},
    )
    watched.server_spans()
    [report] = watched.reports()
    text = report.read_text()
    assert "X-Request-Tag" in text and "tag-5" in text
    assert SECRETS["header"] not in text


def test_a_slow_request_the_sampler_never_saw_still_has_its_headers(tmp_path: Path) -> None:
    """The sampler's first look comes after the request ended: the end finds the environ."""
    config = Config(
        threshold_seconds=0.2,
        sampling_interval_seconds=1.0,
        sample_after_fraction=1.0,
        local_output_dir=str(tmp_path),
    )
    gates = Gates()
    with served(make_app(gates), config) as watched:
        threading.Timer(0.4, gates.release("alpha").set).start()
        requests.get(watched.url + "/alpha/6", headers={"X-Request-Tag": "tag-6"}, timeout=30)
        watched.server_spans()
        [report] = watched.reports()
        assert "tag-6" in report.read_text()


def _serve_with_config_change(before: Config, after: Config) -> tuple:
    """Serve /alpha/1 under ``before``; switch to ``after`` while it runs; then /alpha/2."""
    gates = Gates()
    release = gates.release("alpha")
    with served(make_app(gates), before) as watched:
        first = threading.Thread(
            target=requests.get, args=(watched.url + "/alpha/1",), kwargs={"timeout": 30}
        )
        first.start()
        assert gates.started("alpha").wait(10)
        watched.processor.update_config(after)
        threading.Timer(0.4, release.set).start()  # makes it slow, if it counts
        first.join(30)
        release.clear()
        threading.Timer(0.4, release.set).start()
        requests.get(watched.url + "/alpha/2", timeout=30)
        spans = watched.server_spans(2)
    return watched.processor, spans


def _marked_then_changed(watched: Watched, gates: Gates, **changes: object) -> ReadableSpan:
    """Serve /marked: once the sampler has marked its span slow, apply ``changes``."""
    pending = threading.Thread(
        target=requests.get, args=(watched.url + "/marked",), kwargs={"timeout": 30}
    )
    pending.start()
    assert gates.started("marked").wait(30), "the sampler never marked the span slow"
    watched.processor.update_config(watched.processor.config.replace(**changes))
    gates.release("marked").set()
    pending.join(30)
    [span] = watched.server_spans()
    return span


def test_a_request_marked_slow_gets_its_report_after_the_threshold_was_raised(
    tmp_path: Path,
) -> None:
    config = Config(threshold_seconds=0.3, local_output_dir=str(tmp_path), hung_request_factor=0)
    gates = Gates()
    with served(make_app(gates), config) as watched:
        span = _marked_then_changed(watched, gates, threshold_seconds=5)
    assert span.attributes[attributes.SLOW] is True
    link = Path(span.attributes[attributes.REPORT_URL])
    assert link.is_file(), "the span links to a report that was never written"
    assert report_metadata(link)["threshold_seconds"] == 0.3


def test_a_request_writes_its_report_where_its_link_points_after_the_directory_changed(
    tmp_path: Path,
) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    config = Config(threshold_seconds=0.3, local_output_dir=str(before), hung_request_factor=0)
    gates = Gates()
    with served(make_app(gates), config) as watched:
        span = _marked_then_changed(watched, gates, local_output_dir=str(after))
        timed_request(watched.url + "/alpha/1", gates.release("alpha"))  # under the new directory
        watched.server_spans(2)
    link = Path(span.attributes[attributes.REPORT_URL])
    assert link.parent == before.absolute()
    assert link.is_file(), "the report is not where the span's link points"
    assert [report_metadata(r)["route"] for r in after.glob("*.html")] == ["/alpha/<int:item>"]


def test_a_forked_child_starts_with_zero_stats(tmp_path: Path) -> None:
    processor = ProfilingSpanProcessor(Config(local_output_dir=str(tmp_path)))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(3):
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
            pass
    assert processor.get_stats()["total_requests"] == 3
    pid = os.fork()
    if pid == 0:
        child_ok = False
        try:
            stats = processor.get_stats()
            child_ok = all(stats[name] == 0 for name in COUNTERS)
            child_ok = child_ok and stats["overhead_stats"]["average_overhead"] == 0
        finally:
            os._exit(0 if child_ok else 1)
    _, status = os.waitpid(pid, 0)
    provider.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0, "the child counted its parent's requests"


def test_a_request_in_flight_when_the_monitor_is_disabled_finishes_under_the_old_config(
    tmp_path: Path,
) -> None:
    settings = {
        "threshold_seconds": 0.2,
        "engine": "pyinstrument",
        "max_performance_overhead": 100,
        "local_output_dir": str(tmp_path),
    }
    processor, spans = _serve_with_config_change(
        Config(**settings), Config(**settings, enabled=False)
    )
    stats = processor.get_stats()
    assert stats["profiles_precise"] == 1  # its profiler was stopped
    assert (stats["total_requests"], stats["slow_requests"]) == (1, 1)
    [report] = tmp_path.glob("*.html")
    first = next(s for s in spans if "/alpha/1" in str(s.attributes.get("http.target")))
    assert format_trace_id(first.context.trace_id) in report.name


def test_a_profiler_started_by_the_precise_engine_stops_after_a_switch_to_sampling(
    tmp_path: Path,
) -> None:
    settings = {"threshold_seconds": 30, "local_output_dir": str(tmp_path)}
    processor, _ = _serve_with_config_change(
        Config(**settings, engine="pyinstrument", max_performance_overhead=100),
        Config(**settings, engine="sampling"),
    )
    stats = processor.get_stats()
    assert stats["profiles_precise"] == 1
    assert (stats["total_requests"], stats["slow_requests"]) == (2, 0)


def test_the_app_reads_the_whole_body_even_past_the_capture_cap(
    watched: Watched, gates: Gates
) -> None:
    body = bytes(range(256)) * 64  # 16 KiB, over the 1 KiB capture cap
    response = timed_request(
        watched.url + "/echo",
        gates.release("echo"),
        method="POST",
        data=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    watched.server_spans()
    [report] = watched.reports()
    assert f"read {len(body)} bytes of body; the first 1024 were kept" in report.read_text()


def test_json_body_secrets_are_masked_at_any_depth(watched: Watched, gates: Gates) -> None:
    payload = {"outer": {"list": [{"client_secret": "deep-secret-0c0ffee"}]}, "visible": "yes"}
    timed_request(watched.url + "/echo", gates.release("echo"), method="POST", json=payload)
    watched.server_spans()
    [report] = watched.reports()
    text = report.read_text()
    assert "deep-secret-0c0ffee" not in text
    assert "visible" in text


def test_script_in_a_request_is_escaped(watched: Watched, gates: Gates) -> None:
    timed_request(watched.url + "/alpha/4?name=<script>alert(1)</script>", gates.release("alpha"))
    watched.server_spans()
    [report] = watched.reports()
    text = report.read_text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_blacklisted_url_is_counted_but_not_profiled(watched: Watched, gates: Gates) -> None:
    watched.processor.config.add_blacklist_url(r"^/alpha/9")
    timed_request(watched.url + "/alpha/9", gates.release("alpha"))
    [span] = watched.server_spans()
    assert attributes.SLOW not in span.attributes
    assert watched.reports() == []
    stats = watched.processor.get_stats()
    assert stats["total_requests"] == 1 and stats["blacklisted_requests"] == 1


def test_a_hostile_method_cannot_inject_markup_into_the_report(tmp_path: Path) -> None:
    from html.parser import HTMLParser

    from opentelemetry.trace import SpanKind

    processor = ProfilingSpanProcessor(
        Config(
            threshold_seconds=0.05,
            sample_after_fraction=0.0,
            hung_request_factor=0,
            local_output_dir=str(tmp_path),
        )
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    hostile = "</script><img src=x onerror=alert(1)>"
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "request", kind=SpanKind.SERVER, attributes={"http.method": hostile, "http.target": "/x"}
    ):
        busy_alpha_work(_event_set_after(0.3))
    processor.force_flush()
    [report] = tmp_path.glob("*.html")
    tags: list[str] = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: tags.append(tag)  # type: ignore[method-assign]
    parser.feed(report.read_text())
    assert "img" not in tags
    assert "busy_alpha_work" in report.read_text()
    provider.shutdown()


def _event_set_after(seconds: float) -> threading.Event:
    event = threading.Event()
    threading.Timer(seconds, event.set).start()
    return event


def test_without_capture_the_report_shows_no_request_data(tmp_path: Path) -> None:
    config = Config(
        threshold_seconds=0.1,
        hung_request_factor=0,  # the request runs 0.5 s: no in-flight report at 5 x 0.1 s
        capture_headers=False,
        capture_body_bytes=0,
        local_output_dir=str(tmp_path),
    )
    gates = Gates()
    with served(make_app(gates), config) as watched:
        response = timed_request(
            watched.url + "/echo",
            gates.release("echo"),
            method="POST",
            data=b"x" * 100,
            headers={"X-Custom": "seen"},
        )
        assert response.json()["length"] == 100  # the app still reads the whole body
        watched.server_spans()
        [report] = watched.reports()
    text = report.read_text()
    assert "The application read no request body." in text
    assert "X-Custom" not in text


def test_the_asgi_middleware_s_message_spans_are_not_kept_for_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenTelemetry's ASGI middleware makes a span for each message sent or received:
    plumbing, left out of the request's spans; the request's own work stays."""
    processor = ProfilingSpanProcessor(Config(threshold_seconds=1.0, local_output_dir=tmp_path))
    handed: list[list[str]] = []
    monkeypatch.setattr(
        processor.reporter,
        "report",
        lambda span, request, duration, session, spans: handed.append(
            [kept.name for kept in spans.of_request(span)]
        ),
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    started = time.time_ns() - 2 * 10**9  # a request that took two seconds
    request_span = tracer.start_span("GET /items/{id}", kind=SpanKind.SERVER, start_time=started)
    inside = trace.set_span_in_context(request_span)
    for name, kind in [
        ("GET /items/{id} http receive", SpanKind.INTERNAL),
        ("SELECT items", SpanKind.CLIENT),
        ("render", SpanKind.INTERNAL),
        ("GET /items/{id} http send", SpanKind.INTERNAL),
    ]:
        tracer.start_span(name, context=inside, kind=kind).end()
    request_span.end()
    processor.shutdown()

    assert handed == [["SELECT items", "render"]]
