"""The middleware in a Flask app: what a report holds, and what it hides.

Run::

    python examples/flask_middleware_example.py

A sign-up endpoint is slow (it hashes the password the slow way). The report of
that request shows the profile, the query string, the JSON body and the
headers, with the password, the cookie and the Authorization header masked.

With no OpenTelemetry set up, the monitor uses a private TracerProvider, so
nothing is exported. Set up OpenTelemetry first (or run under
``opentelemetry-instrument``) and the same two lines add the profiler to your
traces instead: slow spans then carry ``wpm.slow`` and ``wpm.report.url``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests
from _demo import output_dir, serving, wait_for
from flask import Flask, jsonify, request

from otel_wpm import Config, PerformanceMonitor

PASSWORD = "correct horse battery staple"

app = Flask(__name__)


def hash_password(password: str) -> str:
    # Far more rounds than needed, so the request is slow and busy in this function.
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), b"salt", 400_000)
    return digest.hex()


@app.route("/signup", methods=["POST"])
def signup() -> object:
    user = request.get_json()
    return jsonify(name=user["name"], key=hash_password(user["password"])[:8])


@app.route("/health")
def health() -> str:
    return "ok"


monitor = PerformanceMonitor(
    Config(
        threshold_seconds=0.05,
        local_output_dir=output_dir(),
        service_name="signup-service",
        url_blacklist=[r"^/health$"],
    )
)
app.wsgi_app = monitor.create_middleware()(app.wsgi_app)


def main() -> None:
    with serving(app) as url:
        response = requests.post(
            f"{url}/signup?ref=newsletter",
            json={"name": "ada", "password": PASSWORD},
            headers={"Authorization": "Bearer abc123", "Cookie": "session=s3cr3t"},
            timeout=30,
        )
        print("POST /signup ->", response.status_code, response.json())
        print("GET /health  ->", requests.get(f"{url}/health", timeout=10).status_code)
        wait_for(monitor, 2)  # the blacklisted request is counted too
    monitor.shutdown()
    for report in sorted(Path(output_dir()).glob("*signup*.html")):
        html = report.read_text(encoding="utf-8")
        print("report:", report.resolve())
        print("  shows hash_password:", "hash_password" in html)
        print("  shows the password:", PASSWORD in html)
        print("  shows the cookie:", "s3cr3t" in html)
        print("  shows the bearer token:", "abc123" in html)


if __name__ == "__main__":
    main()
