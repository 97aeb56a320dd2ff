"""Read the HTTP facts of a server span, under both HTTP semantic conventions.

OpenTelemetry's instrumentations emit the old names (``http.method``,
``http.target``, ``http.status_code``) by default and the stable ones
(``http.request.method``, ``url.path``, ``http.response.status_code``) when
``OTEL_SEMCONV_STABILITY_OPT_IN=http`` (or ``http/dup``) is set. We accept
either, preferring the stable name when both are present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from .route import route_key

_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class HttpFacts:
    method: str
    path: str
    query: str
    url: str
    route: Optional[str]
    status: Optional[int]

    @property
    def route_key(self) -> str:
        """What the request is reported and grouped under (:func:`.route.route_key`)."""
        return route_key(self.route, self.path, self.status)


def _first(attributes: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attributes.get(name)
        if value not in (None, ""):
            return value
    return None


def _path_and_query(attributes: Mapping[str, Any]) -> tuple[str, str]:
    path = _first(attributes, "url.path")
    if path is not None:
        return str(path), str(_first(attributes, "url.query") or "")
    target = _first(attributes, "http.target")
    if target is not None:
        target = str(target)
        if _ABSOLUTE_FORM.match(target):
            # "GET http://user:pass@host/path HTTP/1.1" (RFC 9112, 3.2.2): the servers
            # put the whole URL in the target; the path is only its path.
            parts = urlsplit(target)
            return parts.path or "/", parts.query
        path, _, query = target.partition("?")
        return path or "/", query
    full = _first(attributes, "url.full", "http.url")
    if full is not None:
        parts = urlsplit(str(full))
        return parts.path or "/", parts.query
    return "/", ""


def _url(attributes: Mapping[str, Any], path: str, query: str) -> str:
    full = _first(attributes, "url.full", "http.url")
    if full is not None:
        return str(full)
    scheme = str(_first(attributes, "url.scheme", "http.scheme") or "http")
    host = _first(attributes, "server.address", "http.host", "net.host.name", "http.server_name")
    suffix = f"?{query}" if query else ""
    if host is None:
        return f"{path}{suffix}"
    port = _port(_first(attributes, "server.port", "net.host.port"))
    return f"{scheme}://{_authority(scheme, str(host), port)}{path}{suffix}"


def _port(value: Any) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None  # not a port: left out of the URL rather than failing the report


def _authority(scheme: str, host: str, port: Optional[int]) -> str:
    if host.count(":") > 1 and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    elif ":" in host and not host.startswith("["):
        return host  # "host:port", as the Host header gives it
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return host
    return f"{host}:{port}"


def _status(attributes: Mapping[str, Any]) -> Optional[int]:
    value = _first(attributes, "http.response.status_code", "http.status_code")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _method(attributes: Mapping[str, Any]) -> str:
    method = str(_first(attributes, "http.request.method", "http.method") or "GET")
    if method == "_OTHER":  # the stable convention's word for a method it does not know
        return str(_first(attributes, "http.request.method_original") or method)
    return method


def http_facts(attributes: Optional[Mapping[str, Any]]) -> HttpFacts:
    """The HTTP facts of a span from its attributes; missing ones get neutral values."""
    attributes = attributes or {}
    path, query = _path_and_query(attributes)
    route = _first(attributes, "http.route")
    return HttpFacts(
        method=_method(attributes),
        path=path,
        query=query,
        url=_url(attributes, path, query),
        route=str(route) if route is not None else None,
        status=_status(attributes),
    )


def is_websocket(attributes: Optional[Mapping[str, Any]]) -> bool:
    """Whether a server span is a WebSocket connection (ASGI): it lasts as long as the
    connection, so its duration says nothing about a slow request.

    The scheme says so ("ws", "wss") when the server puts one in the scope. The ASGI
    spec makes it optional for WebSockets and daphne leaves it out: then the span is
    one with a path but no method, which every HTTP request has and a WebSocket lacks.
    """
    attributes = attributes or {}
    scheme = _first(attributes, "url.scheme", "http.scheme")
    if scheme is not None:
        return scheme in ("ws", "wss")
    has_path = _first(attributes, "url.path", "http.target") is not None
    return has_path and _first(attributes, "http.request.method", "http.method") is None


# RFC 9110 gives content in these requests no meaning; clients do not send any.
_METHODS_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NAMES_WITHOUT_BODY = tuple(f"{method} " for method in sorted(_METHODS_WITHOUT_BODY))


#: How the names of the spans OpenTelemetry's ASGI middleware makes for each message the
#: app sends or receives end ("GET /items/{id} http send"): told by name, as attributes
#: cost more to read on the request path.
ASGI_MESSAGE_SPANS = (" http send", " http receive", " websocket send", " websocket receive")


def may_carry_body(span: Any) -> bool:
    """Whether a request span's method can carry a body (True when it is unknown).

    Both conventions name a server span ``{method} {target}`` or ``{method}``, so
    the name answers first: it runs on every request, and reading an attribute
    through the SDK's mapping costs ten times as much. A name that starts with no
    known method ("HTTP" for an unknown one, a custom name) defers to the attributes.
    """
    name = span.name
    if name.startswith(_NAMES_WITHOUT_BODY):  # the common case, without allocating
        return False
    method = name.partition(" ")[0]
    if method in _METHODS_WITHOUT_BODY:
        return False
    if method in _METHODS_WITH_BODY:
        return True
    attributes = span.attributes or {}
    method = attributes.get("http.request.method") or attributes.get("http.method")
    return method not in _METHODS_WITHOUT_BODY
