"""The report browser: a read-only web server for the reports of one store (a directory or a
bucket every host writes to).

Runs in its **own process** (``otel-wpm serve``), or inside any WSGI server.

Usage::

    otel-wpm serve --dir performance_reports --port 8099
    otel-wpm serve --store s3://my-bucket/reports --port 8099      # every host's reports
    python -m otel_wpm.server --dir performance_reports --port 8099     # the same
    gunicorn -b 127.0.0.1:8099 'otel_wpm.server:app(directory="performance_reports")'
    gunicorn -b 0.0.0.0:8099 'otel_wpm.server:app(store="s3://my-bucket/reports")'

    from otel_wpm.server import app, make_server
    server = make_server("performance_reports", "127.0.0.1", 0)   # 0: any free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port)
    server.shutdown()

Pages:

``/``
    the routes overview: one row per (service, method, route) with its number of
    slow requests, p50 / p95 / max duration, the share of time on CPU and in
    database and HTTP spans, first and last seen, and a sparkline; ``?sort=``
    ``count`` (default), ``p95`` or ``last``, ``?route=`` (substring), ``?page=``.
``/route?service=&method=&route=``
    one route: its figures, duration over time (each dot links to its report),
    a histogram of durations, the hot frames and slow spans that recur across
    its reports, and its reports, newest first.
``/reports``
    every report, newest first, 100 a page; narrowed by ``?route=``
    (substring), ``?min_duration=`` (seconds) and ``?trace_id=`` (prefix).
    Pages continue from a cursor (``?older_than=`` / ``?newer_than=``), so
    reports arriving meanwhile do not shift them. ``/?min_duration=`` and
    ``/?trace_id=`` (links from when ``/`` was this list) redirect here.
``/trace/<trace_id>``
    what ``wpm.report.url`` points at when ``report_base_url`` is set: a
    redirect to the trace's report, a list when it has several, and a 404 page
    that says why when it has none.
``/reports/<file>``
    one report file. Only names that report files have (see
    :mod:`otel_wpm.reporting.report_format`) directly in the directory are served.

Set ``report_base_url`` to where this server is reachable so traces link here.
It binds to 127.0.0.1 unless told otherwise: reports show request parameters.

Modules: :mod:`.index` reads the reports' metadata (cached per file version)
into sorted snapshots, :mod:`.routes` groups them by route, :mod:`.listing`
pages the report list, :mod:`.plots` draws SVG, :mod:`.pages` makes the HTML,
:mod:`.wsgi` answers requests, and :mod:`.httpd` is the stdlib server with its
timeouts and connection bound.
"""

from .httpd import DEFAULT_HOST, DEFAULT_PORT, ReportServer, is_loopback, make_server, serve
from .index import ReportDirectoryError, ReportIndex
from .wsgi import SECURITY_HEADERS, ReportApp, app

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SECURITY_HEADERS",
    "ReportApp",
    "ReportDirectoryError",
    "ReportIndex",
    "ReportServer",
    "app",
    "is_loopback",
    "make_server",
    "serve",
]
