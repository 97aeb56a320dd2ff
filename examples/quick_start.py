"""Quick start: a Flask app whose slow requests are profiled, with no OpenTelemetry set-up.

Run::

    python examples/quick_start.py

It serves the app on 127.0.0.1 for a moment, sends one slow and one fast
request, and prints where the report of the slow one is (``./performance_reports``
unless ``WPM_LOCAL_OUTPUT_DIR`` is set). Open it in a browser.

The two lines that matter in your own app::

    monitor = PerformanceMonitor(Config(threshold_seconds=0.3))
    app.wsgi_app = monitor.create_middleware()(app.wsgi_app)
"""

from __future__ import annotations

import time
from pathlib import Path

import requests
from _demo import output_dir, serving, wait_for
from flask import Flask

from otel_wpm import Config, PerformanceMonitor

app = Flask(__name__)


def load_orders() -> list[int]:
    time.sleep(0.6)  # stands for a slow database query
    return [1, 2, 3]


@app.route("/orders")
def orders() -> dict[str, list[int]]:
    return {"orders": load_orders()}


@app.route("/ping")
def ping() -> str:
    return "pong"


monitor = PerformanceMonitor(Config(threshold_seconds=0.3, local_output_dir=output_dir()))
app.wsgi_app = monitor.create_middleware()(app.wsgi_app)


def main() -> None:
    with serving(app) as url:
        print("GET /orders ->", requests.get(f"{url}/orders", timeout=10).status_code)
        print("GET /ping   ->", requests.get(f"{url}/ping", timeout=10).status_code)
        wait_for(monitor, 2)
    stats = monitor.get_stats()
    print(f"requests: {stats['total_requests']}, slow: {stats['slow_requests']}")
    for report in sorted(Path(output_dir()).glob("*.html")):
        print("report:", report.resolve())
    monitor.shutdown()


if __name__ == "__main__":
    main()
