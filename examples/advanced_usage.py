"""Runtime control: stats, test alerts, settings and the URL blacklist while serving.

Run::

    python examples/advanced_usage.py

Shows, in order: a request under the threshold; the threshold lowered with
``update_config`` so the same request becomes slow; a bad setting refused (the
old one stays); a URL blacklisted at runtime; a test alert; the statistics.
"""

from __future__ import annotations

import json
import time

import requests
from _demo import output_dir, serving, wait_for
from flask import Flask

from otel_wpm import Config, ConfigError, PerformanceMonitor

app = Flask(__name__)


@app.route("/search")
def search() -> str:
    time.sleep(0.3)
    return "results"


@app.route("/export")
def export() -> str:
    time.sleep(0.3)
    return "csv"


monitor = PerformanceMonitor(Config(threshold_seconds=1.0, local_output_dir=output_dir()))
app.wsgi_app = monitor.create_middleware()(app.wsgi_app)


def main() -> None:
    with serving(app) as url:

        def get(path: str, seen: int) -> None:
            requests.get(url + path, timeout=10).raise_for_status()
            wait_for(monitor, seen)
            print(f"GET {path}: slow requests so far = {monitor.get_stats()['slow_requests']}")

        get("/search", 1)

        monitor.update_config(threshold_seconds=0.2)
        print("threshold is now", monitor.config.threshold_seconds, "s")
        get("/search", 2)

        try:
            monitor.update_config(sampling_interval_seconds=5)
        except ConfigError as err:
            print("refused:", err)
        print("sampling interval still", monitor.config.sampling_interval_seconds, "s")

        monitor.add_blacklist_url(r"^/export")
        get("/export", 3)
        monitor.remove_blacklist_url(r"^/export")
        get("/export", 4)

    result = monitor.test_alert_system()
    print("test alert:", "sent" if result["success"] else f"failed ({result['error']})")
    print("stats:", json.dumps(monitor.get_stats(), indent=2, default=str))
    monitor.reset_stats()
    print("after reset_stats: total requests =", monitor.get_stats()["total_requests"])
    monitor.shutdown()


if __name__ == "__main__":
    main()
