"""The report server over real HTTP on 127.0.0.1, with reports rendered by otel_wpm.reporting."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
from apps.helpers import REPO_DIR, clean_env, free_port, running_server, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyinstrument import Profiler
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from wsgi_servers import serve_reports, serve_threaded

from otel_wpm.capture.request import RawRequest
from otel_wpm.capture.semconv import HttpFacts
from otel_wpm.masking import SecretMasker
from otel_wpm.reporting.local_store import LocalReportStore
from otel_wpm.reporting.profile import Profile, hot_frames
from otel_wpm.reporting.render import render_report
from otel_wpm.reporting.report_format import metadata_element, report_file_name
from otel_wpm.reporting.slow_request import SlowRequest
from otel_wpm.server import (
    SECURITY_HEADERS,
    ReportDirectoryError,
    ReportIndex,
    app,
    is_loopback,
    make_server,
)
from otel_wpm.server.index import open_reports
from otel_wpm.server.wsgi import REPORT_CONTENT_SECURITY_POLICY

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_C = "a3ce929d0e0e47364bf92f3577b34da6"
UNKNOWN_TRACE = "f" * 32
SPAN = "b7ad6b7169203331"
EVIL = "<img src=x onerror=alert(1)>"


def busy() -> int:
    return sum(i * i for i in range(200_000))


@pytest.fixture(scope="module")
def session() -> Any:
    profiler = Profiler()
    profiler.start()
    busy()
    profiler.stop()
    return profiler.last_session


def write_report(
    directory: Path,
    trace_id: str,
    route: str,
    duration: float,
    started: datetime,
    status: Optional[int] = 200,
    in_flight: bool = False,
    session: Any = None,
    span_id: str = SPAN,
) -> str:
    name = report_file_name(started, "GET", route, trace_id, span_id, in_flight)
    slow = SlowRequest(
        service="shop",
        facts=HttpFacts("GET", route, "", f"http://shop{route}", route, status),
        trace_id=trace_id,
        span_id=span_id,
        start_time=started.timestamp(),
        duration_seconds=duration,
        threshold_seconds=0.5,
        raw_request=RawRequest(),
        profile=Profile(session, "pyinstrument" if session else "sampling", duration, duration),
        report_file=name,
        report_link=None,
        trace_url=f"http://jaeger.local/trace/{trace_id}",
        in_flight=in_flight,
    )
    LocalReportStore(directory).write(
        name, render_report(slow, SecretMasker(), hot_frames(session)).encode()
    )
    return name


def write_metadata(directory: Path, meta: dict[str, Any], started: datetime) -> str:
    """A report file holding only ``meta`` (plus its start time), as the report thread embeds it."""
    meta = {"service": "shop", "method": "GET", "span_id": SPAN, **meta}
    meta["start_time"] = started.isoformat()
    name = report_file_name(
        started,
        meta["method"],
        meta["route"],
        meta["trace_id"],
        meta["span_id"],
        in_flight=bool(meta.get("in_flight")),
    )
    (directory / name).write_text(f"<html><head>{metadata_element(meta)}</head></html>")
    return name


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    directory = tmp_path / "reports"
    directory.mkdir()
    return directory


@pytest.fixture
def base_url(reports: Path) -> Iterator[str]:
    with serve_reports(reports) as url:
        yield url


def when(minute: int) -> datetime:
    return datetime(2024, 5, 1, 12, minute, 0, tzinfo=timezone.utc)


def raw_get(base_url: str, path: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Send ``path`` exactly as given (no client-side normalising); status and whole response."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    return int(response.split(b" ", 2)[1]), response


# --- report list ---------------------------------------------------------------------


def test_report_list_shows_reports_newest_first_with_their_metadata(
    reports: Path, base_url: str, session: Any
) -> None:
    write_report(reports, TRACE_A, "/users/<id>", 1.25, when(1), session=session)
    write_report(reports, TRACE_B, "/orders", 3.5, when(3), status=503)

    page = requests.get(base_url + "/reports", timeout=10).text

    assert page.index(TRACE_B) < page.index(TRACE_A)
    assert "/users/&lt;id&gt;" in page and "/orders" in page
    assert "1.250 s" in page and "3.500 s" in page and "503" in page
    assert "2024-05-01 12:03:00" in page
    assert f'href="/trace/{TRACE_A}"' in page
    assert f'href="http://jaeger.local/trace/{TRACE_A}"' in page
    assert 'href="/route?service=shop&amp;method=GET&amp;route=%2Forders"' in page
    assert "2 of 2 reports" in page


def test_report_list_filters_by_route_duration_and_trace_id(reports: Path, base_url: str) -> None:
    write_report(reports, TRACE_A, "/users/<id>", 1.0, when(1))
    write_report(reports, TRACE_B, "/orders", 3.0, when(2))
    write_report(reports, TRACE_C, "/users/search", 5.0, when(3))

    def traces(**params: str) -> set[str]:
        response = requests.get(base_url + "/reports", params=params, timeout=10)
        assert response.status_code == 200
        return {t for t in (TRACE_A, TRACE_B, TRACE_C) if t in response.text}

    assert traces(route="USERS") == {TRACE_A, TRACE_C}
    assert traces(min_duration="2.5") == {TRACE_B, TRACE_C}
    assert traces(route="users", min_duration="2") == {TRACE_C}
    assert traces(trace_id=TRACE_B[:6].upper()) == {TRACE_B}
    assert traces(trace_id=TRACE_A) == {TRACE_A}


def test_links_to_the_former_filtered_index_lead_to_the_report_list(
    reports: Path, base_url: str
) -> None:
    write_report(reports, TRACE_A, "/users/<id>", 1.0, when(1))
    write_report(reports, TRACE_B, "/orders", 3.0, when(2))

    response = requests.get(base_url + "/", params={"min_duration": "2"}, timeout=10)

    assert [r.status_code for r in response.history] == [302]
    assert response.url == base_url + "/reports?min_duration=2"
    assert TRACE_B in response.text and TRACE_A not in response.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/reports", {"min_duration": "fast"}),
        ("/reports", {"min_duration": "-1"}),
        ("/reports", {"min_duration": "inf"}),
        ("/reports", {"trace_id": "xyz"}),
        ("/reports", {"older_than": "yesterday"}),
        ("/reports", {"older_than": "nan_x.html"}),
        ("/reports", {"newer_than": "1e999_x.html"}),
        ("/", {"sort": "name"}),
        ("/", {"page": "0"}),
        ("/", {"page": "-3"}),
        ("/route", {"route": "/x", "older_than": "x"}),
    ],
)
def test_bad_parameters_get_400(
    reports: Path, base_url: str, path: str, params: dict[str, str]
) -> None:
    response = requests.get(base_url + path, params=params, timeout=10)

    assert response.status_code == 400
    assert "Bad request" in response.text


def test_unreadable_metadata_falls_back_to_the_file_name(reports: Path, base_url: str) -> None:
    name = report_file_name(when(1), "POST", "/upload", TRACE_A, SPAN, in_flight=False)
    (reports / name).write_text("<html>" + "x" * 20000 + "</html>")

    page = requests.get(base_url + "/reports", timeout=10).text

    assert TRACE_A in page and "POST" in page and "upload" in page
    assert "2024-05-01 12:01:00" in page  # the start time in the file name


def test_metadata_is_cached_by_name_mtime_and_size(reports: Path, base_url: str) -> None:
    name = write_report(reports, TRACE_A, "/first", 1.0, when(1))
    path = reports / name
    assert "/first" in requests.get(base_url + "/reports", timeout=10).text
    stat = path.stat()

    # same size and mtime: the cached metadata stands
    path.write_bytes(path.read_bytes().replace(b"/first", b"/other"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "/first" in requests.get(base_url + "/reports", timeout=10).text

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    page = requests.get(base_url + "/reports", timeout=10).text
    assert "/other" in page and "/first" not in page


def test_the_index_reads_only_new_and_changed_reports(tmp_path: Path) -> None:
    first = write_metadata(tmp_path, {"route": "/a", "trace_id": TRACE_A}, when(1))
    second = write_metadata(tmp_path, {"route": "/b", "trace_id": TRACE_B}, when(2))
    index = ReportIndex(open_reports(tmp_path))
    before = index.snapshot()
    assert index.snapshot() is before  # nothing changed: the same snapshot

    (tmp_path / first).unlink()
    third = write_metadata(tmp_path, {"route": "/c", "trace_id": TRACE_C}, when(3))
    after = index.snapshot()

    assert [entry.file.name for entry in after.newest_first()] == [third, second]
    assert after.version == before.version + 1
    assert after.entries[0] is before.entries[1]  # the unchanged report was not read again


def rows_of(page: str) -> list[str]:
    """The trace ids of the report rows of a list page, in order."""
    return re.findall(r'href="/trace/([0-9a-f]{32})"', page)


def older_link(page: str) -> Optional[str]:
    match = re.search(r"<a href='([^']*)'>Older", page)
    return html.unescape(match.group(1)) if match else None


def newer_link(page: str) -> Optional[str]:
    match = re.search(r"<a href='([^']*)'>← Newer", page)
    return html.unescape(match.group(1)) if match else None


def test_the_report_list_is_paged_and_pages_stay_put_when_reports_arrive(
    reports: Path, base_url: str
) -> None:
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    for i in range(250):
        meta = {"route": "/r", "trace_id": f"{i:032x}", "duration_seconds": 1.0}
        write_metadata(reports, meta, start + timedelta(seconds=i))

    first = requests.get(base_url + "/reports", timeout=10).text
    assert rows_of(first) == [f"{i:032x}" for i in range(249, 149, -1)]
    assert "250 of 250 reports; 100 shown" in first
    assert newer_link(first) is None
    second_link = older_link(first)
    assert second_link is not None

    for i in range(250, 300):  # new reports arrive
        meta = {"route": "/r", "trace_id": f"{i:032x}", "duration_seconds": 1.0}
        write_metadata(reports, meta, start + timedelta(seconds=i))

    second = requests.get(base_url + second_link, timeout=10).text
    assert rows_of(second) == [f"{i:032x}" for i in range(149, 49, -1)]
    third_link = older_link(second)
    assert third_link is not None
    third = requests.get(base_url + third_link, timeout=10).text
    assert rows_of(third) == [f"{i:032x}" for i in range(49, -1, -1)]
    assert older_link(third) is None

    back_link = newer_link(second)
    assert back_link is not None
    back = requests.get(base_url + back_link, timeout=10).text
    assert rows_of(back) == rows_of(first)
    assert newer_link(back) is not None  # the 50 that arrived since


def test_a_thousand_reports_are_listed_a_hundred_a_page(reports: Path, base_url: str) -> None:
    content = (reports / write_report(reports, TRACE_A, "/r", 1.0, when(1))).read_bytes()
    for i in range(999):
        name = report_file_name(when(2), "GET", "/r", f"{i:032x}", SPAN, in_flight=False)
        (reports / name).write_bytes(content)

    page = requests.get(base_url + "/reports", timeout=30).text

    assert "1000 of 1000 reports" in page
    assert len(rows_of(page)) == 100


def test_ten_thousand_reports_first_pages_render_and_stay_small(tmp_path: Path) -> None:
    directory = tmp_path / "reports"
    bench = subprocess.run(
        [sys.executable, str(REPO_DIR / "bench" / "browser.py"), "--dir", str(directory)]
        + ["--reports", "10000", "--cold", "1", "--warm", "1"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "routes overview /" in bench.stdout and "KB" in bench.stdout

    with serve_reports(directory) as url:
        overview = requests.get(url + "/", timeout=60)
        listing = requests.get(url + "/reports", timeout=60)
        route_link = html.unescape(re.findall(r'<a href="(/route\?[^"]+)"', overview.text)[0])
        route = requests.get(url + route_link, timeout=60)

    for response in (overview, listing, route):
        assert response.status_code == 200
        assert len(response.content) < 200 * 1024, (response.url, len(response.content))
    assert "10000 slow requests" in overview.text
    assert "10000 of 10000 reports" in listing.text and len(rows_of(listing.text)) == 100
    assert len(rows_of(route.text)) == 100


def test_a_directory_that_does_not_exist_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ReportDirectoryError, match=re.escape(str(tmp_path / "later"))):
        make_server(tmp_path / "later", "127.0.0.1", 0)
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportDirectoryError, match="is not a directory"):
        make_server(tmp_path / "file", "127.0.0.1", 0)


def test_a_directory_removed_while_serving_shows_empty_pages(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    with serve_reports(tmp_path / "gone") as url:
        (tmp_path / "gone").rmdir()
        listing = requests.get(url + "/reports", timeout=10)
        overview = requests.get(url + "/", timeout=10)
    assert listing.status_code == 200 and "0 of 0 reports" in listing.text
    assert overview.status_code == 200 and "No slow requests yet" in overview.text


# --- routes overview -----------------------------------------------------------------


def overview_rows(page: str) -> list[list[str]]:
    """The overview's rows as lists of cell texts (tags removed)."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [
            html.unescape(re.sub(r"<title>.*?</title>|<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def test_the_overview_has_a_row_per_route_with_its_numbers(reports: Path, base_url: str) -> None:
    for i, duration in enumerate([1.0, 2.0, 3.0, 4.0]):
        write_metadata(
            reports,
            {
                "route": "/orders",
                "trace_id": f"{i:032x}",
                "duration_seconds": duration,
                "cpu_seconds": duration * 0.25,
                "wait_seconds": duration * 0.75,
                "span_seconds": {"db": duration * 0.5, "http": 0.0, "other": 0.1},
            },
            when(i),
        )
    write_metadata(
        reports, {"route": "/users/<id>", "trace_id": TRACE_A, "duration_seconds": 0.75}, when(30)
    )
    write_metadata(
        reports,
        {"route": "/users/<id>", "trace_id": TRACE_A, "method": "POST", "duration_seconds": 0.5},
        when(31),
    )

    page = requests.get(base_url + "/", timeout=10).text

    rows = overview_rows(page)
    assert [row[0] for row in rows] == [
        "GET /ordersshop",
        "GET /users/<id>shop",
        "POST /users/<id>shop",
    ]
    orders = rows[0]
    assert orders[1:5] == ["4", "2.000 s", "4.000 s", "4.000 s"]  # count, p50, p95, max
    assert orders[5] == "25%" and orders[6] == "50%" and orders[7] == "0%"
    assert orders[8] == "2024-05-01 12:00" and orders[9] == "2024-05-01 12:03"
    assert rows[1][5:8] == ["—", "—", "—"]  # these reports do not tell
    assert page.count("<svg class='spark'") == 3
    assert "4 slow requests from 2024-05-01 12:00:00 to 2024-05-01 12:31:00" in page
    assert "3 routes, 6 slow requests" in page


def test_the_overview_sorts_by_count_p95_and_last_seen(reports: Path, base_url: str) -> None:
    # /many: 3 quick ones long ago; /slow: 1 very slow; /recent: 2 medium, the latest
    for i, (route, duration, minute) in enumerate(
        [
            ("/many", 1.0, 1),
            ("/many", 1.0, 2),
            ("/many", 1.0, 3),
            ("/slow", 9.0, 4),
            ("/recent", 2.0, 5),
            ("/recent", 2.0, 50),
        ]
    ):
        meta = {"route": route, "trace_id": f"{i:032x}", "duration_seconds": duration}
        write_metadata(reports, meta, when(minute))

    def order(sort: Optional[str]) -> list[str]:
        params = {"sort": sort} if sort else {}
        page = requests.get(base_url + "/", params=params, timeout=10).text
        return [row[0].removeprefix("GET ").removesuffix("shop") for row in overview_rows(page)]

    assert order(None) == order("count") == ["/many", "/recent", "/slow"]
    assert order("p95") == ["/slow", "/recent", "/many"]
    assert order("last") == ["/recent", "/slow", "/many"]
    page = requests.get(base_url + "/", params={"sort": "p95"}, timeout=10).text
    assert "href='/?sort=last'" in page and "href='/'" in page


def test_a_request_reported_while_running_counts_once(reports: Path, base_url: str) -> None:
    running = {"route": "/hang", "trace_id": TRACE_A, "duration_seconds": 5.0, "in_flight": True}
    write_metadata(reports, running, when(1))
    write_metadata(reports, {**running, "in_flight": False, "duration_seconds": 7.0}, when(1))
    write_metadata(reports, {**running, "trace_id": TRACE_B}, when(2))  # still running

    rows = overview_rows(requests.get(base_url + "/", timeout=10).text)

    assert rows[0][1:5] == ["2", "5.000 s", "7.000 s", "7.000 s"]


def test_the_overview_is_paged_and_filtered_by_route(reports: Path, base_url: str) -> None:
    for i in range(120):
        write_metadata(
            reports,
            {"route": f"/r{i:03d}", "trace_id": f"{i:032x}", "duration_seconds": 1.0},
            when(i % 60),
        )

    first = requests.get(base_url + "/", params={"sort": "p95"}, timeout=10).text
    third = requests.get(base_url + "/", params={"sort": "p95", "page": "3"}, timeout=10).text
    found = requests.get(base_url + "/", params={"route": "R11"}, timeout=10).text

    assert len(overview_rows(first)) == 50 and len(overview_rows(third)) == 20
    assert "Page 1 of 3" in first and "href='/?sort=p95&amp;page=2'" in first
    assert [row[0] for row in overview_rows(found)] == [f"GET /r11{i}shop" for i in range(10)]


# --- a route -------------------------------------------------------------------------


def test_the_route_page_plots_each_report_and_names_the_recurring_hot_frame(
    reports: Path, base_url: str
) -> None:
    frames = [
        [
            {"function": "load_orders", "location": "shop/orders.py:12", "seconds": 0.8},
            {"function": "render", "location": "shop/views.py:40", "seconds": 0.1},
        ],
        [{"function": "load_orders", "location": "shop/orders.py:12", "seconds": 0.5}],
        [
            {"function": "render", "location": "shop/views.py:40", "seconds": 0.9},
            {"function": "load_orders", "location": "shop/orders.py:12", "seconds": 0.2},
        ],
    ]
    names = [
        write_metadata(
            reports,
            {
                "route": "/orders",
                "trace_id": f"{i:032x}",
                "duration_seconds": 1.0 + i,
                "threshold_seconds": 0.5,
                "top_frames": top,
                "slowest_spans": [{"name": "SELECT orders", "kind": "db", "duration_seconds": 0.4}],
            },
            when(i),
        )
        for i, top in enumerate(frames)
    ]
    write_metadata(
        reports, {"route": "/other", "trace_id": TRACE_A, "duration_seconds": 1.0}, when(9)
    )

    overview = requests.get(base_url + "/", timeout=10).text
    link = html.unescape(re.search(r'<a href="(/route\?[^"]*orders)"', overview).group(1))
    response = requests.get(base_url + link, timeout=10)

    assert response.status_code == 200
    page = response.text
    assert "<h1>GET /orders</h1>" in page
    for name in names:  # a dot per report, linking to it
        assert f"<a href='/reports/{name}'><circle" in page
    assert page.count("<circle") == 3
    assert page.count("<rect") >= 2  # the histogram's bars
    assert "<code>load_orders</code> is the top frame in 2 of 3 reports" in page
    assert "SELECT orders" in page and "3 of 3" in page  # the slowest span in each
    assert rows_of(page) == [f"{i:032x}" for i in (2, 1, 0)]
    assert TRACE_A not in page


def test_a_route_without_reports_gets_a_404_page(reports: Path, base_url: str) -> None:
    response = requests.get(base_url + "/route", params={"route": "/none"}, timeout=10)

    assert response.status_code == 404
    assert "No slow request of this route" in response.text


def test_the_route_page_of_many_reports_plots_the_newest_400(reports: Path, base_url: str) -> None:
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    for i in range(600):
        write_metadata(
            reports,
            {"route": "/busy", "trace_id": f"{i:032x}", "duration_seconds": 1.0},
            start + timedelta(minutes=i),
        )

    response = requests.get(
        base_url + "/route",
        params={"service": "shop", "method": "GET", "route": "/busy"},
        timeout=10,
    )

    assert response.text.count("<circle") == 400
    assert "The newest 400 of 600 reports." in response.text
    assert len(rows_of(response.text)) == 100 and older_link(response.text) is not None
    second = requests.get(base_url + older_link(response.text), timeout=10).text
    assert rows_of(second)[0] == f"{499:032x}"


# --- everything from a report is escaped ---------------------------------------------

XSS_ROUTES = [
    EVIL,
    '/x"><script>alert(1)</script>',
    "/x'><svg onload=alert(1)>",
    "</title></svg><script>alert(1)</script>",
    "/x?a=1&b=<b>",
]


@pytest.mark.parametrize("route", XSS_ROUTES)
def test_an_attackers_route_name_is_escaped_on_every_page(
    reports: Path, base_url: str, route: str
) -> None:
    meta = {
        "route": route,
        "service": "<b>svc</b>",
        "method": "<i>GET</i>",
        "trace_id": TRACE_A,
        "duration_seconds": 1.0,
        "top_frames": [{"function": "<script>f</script>", "location": route}],
        "slowest_spans": [{"name": route, "kind": "<db>", "duration_seconds": 0.5}],
        "span_seconds": {"<db>": 0.5},
    }
    write_metadata(reports, meta, when(1))
    write_metadata(reports, {**meta, "trace_id": TRACE_B}, when(2))

    overview = requests.get(base_url + "/", params={"route": route}, timeout=10)
    link = html.unescape(re.search(r'<a href="(/route\?[^"]*)"', overview.text).group(1))
    pages = [
        overview,
        requests.get(base_url + link, timeout=10),
        requests.get(base_url + "/reports", params={"route": route}, timeout=10),
        requests.get(f"{base_url}/trace/{TRACE_A}", allow_redirects=False, timeout=10),
    ]
    listing = requests.get(base_url + "/reports", timeout=10)

    assert pages[1].status_code == 200 and "is the top frame in 2 of 2" in pages[1].text
    for response in [*pages, listing]:
        text = response.text
        for raw in (route, "<b>svc</b>", "<i>GET</i>", "<script>", "<db>"):
            assert raw not in text, (response.url, raw)
    assert html.escape(route) in pages[1].text


# --- bad report files ----------------------------------------------------------------

METADATA_START = '<script type="application/json" id="otel-wpm-report">'


def with_metadata(payload: str) -> bytes:
    return f"<html><head>{METADATA_START}{payload}</script></head></html>".encode()


def write_truncated(path: Path) -> None:
    # a real report, cut in the middle of its metadata
    good = path.parent / write_report(path.parent, TRACE_C, "/cut", 1.0, when(9))
    content = good.read_bytes()
    good.unlink()
    path.write_bytes(content[: content.index(b'"duration_seconds"') + 5])


def write_huge(path: Path) -> None:
    # metadata that never ends within what the index reads, in a 64 MiB (sparse) file
    path.write_bytes(METADATA_START.encode() + b'{"route": "' + b"x" * 20_000)
    os.truncate(path, 64 * 2**20)


HOSTILE_FILES = {
    "400-digit duration": lambda path: path.write_bytes(
        with_metadata('{"route": "/evil", "duration_seconds": ' + "9" * 400 + "}")
    ),
    "lone surrogate in the route": lambda path: path.write_bytes(
        with_metadata('{"route": "/evil\\ud800", "duration_seconds": 1.0}')
    ),
    "non-JSON metadata": lambda path: path.write_bytes(with_metadata("{route: /evil}")),
    "truncated": write_truncated,
    "huge": write_huge,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
def test_a_bad_report_file_is_listed_by_name_counted_logged_once_and_breaks_nothing(
    reports: Path, base_url: str, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    write_report(reports, TRACE_A, "/good", 1.25, when(1))
    bad = report_file_name(when(2), "GET", "/evil", TRACE_B, SPAN, in_flight=False)
    HOSTILE_FILES[kind](reports / bad)

    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        lists = [requests.get(base_url + "/reports", timeout=10) for _ in range(2)]
        overview = requests.get(base_url + "/", timeout=10)

    for page in lists:
        assert page.status_code == 200
        assert "/good" in page.text and "1.250 s" in page.text
        assert TRACE_B in page.text and "evil" in page.text
        assert "2 of 2 reports; 1 listed by file name only" in page.text
    assert overview.status_code == 200
    assert "1 route, 1 slow request; 1 listed by file name only" in overview.text
    assert [r.levelno for r in caplog.records if bad in r.getMessage()] == [logging.WARNING]
    trace = requests.get(f"{base_url}/trace/{TRACE_B}", allow_redirects=False, timeout=10)
    assert trace.headers["Location"] == f"/reports/{bad}"


def wsgi_get(application: Any, path: str, query: str = "") -> tuple[str, bytes]:
    """``application``'s answer to GET ``path``, called in this process."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": ""}
    answer: list[str] = []
    body = b"".join(application(environ, lambda status, headers: answer.append(status)))
    return answer[0], body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(blacklist_categories=())),  # surrogates too
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
metadata_fields = st.sampled_from(
    [
        "route",
        "duration_seconds",
        "status",
        "in_flight",
        "service",
        "method",
        "start_time",
        "cpu_seconds",
        "wait_seconds",
        "span_seconds",
        "slowest_spans",
        "top_frames",
    ]
)
record = st.dictionaries(
    st.sampled_from(["name", "kind", "duration_seconds", "function", "location", "seconds"]),
    json_values,
)
field_values = json_values | st.lists(record, max_size=4) | st.dictionaries(st.text(), json_values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.binary(max_size=2000).map(lambda raw: METADATA_START.encode() + raw)
        | st.dictionaries(metadata_fields, field_values).map(
            lambda meta: with_metadata(json.dumps(meta))
        ),
        min_size=1,
        max_size=3,
    )
)
def test_every_page_renders_whatever_the_report_files_hold(contents: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        for i, content in enumerate(contents):
            name = report_file_name(when(i), "GET", "/fuzz", TRACE_A, SPAN, in_flight=False)
            Path(directory, name).write_bytes(content)
        application = app(directory)

        answers = {path: wsgi_get(application, path) for path in ("/", "/reports")}
        for sort in ("p95", "last"):
            answers[f"/?sort={sort}"] = wsgi_get(application, "/", f"sort={sort}")
        links = re.findall(rb'<a href="/route\?([^"]*)"', answers["/"][1])
        for query in links:
            answers[query.decode()] = wsgi_get(application, "/route", html.unescape(query.decode()))

    for status, page in answers.values():
        assert status == "200 OK"
        page.decode("utf-8")
    assert TRACE_A in answers["/reports"][1].decode()


# --- /trace/<trace_id> ---------------------------------------------------------------


def test_trace_with_one_report_redirects_to_it(reports: Path, base_url: str, session: Any) -> None:
    name = write_report(reports, TRACE_A, "/users/<id>", 1.0, when(1), session=session)

    first = requests.get(f"{base_url}/trace/{TRACE_A.upper()}", allow_redirects=False, timeout=10)
    assert first.status_code == 302
    assert first.headers["Location"] == f"/reports/{name}"

    report = requests.get(f"{base_url}/trace/{TRACE_A}", timeout=10)
    assert report.status_code == 200
    assert report.text == (reports / name).read_text()
    assert "pyinstrumentHTMLRenderer" in report.text


def test_trace_with_several_reports_lists_them(reports: Path, base_url: str) -> None:
    running = write_report(reports, TRACE_A, "/slow", 6.0, when(1), status=None, in_flight=True)
    final = write_report(reports, TRACE_A, "/slow", 9.0, when(1))
    write_report(reports, TRACE_B, "/other", 2.0, when(2))

    response = requests.get(f"{base_url}/trace/{TRACE_A}", timeout=10)

    assert response.status_code == 200
    assert f'href="/reports/{running}"' in response.text
    assert f'href="/reports/{final}"' in response.text
    assert "still running" in response.text
    assert TRACE_B not in response.text


def test_trace_without_report_gets_a_404_page_that_says_why(reports: Path, base_url: str) -> None:
    write_report(reports, TRACE_A, "/x", 1.0, when(1))

    response = requests.get(f"{base_url}/trace/{UNKNOWN_TRACE}", timeout=10)

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"no report for trace <code>{UNKNOWN_TRACE}</code>" in response.text
    assert "retention" in response.text and "fast" in response.text


@pytest.mark.parametrize("trace_id", ["xyz", "0af7651916cd43dd", "g" * 32, TRACE_A + "0"])
def test_trace_ids_must_be_32_hex_digits(base_url: str, trace_id: str) -> None:
    response = requests.get(f"{base_url}/trace/{trace_id}", timeout=10)

    assert response.status_code == 400


# --- /reports/<file> -----------------------------------------------------------------


def test_a_report_is_served_as_html(reports: Path, base_url: str) -> None:
    name = write_report(reports, TRACE_A, "/x", 1.0, when(1))

    response = requests.get(f"{base_url}/reports/{name}", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.content == (reports / name).read_bytes()


@pytest.fixture
def escape_targets(reports: Path) -> str:
    """A secret next to the directory, and a report name to build escapes from."""
    (reports.parent / "secret.html").write_text("SECRET-OUTSIDE")
    (reports / "alerts.jsonl").write_text("SECRET-ALERTS")
    return write_report(reports, TRACE_A, "/x", 1.0, when(1))


def test_the_raw_client_gets_a_plain_report_name(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    status, response = raw_get(base_url, f"/reports/{escape_targets}".encode())

    assert status == 200 and TRACE_A.encode() in response


@pytest.mark.parametrize(
    "path",
    [
        b"/reports/../secret.html",
        b"/reports/..%2fsecret.html",
        b"/reports/..%2Fsecret.html",
        b"/reports/..%252fsecret.html",
        b"/reports/%2e%2e/secret.html",
        b"/reports/..\\secret.html",
        b"/reports/..%5csecret.html",
        b"/reports//etc/passwd",
        b"/reports/%2Fetc%2Fpasswd",
        b"/reports/alerts.jsonl",
        b"/reports/NAME%00",
        b"/reports/NAME\x00.html",
        b"/reports/./NAME",
        b"/reports/NAME/",
        b"/reports/x%2fNAME",
        b"/reports/x%252fNAME",
        b"/reports/%32NAME",
        b"/reports/",
    ],
)
def test_paths_out_of_the_directory_get_404_without_details(
    reports: Path, base_url: str, escape_targets: str, path: bytes
) -> None:
    status, response = raw_get(base_url, path.replace(b"NAME", escape_targets.encode()))

    assert status in (400, 404)
    assert b"SECRET" not in response
    assert str(reports).encode() not in response


def test_symlinks_are_followed_only_to_reports_in_the_directory(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    outside = report_file_name(when(5), "GET", "/out", TRACE_B, SPAN, in_flight=False)
    to_alerts = report_file_name(when(6), "GET", "/alerts", TRACE_C, SPAN, in_flight=False)
    inside = report_file_name(when(7), "GET", "/in", UNKNOWN_TRACE, SPAN, in_flight=False)
    (reports / outside).symlink_to(reports.parent / "secret.html")
    (reports / to_alerts).symlink_to(reports / "alerts.jsonl")
    (reports / inside).symlink_to(reports / escape_targets)

    for name in (outside, to_alerts):
        response = requests.get(f"{base_url}/reports/{name}", timeout=10)
        assert response.status_code == 404
        assert "SECRET" not in response.text
    served = requests.get(f"{base_url}/reports/{inside}", timeout=10)
    assert served.status_code == 200
    assert TRACE_A in served.text


# --- headers and methods -------------------------------------------------------------


def test_every_response_carries_the_security_headers(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    report = requests.get(f"{base_url}/reports/{escape_targets}", timeout=10)
    pages = [
        requests.get(base_url + "/", timeout=10),
        requests.get(base_url + "/reports", timeout=10),
        requests.get(base_url + "/route", params={"method": "GET", "route": "/x"}, timeout=10),
        requests.get(
            base_url + "/", params={"min_duration": "1"}, allow_redirects=False, timeout=10
        ),
        requests.get(f"{base_url}/trace/{TRACE_A}", allow_redirects=False, timeout=10),
        requests.get(f"{base_url}/trace/{UNKNOWN_TRACE}", timeout=10),
        requests.get(f"{base_url}/trace/nope", timeout=10),
        requests.get(f"{base_url}/nowhere", timeout=10),
        requests.get(f"{base_url}/", params={"sort": "x"}, timeout=10),
        requests.post(base_url + "/", data=b"x", timeout=10),
    ]
    assert {r.status_code for r in pages} == {200, 302, 400, 404, 405}
    for response in [report, *pages]:
        for header, value in SECURITY_HEADERS.items():
            if header != "Content-Security-Policy":
                assert response.headers.get(header) == value, (response.url, header)
    # the browser's own pages run no script; a report needs pyinstrument's inline viewer
    for response in pages:
        assert (
            response.headers["Content-Security-Policy"]
            == SECURITY_HEADERS["Content-Security-Policy"]
        )
    assert "script-src" not in SECURITY_HEADERS["Content-Security-Policy"]
    assert report.headers["Content-Security-Policy"] == REPORT_CONTENT_SECURITY_POLICY
    assert "script-src 'unsafe-inline'" in REPORT_CONTENT_SECURITY_POLICY
    for policy in (SECURITY_HEADERS["Content-Security-Policy"], REPORT_CONTENT_SECURITY_POLICY):
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy

    status, malformed = raw_get(base_url, b"/ HTTP/1.1 junk")
    assert status == 400
    assert b"X-Content-Type-Options: nosniff" in malformed


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_other_than_get_and_head_get_405(
    reports: Path, base_url: str, escape_targets: str, method: str
) -> None:
    response = requests.request(method, f"{base_url}/reports/{escape_targets}", timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert (reports / escape_targets).exists()


def test_head_sends_the_headers_of_get_without_the_body(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    url = f"{base_url}/reports/{escape_targets}"
    get = requests.get(url, timeout=10)
    head = requests.head(url, timeout=10)

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))


# --- slow and too many connections --------------------------------------------------


def connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def closed_by_the_server(connection: socket.socket) -> bool:
    """Whether the server closes ``connection`` (sending nothing) within the socket's timeout."""
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True


def trickled_until_closed(connection: socket.socket, deadline_seconds: float = 30.0) -> bool:
    """Send a request head a byte every 0.1 s, as slowloris does, until the server closes."""
    connection.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
    connection.settimeout(0.1)  # the pace of the trickle
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            if connection.recv(1024) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionResetError:
            return True
        try:
            connection.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def answers(base_url: str) -> bool:
    try:
        return requests.get(base_url + "/", timeout=10).status_code == 200
    except requests.ConnectionError:
        return False


def test_slow_and_half_sent_requests_are_closed_after_the_timeout(reports: Path) -> None:
    with serve_reports(reports, timeout=0.5) as url:
        silent, partial, trickle = connect(url), connect(url), connect(url)
        partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")

        assert trickled_until_closed(trickle)
        assert closed_by_the_server(silent)
        assert closed_by_the_server(partial)
        assert answers(url)
        for connection in (silent, partial, trickle):
            connection.close()


def test_connections_beyond_the_bound_get_503_until_some_end(reports: Path) -> None:
    with serve_reports(reports, timeout=60, max_connections=3) as url:
        holders = [connect(url) for _ in range(3)]
        for holder in holders:
            holder.sendall(b"GET / HTTP/1.1\r\n")

        with connect(url) as refused:
            response = refused.makefile("rb").read()
        assert response.startswith(b"HTTP/1.0 503 ")
        for header, value in SECURITY_HEADERS.items():
            assert f"{header}: {value}\r\n".encode() in response

        for holder in holders:
            holder.close()
        wait_until(lambda: answers(url), "a connection slot to be free again")


# --- serve() -------------------------------------------------------------------------


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("example.com")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_module_entry_point_serves_logs_its_url_and_stops_on_a_stop_signal(
    reports: Path, tmp_path: Path, host: str, stop: signal.Signals
) -> None:
    """Ctrl-C, or a service manager's SIGTERM, stops it cleanly (exit status 0)."""
    name = write_report(reports, TRACE_A, "/x", 1.0, when(1))
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "otel_wpm.server", "--dir", str(reports)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, "--host", host, "--port", "0"], stderr=log)
    try:
        url_line = wait_until(
            lambda: re.search(r"on http://\S+:(\d+)/", log_path.read_text()), "the URL logged"
        )
        port = int(url_line.group(1))
        response = requests.get(f"http://127.0.0.1:{port}/trace/{TRACE_A}", timeout=10)
        assert response.status_code == 200
        assert response.url.endswith(f"/reports/{name}")
    finally:
        process.send_signal(stop)
        returncode = process.wait(timeout=30)
    assert returncode == 0
    assert f"stopping ({stop.name})" in log_path.read_text()
    # the warning is logged before serving starts, so it is there by now if at all
    warned = "not a loopback address" in log_path.read_text()
    assert warned == (host != "127.0.0.1")


@pytest.mark.parametrize(
    "command", [["otel-wpm", "serve"], [sys.executable, "-m", "otel_wpm.server"]]
)
def test_serving_a_directory_that_does_not_exist_fails_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "no-such-directory"

    result = subprocess.run(
        [*command, "--dir", str(missing), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert f"error: report directory {missing} does not exist" in result.stderr


def test_the_app_factory_runs_under_gunicorn(reports: Path, tmp_path: Path) -> None:
    name = write_report(reports, TRACE_A, "/users/<id>", 1.25, when(1))
    port = free_port()
    command = [
        "gunicorn",
        "-b",
        f"127.0.0.1:{port}",
        f'otel_wpm.server:app(directory="{reports}")',
    ]
    with running_server(command, clean_env(), tmp_path, port, ready_path="/") as server:
        index = requests.get(server.url + "/reports", timeout=10)
        report = requests.get(f"{server.url}/trace/{TRACE_A}", timeout=10)
        refused = requests.post(server.url + "/", timeout=10)

    assert "1.250 s" in index.text and "/users/&lt;id&gt;" in index.text
    assert report.url.endswith(f"/reports/{name}")
    assert report.content == (reports / name).read_bytes()
    assert refused.status_code == 405
    for response in (index, refused):
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value
    assert report.headers["Content-Security-Policy"] == REPORT_CONTENT_SECURITY_POLICY


def test_mounted_under_a_prefix_its_links_stay_under_it(reports: Path) -> None:
    name = write_report(reports, TRACE_A, "/x", 1.0, when(1))

    def host_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the host app"]

    mounted = DispatcherMiddleware(host_app, {"/wpm": app(reports)})
    with serve_threaded(mounted) as url:
        overview = requests.get(url + "/wpm/", timeout=10).text
        index = requests.get(url + "/wpm/reports", timeout=10).text
        route = requests.get(url + "/wpm/route?service=shop&method=GET&route=/x", timeout=10).text
        trace = requests.get(f"{url}/wpm/trace/{TRACE_A}", allow_redirects=False, timeout=10)
        report = requests.get(url + trace.headers["Location"], timeout=10)
        host = requests.get(url + "/", timeout=10).text

    assert f'href="/wpm/trace/{TRACE_A}"' in index
    assert f'href="/wpm/reports/{name}"' in index
    assert 'action="/wpm/reports"' in index
    assert 'href="/wpm/route?service=shop&amp;method=GET&amp;route=%2Fx"' in overview
    assert "href='/wpm/reports'" in overview and "href='/wpm/'" in route
    assert f"<a href='/wpm/reports/{name}'><circle" in route
    assert f'href="/wpm/trace/{TRACE_A}"' in route
    assert trace.headers["Location"] == f"/wpm/reports/{name}"
    assert report.content == (reports / name).read_bytes()
    assert host == "the host app"
