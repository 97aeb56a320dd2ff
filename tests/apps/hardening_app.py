"""A WSGI app and helpers for the hardening tests (bad requests, faults, secrets, gunicorn).

The app (:func:`make_app`) answers every path and method:

* it reads the request body the way the ``X-Read-Style`` header asks (``all``,
  ``chunks``, ``lines``, ``iter``, ``readinto``, ``direct``) and answers
  ``{"sha256": ..., "length": ...}`` of what it read, with the trace id of its
  server span in ``X-Trace-Id``; a read error gives 400 ``{"error": <class name>}``;
* ``X-Slow: <seconds>`` makes it sleep that long after reading (a slow request);
* ``X-Started-File: <path>`` makes it create that file first (for tests in another process);
* ``X-Block: <name>`` makes it wait on ``gates.release(name)`` after setting
  ``gates.started(name)`` (a request that runs until the test lets it go).

Tests watch it with :mod:`apps.watched` (under a config, or unwatched as the
"OpenTelemetry only" baseline). Run by gunicorn as ``apps.hardening_app:gunicorn_app``
(``tests/test_hardening_gunicorn.py``, ``bench/soak.py``), each worker watches it as
an application would, under ``WPM_*`` variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Optional

from apps.helpers import DEADLINE_SECONDS, Gates
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_trace_id
from werkzeug.wsgi import get_input_stream

from otel_wpm import Config, ProfilingSpanProcessor

READ_STYLES = ("all", "chunks", "lines", "iter", "readinto", "direct")

StartResponse = Callable[..., Any]


def _content_length(environ: dict[str, Any]) -> Optional[int]:
    try:
        value = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return value if value >= 0 else None


def _read_until_empty(read: Callable[[], bytes]) -> bytes:
    """Call ``read`` until it returns nothing; everything it returned, joined."""
    parts: list[bytes] = []
    while True:
        part = read()
        if not part:
            return b"".join(parts)
        parts.append(part)


def read_body(environ: dict[str, Any], style: str) -> bytes:
    """Read the request body as an application would, in one of several ways."""
    if style == "direct":
        # Straight from wsgi.input, trusting Content-Length like many small apps do.
        length = _content_length(environ)
        if environ.get("wsgi.input_terminated"):
            return bytes(environ["wsgi.input"].read())
        return bytes(environ["wsgi.input"].read(length)) if length else b""
    stream = get_input_stream(environ)
    if style == "all":
        return bytes(stream.read())
    if style == "chunks":
        return _read_until_empty(lambda: stream.read(997))
    if style == "lines":
        return _read_until_empty(lambda: stream.readline(4096))
    if style == "iter":
        return b"".join(stream)
    if style == "readinto":
        buffer = bytearray(1500)
        chunks: list[bytes] = []
        while True:
            count = stream.readinto(buffer)  # type: ignore[attr-defined]
            if not count:
                return b"".join(chunks)
            chunks.append(bytes(buffer[:count]))
    raise ValueError(f"unknown read style {style!r}")


def make_app(gates: Optional[Gates] = None) -> Callable[[dict[str, Any], StartResponse], Any]:
    gates = gates or Gates()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        span_context = trace.get_current_span().get_span_context()
        trace_id = format_trace_id(span_context.trace_id) if span_context.is_valid else ""
        style = environ.get("HTTP_X_READ_STYLE", "all")
        answer: dict[str, Any]
        try:
            body = read_body(environ, style if style in READ_STYLES else "all")
        except Exception as error:  # noqa: BLE001 - the answer says what failed
            status, answer = "400 Bad Request", {"error": type(error).__name__}
        else:
            status = "200 OK"
            answer = {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
        started_file = environ.get("HTTP_X_STARTED_FILE")
        if started_file:  # tells a test in another process that the request is running
            Path(started_file).touch()
        slow = environ.get("HTTP_X_SLOW")
        if slow:
            time.sleep(float(slow))
        block = environ.get("HTTP_X_BLOCK")
        if block:
            gates.started(block).set()
            gates.release(block).wait(DEADLINE_SECONDS)
        payload = json.dumps(answer).encode()
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("X-Trace-Id", trace_id),
                ("X-Pid", str(os.getpid())),
            ],
        )
        return [payload]

    return app


# --- raw HTTP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    base_url: str, data: bytes, half_close: bool = False, timeout: float = DEADLINE_SECONDS
) -> Optional[RawResponse]:
    """Send ``data`` as is and read one response; None if the server closed without one.

    ``half_close`` shuts our sending side after the data, so a server waiting for
    more body bytes than were sent sees the end of the stream.
    """
    import http.client

    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed; read what it said
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            body = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        except http.client.IncompleteRead as error:
            body = error.partial
        return RawResponse(response.status, dict(response.getheaders()), body)


# --- reading reports ---------------------------------------------------------------------


class ParsedReport(HTMLParser):
    """Every start tag of a report page, with its attributes, and the text in it."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, Optional[str]]]]] = []
        self.text_parts: list[str] = []
        self.scripts: dict[str, str] = {}
        self._script_id: Optional[str] = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "script":
            self._script_id = dict(attrs).get("id") or f"script-{len(self.tags)}"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script_id = None

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)
        if self._script_id is not None:
            self.scripts[self._script_id] = self.scripts.get(self._script_id, "") + data

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def tag_names(self) -> set[str]:
        return {tag for tag, _ in self.tags}

    def attribute_names(self) -> set[str]:
        return {name for _, attrs in self.tags for name, _ in attrs}

    def metadata(self) -> dict[str, Any]:
        return dict(json.loads(self.scripts["otel-wpm-report"]))


def reports_of(directory: Path, trace_id: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"*_{trace_id}_*.html"))


def alert_lines(directory: Path) -> list[dict[str, Any]]:
    path = directory / "alerts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class LogRecords(logging.Handler):
    """Keeps the records of a logger (and its children) while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock2:
            self.records.append(record)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        with self._lock2:
            return [r for r in self.records if r.levelno >= level]

    def messages(self) -> list[str]:
        with self._lock2:
            records = list(self.records)
        return [_formatted(r) for r in records]

    def clear(self) -> None:
        with self._lock2:
            self.records.clear()


def _formatted(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text


@contextlib.contextmanager
def recording_logs(name: str = "otel_wpm") -> Iterator[LogRecords]:
    handler = LogRecords()
    target = logging.getLogger(name)
    target.addHandler(handler)
    try:
        yield handler
    finally:
        target.removeHandler(handler)


# --- gunicorn entry point ------------------------------------------------------------------

_gunicorn_state: dict[int, tuple[Any, ProfilingSpanProcessor]] = {}
_gunicorn_lock = threading.Lock()


def gunicorn_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The app monitored with ``Config.from_env()``, built once per worker process.

    ``/pid`` answers the worker's pid and ``/stats`` its processor's ``get_stats()``
    (with ``pid``), both without going through the middleware.
    """
    with _gunicorn_lock:  # the first requests of a worker arrive on several threads at once
        state = _gunicorn_state.get(os.getpid())
        if state is None:
            # Built as an application would be, not with apps.watched: no exporter keeping
            # every span in memory (bench/soak.py sends hundreds of thousands of requests).
            provider = TracerProvider()  # registers its shutdown at exit, as by default
            processor = ProfilingSpanProcessor(Config.from_env())
            provider.add_span_processor(processor)
            wsgi = OpenTelemetryMiddleware(make_app(), tracer_provider=provider)
            state = _gunicorn_state[os.getpid()] = (wsgi, processor)
    wsgi, processor = state
    path = environ.get("PATH_INFO")
    if path in ("/pid", "/stats"):
        answer: Any = (
            os.getpid() if path == "/pid" else {"pid": os.getpid(), **processor.get_stats()}
        )
        payload = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Length", str(len(payload)))])
        return [payload]
    return wsgi(environ, start_response)
