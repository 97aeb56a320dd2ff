"""Real servers on 127.0.0.1 for tests: an app on werkzeug, and the report server."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import make_server

from otel_wpm import server as report_server


@contextlib.contextmanager
def serve_threaded(app: Any) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_reports(directory: str | os.PathLike[str], **options: Any) -> Iterator[str]:
    """Serve the reports in ``directory`` with otel-wpm's report server; yields the base URL.

    ``options`` go to :func:`otel_wpm.server.make_server` (``timeout``, ``max_connections``).
    """
    server = report_server.make_server(directory, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
