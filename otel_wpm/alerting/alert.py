"""What an exporter is given about one slow request.

Usage::

    alert = Alert(service="shop", method="GET", route="/users/<id>", ...)  # see Reporter
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from ..capture.route import is_no_route_key


@dataclass(frozen=True)
class HotFrame:
    """One of the functions where a slow request spent its time."""

    function: str
    location: str
    seconds: float
    share: float  # of the profiled time, 0..1


@dataclass(frozen=True)
class SlowSpan:
    """The slowest span of a slow request: a database call, an HTTP call, ..."""

    description: str  # what it did: the masked statement, "GET <masked URL>", else its name
    kind: str  # "db", "http" or "other"
    seconds: float


@dataclass(frozen=True)
class Alert:
    """A slow request, ready to be told about.

    Every string in it is already masked: exporters may show any field as is.
    """

    service: str
    method: str
    route: str  # the route template (``/users/<id>``), else a stand-in (capture/route.py)
    url: str
    status: Optional[int]
    duration_seconds: float
    threshold_seconds: float
    host: str
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    start_time: datetime
    trace_url: Optional[str]
    report_url: Optional[str]
    report_path: Optional[Path]
    report_filename: str
    report_html: bytes = field(repr=False, default=b"")
    hot_frames: tuple[HotFrame, ...] = ()
    slowest_span: Optional[SlowSpan] = None
    suppressed_since_last: int = 0  # alerts held back by de-duplication since the last one
    in_flight: bool = False  # the request had not finished when this was sent
    is_test: bool = False

    @property
    def dedup_key(self) -> str:
        """One window per service and route; requests no route matched share one per status.

        The service is part of the key because a Redis store may be shared by services.
        """
        if is_no_route_key(self.route):
            return f"{self.service} {self.route}"  # any method: scanners try them all
        return f"{self.service} {self.method} {self.route}"
