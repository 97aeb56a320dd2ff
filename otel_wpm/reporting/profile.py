"""Turn sampled stacks into a pyinstrument session, and summarise where time went."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from pyinstrument.frame import Frame
from pyinstrument.session import Session

from ..alerting.alert import HotFrame
from ..capture.sampler import Stack


@dataclass(frozen=True)
class Profile:
    """A request's profile and how much of the request it covers."""

    session: Optional[Session]
    engine: str  # "sampling" or "pyinstrument"
    covered_seconds: float
    duration_seconds: float

    @property
    def coverage(self) -> float:
        if self.duration_seconds <= 0:
            return 0.0
        return min(1.0, self.covered_seconds / self.duration_seconds)


def session_from_samples(
    samples: Sequence[tuple[Stack, float]],
    start_time: float,
    duration: float,
    interval: float,
    description: str,
) -> Optional[Session]:
    """A pyinstrument session from ``(stack, seconds)`` records; None when there are none."""
    records = [(list(stack), seconds) for stack, seconds in samples if stack]
    if not records:
        return None
    return Session(
        frame_records=records,
        start_time=start_time,
        duration=duration,
        min_interval=interval,
        max_interval=interval,
        sample_count=len(records),
        # must not be empty: pyinstrument trims the common stem starting from it
        start_call_stack=[records[0][0][0]],
        target_description=description,
        cpu_time=0.0,
        sys_path=list(sys.path),
        sys_prefixes=Session.current_sys_prefixes(),
    )


def hot_frames(session: Optional[Session], limit: int = 5) -> tuple[HotFrame, ...]:
    """Where the time went: the application functions with the most time, heaviest first.

    Time spent in library code (the standard library, site-packages) counts for
    the innermost application function that called it: "``load_orders`` waited
    0.8 s" says more than "``socket.recv`` took 0.8 s".
    """
    if session is None:
        return ()
    root = session.root_frame()
    if root is None:
        return ()
    totals: dict[tuple[str, str], float] = {}
    pending: list[tuple[Frame, Optional[Frame]]] = [(root, None)]
    while pending:
        frame, owner = pending.pop()
        if frame.is_application_code:
            owner = frame
        pending.extend((child, owner) for child in frame.children)
        # a synthetic "[self]" leaf's time is already in its parent's total_self_time
        if frame.is_synthetic or frame.total_self_time <= 0:
            continue
        charged = owner or frame
        location = f"{charged.file_path_short or charged.file_path}:{charged.line_no}"
        key = (charged.function or "?", location)
        totals[key] = totals.get(key, 0.0) + frame.total_self_time
    profiled = sum(totals.values()) or 1.0
    heaviest = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:limit]
    return tuple(
        HotFrame(function=name, location=location, seconds=seconds, share=seconds / profiled)
        for (name, location), seconds in heaviest
    )
