"""The report list: which reports a request asks for, one page at a time.

Usage::

    from otel_wpm.server.listing import ListQuery, list_page

    query = ListQuery.from_query("route=users&host=web-1&older_than=...")  # ValueError if bad
    shown = list_page(snapshot, query)          # at most PAGE_SIZE reports, newest first
    shown.entries, shown.newer, shown.older     # the cursors of the neighbouring pages, or None

Pages are cut by a cursor, the sort key (start time, file name) of the last
report shown, not by an offset: reports arriving meanwhile sort before the
cursor and cannot push a report seen on one page onto the next.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import Optional
from urllib.parse import parse_qs

from .index import Entry, Snapshot, SortKey
from .routes import RouteKey, route_key

PAGE_SIZE = 100

_TRACE_ID_PREFIX = re.compile(r"\A[0-9a-fA-F]{1,32}\Z")
_MAX_CURSOR_NAME = 255


def cursor_text(key: SortKey) -> str:
    """``key`` as a URL parameter: ``<start>_<file name>``."""
    return f"{key[0]!r}_{key[1]}"


def parse_cursor(text: str) -> SortKey:
    started, separator, name = text.partition("_")
    try:
        seconds = float(started)
    except ValueError:
        seconds = math.nan
    if not separator or not math.isfinite(seconds) or len(name) > _MAX_CURSOR_NAME:
        raise ValueError("not a page cursor of this list")
    return (seconds, name)


def last_values(query: str) -> dict[str, str]:
    """Each parameter of ``query`` by its last value, stripped."""
    return {key: values[-1].strip() for key, values in parse_qs(query).items()}


@dataclass(frozen=True)
class ListQuery:
    """What a report list was asked for: filters, and where the page starts."""

    route: str = ""  # a part of the route, any case
    host: str = ""  # the host that served the request, exactly
    min_duration: Optional[float] = None
    trace_id: str = ""  # a prefix, lower case
    exact_route: Optional[RouteKey] = None  # the reports of one route only
    older_than: Optional[SortKey] = None
    newer_than: Optional[SortKey] = None

    @classmethod
    def from_query(cls, query: str, exact_route: Optional[RouteKey] = None) -> ListQuery:
        """Raises ``ValueError`` with a message fit to show for a bad parameter."""
        params = last_values(query)
        min_duration = None
        if params.get("min_duration"):
            try:
                min_duration = float(params["min_duration"])
            except ValueError:
                raise ValueError("min_duration must be a number of seconds") from None
            if not 0 <= min_duration < math.inf:
                raise ValueError("min_duration must be a number of seconds, 0 or more")
        trace_id = params.get("trace_id", "")
        if trace_id and not _TRACE_ID_PREFIX.match(trace_id):
            raise ValueError("trace_id must be hexadecimal, at most 32 digits")
        older = params.get("older_than")
        newer = params.get("newer_than")
        return cls(
            # on a route's page, "route" names the route (exact_route), it filters nothing
            route=params.get("route", "") if exact_route is None else "",
            host=params.get("host", ""),
            min_duration=min_duration,
            trace_id=trace_id.lower(),
            exact_route=exact_route,
            older_than=parse_cursor(older) if older else None,
            newer_than=parse_cursor(newer) if newer else None,
        )

    def matches(self, entry: Entry) -> bool:
        if self.exact_route is not None and route_key(entry) != self.exact_route:
            return False
        if self.route and self.route.lower() not in entry.text("route").lower():
            return False
        if self.host and entry.text("host") != self.host:
            return False
        if self.min_duration is not None:
            duration = entry.duration
            if duration is None or duration < self.min_duration:
                return False
        return not self.trace_id or entry.text("trace_id").startswith(self.trace_id)

    @property
    def filtered(self) -> bool:
        return bool(self.route or self.host or self.min_duration is not None or self.trace_id)

    def filter_params(self) -> dict[str, str]:
        """The filters as URL parameters (without the page cursor)."""
        params = {"route": self.route, "host": self.host, "trace_id": self.trace_id}
        if self.min_duration is not None:
            params["min_duration"] = f"{self.min_duration:g}"
        return {key: value for key, value in params.items() if value}


@dataclass(frozen=True)
class ListPage:
    entries: list[Entry]  # newest first
    newer: Optional[SortKey]  # the cursor of the page of newer reports, if there are any
    older: Optional[SortKey]  # the cursor of the page of older reports, if there are any


def _matching(entries: Iterator[Entry], query: ListQuery) -> Iterator[Entry]:
    return (entry for entry in entries if query.matches(entry))


def list_page(snapshot: Snapshot, query: ListQuery, size: int = PAGE_SIZE) -> ListPage:
    """The page of reports ``query`` asks for, newest first."""
    if query.newer_than is not None and query.older_than is None:
        after = list(islice(_matching(snapshot.oldest_first(query.newer_than), query), size + 1))
        shown = after[:size][::-1]
        more_newer = len(after) > size
        more_older = _has_any(
            snapshot, replace(query, older_than=query.newer_than, newer_than=None)
        )
    else:
        before = list(islice(_matching(snapshot.newest_first(query.older_than), query), size + 1))
        shown = before[:size]
        more_older = len(before) > size
        more_newer = query.older_than is not None and _has_any(
            snapshot, replace(query, older_than=None, newer_than=query.older_than)
        )
    return ListPage(
        entries=shown,
        newer=shown[0].key if shown and more_newer else None,
        older=shown[-1].key if shown and more_older else None,
    )


def _has_any(snapshot: Snapshot, query: ListQuery) -> bool:
    if query.newer_than is not None:
        candidates = snapshot.oldest_first(query.newer_than)
    else:
        candidates = snapshot.newest_first(query.older_than)
    return next(_matching(candidates, query), None) is not None


def count_matching(snapshot: Snapshot, query: ListQuery) -> int:
    if not query.filtered and query.exact_route is None:
        return len(snapshot)
    return sum(1 for _ in _matching(snapshot.newest_first(), query))
