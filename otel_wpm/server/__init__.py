"""A read-only web server for the reports in one output directory.

Usage::

    otel-wpm serve --dir performance_reports --port 8099
    python -m otel_wpm.server --dir performance_reports --port 8099

    from otel_wpm.server import make_server
    server = make_server("performance_reports", "127.0.0.1", 0)   # 0: any free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port)
    server.shutdown()

Pages:

``/``
    every report, newest first, from the metadata each report embeds; narrowed
    by ``?route=`` (substring), ``?min_duration=`` (seconds) and ``?trace_id=``
    (prefix).
``/trace/<trace_id>``
    what ``wpm.report.url`` points at when ``report_base_url`` is set: a
    redirect to the trace's report, a list when it has several, and a 404 page
    that says why when it has none.
``/reports/<file>``
    one report file. Only names that report files have (see
    :mod:`otel_wpm.reporting.files`) directly in the directory are served.

Set ``report_base_url`` to where this server is reachable so traces link here.
It binds to 127.0.0.1 unless told otherwise: reports show request parameters.
"""

from __future__ import annotations

import argparse
import html
import ipaddress
import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, quote

from ..reporting.files import REPORT_FILE_PATTERN, ReportFile, is_report_file, scan, trace_id_of
from ..reporting.render import METADATA_ELEMENT_ID

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099

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

# The metadata script comes right after a short style block, well inside this.
METADATA_READ_BYTES = 16 * 1024
_METADATA_START = f'<script type="application/json" id="{METADATA_ELEMENT_ID}">'.encode()
_TRACE_ID = re.compile(r"\A[0-9a-fA-F]{32}\Z")
_TRACE_ID_PREFIX = re.compile(r"\A[0-9a-fA-F]{1,32}\Z")


# --- reading reports -----------------------------------------------------------------


def read_metadata(path: Path) -> Optional[dict[str, Any]]:
    """The JSON metadata embedded in a report, from its first bytes; None if absent."""
    with open(path, "rb") as stream:
        head = stream.read(METADATA_READ_BYTES)
    start = head.find(_METADATA_START)
    if start < 0:
        return None
    start += len(_METADATA_START)
    end = head.find(b"</script>", start)
    if end < 0:
        return None
    try:
        meta = json.loads(head[start:end])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _metadata_from_name(name: str) -> dict[str, Any]:
    """What the file name tells when the embedded metadata cannot be read."""
    match = REPORT_FILE_PATTERN.match(name)
    assert match is not None
    return {
        "method": match["method"],
        "route": match["route"],
        "trace_id": match["trace_id"],
        "span_id": match["span_id"],
        "in_flight": bool(match["running"]),
    }


@dataclass(frozen=True)
class Entry:
    """One row of the index."""

    file: ReportFile
    meta: dict[str, Any]

    def text(self, key: str) -> str:
        value = self.meta.get(key)
        return "" if value is None else str(value)

    @property
    def duration(self) -> Optional[float]:
        value = self.meta.get("duration_seconds")
        return float(value) if isinstance(value, (int, float)) else None


class ReportIndex:
    """The reports of a directory with their metadata, cached by (name, mtime, size)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self._cache: dict[str, tuple[float, int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def entries(self) -> list[Entry]:
        """All reports, newest first."""
        files = scan(self.directory)
        with self._lock:
            present = {file.name for file in files}
            for gone in self._cache.keys() - present:
                del self._cache[gone]
        return self._entries(files)

    def for_trace(self, trace_id: str) -> list[Entry]:
        """The reports of one trace (``trace_id`` in lower-case hex), newest first."""
        files = [file for file in scan(self.directory) if trace_id_of(file.name) == trace_id]
        return self._entries(files)

    def _entries(self, files: list[ReportFile]) -> list[Entry]:
        entries = [Entry(file, self._metadata(file)) for file in files]
        # names start with the request's start time, to the second
        entries.sort(key=lambda entry: (entry.file.name[:16], entry.file.mtime), reverse=True)
        return entries

    def _metadata(self, file: ReportFile) -> dict[str, Any]:
        with self._lock:
            cached = self._cache.get(file.name)
        if cached is not None and cached[:2] == (file.mtime, file.size):
            return cached[2]
        try:
            meta = read_metadata(file.path)
        except OSError:
            meta = None
        meta = meta or _metadata_from_name(file.name)
        with self._lock:
            self._cache[file.name] = (file.mtime, file.size, meta)
        return meta

    def read_report(self, name: str) -> Optional[bytes]:
        """The content of report ``name``; None unless it is a report file inside the directory."""
        if not is_report_file(name):
            return None
        try:
            root = self.directory.resolve(strict=True)
            # a symlink is followed only to another report in this same directory
            resolved = (root / name).resolve(strict=True)
            if resolved.parent != root or not is_report_file(resolved.name):
                return None
            if not resolved.is_file():
                return None
            return resolved.read_bytes()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return None


# --- pages ---------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _http_link(url: Any, text: str) -> str:
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}">{_e(text)}</a>'
    return ""


def _report_href(name: str) -> str:
    return "/reports/" + quote(name)


_STYLE = """<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em 1.5em;color:#222}
table{border-collapse:collapse}th,td{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
tr:nth-child(even){background:#f6f6f6}td.num{text-align:right}code{font-size:12px}
form{margin:.5em 0 1em}input{margin-right:1em}.note{color:#666}
</style>"""


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title>{_STYLE}</head><body>"
        f"<h1>{_e(title)}</h1>{body}</body></html>"
    ).encode()


def _row(entry: Entry) -> str:
    meta = entry.meta
    duration = entry.duration
    status = meta.get("status")
    if meta.get("in_flight"):
        status_text = "still running"
    else:
        status_text = "" if status is None else str(status)
    trace_id = entry.text("trace_id")
    cells = [
        _e(entry.text("start_time") or entry.file.name[:16]),
        _e(entry.text("method")),
        _e(entry.text("route")),
        _e(status_text),
        _e(f"{duration:.3f} s") if duration is not None else "",
        f'<a href="/trace/{_e(trace_id)}"><code>{_e(trace_id)}</code></a>',
        f'<a href="{_e(_report_href(entry.file.name))}">report</a>',
        _http_link(meta.get("trace_url"), "trace"),
    ]
    classes = ["", "", "", "", " class='num'", "", "", ""]
    return "<tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(classes, cells)) + "</tr>"


def _table(entries: list[Entry]) -> str:
    headings = ["Started", "Method", "Route", "Status", "Duration", "Trace ID", "", "Tracing"]
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    return f"<table><tr>{head}</tr>{''.join(_row(entry) for entry in entries)}</table>"


@dataclass(frozen=True)
class IndexFilter:
    """What ``/`` was asked to narrow the list to."""

    route: str = ""
    min_duration: Optional[float] = None
    trace_id: str = ""

    @classmethod
    def from_query(cls, query: str) -> IndexFilter:
        """Raises ``ValueError`` with a message fit to show for a bad parameter."""
        params = {key: values[-1].strip() for key, values in parse_qs(query).items()}
        min_duration = None
        if params.get("min_duration"):
            try:
                min_duration = float(params["min_duration"])
            except ValueError:
                raise ValueError("min_duration must be a number of seconds") from None
            if not min_duration >= 0:
                raise ValueError("min_duration must be a number of seconds, 0 or more")
        trace_id = params.get("trace_id", "")
        if trace_id and not _TRACE_ID_PREFIX.match(trace_id):
            raise ValueError("trace_id must be hexadecimal, at most 32 digits")
        return cls(params.get("route", ""), min_duration, trace_id.lower())

    def matches(self, entry: Entry) -> bool:
        if self.route and self.route.lower() not in entry.text("route").lower():
            return False
        if self.min_duration is not None:
            duration = entry.duration
            if duration is None or duration < self.min_duration:
                return False
        return not self.trace_id or entry.text("trace_id").startswith(self.trace_id)

    def form(self) -> str:
        minimum = "" if self.min_duration is None else f"{self.min_duration:g}"
        return (
            '<form method="get" action="/">'
            f'Route <input name="route" value="{_e(self.route)}">'
            f'Min. duration (s) <input name="min_duration" size="6" value="{_e(minimum)}">'
            f'Trace ID <input name="trace_id" size="34" value="{_e(self.trace_id)}">'
            '<input type="submit" value="Filter"></form>'
        )


def index_page(index: ReportIndex, wanted: IndexFilter) -> bytes:
    entries = index.entries()
    shown = [entry for entry in entries if wanted.matches(entry)]
    note = f"{len(shown)} of {len(entries)} reports"
    body = wanted.form() + f"<p class='note'>{note}</p>"
    return _page("Slow request reports", body + (_table(shown) if shown else ""))


def trace_page(trace_id: str, entries: list[Entry]) -> bytes:
    return _page(
        f"Reports of trace {trace_id}",
        f"<p>This trace has {len(entries)} reports (for example one written while the "
        "request was still running, and the final one, or one per profiled function).</p>"
        + _table(entries),
    )


def no_report_page(trace_id: str) -> bytes:
    return _page(
        "No report for this trace",
        f"<p>There is no report for trace <code>{_e(trace_id)}</code>.</p>"
        "<p>Reports are written only for requests slower than the threshold. This trace may "
        "have been fast, its URL may be excluded from monitoring, the report may not be "
        "written yet, or it may have been removed by retention "
        "(<code>report_max_files</code>, <code>report_max_bytes</code>, "
        "<code>report_max_age_days</code>).</p>"
        "<p><a href='/'>All reports</a></p>",
    )


# --- HTTP ----------------------------------------------------------------------------


class ReportRequestHandler(BaseHTTPRequestHandler):
    """GET and HEAD on the pages above; every other method gets 405."""

    server: ReportServer
    server_version = "otel-wpm"
    sys_version = ""

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, _page("Method not allowed", ""))
            return False
        return True

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        index = self.server.index
        if path == "/":
            try:
                wanted = IndexFilter.from_query(query)
            except ValueError as exc:
                self._send(HTTPStatus.BAD_REQUEST, _page("Bad request", f"<p>{_e(exc)}</p>"))
                return
            self._send(HTTPStatus.OK, index_page(index, wanted))
        elif path.startswith("/trace/"):
            self._trace(path[len("/trace/") :].rstrip("/"))
        elif path.startswith("/reports/"):
            content = index.read_report(path[len("/reports/") :])
            if content is None:
                self._send(HTTPStatus.NOT_FOUND, _page("No such report", ""))
            else:
                self._send(HTTPStatus.OK, content)
        else:
            self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<p><a href='/'>Reports</a></p>"))

    do_HEAD = do_GET

    def _trace(self, trace_id: str) -> None:
        if not _TRACE_ID.match(trace_id):
            body = "<p>A trace ID is 32 hexadecimal digits.</p>"
            self._send(HTTPStatus.BAD_REQUEST, _page("Not a trace ID", body))
            return
        trace_id = trace_id.lower()
        entries = self.server.index.for_trace(trace_id)
        if not entries:
            self._send(HTTPStatus.NOT_FOUND, no_report_page(trace_id))
        elif len(entries) == 1:
            self._send(HTTPStatus.FOUND, b"", location=_report_href(entries[0].file.name))
        else:
            self._send(HTTPStatus.OK, trace_page(trace_id, entries))

    def _send(self, status: HTTPStatus, body: bytes, location: Optional[str] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        if location is not None:
            self.send_header("Location", location)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def end_headers(self) -> None:
        # also reached by send_error (malformed requests), so no response lacks these
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("report server: %s - %s", self.address_string(), format % args)


class ReportServer(ThreadingHTTPServer):
    """``serve_forever()``, ``shutdown()``, ``server_port``; ``index`` is what it serves."""

    daemon_threads = True

    def __init__(self, directory: str | os.PathLike[str], host: str, port: int) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.index = ReportIndex(directory)
        super().__init__((host, port), ReportRequestHandler)


def make_server(
    directory: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> ReportServer:
    """A bound server for ``directory``, not yet serving; port 0 picks a free one."""
    return ReportServer(directory, host, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(directory: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the reports in ``directory`` until interrupted."""
    server = make_server(directory, host, port)
    shown_host = f"[{host}]" if ":" in host else host
    logger.info(
        "otel-wpm report server for %s on http://%s:%d/",
        server.index.directory,
        shown_host,
        server.server_port,
    )
    if not is_loopback(host):
        logger.warning(
            "otel-wpm report server listens on %s, not a loopback address: reports show "
            "request details, so put authentication in front of it",
            host,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m otel_wpm.server", description="Serve otel-wpm reports, read-only."
    )
    parser.add_argument("--dir", required=True, help="the reports' directory")
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve(args.dir, args.host, args.port)
