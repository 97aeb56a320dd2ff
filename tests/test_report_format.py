"""The report format: file names, and the metadata written into a report and read back out."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from pyinstrument import Profiler

from otel_wpm.capture.request import RawRequest
from otel_wpm.capture.semconv import HttpFacts
from otel_wpm.masking import SecretMasker
from otel_wpm.reporting.profile import Profile, hot_frames
from otel_wpm.reporting.render import metadata, render_report
from otel_wpm.reporting.report_format import (
    METADATA_FIELDS,
    METADATA_MAX_BYTES,
    METADATA_READ_BYTES,
    UnreadableMetadata,
    is_report_file,
    metadata_element,
    metadata_from_name,
    parse_metadata,
    read_metadata,
    report_file_name,
    trace_id_of,
)
from otel_wpm.reporting.slow_request import SlowRequest

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TRACE, SPAN = "ab" * 16, "cd" * 8
START_TAG = b'<script type="application/json" id="otel-wpm-report">'
TEXT_FIELDS = [key for key, valid in METADATA_FIELDS.items() if valid("text")]


@pytest.fixture(scope="module")
def session() -> Any:
    profiler = Profiler()
    profiler.start()
    sum(i * i for i in range(100_000))
    profiler.stop()
    return profiler.last_session


def slow_request(url: str, session: Any) -> SlowRequest:
    return SlowRequest(
        service="shop",
        facts=HttpFacts("GET", "/search", "", url, "/search", 200),
        trace_id=TRACE,
        span_id=SPAN,
        start_time=WHEN.timestamp(),
        duration_seconds=1.25,
        threshold_seconds=0.5,
        raw_request=RawRequest(),
        profile=Profile(session, "pyinstrument", 1.25, 1.25, cpu_seconds=0.75, wait_seconds=0.5),
        report_file="r.html",
        report_link=None,
        trace_url=f"http://jaeger.local/trace/{TRACE}",
    )


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / report_file_name(WHEN, "GET", "/x", TRACE, SPAN, in_flight=False)
    path.write_bytes(content)
    return path


# --- names -----------------------------------------------------------------------------


@given(route=st.text(max_size=200), method=st.text(max_size=20), in_flight=st.booleans())
def test_every_name_the_writer_makes_is_one_readers_recognise(
    route: str, method: str, in_flight: bool
) -> None:
    name = report_file_name(WHEN, method, route, TRACE, SPAN, in_flight=in_flight)

    assert is_report_file(name)
    assert trace_id_of(name) == TRACE
    assert metadata_from_name(name)["in_flight"] == in_flight


# --- metadata written by the report thread, read by the server -------------------------


def test_the_reader_knows_every_field_the_writer_writes(session: Any) -> None:
    slow = slow_request("http://shop/search?q=1", session)
    hot = hot_frames(session)
    written = metadata(slow, SecretMasker(), hot)

    page = render_report(slow, SecretMasker(), hot).encode()

    assert len(page) > METADATA_READ_BYTES
    assert set(written) <= set(METADATA_FIELDS)
    assert parse_metadata(page[:METADATA_READ_BYTES]) == written
    assert written["top_frames"] and [f["function"] for f in written["top_frames"]] == [
        frame.function for frame in hot
    ]


def test_the_reader_reads_what_the_writer_says_of_the_spans(session: Any) -> None:
    tracer = TracerProvider().get_tracer("test")
    started = int(WHEN.timestamp()) * 10**9
    query = tracer.start_span(
        "SELECT",
        kind=SpanKind.CLIENT,
        attributes={"db.system": "sqlite", "db.statement": "SELECT * FROM orders WHERE id = 7"},
        start_time=started + 10 * 10**6,
    )
    query.end(end_time=started + 300 * 10**6)
    slow = dataclasses.replace(slow_request("http://shop/search", session), spans=(query,))

    page = render_report(slow, SecretMasker(), hot_frames(session)).encode()

    meta = parse_metadata(page[:METADATA_READ_BYTES])
    assert meta["span_seconds"] == {"db": 0.29, "http": 0.0, "other": 0.0}
    assert meta["slowest_spans"] == [
        {"name": "SELECT * FROM orders WHERE id = ?", "kind": "db", "duration_seconds": 0.29}
    ]


WHERE_TIME_WENT = {
    "cpu_seconds": 0.6,
    "wait_seconds": 0.4,
    "span_seconds": {"db": 0.3, "http": 0.05, "other": 0.0},
    "slowest_spans": [{"name": "SELECT orders", "kind": "db", "duration_seconds": 0.25}],
    "top_frames": [{"function": "load_orders", "location": "shop/orders.py:12", "seconds": 0.5}],
}


def test_where_the_time_went_is_read_back_when_a_report_has_it() -> None:
    written = metadata_element({"route": "/x", **WHERE_TIME_WENT}).encode()
    older = metadata_element({"route": "/x"}).encode()

    assert parse_metadata(written) == {"route": "/x", **WHERE_TIME_WENT}
    assert parse_metadata(older) == {"route": "/x"}


def test_records_keep_only_the_keys_readers_know() -> None:
    span = {"name": "GET /api", "kind": "http", "duration_seconds": 0.1, "status": "ERROR"}
    frame = {"function": "f", "seconds": 0.2, "extra": "\ud800"}

    meta = parse_metadata(element(json.dumps({"slowest_spans": [span], "top_frames": [frame]})))

    assert meta["slowest_spans"] == [{"name": "GET /api", "kind": "http", "duration_seconds": 0.1}]
    assert meta["top_frames"] == [{"function": "f", "seconds": 0.2}]


@given(
    st.lists(st.text(max_size=3000), min_size=1, max_size=20),
    st.lists(st.text(max_size=3000), min_size=1, max_size=20),
)
def test_text_inside_records_is_cut_to_fit_the_budget(
    names: list[str], functions: list[str]
) -> None:
    meta = {
        "slowest_spans": [{"name": name, "duration_seconds": 1.0} for name in names],
        "top_frames": [{"function": function, "seconds": 1.0} for function in functions],
    }

    element_ = metadata_element(meta).encode()
    read = parse_metadata(element_)

    assert len(element_) <= METADATA_MAX_BYTES
    assert len(read["slowest_spans"]) == len(names) and len(read["top_frames"]) == len(functions)
    for span, name in zip(read["slowest_spans"], names):
        assert span["name"] == name or name.startswith(span["name"][:-1])


@pytest.mark.parametrize("character", ["a", "é", "\U0001f600", "<"])
def test_a_20_kb_url_keeps_the_metadata_within_the_read_limit(
    tmp_path: Path, session: Any, character: str
) -> None:
    url = "http://shop/search?q=" + character * 20_000
    page = render_report(slow_request(url, session), SecretMasker(), hot_frames(session))

    meta = read_metadata(write(tmp_path, page.encode()))

    assert meta["duration_seconds"] == 1.25 and meta["trace_id"] == TRACE
    assert meta["url"].startswith("http://shop/search?q=" + character * 100)
    assert meta["url"].endswith("…") and len(meta["url"]) < len(url)
    assert url.replace("<", "&lt;") in page  # the report's own sections keep all of it


@given(
    st.fixed_dictionaries({key: st.text(max_size=30_000) for key in TEXT_FIELDS}),
    st.floats(min_value=0, max_value=1e9),
)
def test_the_metadata_element_fits_its_budget_whatever_the_text(
    texts: dict[str, str], duration: float
) -> None:
    meta = {**texts, "duration_seconds": duration, "status": 200, "in_flight": False}

    element = metadata_element(meta).encode()
    read = parse_metadata(element)

    assert len(element) <= METADATA_MAX_BYTES
    assert read["duration_seconds"] == duration and read["status"] == 200
    for key, text in texts.items():
        assert read[key] == text or (read[key].endswith("…") and text.startswith(read[key][:-1]))


# --- what a reader refuses -------------------------------------------------------------


def element(payload: str) -> bytes:
    return START_TAG + payload.encode() + b"</script>"


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (element('{"duration_seconds": ' + "9" * 400 + "}"), "duration_seconds"),
        (element('{"route": "\\ud800"}'), "route"),
        (element('{"duration_seconds": NaN}'), "duration_seconds"),
        (element('{"duration_seconds": Infinity}'), "duration_seconds"),
        (element('{"duration_seconds": -1}'), "duration_seconds"),
        (element('{"duration_seconds": true}'), "duration_seconds"),
        (element('{"status": ' + "5" * 400 + "}"), "status"),
        (element('{"status": "200"}'), "status"),
        (element('{"in_flight": "no"}'), "in_flight"),
        (element('{"cpu_seconds": -0.5}'), "cpu_seconds"),
        (element('{"wait_seconds": "1"}'), "wait_seconds"),
        (element('{"span_seconds": {"db": NaN}}'), "span_seconds"),
        (element('{"span_seconds": {"\\ud800": 1}}'), "span_seconds"),
        (element('{"span_seconds": [1, 2]}'), "span_seconds"),
        (element('{"slowest_spans": {"name": "x"}}'), "slowest_spans"),
        (element('{"slowest_spans": [{"kind": "db"}]}'), "slowest_spans"),
        (element('{"slowest_spans": [{"name": "x", "duration_seconds": 1e400}]}'), "slowest"),
        (element('{"top_frames": [{"function": "f"}' + ', {"function": "f"}' * 20 + "]}"), "top"),
        (element('{"top_frames": [{"function": "\\udfff"}]}'), "top_frames"),
        (element('{"top_frames": ["load_orders"]}'), "top_frames"),
        (element("{not json"), "not JSON"),
        (element("[1, 2]"), "not a JSON object"),
        (element("[" * 100_000 + "]" * 100_000), "not JSON"),
        (START_TAG + b'{"route": "\xff\xfe"}</script>', "not JSON"),
        (START_TAG + b'{"route": "/x", "duration_seconds": 1.5', "not closed"),
        (b"<html>" + b"x" * 20_000, "no metadata element"),
    ],
)
def test_hostile_metadata_is_refused_saying_why(head: bytes, reason: str) -> None:
    with pytest.raises(UnreadableMetadata, match=reason):
        parse_metadata(head)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(blacklist_categories=())),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(sorted(METADATA_FIELDS)), json_values) | json_values)
def test_any_json_is_either_valid_metadata_or_refused(value: Any) -> None:
    head = element(json.dumps(value))

    try:
        meta = parse_metadata(head)
    except UnreadableMetadata:
        return
    for key, field_value in meta.items():
        assert METADATA_FIELDS[key](field_value)
        if isinstance(field_value, str):
            field_value.encode("utf-8")


@given(st.binary(max_size=2000))
def test_any_bytes_are_either_valid_metadata_or_refused(payload: bytes) -> None:
    try:
        meta = parse_metadata(START_TAG + payload + b"</script>")
    except UnreadableMetadata:
        return
    assert all(METADATA_FIELDS[key](value) for key, value in meta.items())
