"""A Flask app with no OpenTelemetry code, run under ``opentelemetry-instrument`` by tests.

``/slow`` sleeps ``?seconds=`` (default 0.6) in ``slow_work``; ``/fast`` answers at
once; ``/health`` and ``/ignored`` are slow too, for excluded and blacklisted URLs.
Every answer is the pid of the process that served it.
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

app = Flask(__name__)


def slow_work(seconds: float) -> None:
    time.sleep(seconds)


@app.route("/slow")
def slow() -> str:
    slow_work(float(request.args.get("seconds", "0.6")))
    return str(os.getpid())


@app.route("/fast")
def fast() -> str:
    return str(os.getpid())


@app.route("/health")
def health() -> str:
    slow_work(0.6)
    return str(os.getpid())


@app.route("/ignored")
def ignored() -> str:
    slow_work(0.6)
    return str(os.getpid())
