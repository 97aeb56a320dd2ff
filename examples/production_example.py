"""A Flask app for production, monitored without a line of otel-wpm code.

Run it under OpenTelemetry's launcher, which loads otel-wpm through its
``opentelemetry_post_instrument`` entry point::

    pip install 'otel-wpm[flask]' opentelemetry-distro opentelemetry-exporter-otlp gunicorn

    export OTEL_SERVICE_NAME=shop
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318
    export WPM_THRESHOLD_SECONDS=1.0
    export WPM_LOCAL_OUTPUT_DIR=/var/lib/otel-wpm/reports
    export WPM_REPORT_BASE_URL=https://reports.internal.example.com
    export WPM_URL_BLACKLIST='^/healthz$,^/static/'
    export WPM_ENABLE_MATTERMOST=true
    export WPM_MATTERMOST_SERVER_URL=https://chat.example.com
    export WPM_MATTERMOST_TOKEN=...            # a bot token; never printed
    export WPM_MATTERMOST_CHANNEL_ID=...
    export WPM_DEDUP_REDIS_URL=redis://redis:6379/0   # one alert per route across workers

    opentelemetry-instrument gunicorn -w 2 -b 127.0.0.1:8000 production_example:app

Other settings: ``WPM_ENABLED=false`` turns the monitor off; ``otel-wpm config``
prints the effective settings and what is wrong with them; ``otel-wpm
test-alert`` sends a test alert; ``otel-wpm serve --dir DIR`` serves the reports
at ``WPM_REPORT_BASE_URL``. ``OTEL_PYTHON_EXCLUDED_URLS=healthz`` drops the
spans of health checks altogether.

Each gunicorn worker profiles its own requests; the reports of all workers go
to the same directory.
"""

from __future__ import annotations

import sys
import time

from flask import Flask

app = Flask(__name__)


def price_basket(items: int) -> float:
    time.sleep(0.1 * items)  # stands for calls to a pricing service
    return 9.99 * items


@app.route("/basket/<int:items>")
def basket(items: int) -> dict[str, float]:
    return {"total": price_basket(items)}


@app.route("/healthz")
def healthz() -> str:
    return "ok"


if __name__ == "__main__":
    print(__doc__)
    sys.exit(0)
