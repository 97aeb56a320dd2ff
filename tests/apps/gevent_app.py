"""A Flask app with no OpenTelemetry code, run by tests on gunicorn's gevent worker.

``/wait`` waits 0.6 s in ``gevent_wait`` (``time.sleep``, which gevent makes
cooperative); ``/spin`` keeps the CPU 0.6 s in ``gevent_spin`` without yielding;
``/fast`` answers at once.
"""

from __future__ import annotations

import time

from flask import Flask

app = Flask(__name__)


def gevent_wait() -> None:
    time.sleep(0.6)


def gevent_spin() -> int:
    deadline = time.perf_counter() + 0.6
    count = 0
    while time.perf_counter() < deadline:
        count += 1
    return count


@app.route("/wait")
def wait() -> str:
    gevent_wait()
    return "waited"


@app.route("/spin")
def spin() -> str:
    return str(gevent_spin())


@app.route("/fast")
def fast() -> str:
    return "fast"
