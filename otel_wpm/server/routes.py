"""Reports grouped by route: how often each is slow, how slow, and where its time goes.

Usage::

    from otel_wpm.server.routes import summarise, recurring

    for route in summarise(snapshot.entries).values():   # one RouteSummary per route
        print(route.key.route, route.count, route.p95, route.cpu_share)
    frames = recurring(entries_of_one_route, "top_frames", ("function", "location"), "seconds")
    # frames[0].first_in: in how many reports it is the top frame

A route is a (service, method, route) triple taken from the reports'
metadata. Each slow request counts once: a report written while a request was
still running is left out once the request's final report exists. Reports
whose metadata could not be read are not counted (the report list shows them).
Every number here comes from fields a report may lack (reports written before
the field existed, or by an engine that cannot tell); a share is None when no
report of the route has what it needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from .index import Entry

_RUNNING_SUFFIX = "_running.html"


class RouteKey(NamedTuple):
    service: str
    method: str
    route: str


def route_key(entry: Entry) -> RouteKey:
    return RouteKey(entry.text("service"), entry.text("method"), entry.text("route"))


def percentile(ordered: Sequence[float], fraction: float) -> Optional[float]:
    """The nearest-rank percentile of ascending ``ordered``; None if it is empty."""
    if not ordered:
        return None
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass(frozen=True)
class RouteSummary:
    """One row of the routes overview."""

    key: RouteKey
    entries: tuple[Entry, ...]  # oldest first
    durations: tuple[float, ...]  # ascending
    starts: tuple[float, ...]  # seconds since the epoch, ascending
    #: CPU time over CPU plus waiting, of the reports that tell both
    cpu_share: Optional[float]
    #: time in the request's spans over the requests' duration, by span kind ("db", "http")
    span_shares: dict[str, float]
    #: whether any report of the route tells its time in spans
    has_span_times: bool

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def p50(self) -> Optional[float]:
        return percentile(self.durations, 0.50)

    @property
    def p95(self) -> Optional[float]:
        return percentile(self.durations, 0.95)

    @property
    def max(self) -> Optional[float]:
        return self.durations[-1] if self.durations else None

    @property
    def first_seen(self) -> float:
        return self.starts[0]

    @property
    def last_seen(self) -> float:
        return self.starts[-1]


def counted(entries: Iterable[Entry]) -> list[Entry]:
    """The reports that count as slow requests: readable, one per request."""
    entries = [entry for entry in entries if entry.problem is None]
    names = {entry.file.name for entry in entries}
    return [
        entry
        for entry in entries
        if not entry.file.name.endswith(_RUNNING_SUFFIX)
        or entry.file.name[: -len(_RUNNING_SUFFIX)] + ".html" not in names
    ]


def summarise(entries: Iterable[Entry]) -> dict[RouteKey, RouteSummary]:
    """A summary of each route of the counted reports (``entries`` oldest first)."""
    groups: dict[RouteKey, list[Entry]] = {}
    for entry in counted(entries):
        groups.setdefault(route_key(entry), []).append(entry)
    return {key: _summary(key, group) for key, group in groups.items()}


def _summary(key: RouteKey, entries: list[Entry]) -> RouteSummary:
    durations = sorted(d for d in (entry.duration for entry in entries) if d is not None)
    return RouteSummary(
        key=key,
        entries=tuple(entries),
        durations=tuple(durations),
        starts=tuple(entry.started for entry in entries),
        cpu_share=_cpu_share(entries),
        span_shares=_span_shares(entries),
        has_span_times=any("span_seconds" in entry.meta for entry in entries),
    )


def _cpu_share(entries: list[Entry]) -> Optional[float]:
    cpu = waiting = 0.0
    for entry in entries:
        if "cpu_seconds" in entry.meta and "wait_seconds" in entry.meta:
            cpu += entry.meta["cpu_seconds"]
            waiting += entry.meta["wait_seconds"]
    return cpu / (cpu + waiting) if cpu + waiting > 0 else None


def _span_shares(entries: list[Entry]) -> dict[str, float]:
    in_spans: dict[str, float] = {}
    total = 0.0
    for entry in entries:
        by_kind, duration = entry.meta.get("span_seconds"), entry.duration
        if by_kind is None or not duration:
            continue
        total += duration
        for kind, seconds in by_kind.items():
            in_spans[kind] = in_spans.get(kind, 0.0) + seconds
    if total <= 0:
        return {}
    return {kind: min(seconds / total, 1.0) for kind, seconds in in_spans.items()}


@dataclass(frozen=True)
class Recurring:
    """Something that recurs across reports: a hot frame or a slow span."""

    what: tuple[str, ...]  # e.g. (function, location) or (name, kind)
    first_in: int  # reports where it comes first (the top frame, the slowest span)
    listed_in: int  # reports that list it at all
    seconds: float  # its time, summed over those reports
    reports: int  # reports that list anything of the kind


def recurring(
    entries: Iterable[Entry],
    field: str,
    identity: tuple[str, ...],
    seconds: str,
    limit: int = 10,
) -> list[Recurring]:
    """What recurs in the ``field`` lists of ``entries``, most often first first.

    ``identity`` names the keys that make two records the same thing; ``seconds``
    the key with its time.
    """
    first: dict[tuple[str, ...], int] = {}
    listed: dict[tuple[str, ...], int] = {}
    total: dict[tuple[str, ...], float] = {}
    reports = 0
    for entry in entries:
        records: list[dict[str, Any]] = entry.meta.get(field) or []
        if not records:
            continue
        reports += 1
        seen = set()
        for position, record in enumerate(records):
            what = tuple(str(record.get(key, "")) for key in identity)
            if position == 0:
                first[what] = first.get(what, 0) + 1
            total[what] = total.get(what, 0.0) + record.get(seconds, 0.0)
            if what not in seen:
                seen.add(what)
                listed[what] = listed.get(what, 0) + 1
    ranked = sorted(listed, key=lambda what: (-first.get(what, 0), -listed[what], -total[what]))
    return [
        Recurring(what, first.get(what, 0), listed[what], total[what], reports)
        for what in ranked[:limit]
    ]
