"""How fast the report browser shows a directory of many reports, and how big its pages are.

Usage::

    python bench/browser.py                        # 10,000 reports, 5 cold and 20 warm runs
    python bench/browser.py --reports 2000 --cold 3 --warm 10 --dir /tmp/reports

It writes ``--reports`` report files (metadata only, in the real format, through
:func:`otel_wpm.reporting.report_format.metadata_element` and
``report_file_name``) into a temporary directory (or ``--dir``), then calls the
report browser's WSGI application in this process for its pages:

- **cold**: a new application (empty cache) answers the page: it lists the
  directory and reads every report's metadata. The files are in the OS page
  cache after the first run, as they are on a server that has been up a while.
- **warm**: the same application answers again: it lists the directory and
  finds nothing new.

It prints the median time of each and the page's size. ``generate_reports`` is
also what the test of a large directory uses.
"""

from __future__ import annotations

import argparse
import html
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_wpm.reporting.report_format import metadata_element, report_file_name  # noqa: E402
from otel_wpm.server import app  # noqa: E402

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAYS = 30
FUNCTIONS = ["load_orders", "render_invoice", "fetch_prices", "serialize", "check_stock"]
SPANS = [("SELECT orders", "db"), ("GET prices", "http"), ("UPDATE stock", "db")]


def _routes(count: int) -> list[tuple[str, str, str]]:
    services = ["shop", "billing", "search"]
    return [
        (services[i % 3], "POST" if i % 5 == 4 else "GET", f"/api/v1/resource{i}/<id>")
        for i in range(count)
    ]


def _metadata(rng: random.Random, route: tuple[str, str, str], started: datetime) -> dict[str, Any]:
    service, method, template = route
    duration = round(0.5 + rng.lognormvariate(-0.5, 0.8), 6)
    cpu = round(duration * rng.uniform(0.05, 0.9), 6)
    functions = rng.sample(FUNCTIONS, 3)
    spans = rng.sample(SPANS, 2)
    return {
        "service": service,
        "method": method,
        "route": template,
        "url": f"http://{service}.local{template.replace('<id>', str(rng.randrange(10**6)))}",
        "status": rng.choice([200, 200, 200, 500]),
        "duration_seconds": duration,
        "threshold_seconds": 0.5,
        "start_time": started.isoformat(),
        "trace_id": f"{rng.getrandbits(128):032x}",
        "span_id": f"{rng.getrandbits(64):016x}",
        "trace_url": None,
        "in_flight": False,
        "cpu_seconds": cpu,
        "wait_seconds": round(duration - cpu, 6),
        "span_seconds": {"db": round(duration * 0.3, 6), "http": round(duration * 0.1, 6)},
        "slowest_spans": [
            {"name": name, "kind": kind, "duration_seconds": round(duration * 0.2, 6)}
            for name, kind in spans
        ],
        "top_frames": [
            {"function": name, "location": f"shop/{name}.py:{10 + i}", "seconds": duration / 4}
            for i, name in enumerate(functions)
        ],
    }


def generate_reports(directory: Path, count: int, routes: int = 60, seed: int = 1) -> None:
    """``count`` reports of ``routes`` routes (some far more often slow) over 30 days."""
    rng = random.Random(seed)
    known = _routes(routes)
    weights = [1 / (rank + 1) for rank in range(routes)]
    for _ in range(count):
        route = rng.choices(known, weights)[0]
        started = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        meta = _metadata(rng, route, started)
        name = report_file_name(
            started, route[1], route[2], meta["trace_id"], meta["span_id"], False
        )
        page = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"{metadata_element(meta)}</head><body><p>profile</p></body></html>"
        )
        (directory / name).write_text(page)


def _get(application: Any, path: str, query: str = "") -> bytes:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": ""}
    status: list[str] = []
    body = b"".join(application(environ, lambda s, headers: status.append(s)))
    if not status[0].startswith("200"):
        raise RuntimeError(f"{path}?{query} answered {status[0]}")
    return body


def _timed(application: Any, path: str, query: str) -> tuple[float, int]:
    started = time.perf_counter()
    body = _get(application, path, query)
    return time.perf_counter() - started, len(body)


def measure(directory: Path, cold_runs: int, warm_runs: int) -> list[tuple[str, float, float, int]]:
    """(page, median cold seconds, median warm seconds, bytes) for each page."""
    probe = app(directory)
    overview = _get(probe, "/").decode()
    # the first route of the overview: the one with the most slow requests
    busiest = html.unescape(overview.split('<a href="/route?', 1)[1].split('"', 1)[0])
    second_page = _get(probe, "/reports").decode().split("older_than=", 1)[1].split("'", 1)[0]
    pages = [
        ("routes overview /", "/", ""),
        ("report list /reports", "/reports", ""),
        ("report list, page 2", "/reports", "older_than=" + html.unescape(second_page)),
        ("busiest route /route", "/route", busiest),
    ]
    results = []
    for label, path, query in pages:
        cold = []
        for _ in range(cold_runs):
            seconds, size = _timed(app(directory), path, query)
            cold.append(seconds)
        warm_app = app(directory)
        _get(warm_app, path, query)
        warm = [_timed(warm_app, path, query)[0] for _ in range(warm_runs)]
        results.append((label, statistics.median(cold), statistics.median(warm), size))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--cold", type=int, default=5, help="cold runs (new application each)")
    parser.add_argument("--warm", type=int, default=20, help="warm runs (same application)")
    parser.add_argument("--dir", type=Path, help="where to write the reports (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        directory = args.dir or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        generate_reports(directory, args.reports)
        print(f"{args.reports} reports written in {time.perf_counter() - started:.1f} s")
        print(f"{'page':<24} {'cold (median)':>14} {'warm (median)':>14} {'size':>10}")
        for label, cold, warm, size in measure(directory, args.cold, args.warm):
            times = f"{cold * 1000:>11.0f} ms {warm * 1000:>11.1f} ms"
            print(f"{label:<24} {times} {size / 1024:>7.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
