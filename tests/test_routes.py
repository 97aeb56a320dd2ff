"""Requests are grouped by route: the framework's template, else a stand-in.

Unit tests of :mod:`otel_wpm.capture.route` with real Flask request objects,
then a real Flask app behind the ``PerformanceMonitor`` one-liner on a real
server: reports, report file names and alerts use the template, and requests
no route matched are one alert.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from apps.hardening_app import alert_lines
from apps.helpers import report_metadata
from apps.watched import Watched, watch
from flask import Flask, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from span_capture import WaitableSpanExporter
from wsgi_servers import serve_threaded

from otel_wpm import Config, PerformanceMonitor, ProfilingSpanProcessor
from otel_wpm.capture.frames import callers
from otel_wpm.capture.route import (
    FRAMEWORK_REQUEST_KEY,
    keep_framework_request,
    normalised_path,
    route_key,
    route_template,
)

# --- normalised paths -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("", ""),
        ("/items/1", "/items/{id}"),
        ("/items/123456789/lines/7", "/items/{id}/lines/{id}"),
        ("/users/3f2b8c1e-4d5a-4b6c-9e8f-0a1b2c3d4e5f", "/users/{id}"),
        ("/users/3F2B8C1E4D5A4B6C9E8F0A1B2C3D4E5F/x", "/users/{id}/x"),
        ("/commits/9fceb02d0ae598e95dc970b74767f19372d61af8", "/commits/{id}"),
        ("/objects/5d41402a", "/objects/{id}"),
        ("/reset/dGhpc0lzQVRva2VuMTIzNDU2Nzg5MA", "/reset/{id}"),
        ("/share/aB3_dE6-gH9iJ2kL5mN8oP1q", "/share/{id}"),
        ("/keys/AKIAIOSFODNN7EXAMPLE", "/keys/{id}"),
        ("/s/k3j4h5g6f7d8s9a0q1w2e3", "/s/{id}"),
        ("/login/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "/login/{id}"),
        # Words, slugs and short hex-looking words stay.
        ("/api/v2/users", "/api/v2/users"),
        ("/blog/my-first-post-about-python-2024", "/blog/my-first-post-about-python-2024"),
        ("/about/deadbeef", "/about/deadbeef"),
        ("/static/app.css", "/static/app.css"),
        ("/docs/Getting-Started-Guide", "/docs/Getting-Started-Guide"),
        ("/wp-login.php", "/wp-login.php"),
        ("/.env", "/.env"),
    ],
)
def test_ids_in_paths_become_placeholders(path: str, expected: str) -> None:
    assert normalised_path(path) == expected


def test_route_key_prefers_the_template_then_no_route_then_the_normalised_path() -> None:
    assert route_key("/items/<int:item_id>", "/items/1", 200) == "/items/<int:item_id>"
    assert route_key("/items/<int:item_id>", "/items/1", 404) == "/items/<int:item_id>"
    assert route_key(None, "/wp-login.php", 404) == "(no route: 404)"
    assert route_key(None, "/x1", 404) == route_key(None, "/.env", 404)
    assert route_key(None, "/items", 405) == "(no route: 405)"
    assert route_key(None, "/items/42", 200) == "/items/{id}"
    assert route_key(None, "/items/42", None) == "/items/{id}"


# --- templates from the environ ------------------------------------------------------


def _flask_app() -> Flask:
    app = Flask(__name__)

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return str(item_id)

    return app


def test_flask_template_is_read_from_the_request_in_the_environ() -> None:
    app = _flask_app()
    with app.test_request_context("/items/5") as ctx:
        assert route_template(ctx.request.environ) == "/items/<int:item_id>"


def test_flask_request_that_matched_no_route_has_no_template() -> None:
    app = _flask_app()
    with app.test_request_context("/nowhere") as ctx:
        assert ctx.request.routing_exception is not None
        assert route_template(ctx.request.environ) is None


@pytest.mark.parametrize(
    "environ",
    [None, {}, {"werkzeug.request": object()}, {FRAMEWORK_REQUEST_KEY: object()}],
)
def test_no_framework_no_template(environ: Any) -> None:
    assert route_template(environ) is None


class _ResolverMatch:
    route = "orders/<int:order_id>"


class _DjangoLikeRequest:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.resolver_match: Any = None


def test_a_request_with_a_resolver_match_on_the_stack_is_kept_in_the_environ() -> None:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "wsgi.input": None}

    def view(request: _DjangoLikeRequest) -> None:
        keep_framework_request(environ, callers(sys._getframe()))

    request = _DjangoLikeRequest(environ)
    view(request)
    assert environ[FRAMEWORK_REQUEST_KEY] is request
    assert route_template(environ) is None  # not resolved yet
    request.resolver_match = _ResolverMatch()
    assert route_template(environ) == "orders/<int:order_id>"


def test_a_request_of_another_environ_is_not_kept() -> None:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "wsgi.input": None}

    def view(request: _DjangoLikeRequest) -> None:
        keep_framework_request(environ, callers(sys._getframe()))

    view(_DjangoLikeRequest({"REQUEST_METHOD": "GET"}))
    assert FRAMEWORK_REQUEST_KEY not in environ


# --- a real Flask app, every way in ---------------------------------------------------


def slow_flask_app() -> Flask:
    """Parameterised routes; ``X-Slow: <seconds>`` makes any request (a 404 too) slow."""
    app = Flask("shop")

    @app.before_request
    def slow_down() -> None:
        time.sleep(float(request.headers.get("X-Slow", "0")))

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return f"item {item_id}"

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    return app


def _facade(app: Flask, config: Config) -> Watched:
    return watch(app, monitor=PerformanceMonitor(config))


def _wsgi_middleware(app: Flask, config: Config) -> Watched:
    return watch(app, config)


def _flask_instrumentor(app: Flask, config: Config) -> Watched:
    provider = TracerProvider(shutdown_on_exit=False)
    processor = ProfilingSpanProcessor(config)
    provider.add_span_processor(processor)
    exporter = WaitableSpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return Watched(app, provider, exporter, processor)


WAYS_IN = {
    "facade": _facade,
    "OpenTelemetryMiddleware": _wsgi_middleware,
    "FlaskInstrumentor": _flask_instrumentor,
}


@dataclass
class Run:
    reports: list[Path]
    alerts: list[dict[str, Any]]


def _run(way_in: str, output_dir: Path, paths: list[str], **settings: Any) -> Run:
    config = Config(threshold_seconds=0.1, local_output_dir=str(output_dir), **settings)
    watched = WAYS_IN[way_in](slow_flask_app(), config)
    with serve_threaded(watched.wsgi) as url:
        assert requests.get(url + "/fast", timeout=30).text == "fast"
        for path in paths:
            requests.get(url + path, headers={"X-Slow": "0.2"}, timeout=30)
        watched.server_spans(len(paths) + 1)  # exported, their reports and alerts handled
    return Run(watched.reports(), alert_lines(output_dir))


@pytest.mark.usefixtures("fresh_globals")
@pytest.mark.parametrize("way_in", list(WAYS_IN))
@pytest.mark.parametrize("capture", [True, False], ids=["captured", "nothing-captured"])
def test_reports_and_alerts_use_the_route_template(
    way_in: str, capture: bool, tmp_path: Path
) -> None:
    settings = {} if capture else {"capture_headers": False, "capture_body_bytes": 0}
    run = _run(way_in, tmp_path, ["/items/1", "/items/2", "/items/3?x=1"], **settings)
    assert len(run.reports) == 3
    for report in run.reports:
        assert report_metadata(report)["route"] == "/items/<int:item_id>"
        assert "items-int-item-id" in report.name
        row = re.search(r"<tr><th>Route</th><td>([^<]*)</td>", report.read_text("utf-8"))
        assert row and row.group(1) == "/items/&lt;int:item_id&gt;"
    assert [alert["route"] for alert in run.alerts] == ["/items/<int:item_id>"]


@pytest.mark.usefixtures("fresh_globals")
@pytest.mark.parametrize("way_in", ["facade", "OpenTelemetryMiddleware"])
def test_requests_no_route_matched_are_one_alert(way_in: str, tmp_path: Path) -> None:
    run = _run(way_in, tmp_path, ["/wp-login.php", "/.env", "/x1", "/admin/config.php"])
    assert len(run.reports) == 4
    assert {report_metadata(r)["route"] for r in run.reports} == {"(no route: 404)"}
    assert [(alert["route"], alert["status"]) for alert in run.alerts] == [("(no route: 404)", 404)]
