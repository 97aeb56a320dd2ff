"""The report browser as a WSGI application, for any WSGI server or to mount in an app.

Usage::

    from otel_wpm.server.wsgi import app

    application = app(directory="performance_reports")   # ReportDirectoryError if missing
    application = app(store="s3://my-bucket/reports")     # every host's reports in a bucket

    # gunicorn, with its factory syntax:
    #   gunicorn -b 127.0.0.1:8099 'otel_wpm.server:app(directory="performance_reports")'
    # mounted under a prefix, e.g. with werkzeug:
    #   DispatcherMiddleware(main_app, {"/reports": app(directory="performance_reports")})

Only GET and HEAD are answered (405 otherwise); every response carries
:data:`SECURITY_HEADERS`, whose Content-Security-Policy allows no script: the
browser's pages need none. Report files are served with
:data:`REPORT_CONTENT_SECURITY_POLICY` instead, which allows their inline
scripts and nothing from elsewhere. Nothing is ever written. Route summaries
are computed once per index snapshot, so a page costs a directory listing when
nothing changed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode
from wsgiref.util import FileWrapper

from .._runtime.logs import LogOnce
from ..reporting.store import OpenedReport
from .index import ReportIndex, Snapshot, open_reports
from .listing import ListQuery, count_matching, last_values, list_page
from .pages import (
    OverviewQuery,
    message_page,
    no_report_page,
    overview_page,
    report_href,
    reports_page,
    route_page,
    route_query,
    trace_page,
)
from .routes import RouteKey, RouteSummary, summarise

logger = logging.getLogger(__name__)

#: The browser's own pages need no script: plots are inline SVG, styles inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: Reports need inline scripts too (pyinstrument's viewer); nothing else is allowed.
REPORT_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HTML = "text/html; charset=utf-8"

#: Filters of the report list that ``/`` took before it became the routes overview.
_LIST_ONLY_PARAMETERS = ("min_duration", "trace_id")

#: Route summaries kept per index snapshot (one per host and service filter asked for).
_KEPT_SUMMARIES = 8
_TRACE_ID = re.compile(r"\A[0-9a-fA-F]{32}\Z")
_FILE_CHUNK_BYTES = 64 * 1024

StartResponse = Callable[..., Any]


@dataclass
class Response:
    """What to send: a page, or an opened report."""

    status: HTTPStatus
    body: bytes = b""
    file: Optional[OpenedReport] = None
    headers: dict[str, str] = field(default_factory=dict)

    def length(self) -> int:
        return self.file.size if self.file else len(self.body)


class ReportApp:
    """The WSGI application serving one :class:`~.index.ReportIndex`."""

    def __init__(self, index: ReportIndex) -> None:
        self.index = index
        self._failures = LogOnce(logger)
        self._lock = threading.Lock()
        # by (snapshot version, host, service) of the overview asked for; a few at most
        self._summaries: dict[tuple[int, str, str], dict[RouteKey, RouteSummary]] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        root = quote(environ.get("SCRIPT_NAME", "").encode("latin-1"), safe="/")
        try:
            response = self.respond(environ, root)
        except Exception as exc:  # an answer still goes out, with the security headers
            self._failures.warning(
                ("server error", type(exc).__name__), "report server error", exc_info=True
            )
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, message_page("Server error"))
        headers = {"Content-Type": HTML, "Content-Length": str(response.length())}
        headers.update(SECURITY_HEADERS)
        if response.file:
            headers["Content-Security-Policy"] = REPORT_CONTENT_SECURITY_POLICY
        headers.update(response.headers)
        status = response.status
        start_response(f"{status.value} {status.phrase}", list(headers.items()))
        if environ["REQUEST_METHOD"] == "HEAD":
            if response.file:
                response.file.stream.close()
            return []
        if response.file:
            wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
            chunks: Iterable[bytes] = wrapper(response.file.stream, _FILE_CHUNK_BYTES)
            return chunks
        return [response.body]

    def respond(self, environ: dict[str, Any], root: str) -> Response:
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                message_page("Method not allowed"),
                headers={"Allow": "GET, HEAD"},
            )
        path = environ.get("PATH_INFO", "") or "/"
        query = environ.get("QUERY_STRING", "")
        try:
            if path == "/":
                return self._overview(query, root)
            if path == "/reports":
                return self._reports(query, root)
            if path == "/route":
                return self._route(query, root)
        except ValueError as exc:  # a bad parameter
            return Response(HTTPStatus.BAD_REQUEST, message_page("Bad request", str(exc), root))
        if path.startswith("/trace/"):
            return self._trace(path[len("/trace/") :].rstrip("/"), root)
        if path.startswith("/reports/"):
            report = self.index.open_report(path[len("/reports/") :])
            if report is None:
                return Response(HTTPStatus.NOT_FOUND, message_page("No such report"))
            return Response(HTTPStatus.OK, file=report)
        return Response(HTTPStatus.NOT_FOUND, message_page("Not found", root=root))

    def _routes(
        self, snapshot: Snapshot, host: str = "", service: str = ""
    ) -> dict[RouteKey, RouteSummary]:
        """The route summaries of ``snapshot`` (of one host, one service), computed once."""
        key = (snapshot.version, host, service)
        with self._lock:
            routes = self._summaries.get(key)
        if routes is None:
            entries = [
                entry
                for entry in snapshot.entries
                if (not host or entry.text("host") == host)
                and (not service or entry.text("service") == service)
            ]
            routes = summarise(entries)
            with self._lock:
                known = {k: v for k, v in self._summaries.items() if k[0] == snapshot.version}
                self._summaries = dict(list(known.items())[-_KEPT_SUMMARIES:])
                self._summaries[key] = routes
        return routes

    def _overview(self, query: str, root: str) -> Response:
        if any(last_values(query).get(name) for name in _LIST_ONLY_PARAMETERS):
            # a link made when "/" was the report list
            location = f"{root}/reports?{urlencode(last_values(query))}"
            return Response(HTTPStatus.FOUND, headers={"Location": location})
        wanted = OverviewQuery.from_query(query)
        snapshot = self.index.snapshot()
        summaries = list(self._routes(snapshot, wanted.host, wanted.service).values())
        return Response(HTTPStatus.OK, overview_page(summaries, wanted, snapshot, root))

    def _reports(self, query: str, root: str) -> Response:
        wanted = ListQuery.from_query(query)
        snapshot = self.index.snapshot()
        shown = list_page(snapshot, wanted)
        matching = count_matching(snapshot, wanted)
        return Response(HTTPStatus.OK, reports_page(snapshot, wanted, shown, matching, root))

    def _route(self, query: str, root: str) -> Response:
        key = route_query(query)
        wanted = ListQuery.from_query(query, exact_route=key)
        snapshot = self.index.snapshot()
        summary = self._routes(snapshot).get(key)
        status = HTTPStatus.OK if summary else HTTPStatus.NOT_FOUND
        return Response(status, route_page(summary, key, list_page(snapshot, wanted), root))

    def _trace(self, trace_id: str, root: str) -> Response:
        if not _TRACE_ID.match(trace_id):
            return Response(
                HTTPStatus.BAD_REQUEST,
                message_page("Not a trace ID", "A trace ID is 32 hexadecimal digits."),
            )
        trace_id = trace_id.lower()
        entries = self.index.for_trace(trace_id)
        if not entries:
            return Response(HTTPStatus.NOT_FOUND, no_report_page(trace_id, root))
        if len(entries) == 1:
            location = report_href(root, entries[0].file.name)
            return Response(HTTPStatus.FOUND, headers={"Location": location})
        return Response(HTTPStatus.OK, trace_page(trace_id, entries, root))


def app(
    directory: Optional[str | os.PathLike[str]] = None,
    *,
    store: Optional[str] = None,
    endpoint_url: Optional[str] = None,
) -> ReportApp:
    """The report browser for ``directory``, or for ``store`` (a directory or ``s3://`` URL).

    Raises ``ReportDirectoryError`` if it cannot be read (missing, not listable).
    """
    location = store if store is not None else directory
    if location is None:
        raise TypeError("app() needs a directory or a store")
    return ReportApp(ReportIndex(open_reports(location, endpoint_url)))
