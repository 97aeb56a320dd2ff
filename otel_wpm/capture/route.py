"""The route a request is grouped under: its template, else a stand-in.

Usage::

    from otel_wpm.capture.route import normalised_path, route_key, route_template

    route_template(environ)             # "/items/<int:item_id>" after Flask routed it
    normalised_path("/orders/42/lines/9f8e7d6c5b4a39281706")  # "/orders/{id}/lines/{id}"
    route_key(None, "/wp-login.php", 404)                   # "(no route: 404)"

Reports, report file names, alerts and their de-duplication all use
:func:`route_key`, so one slow endpoint is one alert however many ids it is
called with, and scanners probing paths that do not exist are one alert too.

Where a template comes from, under every way in:

* an instrumentation that sets ``http.route`` on the span (FlaskInstrumentor,
  DjangoInstrumentor, ``opentelemetry-instrument``): that attribute;
* Flask under any other WSGI middleware: werkzeug puts the request object in
  the environ (``environ["werkzeug.request"]``), and Flask puts the matched
  rule on it (``url_rule.rule``). Flask takes it out again when the request
  ends, so the template is read while the request runs (by the sampler, which
  looks at every request that runs long);
* Django under any other WSGI middleware: its request is not in the environ,
  so :func:`keep_framework_request` puts it there while it is on the stack;
  its ``resolver_match`` has the route;
* Starlette and FastAPI (an ASGI scope in place of the environ): the route they
  matched is in the scope (``scope["route"].path_format``, as OpenTelemetry's
  ASGI middleware reads it for its metrics).

A request that ends before the sampler looked at it (one that crossed the
threshold within a sampling tick of ending) gets the template only from
``http.route`` or from Django.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from itertools import islice
from types import FrameType
from typing import Any, Optional

from .asgi import looks_like_scope, scope_route

#: Where :func:`keep_framework_request` leaves a framework request found on the stack.
FRAMEWORK_REQUEST_KEY = "otel_wpm.framework_request"
#: Statuses that mean "no route matched" when no template is known.
NO_ROUTE_STATUSES = frozenset({404, 405})
ID_PLACEHOLDER = "{id}"

_MAX_FRAMES_TO_SEARCH = 64
_NUMBER = re.compile(r"[0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")
_LONG_HEX = re.compile(r"(?=[a-fA-F]*[0-9])[0-9a-fA-F]{8,}")
# A token-like segment (base64, base64url, a JWT, an API key): long, with digits and
# letters, and either an upper case letter or no separators. Slugs
# ("my-first-post-2024") are lower case with dashes and stay as they are.
_BASE64_LIKE = re.compile(
    r"(?=.*[0-9])(?=.*[A-Za-z])(?=.*[A-Z]|[a-z0-9+=]+$)[A-Za-z0-9_\-+=.~]{20,}"
)


def route_template(environ: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The template of the route the framework matched for this request (its WSGI
    environ or ASGI scope), if any."""
    if not environ:
        return None
    if looks_like_scope(environ):
        return scope_route(environ)
    flask_rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
    rule = getattr(flask_rule, "rule", None)
    if isinstance(rule, str) and rule:
        return rule
    match = getattr(environ.get(FRAMEWORK_REQUEST_KEY), "resolver_match", None)
    route = getattr(match, "route", None)  # Django's ResolverMatch
    if isinstance(route, str) and route:
        return route
    return None


def keep_framework_request(environ: MutableMapping[str, Any], frames: Iterable[FrameType]) -> None:
    """Put the Django request serving ``environ`` into it, if one is on ``frames``.

    Django keeps its request (and the route it resolved) off the environ, and
    once the request has ended it is no longer on any stack. ``frames`` (innermost
    first) may be another thread's: the sampler passes the frames a request runs.
    """
    if FRAMEWORK_REQUEST_KEY in environ or "werkzeug.request" in environ:
        return
    for frame in islice(frames, _MAX_FRAMES_TO_SEARCH):
        if "request" in frame.f_code.co_varnames:
            candidate = frame.f_locals.get("request")
            if getattr(candidate, "environ", None) is environ and hasattr(
                candidate, "resolver_match"
            ):
                environ[FRAMEWORK_REQUEST_KEY] = candidate
                return


def _normalised_segment(segment: str) -> str:
    for pattern in (_NUMBER, _UUID, _LONG_HEX, _BASE64_LIKE):
        if pattern.fullmatch(segment):
            return ID_PLACEHOLDER
    return segment


def normalised_path(path: str) -> str:
    """``path`` with each segment that looks like an id replaced by ``{id}``.

    Ids are numbers, UUIDs, hex strings of 8 characters or more with a digit,
    and token-like segments (20 characters or more of the base64 alphabet,
    with a digit and a letter, and an upper case letter or no separators).
    """
    return "/".join(_normalised_segment(segment) for segment in path.split("/"))


def matched_no_route(template: Optional[str], status: Optional[int]) -> bool:
    """Whether the request was answered without a route (404, or 405 without a template)."""
    return not template and status in NO_ROUTE_STATUSES


def route_key(template: Optional[str], path: str, status: Optional[int]) -> str:
    """What a request is reported and grouped under.

    The template when known; ``(no route: 404)`` for a request no route matched;
    else the path with its ids replaced (:func:`normalised_path`).
    """
    if template:
        return template
    if matched_no_route(template, status):
        return f"{_NO_ROUTE_PREFIX}{status})"
    return normalised_path(path)


_NO_ROUTE_PREFIX = "(no route: "


def is_no_route_key(key: str) -> bool:
    """Whether :func:`route_key` gave ``key`` to a request no route matched."""
    return key.startswith(_NO_ROUTE_PREFIX)
