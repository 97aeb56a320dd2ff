"""The report browser as a WSGI application, for any WSGI server or to mount in an app.

Usage::

    from otel_wpm.server.wsgi import app

    application = app(directory="performance_reports")   # ReportDirectoryError if missing

    # gunicorn, with its factory syntax:
    #   gunicorn -b 127.0.0.1:8099 'otel_wpm.server:app(directory="performance_reports")'
    # mounted under a prefix, e.g. with werkzeug:
    #   DispatcherMiddleware(main_app, {"/reports": app(directory="performance_reports")})

Only GET and HEAD are answered (405 otherwise); every response carries
:data:`SECURITY_HEADERS`; nothing is ever written.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, BinaryIO, Callable, Optional
from urllib.parse import quote
from wsgiref.util import FileWrapper

from .._runtime.logs import LogOnce
from .index import ReportIndex
from .pages import (
    IndexFilter,
    index_page,
    message_page,
    no_report_page,
    report_href,
    trace_page,
)

logger = logging.getLogger(__name__)

#: Reports need inline scripts and styles (pyinstrument's viewer); nothing else is allowed.
CONTENT_SECURITY_POLICY = (
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

_TRACE_ID = re.compile(r"\A[0-9a-fA-F]{32}\Z")
_FILE_CHUNK_BYTES = 64 * 1024

StartResponse = Callable[..., Any]


@dataclass
class Response:
    """What to send: a page, or an open report file."""

    status: HTTPStatus
    body: bytes = b""
    file: Optional[BinaryIO] = None
    headers: dict[str, str] = field(default_factory=dict)

    def length(self) -> int:
        return os.fstat(self.file.fileno()).st_size if self.file else len(self.body)


class ReportApp:
    """The WSGI application serving one :class:`~.index.ReportIndex`."""

    def __init__(self, index: ReportIndex) -> None:
        self.index = index
        self._failures = LogOnce(logger)

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
        headers.update(response.headers)
        headers.update(SECURITY_HEADERS)
        status = response.status
        start_response(f"{status.value} {status.phrase}", list(headers.items()))
        if environ["REQUEST_METHOD"] == "HEAD":
            if response.file:
                response.file.close()
            return []
        if response.file:
            wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
            chunks: Iterable[bytes] = wrapper(response.file, _FILE_CHUNK_BYTES)
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
        if path == "/":
            return self._index(environ.get("QUERY_STRING", ""), root)
        if path.startswith("/trace/"):
            return self._trace(path[len("/trace/") :].rstrip("/"), root)
        if path.startswith("/reports/"):
            report = self.index.open_report(path[len("/reports/") :])
            if report is None:
                return Response(HTTPStatus.NOT_FOUND, message_page("No such report"))
            return Response(HTTPStatus.OK, file=report)
        return Response(HTTPStatus.NOT_FOUND, message_page("Not found", root=root))

    def _index(self, query: str, root: str) -> Response:
        try:
            wanted = IndexFilter.from_query(query)
        except ValueError as exc:
            return Response(HTTPStatus.BAD_REQUEST, message_page("Bad request", str(exc)))
        return Response(HTTPStatus.OK, index_page(self.index.entries(), wanted, root))

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


def app(directory: str | os.PathLike[str]) -> ReportApp:
    """The report browser for ``directory``; raises ``ReportDirectoryError`` if it is missing."""
    return ReportApp(ReportIndex(directory))
