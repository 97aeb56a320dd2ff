"""Report file names and HTML."""

from __future__ import annotations

from datetime import datetime, timezone
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from otel_wpm.alerting.alert import HotFrame
from otel_wpm.capture.request import RawRequest
from otel_wpm.capture.semconv import HttpFacts
from otel_wpm.masking import SecretMasker
from otel_wpm.reporting.local_store import LocalReportStore
from otel_wpm.reporting.profile import Profile
from otel_wpm.reporting.render import render_report
from otel_wpm.reporting.report_format import report_file_name
from otel_wpm.reporting.slow_request import SlowRequest

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TRACE, SPAN = "ab" * 16, "cd" * 8


@given(route=st.text(max_size=200), method=st.text(max_size=20))
def test_file_names_are_plain_and_safe(route: str, method: str) -> None:
    name = report_file_name(WHEN, method, route, TRACE, SPAN, in_flight=False)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name.count(".") == 1 and name.endswith(".html")
    assert name.startswith("20260102T030405Z_") and TRACE in name


def test_traversal_route_cannot_escape_the_directory(tmp_path) -> None:
    name = report_file_name(WHEN, "GET", "/../../etc/passwd", TRACE, SPAN, in_flight=False)
    path = LocalReportStore(tmp_path).write(name, b"x")
    assert path.parent == tmp_path
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


class TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def slow_request(path: str, query: str, headers: list[tuple[str, str]]) -> SlowRequest:
    facts = HttpFacts("GET", path, query, f"http://h{path}?{query}", None, 200)
    return SlowRequest(
        service="svc",
        facts=facts,
        trace_id=TRACE,
        span_id=SPAN,
        start_time=WHEN.timestamp(),
        duration_seconds=2.0,
        threshold_seconds=1.0,
        raw_request=RawRequest(headers=headers, query=query),
        profile=Profile(None, "sampling", 0.0, 2.0),
        report_file="r.html",
        report_link=None,
        trace_url=None,
    )


def test_request_data_is_escaped_and_masked() -> None:
    evil = "<img src=x onerror=alert(1)>"
    html = render_report(
        slow_request(f"/p{evil}", f"q={evil}&token=tok-123456", [("X-Evil", evil)]),
        SecretMasker(),
        (HotFrame(evil, "app.py:1", 1.0, 0.5),),
    )
    parser = TextCollector()
    parser.feed(html)
    assert "img" not in parser.tags
    assert any(evil in chunk for chunk in parser.text)
    assert "tok-123456" not in html


def test_the_page_shows_the_hot_frames_it_is_given() -> None:
    hot = (HotFrame("load_orders", "shop/orders.py:10", 0.8, 0.8),)
    html = render_report(slow_request("/orders", "", []), SecretMasker(), hot)
    section = html[html.index("Where the time went") : html.index("<h2>Request</h2>")]
    assert "<td>load_orders</td><td>0.800 s (80%)</td>" in section
    assert "<td>shop/orders.py:10</td>" in section


def test_time_in_library_code_counts_for_the_calling_application_function() -> None:
    import sys

    from otel_wpm.reporting.profile import hot_frames, session_from_samples

    here = __file__
    library = f"{sys.prefix}/lib/python3/threading.py"
    thread_root = f"run\x00{library}\x001"
    app_view = f"load_orders\x00{here}\x0010"
    lib_wait = f"wait\x00{library}\x00300"
    samples = [((thread_root, app_view, lib_wait), 0.8), ((thread_root, app_view), 0.2)]
    session = session_from_samples(samples, 0.0, 1.0, 0.01, "test")
    [top] = hot_frames(session)
    assert top.function == "load_orders"
    assert top.seconds == 1.0 and top.share == 1.0
