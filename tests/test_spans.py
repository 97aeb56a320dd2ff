"""What a request's spans say in its report: kinds, masked attributes, time per kind, slowest.

Real SDK spans with the attributes real instrumentations set (both semconv generations),
given explicit start and end times on the request's time axis.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_wpm.masking import MASK, SecretMasker
from otel_wpm.reporting.spans import summarise_spans

tracer = TracerProvider().get_tracer("test")
T0 = 1_700_000_000 * 10**9  # the request's start, in ns
MS = 10**6


def span(
    name: str,
    start_ms: float,
    end_ms: float,
    kind: SpanKind = SpanKind.CLIENT,
    parent: Any = None,
    status: Status | None = None,
    **attributes: Any,
) -> ReadableSpan:
    context = trace.set_span_in_context(parent) if parent is not None else None
    made = tracer.start_span(
        name,
        context=context,
        kind=kind,
        attributes={key.replace("__", "."): value for key, value in attributes.items()},
        start_time=T0 + int(start_ms * MS),
    )
    if status is not None:
        made.set_status(status)
    made.end(end_time=T0 + int(end_ms * MS))
    return made  # type: ignore[return-value]


def summarise(spans: list[ReadableSpan], duration: float = 1.0, not_kept: int = 0):
    return summarise_spans(spans, T0 / 1e9, duration, SecretMasker(), not_kept)


def test_each_span_says_what_it_did_with_literals_and_secrets_masked() -> None:
    query = span(
        "SELECT", 100, 500,
        db__system="postgresql",
        db__statement="SELECT * FROM users WHERE password = 'hunter2' AND id = 987654",
        server__address="db.internal", server__port=5432,
    )  # fmt: skip
    stable_query = span(
        "SELECT orders", 500, 520,
        db__system__name="sqlite", db__query__text="SELECT * FROM orders WHERE token = 'tok-99'",
    )  # fmt: skip
    call = span(
        "GET", 600, 900,
        http__request__method="GET",
        url__full="https://bob:pw-secret@api.example.com/prices?api_key=key-secret&sku=12",
        http__response__status_code=503, error__type="503",
        status=Status(StatusCode.ERROR, "GET https://api.example.com/prices?api_key=key-secret"),
    )  # fmt: skip
    old_call = span("HTTP GET", 900, 950, http__method="GET", http__url="http://old.example.com/a")
    rpc = span(
        "grpc.Shop/Pay", 950, 960,
        rpc__system="grpc", rpc__service="shop.Shop", rpc__method="Pay",
        rpc__auth_token="rpc-secret",
    )  # fmt: skip
    message = span(
        "publish orders", 960, 970, kind=SpanKind.PRODUCER,
        messaging__system="kafka", messaging__operation__name="publish",
        messaging__destination__name="orders",
    )  # fmt: skip
    named_after_url = span("fetch https://x.example.com/?token=name-secret", 970, 980)
    summary = summarise([query, stable_query, call, old_call, rpc, message, named_after_url])
    text = repr(summary)
    for secret in (
        "hunter2",
        "987654",
        "tok-99",
        "pw-secret",
        "key-secret",
        "rpc-secret",
        "name-secret",
    ):
        assert secret not in text

    by_name = {record.name: record for record in summary.spans}
    pg = by_name["SELECT"]
    assert (pg.kind, pg.span_kind) == ("db", "client")
    assert pg.description == "SELECT * FROM users WHERE password = ? AND id = ?"
    assert dict(pg.details) == {
        "system": "postgresql",
        "statement": "SELECT * FROM users WHERE password = ? AND id = ?",
        "server": "db.internal:5432",
    }
    assert (pg.start_seconds, pg.duration_seconds) == (0.1, 0.4)
    assert by_name["SELECT orders"].description == "SELECT * FROM orders WHERE token = ?"
    assert dict(by_name["SELECT orders"].details)["system"] == "sqlite"

    http = by_name["GET"]
    assert http.kind == "http"
    assert http.description == f"GET https://{MASK}@api.example.com/prices?api_key={MASK}&sku=12"
    assert dict(http.details)["status"] == "503"
    assert http.error == "503"  # error.type, never the free-text description
    assert by_name["HTTP GET"].description == "GET http://old.example.com/a"
    assert by_name["HTTP GET"].kind == "http"

    assert by_name["grpc.Shop/Pay"].kind == "other"
    assert by_name["grpc.Shop/Pay"].description == "shop.Shop/Pay"
    assert dict(by_name["grpc.Shop/Pay"].details)["rpc.auth_token"] == MASK
    assert by_name["publish orders"].description == "publish orders"
    assert by_name["publish orders"].span_kind == "producer"
    assert dict(by_name["publish orders"].details)["messaging.system"] == "kafka"
    assert f"token={MASK}" in by_name[f"fetch https://x.example.com/?token={MASK}"].name


def test_time_per_kind_counts_each_instant_once() -> None:
    outer = span("load_orders", 0, 600, kind=SpanKind.INTERNAL)
    spans = [
        outer,
        span("SELECT", 100, 300, parent=outer, db__system="sqlite"),
        # a second driver's span around the same query, and a parallel one
        span("SELECT", 100, 300, parent=outer, db__system="sqlite"),
        span("SELECT", 250, 400, parent=outer, db__system="sqlite"),
        span("GET", 350, 500, parent=outer, http__request__method="GET"),
        span("GET", 800, 1200, http__request__method="GET"),  # past the request's end
    ]
    summary = summarise(spans, duration=1.0)
    seconds = {kind: round(value, 6) for kind, value in summary.seconds_by_kind.items()}
    assert seconds == {"db": 0.3, "http": 0.3, "other": 0.2}


def test_the_slowest_three_and_the_metadata_the_report_browser_reads() -> None:
    spans = [
        span(f"q{number}", 0, number * 10, db__system="sqlite", db__statement=f"SELECT {number}")
        for number in range(1, 6)
    ]
    summary = summarise(spans, not_kept=7)
    assert [record.name for record in summary.slowest] == ["q5", "q4", "q3"]
    assert summary.count == 12
    meta = summary.metadata()
    assert meta["slowest_spans"][0] == {"name": "SELECT ?", "kind": "db", "duration_seconds": 0.05}
    assert set(meta["span_seconds"]) == {"db", "http", "other"}
    assert meta["span_seconds"]["db"] == 0.05


def test_spans_come_in_trace_order_with_their_depth() -> None:
    handler = span("handler", 10, 900, kind=SpanKind.INTERNAL)
    first = span("first", 20, 100, parent=handler)
    nested = span("nested", 30, 50, parent=first)
    second = span("second", 200, 300, parent=handler)
    lone = span("lone", 5, 8)
    # as they end: children first
    summary = summarise([nested, first, second, handler, lone])
    assert [(r.name, r.depth) for r in summary.spans] == [
        ("lone", 0),
        ("handler", 0),
        ("first", 1),
        ("nested", 2),
        ("second", 1),
    ]


def test_no_spans() -> None:
    summary = summarise([])
    assert summary.count == 0 and summary.slowest == ()
    assert summary.seconds_by_kind == {"db": 0.0, "http": 0.0, "other": 0.0}
