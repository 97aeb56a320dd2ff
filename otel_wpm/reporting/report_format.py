"""The report file format: how reports are named, and the metadata each one embeds.

Usage::

    from otel_wpm.reporting.report_format import (
        metadata_element, read_metadata, report_file_name, scan,
    )

    name = report_file_name(started_at, "GET", "/users/<id>", trace_id, span_id, in_flight=False)
    # "20240501T120000Z_GET_users-id_<trace_id>_<span_id>.html"
    page = "<html><head>" + metadata_element({"route": "/users/<id>", ...}) + ...
    for report in scan("performance_reports"):
        meta = read_metadata(report.path)     # raises UnreadableMetadata

The report thread writes both; the report server (:mod:`otel_wpm.server`) and
retention read them. Retention deletes only files whose names match (and the
temporary files a writer killed mid-write left behind) and the server serves
only those, so alerts, de-duplication stores and anything else in the
directory are never touched or exposed.

The metadata is a JSON object in a ``<script type="application/json">``
element, written near the top of the page. Readers look for it in the first
:data:`METADATA_READ_BYTES` of the file; the writer shortens long text in it so
the element never takes more than :data:`METADATA_MAX_BYTES` (the report's own
sections keep everything). What it reads is checked field by field, so a
damaged or hostile file cannot hand a reader an absurd number or text that is
not valid Unicode.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

# --- file names ------------------------------------------------------------------------

REPORT_FILE_PATTERN = re.compile(
    r"\A(?P<stamp>\d{8}T\d{6}Z)_(?P<method>[A-Za-z0-9-]{1,10})_(?P<route>[A-Za-z0-9-]{1,60})"
    r"_(?P<trace_id>[0-9a-f]{32})_(?P<span_id>[0-9a-f]{16})(?P<running>_running)?\.html\Z"
)

_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_TEMPORARY_FILE_PATTERN = re.compile(r"\A\.(?P<report>.+)\.\d+\.tmp\Z")
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9]+")


def _slug(text: str, limit: int) -> str:
    return _UNSAFE_NAME_CHARACTERS.sub("-", text).strip("-")[:limit] or "root"


def report_file_name(
    started_at: datetime, method: str, route: str, trace_id: str, span_id: str, in_flight: bool
) -> str:
    """A file name safe on every OS: no separators, no dots but the extension."""
    stamp = started_at.astimezone(timezone.utc).strftime(_STAMP_FORMAT)
    suffix = "_running" if in_flight else ""
    return f"{stamp}_{_slug(method, 10)}_{_slug(route, 60)}_{trace_id}_{span_id}{suffix}.html"


def is_report_file(name: str) -> bool:
    return REPORT_FILE_PATTERN.match(name) is not None


def temporary_name(report_name: str, pid: int) -> str:
    """Where a process writes a report before renaming it into place."""
    return f".{report_name}.{pid}.tmp"


def is_temporary_file(name: str) -> bool:
    match = _TEMPORARY_FILE_PATTERN.match(name)
    return match is not None and is_report_file(match["report"])


def trace_id_of(name: str) -> Optional[str]:
    match = REPORT_FILE_PATTERN.match(name)
    return match["trace_id"] if match else None


def metadata_from_name(name: str) -> dict[str, Any]:
    """What a report's file name tells, for when its embedded metadata cannot be read."""
    match = REPORT_FILE_PATTERN.match(name)
    if match is None:
        raise ValueError(f"not a report file name: {name!r}")
    meta: dict[str, Any] = {
        "method": match["method"],
        "route": match["route"],
        "trace_id": match["trace_id"],
        "span_id": match["span_id"],
        "in_flight": bool(match["running"]),
    }
    started = _started(match["stamp"])
    if started is not None:
        meta["start_time"] = started.isoformat()
    return meta


def _started(stamp: str) -> Optional[datetime]:
    try:
        return datetime.strptime(stamp, _STAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:  # digits, but not a date (month 13)
        return None


# --- listing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFile:
    """One stored report: its file name, when it was last written, and its size."""

    name: str
    mtime: float  # seconds since the epoch
    size: int


def scan(
    directory: str | os.PathLike[str], matches: Callable[[str], bool] = is_report_file
) -> list[ReportFile]:
    """The report files (or other ``matches``) directly in ``directory``, if it exists."""
    reports = []
    folder = Path(directory)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not matches(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        reports.append(ReportFile(entry.name, stat.st_mtime, stat.st_size))
    return reports


# --- embedded metadata -----------------------------------------------------------------

METADATA_ELEMENT_ID = "otel-wpm-report"
#: How much of a report readers look through for the metadata element.
METADATA_READ_BYTES = 16 * 1024
#: The most the element takes; the rest of the read limit is for what precedes it.
METADATA_MAX_BYTES = 8 * 1024

_METADATA_START = f'<script type="application/json" id="{METADATA_ELEMENT_ID}">'
_METADATA_END = "</script>"
_SHORTENED = "…"
_MAX_SECONDS = 1e9


class UnreadableMetadata(ValueError):
    """A report whose metadata is missing, damaged or not what the writer writes."""


def _json(meta: Mapping[str, Any]) -> str:
    # ASCII only, and "<" escaped so no value can close the script element
    return json.dumps(meta, ensure_ascii=True).replace("<", "\\u003c")


def _shortened(value: Any, limit: int) -> Any:
    """``value`` with every text in it (also in lists and objects) cut to ``limit``."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[: max(limit - 1, 0)] + _SHORTENED
    if isinstance(value, Mapping):
        return {key: _shortened(item, limit) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shortened(item, limit) for item in value]
    return value


def _longest_text(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return max((_longest_text(item) for item in value), default=0)
    return 0


def metadata_element(meta: Mapping[str, Any]) -> str:
    """The ``<script>`` element carrying ``meta``, at most :data:`METADATA_MAX_BYTES` long.

    Text values, also those inside lists and objects, are cut (ending in "…"),
    the longest first, until it fits.
    """
    limit = _longest_text(meta)
    payload = _json(meta)
    overhead = len(_METADATA_START) + len(_METADATA_END)
    while overhead + len(payload) > METADATA_MAX_BYTES and limit > 0:
        limit //= 2
        payload = _json(_shortened(meta, limit))
    return _METADATA_START + payload + _METADATA_END


def _is_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")  # a lone surrogate ("\ud800") cannot be
    except UnicodeEncodeError:
        return False
    return True


def _is_seconds(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        seconds = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return False
    return math.isfinite(seconds) and 0 <= seconds <= _MAX_SECONDS


def _is_status(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 999


def _is_flag(value: Any) -> bool:
    return isinstance(value, bool)


#: The most entries a list or object in the metadata may have.
MAX_METADATA_ITEMS = 20


def _is_seconds_by_kind(value: Any) -> bool:
    """``{"db": 0.4, "http": 0.1, "other": 0.0}``: seconds by a short name."""
    return (
        isinstance(value, dict)
        and len(value) <= MAX_METADATA_ITEMS
        and all(_is_text(kind) and len(kind) <= 40 for kind in value)
        and all(_is_seconds(seconds) for seconds in value.values())
    )


class _Records:
    """A list of objects; each must have ``required``, and keeps only the keys it knows."""

    def __init__(self, required: str, **fields: Callable[[Any], bool]) -> None:
        self.required = required
        self.fields = fields

    def __call__(self, value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) <= MAX_METADATA_ITEMS
            and all(self._is_record(item) for item in value)
        )

    def _is_record(self, item: Any) -> bool:
        return (
            isinstance(item, dict)
            and item.get(self.required) is not None
            and all(item.get(key) is None or ok(item[key]) for key, ok in self.fields.items())
        )

    def known(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {key: record[key] for key in self.fields if record.get(key) is not None}
            for record in records
        ]


#: What a reader accepts for each field; each may also be null or absent.
#: The fields after ``in_flight`` say where a request's time went; reports
#: written before they existed lack them.
METADATA_FIELDS: dict[str, Callable[[Any], bool]] = {
    "service": _is_text,
    "host": _is_text,
    "method": _is_text,
    "route": _is_text,
    "url": _is_text,
    "status": _is_status,
    "duration_seconds": _is_seconds,
    "threshold_seconds": _is_seconds,
    "start_time": _is_text,
    "trace_id": _is_text,
    "span_id": _is_text,
    "trace_url": _is_text,
    "in_flight": _is_flag,
    # the request thread's own CPU time, and the rest of its duration
    "cpu_seconds": _is_seconds,
    "wait_seconds": _is_seconds,
    # time in the request's spans by kind: "db", "http", "other"
    "span_seconds": _is_seconds_by_kind,
    # the slowest spans, slowest first
    "slowest_spans": _Records("name", name=_is_text, kind=_is_text, duration_seconds=_is_seconds),
    # the application functions with the most time, heaviest first
    "top_frames": _Records("function", function=_is_text, location=_is_text, seconds=_is_seconds),
}


def parse_metadata(head: bytes) -> dict[str, Any]:
    """The metadata in the first bytes of a report: the fields it knows, each checked.

    Raises :class:`UnreadableMetadata` saying what is wrong.
    """
    start_tag = _METADATA_START.encode()
    start = head.find(start_tag)
    if start < 0:
        raise UnreadableMetadata(f"no metadata element in the first {len(head)} bytes")
    start += len(start_tag)
    end = head.find(_METADATA_END.encode(), start)
    if end < 0:
        raise UnreadableMetadata(f"metadata element not closed in the first {len(head)} bytes")
    try:
        raw = json.loads(head[start:end])
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise UnreadableMetadata(f"metadata is not JSON ({type(err).__name__})") from None
    if not isinstance(raw, dict):
        raise UnreadableMetadata("metadata is not a JSON object")
    meta: dict[str, Any] = {}
    for key, is_valid in METADATA_FIELDS.items():
        value = raw.get(key)
        if value is None:
            continue
        if not is_valid(value):
            raise UnreadableMetadata(f"metadata field {key} has an invalid value")
        meta[key] = is_valid.known(value) if isinstance(is_valid, _Records) else value
    return meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata embedded in the report at ``path`` (see :func:`parse_metadata`)."""
    with open(path, "rb") as stream:
        return parse_metadata(stream.read(METADATA_READ_BYTES))
