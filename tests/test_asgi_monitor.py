"""The PerformanceMonitor facade around ASGI apps: FastAPI on a real uvicorn server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from apps.asgi_servers import serve_asgi
from apps.helpers import profile_functions, report_files, report_metadata, wait_until
from fastapi import FastAPI, Request
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from otel_wpm import Config, ConfigError, PerformanceMonitor
from otel_wpm.monitor import is_asgi_app

pytestmark = pytest.mark.usefixtures("fresh_globals")

THIS_FILE = Path(__file__).name


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[PerformanceMonitor]:
    monitor = PerformanceMonitor(Config(threshold_seconds=0.3, local_output_dir=str(tmp_path)))
    yield monitor
    monitor.shutdown()


async def build_order(order_id: int) -> None:
    await asyncio.sleep(0.5)


def shop() -> FastAPI:
    app = FastAPI()

    @app.post("/orders/{order_id}")
    async def create_order(order_id: int, request: Request) -> dict[str, Any]:
        body = await request.body()
        await build_order(order_id)
        return {"sha256": hashlib.sha256(body).hexdigest()}

    return app


def reports_after(monitor: PerformanceMonitor, directory: Path, count: int) -> list[Path]:
    wait_until(lambda: monitor.get_stats()["total_requests"] >= count, f"{count} requests")
    assert monitor.flush(10)
    return report_files(directory)


def post_order(url: str, body: bytes) -> dict[str, Any]:
    response = requests.post(
        url + "/orders/42", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    response.raise_for_status()
    return dict(response.json())


ORDER = json.dumps({"item": "boots", "password": "hunter2", "notes": "x" * 3000}).encode()


def test_an_asgi_app_is_traced_profiled_and_its_body_recorded_unchanged(
    monitor: PerformanceMonitor, tmp_path: Path
) -> None:
    app = monitor.create_middleware()(shop())
    with serve_asgi(app) as url:
        answer = post_order(url, ORDER)
    (report,) = reports_after(monitor, tmp_path, 1)

    assert answer["sha256"] == hashlib.sha256(ORDER).hexdigest()  # the app got every byte
    meta = report_metadata(report)
    assert (meta["method"], meta["route"]) == ("POST", "/orders/{order_id}")
    assert profile_functions(report, THIS_FILE) == {"create_order", "build_order"}
    page = report.read_text(encoding="utf-8")
    assert "boots" in page
    assert "hunter2" not in page


def test_an_instrumented_asgi_app_gets_one_server_span_and_its_body_recorded(
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    monitor = PerformanceMonitor(Config(threshold_seconds=0.3, local_output_dir=str(tmp_path)))
    app = shop()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        with serve_asgi(monitor.create_middleware()(app)) as url:
            post_order(url, ORDER)
        (report,) = reports_after(monitor, tmp_path, 1)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        monitor.shutdown()

    kinds = [span.kind for span in exporter.get_finished_spans()]
    assert kinds.count(SpanKind.SERVER) == 1
    assert "boots" in report.read_text(encoding="utf-8")


def test_an_async_decorated_function_is_timed_across_its_awaits(
    monitor: PerformanceMonitor, tmp_path: Path
) -> None:
    @monitor.create_decorator()
    async def nightly_job() -> str:
        await build_order(7)
        return "done"

    assert asyncio.run(nightly_job()) == "done"
    (report,) = reports_after(monitor, tmp_path, 1)

    assert report_metadata(report)["route"].endswith("nightly_job")
    assert profile_functions(report, THIS_FILE) == {"nightly_job", "build_order"}


def test_asgi_apps_are_told_from_wsgi_apps() -> None:
    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
        return None

    flask_app = Flask(__name__)
    for app in (FastAPI(), Starlette(), raw_asgi):
        assert is_asgi_app(app), app
    for app in (flask_app, flask_app.wsgi_app):
        assert not is_asgi_app(app), app


def test_wrapping_an_asgi_app_without_the_asgi_instrumentation_says_what_to_install(
    monitor: PerformanceMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.asgi", None)
    with pytest.raises(ConfigError, match=r"pip install 'otel-wpm\[asgi\]'"):
        monitor.create_asgi_middleware()(shop())
