"""The report browser's pages in headless Chromium: they load clean, and stay on their origin.

Screenshots are saved under ``tests/output/browser/`` (not committed) to look at.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from chromium import CHROMIUM, Chromium
from wsgi_servers import serve_reports, serve_threaded

from otel_wpm.reporting.report_format import metadata_element, report_file_name

OUTPUT = Path(__file__).parent / "output" / "browser"
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
ROUTES = [
    ("shop", "GET", "/orders/<order_id>", 1.6, 0.3),
    ("shop", "POST", "/checkout", 2.4, 0.7),
    ("shop", "GET", "/search", 0.9, 0.9),
    ("billing", "GET", "/invoices/<id>/pdf", 3.1, 0.8),
    ("shop", "GET", "/x'\"><script>alert(1)</script>", 0.7, 0.5),
]
FRAMES = ["load_orders", "render_invoice", "fetch_prices"]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason="chromium is not installed (apt-get install chromium)"
)


def write_reports(directory: Path) -> None:
    """Reports of a few routes over two weeks, each route with its own shape."""
    number = 0
    for index, (service, method, route, typical, cpu_share) in enumerate(ROUTES):
        for i in range(40 - 7 * index):
            number += 1
            started = START + timedelta(hours=(i * 37 + index * 11) % 336, minutes=i)
            duration = typical * (0.6 + ((i * 7919) % 100) / 80)
            meta = {
                "service": service,
                "method": method,
                "route": route,
                "status": 500 if i % 9 == 0 else 200,
                "duration_seconds": round(duration, 6),
                "threshold_seconds": 0.5,
                "start_time": started.isoformat(),
                "trace_id": f"{number:032x}",
                "span_id": f"{number:016x}",
                "in_flight": False,
                "cpu_seconds": round(duration * cpu_share, 6),
                "wait_seconds": round(duration * (1 - cpu_share), 6),
                "span_seconds": {"db": duration * (1 - cpu_share) * 0.7, "http": 0.05},
                "slowest_spans": [{"name": "SELECT orders", "kind": "db", "duration_seconds": 0.3}],
                "top_frames": [
                    {
                        "function": FRAMES[(i + index) % 7 % 3],
                        "location": "shop/views.py:12",
                        "seconds": duration / 2,
                    },
                ],
            }
            name = report_file_name(
                started, method, route, meta["trace_id"], meta["span_id"], in_flight=False
            )
            (directory / name).write_text(f"<html><head>{metadata_element(meta)}</head></html>")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    with Chromium(tmp_path_factory.mktemp("chromium") / "profile") as chromium:
        yield chromium


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("reports")
    write_reports(directory)
    with serve_reports(directory) as url:
        yield url


def first_route_link(base_url: str) -> str:
    overview = requests.get(base_url + "/", timeout=10).text
    return html.unescape(re.findall(r'<a href="(/route\?[^"]+)"', overview)[0])


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("overview", "/"),
        ("overview-by-p95", "/?sort=p95"),
        ("route", None),
        ("reports", "/reports"),
        ("reports-filtered", "/reports?route=%3Cscript%3E&min_duration=0.5"),
    ],
)
def test_a_page_loads_without_errors_and_requests_nothing_elsewhere(
    browser: Chromium, base_url: str, name: str, path: str | None
) -> None:
    url = base_url + (path or first_route_link(base_url))

    visit = browser.load(url)

    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{name}.png").write_bytes(visit.screenshot)
    assert visit.console_errors == []
    assert visit.requests and visit.requests[0] == url
    outside = [
        request
        for request in visit.requests
        if not request.startswith(base_url + "/") and not request.startswith("data:")
    ]
    assert outside == []
    assert visit.screenshot.startswith(b"\x89PNG")


def test_a_click_on_a_dot_of_the_route_plot_opens_its_report(
    browser: Chromium, base_url: str
) -> None:
    route = base_url + first_route_link(base_url)
    browser.load(route)

    opened = browser.click("svg.plot a circle")

    assert re.fullmatch(re.escape(base_url) + r"/reports/[^/]+\.html", opened)
    assert requests.get(opened, timeout=10).status_code == 200


def test_the_checks_see_errors_and_requests_elsewhere(browser: Chromium) -> None:
    """A page that breaks both rules, so the test above can fail."""

    def bad_page(environ: dict[str, object], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return [
            b"<html><body><img src='http://127.0.0.1:9/tracker.png'>"
            b"<script>console.error('broken')</script></body></html>"
        ]

    with serve_threaded(bad_page) as url:
        visit = browser.load(url + "/")

    assert any("broken" in error for error in visit.console_errors)
    assert "http://127.0.0.1:9/tracker.png" in visit.requests
