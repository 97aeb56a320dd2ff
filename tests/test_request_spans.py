"""A slow Flask request's own spans, from real instrumentations, in its report and alerts.

The app queries a real SQLite database through ``opentelemetry-instrumentation-sqlite3``
(a SQL function that pauses makes the query slow) and calls a server on 127.0.0.1
through ``opentelemetry-instrumentation-requests``, from a worker thread of its own.
Another view queries through SQLAlchemy, whose instrumentation adds its own span
beside the driver's for the same query.
The report must say which query and which call (masked), how long the request spent
in each kind, and the alerts must name the slowest span. The report is then opened
in headless Chromium, from its file and from the report server: no console error,
no request leaving the page's origin. Screenshots go to ``tests/output/report/``.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from apps.helpers import wait_until
from apps.watched import Watched, watch
from chromium import CHROMIUM, Chromium
from flask import Flask
from mattermost_server import FakeMattermostServer
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_trace_id
from wsgi_servers import serve_reports, serve_threaded

from otel_wpm import Config
from otel_wpm.masking import MASK

OUTPUT = Path(__file__).parent / "output" / "report"
QUERY_SECRET = "hunter2-in-a-literal"
URL_SECRET = "key-in-the-query"
# Not hex: a secret like "abc" turns up by chance inside a random trace or span id.
TOKEN_SECRET = "token-of-the-caller"
PAUSE_SECONDS = 0.4  # the slow query's own work
BACKEND_SECONDS = 0.2  # the called service's
MASKED_QUERY = "select pause(id), owner from orders where id = ? and secret != ?"


def pause(value: Any) -> Any:
    time.sleep(PAUSE_SECONDS)  # the work that makes this query slow
    return value


def backend_app() -> Flask:
    backend = Flask("prices")

    @backend.route("/prices")
    def prices() -> dict[str, int]:
        time.sleep(BACKEND_SECONDS)  # the called service's own work
        return {"price": 12}

    return backend


def database_engine() -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine("sqlite://")

    @sqlalchemy.event.listens_for(engine, "connect")
    def add_pause(connection: Any, _record: Any) -> None:
        connection.create_function("pause", 1, pause)

    return engine


def shop_app(
    backend_url: str, engine: sqlalchemy.Engine, stuck: threading.Event, started: threading.Event
) -> Flask:
    app = Flask("shop")
    pool = ThreadPoolExecutor(1)

    def query(sql: str, *params: Any) -> list[Any]:
        database = sqlite3.connect(":memory:")
        database.create_function("pause", 1, pause)
        cursor = database.cursor()  # the instrumentation traces cursors
        cursor.execute("create table orders (id integer, owner text, secret text)")
        cursor.execute("insert into orders values (7, 'ann', 'x')")
        cursor.execute(sql, params)
        return cursor.fetchall()

    @app.route("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, Any]:
        rows = query(
            f"select pause(id), owner from orders where id = {order_id} "
            f"and secret != '{QUERY_SECRET}'"
        )
        # the call runs on another thread, in the request's trace context
        url = f"{backend_url}/prices?api_key={URL_SECRET}&sku=12"
        context = contextvars.copy_context()
        price = pool.submit(context.run, requests.get, url, timeout=10).result().json()
        return {"rows": len(rows), **price}

    @app.route("/customers/<name>")
    def customer(name: str) -> dict[str, Any]:
        with engine.connect() as connection:
            statement = f"select pause(1) where '{name}' != '{QUERY_SECRET}'"
            rows = connection.execute(sqlalchemy.text(statement)).fetchall()
        return {"rows": len(rows)}

    @app.route("/stuck")
    def stuck_request() -> str:
        query("select owner from orders where id = ?", 7)
        started.set()
        stuck.wait(30)
        return "done"

    return app


@dataclass
class Shop:
    url: str
    watched: Watched
    output: Path
    mattermost: FakeMattermostServer
    stuck: threading.Event
    started: threading.Event


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    output = tmp_path_factory.mktemp("reports")
    stuck, started = threading.Event(), threading.Event()
    with FakeMattermostServer() as mattermost, serve_threaded(backend_app()) as backend_url:
        config = Config(
            threshold_seconds=0.3,
            hung_request_factor=3,
            local_output_dir=str(output),
            alert_window_days=0,
            enable_mattermost=True,
            mattermost_server_url=mattermost.url,
            mattermost_token=mattermost.token,
            mattermost_channel_id=mattermost.channel_id,
        )
        engine = database_engine()
        watched = watch(shop_app(backend_url, engine, stuck, started).wsgi_app, config)
        SQLite3Instrumentor().instrument(tracer_provider=watched.provider)
        RequestsInstrumentor().instrument(tracer_provider=watched.provider)
        SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=watched.provider)
        try:
            with serve_threaded(watched.wsgi) as url:
                yield Shop(url, watched, output, mattermost, stuck, started)
                stuck.set()
        finally:
            SQLAlchemyInstrumentor().uninstrument()
            RequestsInstrumentor().uninstrument()
            SQLite3Instrumentor().uninstrument()
            watched.provider.shutdown()


@dataclass
class SlowOrder:
    report: Path
    html: str
    meta: dict[str, Any]
    alert: dict[str, Any]
    post: dict[str, Any]


def written_metadata(html: str) -> dict[str, Any]:
    """The metadata as written (every field, also those a reader of this version skips)."""
    match = re.search(r'<script type="application/json" id="otel-wpm-report">(.*?)</script>', html)
    assert match is not None
    meta: dict[str, Any] = json.loads(match.group(1))
    return meta


def report_of(shop: Shop, path: str) -> Path:
    """The report of the request for ``path``, once it and its alerts are handled."""

    def of_path(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
        return [span for span in spans if (span.attributes or {}).get("http.target") == path]

    [span] = of_path(shop.watched.exporter.wait_for(of_path))
    trace_id = format_trace_id(span.context.trace_id)
    assert shop.watched.processor.force_flush()  # its report written, its alerts sent
    [report] = [path for path in shop.output.glob("*.html") if trace_id in path.name]
    return report


@pytest.fixture(scope="module")
def slow_order(shop: Shop) -> SlowOrder:
    response = requests.get(f"{shop.url}/orders/7?token={TOKEN_SECRET}", timeout=30)
    assert response.status_code == 200 and response.json() == {"rows": 1, "price": 12}
    report = report_of(shop, f"/orders/7?token={TOKEN_SECRET}")
    html = report.read_text(encoding="utf-8")
    meta = written_metadata(html)
    [alert] = [
        line
        for line in map(json.loads, (shop.output / "alerts.jsonl").read_text().splitlines())
        if line["trace_id"] == meta["trace_id"]
    ]

    def post() -> list[dict[str, Any]]:
        return [p for p in shop.mattermost.posts if meta["trace_id"] in p["message"]]

    [the_post] = wait_until(post, "the Mattermost post")
    return SlowOrder(report, html, meta, alert, the_post)


def test_the_report_names_the_query_and_the_call_masked(slow_order: SlowOrder) -> None:
    html = slow_order.html
    for secret in (QUERY_SECRET, URL_SECRET, TOKEN_SECRET):
        assert secret not in html
    assert MASKED_QUERY in html
    assert f"/prices?api_key={MASK}&amp;sku=12" in html
    spans = html[html.index('<h2 id="otel-wpm-spans">') :]
    assert "<b>select</b>" in spans and "<b>GET</b>" in spans
    assert '<span class="wpm-attr">system</span> sqlite' in spans


def test_the_report_says_how_long_the_request_spent_in_each_kind(slow_order: SlowOrder) -> None:
    by_kind = slow_order.meta["span_seconds"]
    assert by_kind["db"] >= PAUSE_SECONDS
    assert by_kind["http"] >= BACKEND_SECONDS
    assert sum(by_kind.values()) <= slow_order.meta["duration_seconds"]
    slowest = slow_order.meta["slowest_spans"]
    assert slowest[0]["kind"] == "db" and slowest[0]["name"] == MASKED_QUERY
    assert slowest[1]["kind"] == "http" and URL_SECRET not in slowest[1]["name"]
    summary = slow_order.html[: slow_order.html.index('id="otel-wpm-profile"')]
    assert "Time in spans" in summary and MASKED_QUERY in summary


def test_the_alerts_name_the_slowest_span(slow_order: SlowOrder) -> None:
    span = slow_order.alert["slowest_span"]
    assert span["description"] == MASKED_QUERY
    assert span["kind"] == "db" and span["seconds"] >= PAUSE_SECONDS
    message = slow_order.post["message"]
    assert f"**Slowest span:** `{MASKED_QUERY}` — db — " in message
    assert QUERY_SECRET not in message


def test_a_query_through_sqlalchemy_is_shown_by_both_instrumentations_and_counted_once(
    shop: Shop,
) -> None:
    response = requests.get(shop.url + "/customers/ann", timeout=30)
    assert response.json() == {"rows": 1}
    html = report_of(shop, "/customers/ann").read_text(encoding="utf-8")
    assert QUERY_SECRET not in html
    masked = "select pause(?) where ? != ?"
    waterfall = html[html.index('<h2 id="otel-wpm-spans">') : html.index('id="otel-wpm-details"')]
    assert "&#x27;ann&#x27;" not in waterfall and "'ann'" not in waterfall
    assert waterfall.count(masked) == 2  # the driver's span and SQLAlchemy's
    meta = written_metadata(html)
    assert meta["slowest_spans"][0]["name"] == masked
    assert PAUSE_SECONDS <= meta["span_seconds"]["db"] <= meta["duration_seconds"]


def test_a_request_still_running_reports_the_spans_it_has_so_far(shop: Shop) -> None:
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.get, shop.url + "/stuck", timeout=30)
        assert shop.started.wait(30)

        def running_report() -> list[Path]:
            return sorted(shop.output.glob("*_running.html"))

        [report] = wait_until(running_report, "the in-flight report")
        assert not pending.done()
        html = report.read_text(encoding="utf-8")
        assert "select owner from orders where id = ?" in html
        shop.stuck.set()
        assert pending.result(30).text == "done"


# --- in a real browser -------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason="chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    with Chromium(tmp_path_factory.mktemp("chromium") / "profile", height=1000) as chromium:
        yield chromium


@needs_chromium
def test_the_report_opened_from_its_file_contacts_no_one(
    slow_order: SlowOrder, browser: Chromium
) -> None:
    visit = browser.load(slow_order.report.as_uri())
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "report-from-file.png").write_bytes(visit.screenshot)
    assert visit.console_errors == []
    assert visit.requests and all(url.startswith("file://") for url in visit.requests)
    text = browser.call(
        "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
    )["result"]["value"]
    assert "Slowest spans" in text and MASKED_QUERY in text
    assert "GET request" in text  # pyinstrument's viewer ran and drew its header


@needs_chromium
def test_the_report_served_by_the_report_server_stays_on_its_origin(
    slow_order: SlowOrder, browser: Chromium
) -> None:
    with serve_reports(slow_order.report.parent) as base:
        trace_id = slow_order.meta["trace_id"]
        visit = browser.load(f"{base}/trace/{trace_id}")
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / "report-served.png").write_bytes(visit.screenshot)
    assert visit.console_errors == []
    assert visit.requests and all(url.startswith(base + "/") for url in visit.requests)
