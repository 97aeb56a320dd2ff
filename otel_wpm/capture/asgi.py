"""What an ASGI request carried: its scope, and a copy of the body the app received.

Usage (the facade's ASGI middleware, :mod:`otel_wpm.monitor`)::

    recorder = RecordingReceive(receive, limit=4096)
    token = recording_receive.set(recorder)   # the processor finds it from on_start
    try:
        await app(scope, recorder, send)       # the app gets every message unchanged
    finally:
        recording_receive.reset(token)

The body is never read by us: :class:`RecordingReceive` passes every message the
application asks for through untouched and keeps a copy of the first bytes of
its ``http.request`` bodies. The scope itself is found on the request's frames,
like a WSGI environ (:func:`otel_wpm.capture.request.find_request`).
"""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from contextvars import ContextVar
from typing import Any, Callable, Optional

from typing_extensions import TypeGuard

from .body import BodyCopy

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class RecordingReceive(BodyCopy):
    """An ASGI ``receive`` that remembers up to ``limit`` bytes of the request body."""

    def __init__(self, receive: Receive, limit: int) -> None:
        super().__init__(limit)
        self._receive = receive

    async def __call__(self) -> Message:
        message = await self._receive()
        if message.get("type") == "http.request":
            self._keep(message.get("body") or b"")
        return message


#: The recorder of the request the current task serves, set by the facade's middleware.
recording_receive: ContextVar[Optional[RecordingReceive]] = ContextVar(
    "otel_wpm_recording_receive", default=None
)


def looks_like_scope(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and value.get("type") == "http" and "headers" in value


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def scope_headers(scope: dict[str, Any]) -> list[tuple[str, str]]:
    """The request headers of an ASGI scope, named as in a WSGI environ (``Content-Type``)."""
    headers = []
    for pair in scope.get("headers") or ():
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        headers.append((_text(name).title(), _text(value)))
    return sorted(headers)


def scope_query(scope: dict[str, Any]) -> str:
    return _text(scope.get("query_string") or b"")


def scope_route(scope: dict[str, Any]) -> Optional[str]:
    """The route template the framework matched (``/orders/{order_id}``), if it says.

    Starlette and FastAPI put the matched route in the scope; OpenTelemetry's ASGI
    middleware reads it the same way, but only for its metrics.
    """
    template = getattr(scope.get("route"), "path_format", None)
    if not isinstance(template, str) or not template:
        return None
    return f"{scope.get('root_path') or ''}{template}"
