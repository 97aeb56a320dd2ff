"""What the request thread hands to the report thread about one slow request.

Usage::

    slow = SlowRequest(service="shop", facts=http_facts(span.attributes), ...)
    reporter.queue(slow)              # built on the request thread, rendered on the report thread

Nothing in it is masked yet: masking happens where it is shown (the report page,
the alert). Nor is anything worked out: the hot frames and what the spans add up
to are, on the report thread.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional

from opentelemetry.sdk.trace import ReadableSpan

from ..capture.loops.waits import HeldLoop
from ..capture.request import RawRequest
from ..capture.semconv import HttpFacts

if TYPE_CHECKING:
    from .profile import Profile  # imports pyinstrument: loaded with the first slow request


@dataclass(frozen=True)
class SlowRequest:
    """A watched span that was slow (or still runs), copied out of the span and its state."""

    service: str
    facts: HttpFacts
    trace_id: str
    span_id: str
    start_time: float  # seconds since the epoch
    duration_seconds: float
    threshold_seconds: float
    raw_request: RawRequest
    profile: Profile
    report_file: str
    report_link: Optional[str]
    trace_url: Optional[str]
    in_flight: bool = False
    #: the host that served it: the resource's ``host.name``, else this machine's name
    host: str = field(default_factory=socket.gethostname)
    # its own spans (below its span) that ended while it ran, as they are (ended spans
    # do not change), and how many more its trace had past the limit
    spans: Sequence[ReadableSpan] = ()
    spans_not_kept: int = 0
    held_loop: Optional[HeldLoop] = None  # an asyncio request: who held its event loop

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.start_time, tz=timezone.utc)
