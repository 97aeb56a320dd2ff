"""Profile a function, not a request: ``@monitor.create_decorator()``.

Run::

    python examples/decorator_example.py

Each call of a decorated function runs in its own OpenTelemetry span; calls
slower than the threshold get a report, inside a web request or not (a batch
job, a CLI, a Celery task). Inside a profiled request, the function's report is
written next to the request's, under the same trace id.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests
from _demo import output_dir, serving, wait_for
from flask import Flask

from otel_wpm import Config, PerformanceMonitor

monitor = PerformanceMonitor(Config(threshold_seconds=0.2, local_output_dir=output_dir()))


@monitor.create_decorator()
def rebuild_search_index(documents: int) -> int:
    """Outside any request: a nightly job."""
    for _ in range(documents):
        time.sleep(0.05)
    return documents


@monitor.create_decorator(name="render-invoice")
def render_invoice(order_id: int) -> str:
    """Inside a request: the slow part of it."""
    time.sleep(0.3)
    return f"invoice for order {order_id}"


app = Flask(__name__)


@app.route("/orders/<int:order_id>/invoice")
def invoice(order_id: int) -> str:
    return render_invoice(order_id)


app.wsgi_app = monitor.create_middleware()(app.wsgi_app)


def main() -> None:
    print("indexed", rebuild_search_index(2), "documents (fast, no report)")
    print("indexed", rebuild_search_index(8), "documents (slow, reported)")
    with serving(app) as url:
        print(requests.get(f"{url}/orders/7/invoice", timeout=10).text)
        wait_for(monitor, 4)  # two calls, the request, and the function inside it
    monitor.shutdown()
    for report in sorted(Path(output_dir()).glob("*.html")):
        print("report:", report.name)


if __name__ == "__main__":
    main()
