"""Capture what a request carried (headers, query, body) without disturbing the app.

The body is never read by us: :class:`RecordingInput` replaces ``wsgi.input``
and keeps a copy of the first bytes *the application* reads, so the app gets
exactly the bytes it would have got without the monitor, when it wants them.

Finding the WSGI environ: a span processor only sees the span, so we look up a
call stack for the nearest frame with a variable named ``environ`` holding a
WSGI environ. Every WSGI server, framework and OpenTelemetry WSGI/Flask/Django
instrumentation has one on the stack while a request runs. An ASGI request's
``scope`` is found the same way (:func:`find_request`), on the frames of the
task serving it; its body is recorded by the facade (:mod:`.asgi`). Walking a
stack costs microseconds, so the request thread does it only where it must: at the start of
a request that can carry a body (to put the recorder in place before the app
reads it), and at the end of a slow request the sampler never looked at. For
every other slow request the sampler thread finds the environ on the request's
stack when it first samples it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from types import FrameType
from typing import Any, Optional

from typing_extensions import TypeGuard

from .asgi import looks_like_scope, scope_headers, scope_query
from .body import BodyCopy
from .frames import callers

_MAX_FRAMES_TO_SEARCH = 64
_HEADER_NAMES_WITHOUT_PREFIX = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}


class RecordingInput(BodyCopy):
    """A ``wsgi.input`` stand-in that remembers up to ``limit`` bytes of what was read.

    A drop-in for the stream it wraps: reading, iterating (``for line in``,
    ``next()``) and ``with`` work as on the stream, and every other attribute is
    the stream's own. Wrapping an ``io`` stream gives an instance of the same
    ``io`` base class (:func:`start_recording` picks it).
    """

    def __init__(self, stream: Any, limit: int) -> None:
        super().__init__(limit)
        self._stream = stream

    def read(self, *args: Any) -> bytes:
        return self._keep(self._stream.read(*args))

    def read1(self, *args: Any) -> bytes:
        return self._keep(self._stream.read1(*args))

    def readline(self, *args: Any) -> bytes:
        return self._keep(self._stream.readline(*args))

    def readinto(self, buffer: Any) -> int:
        return self._read_into(buffer, "readinto", "read")

    def readinto1(self, buffer: Any) -> int:
        return self._read_into(buffer, "readinto1", "read1")

    def _read_into(self, buffer: Any, into_method: str, read_method: str) -> int:
        view = memoryview(buffer).cast("B")
        if hasattr(self._stream, into_method):
            count = getattr(self._stream, into_method)(view)
        else:
            data = getattr(self._stream, read_method)(len(view))
            count = len(data)
            view[:count] = data
        if count:
            self._keep(bytes(view[:count]))
        return count or 0

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._keep(line) for line in self._stream.readlines(*args)]

    def __iter__(self) -> Iterator[bytes]:
        lines = iter(self._stream)
        if lines is self._stream:  # the stream is its own iterator (io streams are)
            return self
        return (self._keep(line) for line in lines)

    def __next__(self) -> bytes:
        return self._keep(next(self._stream))

    def __enter__(self) -> RecordingInput:
        enter = getattr(self._stream, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        exit_ = getattr(self._stream, "__exit__", None)
        if exit_ is not None:
            return exit_(*exc_info)
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _RecordingRawIO(RecordingInput):
    """Records an ``io.RawIOBase`` stream."""


class _RecordingBufferedIO(RecordingInput):
    """Records an ``io.BufferedIOBase`` stream (a server's socket file, ``BytesIO``)."""


class _RecordingIO(RecordingInput):
    """Records another ``io.IOBase`` stream."""


# Registered, not inherited: io's base classes would bring their own methods (and a
# finaliser that closes the stream) in front of the stream's.
io.RawIOBase.register(_RecordingRawIO)
io.BufferedIOBase.register(_RecordingBufferedIO)
io.IOBase.register(_RecordingIO)
_RECORDERS_BY_KIND = (
    (io.RawIOBase, _RecordingRawIO),
    (io.BufferedIOBase, _RecordingBufferedIO),
    (io.IOBase, _RecordingIO),
)


def _recorder_class(stream: Any) -> type[RecordingInput]:
    for kind, recorder in _RECORDERS_BY_KIND:
        if isinstance(stream, kind):
            return recorder
    return RecordingInput


def _looks_like_environ(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and "wsgi.input" in value and "REQUEST_METHOD" in value


def find_wsgi_environ(frame: Optional[FrameType] = None) -> Optional[dict[str, Any]]:
    """The WSGI environ on the stack of ``frame`` (default: the caller's), if there is one.

    ``frame`` may belong to another thread: the sampler passes the frame a request
    thread is running.
    """
    found = find_request(callers(frame or sys._getframe(1)))
    return found if _looks_like_environ(found) else None


def _has_name(code: Any, name: str) -> bool:
    # werkzeug's server keeps environ in a closure cell, hence the cell and free names.
    return name in code.co_varnames or name in code.co_cellvars + code.co_freevars


def find_request(frames: Iterable[FrameType]) -> Optional[dict[str, Any]]:
    """The WSGI environ or ASGI scope nearest the innermost of ``frames``, if any.

    ``frames`` (innermost first) may belong to another thread or to a suspended task:
    the sampler passes the frames a request runs.
    """
    for frame in islice(frames, _MAX_FRAMES_TO_SEARCH):
        # Names are cheap tuple lookups; f_locals is only built for likely frames.
        code = frame.f_code
        if _has_name(code, "environ"):
            candidate = frame.f_locals.get("environ")
            if _looks_like_environ(candidate):
                return candidate
        if _has_name(code, "scope"):
            candidate = frame.f_locals.get("scope")
            if looks_like_scope(candidate):
                return candidate
        if _has_name(code, "request"):
            candidate = _django_asgi_scope(frame.f_locals.get("request"))
            if candidate is not None:
                return candidate
    return None


def _django_asgi_scope(request: Any) -> Optional[dict[str, Any]]:
    """The scope of a Django request served over ASGI: its middleware that is not
    async-capable (OpenTelemetry's) runs in a worker thread, where no ``scope`` is."""
    handlers = sys.modules.get("django.core.handlers.asgi")
    request_type = getattr(handlers, "ASGIRequest", None)
    if not isinstance(request_type, type) or not isinstance(request, request_type):
        return None
    scope = vars(request).get("scope")
    return scope if looks_like_scope(scope) else None


def start_recording(environ: dict[str, Any], limit: int) -> Optional[RecordingInput]:
    """Put a :class:`RecordingInput` in front of ``wsgi.input`` (once per environ)."""
    current = environ.get("wsgi.input")
    if isinstance(current, RecordingInput):
        return current
    if current is None or limit <= 0:
        return None
    recorder = _recorder_class(current)(current, limit)
    environ["wsgi.input"] = recorder
    return recorder


@dataclass(frozen=True)
class RawRequest:
    """A copy of the request data taken when the span ends; masked only when rendered."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    query: str = ""
    content_type: str = ""
    body: bytes = b""
    body_bytes_read: int = 0
    body_truncated: bool = False


def _headers_of(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), str(value)))
        elif key in _HEADER_NAMES_WITHOUT_PREFIX:
            headers.append((_HEADER_NAMES_WITHOUT_PREFIX[key], str(value)))
    return sorted(headers)


def snapshot(environ: Optional[dict[str, Any]], recorder: Any, with_headers: bool) -> RawRequest:
    """Copy what the report needs out of the WSGI environ or ASGI scope before the server
    reuses it; ``recorder`` is a :class:`RecordingInput` or an ASGI ``RecordingReceive``."""
    if environ is None:
        return RawRequest()
    if looks_like_scope(environ):
        headers = scope_headers(environ)
        query = scope_query(environ)
        content_type = next((v for k, v in headers if k == "Content-Type"), "")
    else:
        headers = _headers_of(environ)
        query = str(environ.get("QUERY_STRING", ""))
        content_type = str(environ.get("CONTENT_TYPE", ""))
    return RawRequest(
        headers=headers if with_headers else [],
        query=query,
        content_type=content_type,
        body=recorder.kept if recorder else b"",
        body_bytes_read=recorder.bytes_read if recorder else 0,
        body_truncated=recorder.truncated if recorder else False,
    )
