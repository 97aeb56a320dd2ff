"""Helpers the examples share: serve an app on 127.0.0.1 for a moment, and wait for reports.

Not an example itself; a real deployment uses gunicorn (see ``production_example.py``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import make_server

from otel_wpm import PerformanceMonitor


def output_dir() -> str:
    """Where the examples write reports: ``$WPM_LOCAL_OUTPUT_DIR`` or ``./performance_reports``."""
    return os.environ.get("WPM_LOCAL_OUTPUT_DIR") or "performance_reports"


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 in a thread; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def wait_for(monitor: PerformanceMonitor, requests_seen: int, timeout: float = 10.0) -> None:
    """Wait until the monitor has seen ``requests_seen`` requests end and wrote their reports.

    The server ends a request's span just after the client has the response, so
    a script that reads the reports right away must wait a little.
    """
    deadline = time.monotonic() + timeout
    while monitor.get_stats()["total_requests"] < requests_seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the monitor saw fewer than {requests_seen} requests")
        time.sleep(0.02)
    monitor.flush(timeout)
