"""A Flask app using the PerformanceMonitor one-liner, for runs under ``opentelemetry-instrument``.

The monitor's own Config (threshold 0.2 s, reports in ``$REPORTS_DIR``) takes over
from the ``WPM_*`` settings the launcher's hook used.
"""

from __future__ import annotations

import os
import time

from flask import Flask

from otel_wpm import Config, PerformanceMonitor

app = Flask(__name__)


@app.route("/slow")
def slow() -> str:
    time.sleep(0.5)
    return "slow"


@app.route("/fast")
def fast() -> str:
    return "fast"


monitor = PerformanceMonitor(
    Config(threshold_seconds=0.2, local_output_dir=os.environ["REPORTS_DIR"])
)
app.wsgi_app = monitor.create_middleware()(app.wsgi_app)  # type: ignore[method-assign]
