"""Report file names and HTML."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from typing import Any

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


def slow_request(
    path: str, query: str, headers: list[tuple[str, str]], **fields: Any
) -> SlowRequest:
    facts = HttpFacts("GET", path, query, f"http://h{path}?{query}", None, 200)
    values: dict[str, Any] = {
        "service": "svc",
        "facts": facts,
        "trace_id": TRACE,
        "span_id": SPAN,
        "start_time": WHEN.timestamp(),
        "duration_seconds": 2.0,
        "threshold_seconds": 1.0,
        "raw_request": RawRequest(headers=headers, query=query),
        "profile": Profile(None, "sampling", 0.0, 2.0),
        "report_file": "r.html",
        "report_link": None,
        "trace_url": None,
    }
    return SlowRequest(**{**values, **fields})


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
    section = html[html.index("Where the time went") : html.index("Slowest spans")]
    assert "<td><code>load_orders</code></td><td><b>0.800 s</b> (80%)</td>" in section
    assert "shop/orders.py:10</td>" in section


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


def sampled_session() -> Any:
    from otel_wpm.reporting.profile import session_from_samples

    stack = (f"load_orders\x00{__file__}\x0010",)
    return session_from_samples([(stack, 0.5)], WHEN.timestamp(), 2.0, 0.01, "GET request")


def test_a_person_reads_summary_then_profile_then_spans_then_the_collapsed_details() -> None:
    slow = slow_request(
        "/orders", "", [("X-Tag", "t")], profile=Profile(sampled_session(), "sampling", 0.5, 2.0)
    )
    html = render_report(slow, SecretMasker(), (HotFrame("load_orders", "a.py:1", 0.5, 1.0),))
    order = [
        'id="otel-wpm-report"',  # the metadata first, for readers of the first bytes
        "Duration</h2>",
        "CPU vs waiting</h2>",
        "Time in spans</h2>",
        "Where the time went</h2>",
        "Slowest spans</h2>",
        '<div id="otel-wpm-profile"><div id="app"></div></div>',
        '<h2 id="otel-wpm-spans">Spans</h2>',
        '<details class="wpm" id="otel-wpm-details"><summary>Request details</summary>',
        "<h3>Headers</h3>",
        "<th>Process</th>",
    ]
    positions = [html.index(marker) for marker in order]
    assert positions == sorted(positions)


def test_cpu_time_shows_when_measured_and_says_so_when_not() -> None:
    profile = Profile(None, "sampling", 2.0, 2.0, cpu_seconds=0.6, wait_seconds=1.4)
    measured = render_report(slow_request("/a", "", [], profile=profile), SecretMasker(), ())
    assert "CPU 600 ms" in measured and "waiting 1.40 s" in measured
    unmeasured = render_report(slow_request("/a", "", []), SecretMasker(), ())
    cpu_card = unmeasured[unmeasured.index("CPU vs waiting") : unmeasured.index("Time in spans")]
    assert "not measured" in cpu_card and "0 %" not in cpu_card


def test_duration_is_drawn_against_the_threshold() -> None:
    html = render_report(slow_request("/a", "", []), SecretMasker(), ())
    card = html[html.index("Duration</h2>") : html.index("CPU vs waiting")]
    assert "2.00 s" in card and "threshold 1.00 s · 2.0× the threshold" in card
    # the within-threshold half, the over-threshold half, the threshold line at 50 %
    assert 'class="wpm-within" style="width:50.00%"' in card
    assert 'class="wpm-over" style="width:50.00%"' in card
    assert 'class="wpm-marker" style="left:50.00%"' in card


#: Where a page loads from: src/href attributes, CSS url() and @import, and quoted URLs
#: in scripts (pyinstrument's viewer built its font link from one).
_ADDRESSES = re.compile(
    r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)|url\(\s*["']?([^"')]+)|@import\s+["']([^"']+)|["'](https?:)?//[^"'\s]*"""
)


def test_the_page_loads_nothing_from_anywhere() -> None:
    slow = slow_request("/orders", "", [], profile=Profile(sampled_session(), "sampling", 0.5, 2.0))
    html = render_report(slow, SecretMasker(), ())
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    head = html[: html.index("</head>")]
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; ' in head
    data = re.compile(r'<script type="application/json".*?</script>', re.DOTALL)
    loaded = [match.group() for match in _ADDRESSES.finditer(data.sub("", html))]
    external = [
        address
        for address in loaded
        if "//" in address and "http://www.w3.org/" not in address  # SVG namespace, not loaded
    ]
    assert external == []
    assert any(address.startswith("href=") for address in loaded)  # the pattern does find links
