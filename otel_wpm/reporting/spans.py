"""What a slow request's spans say: what each did, time per kind, the slowest ones.

Usage (on the report thread)::

    summary = summarise_spans(slow.spans, slow.start_time, slow.duration_seconds, masker,
                              slow.spans_not_kept)
    summary.spans            # SpanRecord per span, in trace order (parents before children)
    summary.seconds_by_kind  # {"db": 0.41, "http": 0.12, "other": 0.0}
    summary.slowest          # the three slowest SpanRecords
    summary.not_kept         # spans past the limit, counted only

A span is a database call (``db``) when it has ``db.system`` or
``db.system.name``, an outgoing HTTP call (``http``) when it is a client span
with an HTTP method, and ``other`` otherwise (messaging, RPC, cache without a
``db.system``, your own spans). Only the attributes that say what happened are
shown: the database system, the statement with its literals masked
(:mod:`.statement`), the HTTP method and the URL masked by the
:class:`~otel_wpm.masking.SecretMasker`, ``server.address``, ``rpc.*`` and
``messaging.*`` (values under secret-looking names masked). A span's status
description is not shown: it is free text (an exception message) that can
quote a statement or a URL.

Time per kind is wall time on the request's time axis: an instant inside a
database call counts as ``db``, else inside an HTTP call as ``http``, else
inside any other span as ``other``; parallel or nested spans are not counted
twice, so the three add up to at most the request's duration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from ..masking import MASK, SecretMasker
from .statement import mask_statement

#: Kinds of span, in the order an instant is attributed to them.
KINDS = ("db", "http", "other")
SLOWEST_COUNT = 3

_MAX_DESCRIPTION_CHARS = 300
_MAX_STATEMENT_CHARS = 2000
_MAX_VALUE_CHARS = 300
_SHORTENED = "…"
_URL_OR_QUERY = re.compile(r"\S*(?:://|\?)\S*")

# (label, attribute names, stable convention first)
_DB_FIELDS = (
    ("system", ("db.system.name", "db.system")),
    ("database", ("db.namespace", "db.name")),
)
_STATEMENT = ("db.query.text", "db.statement")
_HTTP_METHOD = ("http.request.method", "http.method")
_HTTP_URL = ("url.full", "http.url")
_HTTP_STATUS = ("http.response.status_code", "http.status_code")
_SERVER = ("server.address", "net.peer.name")
_PORT = ("server.port", "net.peer.port")
_PREFIXES_SHOWN = ("rpc.", "messaging.")


@dataclass(frozen=True)
class SpanRecord:
    """One span of the request, masked and placed on the request's time axis."""

    name: str
    kind: str  # "db", "http" or "other"
    span_kind: str  # OpenTelemetry's: "client", "internal", "producer", ...
    description: str  # what it did: the masked statement, "GET <masked URL>", else the name
    start_seconds: float  # since the request started
    duration_seconds: float
    error: Optional[str]  # None when it did not fail; else error.type or "error"
    details: tuple[tuple[str, str], ...]  # the attributes that say what happened
    depth: int  # 0 for a child of the request, 1 for its children, ...


@dataclass(frozen=True)
class SpanSummary:
    """The spans of one request and what they add up to."""

    spans: tuple[SpanRecord, ...]
    not_kept: int
    seconds_by_kind: Mapping[str, float]
    slowest: tuple[SpanRecord, ...]

    @property
    def count(self) -> int:
        return len(self.spans) + self.not_kept

    def metadata(self) -> dict[str, Any]:
        """The ``span_seconds`` and ``slowest_spans`` fields of the report's metadata."""
        return {
            "span_seconds": {kind: round(s, 6) for kind, s in self.seconds_by_kind.items()},
            "slowest_spans": [
                {
                    "name": s.description,
                    "kind": s.kind,
                    "duration_seconds": round(s.duration_seconds, 6),
                }
                for s in self.slowest
            ],
        }


def summarise_spans(
    spans: Sequence[ReadableSpan],
    start_time: float,
    duration_seconds: float,
    masker: SecretMasker,
    not_kept: int = 0,
) -> SpanSummary:
    """Records of ``spans``, those of one request that started at ``start_time`` (seconds
    since the epoch), and their totals."""
    depths = _depths(spans)
    request_start_ns = int(start_time * 1e9)
    records = tuple(
        _record(span, request_start_ns, masker, depths[span.context.span_id])
        for span in _trace_order(spans)
    )
    slowest = sorted(records, key=lambda record: record.duration_seconds, reverse=True)
    return SpanSummary(
        spans=records,
        not_kept=not_kept,
        seconds_by_kind=time_by_kind(records, duration_seconds),
        slowest=tuple(slowest[:SLOWEST_COUNT]),
    )


# --- one span --------------------------------------------------------------------------


def kind_of(attributes: Mapping[str, Any], span_kind: str) -> str:
    """``db``, ``http`` or ``other`` (see the module docstring)."""
    if "db.system.name" in attributes or "db.system" in attributes:
        return "db"
    if span_kind == "client" and _first(attributes, _HTTP_METHOD) is not None:
        return "http"
    return "other"


def _record(
    span: ReadableSpan, request_start_ns: int, masker: SecretMasker, depth: int
) -> SpanRecord:
    attributes = span.attributes or {}
    span_kind = span.kind.name.lower()
    kind = kind_of(attributes, span_kind)
    name = _masked_name(span.name, kind, masker)
    start_ns = span.start_time or request_start_ns
    end_ns = span.end_time or start_ns
    return SpanRecord(
        name=name,
        kind=kind,
        span_kind=span_kind,
        description=_cut(_description(attributes, kind, name, masker), _MAX_DESCRIPTION_CHARS),
        start_seconds=max(0.0, (start_ns - request_start_ns) / 1e9),
        duration_seconds=max(0.0, (end_ns - start_ns) / 1e9),
        error=_error(span, attributes),
        details=tuple(_details(attributes, masker)),
        depth=depth,
    )


def _masked_name(name: str, kind: str, masker: SecretMasker) -> str:
    # Some instrumentations name a span after its statement or its URL.
    if kind == "db":
        name = mask_statement(name)
    name = _URL_OR_QUERY.sub(lambda match: masker.mask_url(match.group()), name)
    return _cut(name, _MAX_DESCRIPTION_CHARS)


def _description(attributes: Mapping[str, Any], kind: str, name: str, masker: SecretMasker) -> str:
    if kind == "db":
        statement = _first(attributes, _STATEMENT)
        return mask_statement(str(statement)) if statement is not None else name
    if kind == "http":
        url = _first(attributes, _HTTP_URL)
        method = _first(attributes, _HTTP_METHOD)
        if url is not None:
            return f"{method} {masker.mask_url(str(url))}"
    if "rpc.method" in attributes:
        return f"{attributes.get('rpc.service', '')}/{attributes['rpc.method']}"
    if "messaging.operation.name" in attributes or "messaging.operation" in attributes:
        operation = attributes.get(
            "messaging.operation.name", attributes.get("messaging.operation")
        )
        destination = attributes.get("messaging.destination.name", "")
        return f"{operation} {destination}".strip()
    return name


def _details(attributes: Mapping[str, Any], masker: SecretMasker) -> Iterable[tuple[str, str]]:
    for label, names in _DB_FIELDS:
        value = _first(attributes, names)
        if value is not None:
            yield label, _cut(str(value), _MAX_VALUE_CHARS)
    statement = _first(attributes, _STATEMENT)
    if statement is not None:
        yield "statement", _cut(mask_statement(str(statement)), _MAX_STATEMENT_CHARS)
    method = _first(attributes, _HTTP_METHOD)
    if method is not None:
        yield "method", _cut(str(method), _MAX_VALUE_CHARS)
    url = _first(attributes, _HTTP_URL)
    if url is not None:
        yield "url", _cut(masker.mask_url(str(url)), _MAX_STATEMENT_CHARS)
    status = _first(attributes, _HTTP_STATUS)
    if status is not None:
        yield "status", str(status)
    server = _first(attributes, _SERVER)
    if server is not None:
        port = _first(attributes, _PORT)
        yield "server", f"{server}:{port}" if port is not None else str(server)
    for key in sorted(attributes):
        if key.startswith(_PREFIXES_SHOWN):
            yield key, _shown_value(key, attributes[key], masker)


def _shown_value(key: str, value: Any, masker: SecretMasker) -> str:
    if masker.is_secret(key):
        return MASK
    text = str(value)
    if "://" in text:
        text = masker.mask_url(text)
    return _cut(text, _MAX_VALUE_CHARS)


def _error(span: ReadableSpan, attributes: Mapping[str, Any]) -> Optional[str]:
    if span.status.status_code is not StatusCode.ERROR:
        return None
    error_type = attributes.get("error.type")
    return _cut(str(error_type), _MAX_VALUE_CHARS) if error_type is not None else "error"


def _first(attributes: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None:
            return value
    return None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _SHORTENED


# --- the spans together ----------------------------------------------------------------


def _depths(spans: Sequence[ReadableSpan]) -> dict[int, int]:
    """Each span's depth below the request: spans whose parent is not kept are at 0."""
    parents = {
        span.context.span_id: span.parent.span_id if span.parent is not None else 0  # invalid id
        for span in spans
    }
    depths: dict[int, int] = {}
    for span_id in parents:
        chain: list[int] = []
        current = span_id
        while current in parents and current not in depths and current not in chain:
            chain.append(current)
            current = parents[current]
        depth = depths.get(current, -1)
        for link in reversed(chain):
            depth += 1
            depths[link] = depth
    return depths


def _trace_order(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """Parents before their children, siblings by start time: the order of a trace view."""
    ids = {span.context.span_id for span in spans}
    children: dict[Optional[int], list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda span: span.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    ordered: list[ReadableSpan] = []
    pending = list(reversed(children.pop(None, [])))
    while pending:
        span = pending.pop()
        ordered.append(span)
        pending.extend(reversed(children.pop(span.context.span_id, [])))
    return ordered


def time_by_kind(records: Sequence[SpanRecord], duration_seconds: float) -> dict[str, float]:
    """Wall time of the request inside spans of each kind (see the module docstring)."""
    edges: list[tuple[float, int, str]] = []
    for record in records:
        start = min(record.start_seconds, duration_seconds)
        end = min(record.start_seconds + record.duration_seconds, duration_seconds)
        if end > start:
            edges += [(start, 1, record.kind), (end, -1, record.kind)]
    edges.sort()
    totals = dict.fromkeys(KINDS, 0.0)
    open_spans = dict.fromkeys(KINDS, 0)
    previous = 0.0
    for at, change, kind in edges:
        inside = next((k for k in KINDS if open_spans[k] > 0), None)
        if inside is not None:
            totals[inside] += at - previous
        open_spans[kind] += change
        previous = at
    return totals
