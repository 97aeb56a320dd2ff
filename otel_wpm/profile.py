"""Turn sampled stacks into a pyinstrument session, and summarise where time went."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from pyinstrument.session import Session

from .alert import HotFrame
from .sampler import Stack


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
    """The functions with the most self time, heaviest first."""
    if session is None:
        return ()
    root = session.root_frame()
    if root is None:
        return ()
    totals: dict[tuple[str, str], float] = {}
    stack = [root]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic or frame.total_self_time <= 0:
            continue
        location = f"{frame.file_path_short or frame.file_path}:{frame.line_no}"
        key = (frame.function or "?", location)
        totals[key] = totals.get(key, 0.0) + frame.total_self_time
    profiled = sum(totals.values()) or 1.0
    heaviest = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:limit]
    return tuple(
        HotFrame(function=name, location=location, seconds=seconds, share=seconds / profiled)
        for (name, location), seconds in heaviest
    )
