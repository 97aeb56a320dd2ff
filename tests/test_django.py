"""A minimal Django app, instrumented by DjangoInstrumentor, profiled by our processor.

Django settings can be configured once per process; nothing else in the suite
configures them, so this module does it in-process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import django
import pytest
import requests
from apps.helpers import report_files, report_metadata, wait_until
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.urls import path
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from wsgi_servers import serve_threaded

from otel_wpm import Config, PerformanceMonitor, ProfilingSpanProcessor
from otel_wpm.capture import attributes


def build_order(order_id: int) -> None:
    time.sleep(0.5)


def slow_view(request: HttpRequest, order_id: int) -> HttpResponse:
    build_order(order_id)
    return HttpResponse(f"order {order_id}")


def fast_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("fast")


urlpatterns = [
    path("orders/<int:order_id>/slow", slow_view),
    path("fast", fast_view),
]


@dataclass
class DjangoRun:
    reports: list[Path]
    spans: tuple[ReadableSpan, ...]


def _server_span(run: DjangoRun, route: str) -> ReadableSpan:
    (span,) = [
        s
        for s in run.spans
        if s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.route") == route
    ]
    return span


def _configure_django() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="not-secret",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["127.0.0.1"],
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
        )
        django.setup()


# First in the module: it runs before the fixture below instruments Django.
@pytest.mark.usefixtures("fresh_globals")
def test_the_facade_middleware_reports_django_views_by_route(tmp_path: Path) -> None:
    _configure_django()
    monitor = PerformanceMonitor(Config(threshold_seconds=0.2, local_output_dir=str(tmp_path)))
    with serve_threaded(monitor.create_middleware()(WSGIHandler())) as url:
        for order in (7, 8):
            assert requests.get(url + f"/orders/{order}/slow", timeout=10).text == f"order {order}"
        assert monitor.flush()
    reports = report_files(tmp_path)
    assert len(reports) == 2
    assert {report_metadata(r)["route"] for r in reports} == {"orders/<int:order_id>/slow"}
    alerts = (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(alerts) == 1


@pytest.fixture(scope="module")
def django_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoRun]:
    _configure_django()
    reports_dir = tmp_path_factory.mktemp("django-reports")
    exporter = InMemorySpanExporter()
    processor = ProfilingSpanProcessor(
        Config(threshold_seconds=0.2, local_output_dir=str(reports_dir))
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    DjangoInstrumentor().instrument(tracer_provider=provider)
    try:
        with serve_threaded(WSGIHandler()) as url:
            assert requests.get(url + "/fast", timeout=10).text == "fast"
            assert requests.get(url + "/orders/7/slow", timeout=10).text == "order 7"
            wait_until(lambda: processor.stats.snapshot()["total_requests"] >= 2, "2 requests")
            assert processor.force_flush(10_000)
        yield DjangoRun(report_files(reports_dir), exporter.get_finished_spans())
    finally:
        DjangoInstrumentor().uninstrument()
        provider.shutdown()


def test_slow_view_gets_a_report_named_after_its_route(django_run: DjangoRun) -> None:
    (report,) = django_run.reports
    assert "_GET_orders-int-order-id-slow_" in report.name  # the route's, not the path's
    meta = report_metadata(report)
    assert meta["route"] == "orders/<int:order_id>/slow"
    assert meta["url"].endswith("/orders/7/slow")
    assert meta["status"] == 200
    assert "build_order" in report.read_text(encoding="utf-8")


def test_slow_span_links_to_the_report_and_fast_one_does_not(django_run: DjangoRun) -> None:
    slow = _server_span(django_run, "orders/<int:order_id>/slow")
    fast = _server_span(django_run, "fast")
    assert slow.attributes[attributes.REPORT_URL] == str(django_run.reports[0])  # type: ignore[index]
    assert attributes.SLOW not in fast.attributes  # type: ignore[operator]
    meta = report_metadata(django_run.reports[0])
    assert meta["trace_id"] == format(slow.context.trace_id, "032x")
