"""A request's profile: pyinstrument sessions from its samples, and where the time went.

Usage (the ending thread builds it, the report thread reads it)::

    profile = sampled_profile(request.samples.snapshot(), start, duration, interval, "GET request")
    profile.cpu_seconds, profile.wait_seconds     # None where CPU time is not measured
    hot = hot_frames(profile.session)             # wall-clock time per function
    cpu = hot_frames(profile.cpu_session)         # the same, counting only CPU time
    waits = hot_frames(profile.wait_session)      # ... and only the time spent waiting

The sampling engine weighs each sample with the time it stands for and splits
it into CPU time (how far the thread's CPU clock advanced) and waiting time
(the rest). The three sessions hold the same stacks with those three weights,
so the call tree, the CPU hot spots and the waits are attributed alike.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from pyinstrument.frame import Frame
from pyinstrument.session import Session

from ..alerting.alert import HotFrame
from ..capture.samples import FoldedSamples, Stack


@dataclass(frozen=True)
class Profile:
    """A request's profile, how much of the request it covers, and its CPU time."""

    session: Optional[Session]
    engine: str  # "sampling" or "pyinstrument"
    covered_seconds: float
    duration_seconds: float
    #: The request thread's CPU time, and the time it did not run (I/O, sleep, locks,
    #: the GIL held by another thread); None where CPU time cannot be measured.
    cpu_seconds: Optional[float] = None
    wait_seconds: Optional[float] = None
    #: The session's stacks weighted by CPU time, and by waiting time (sampling engine).
    cpu_session: Optional[Session] = None
    wait_session: Optional[Session] = None

    @property
    def coverage(self) -> float:
        if self.duration_seconds <= 0:
            return 0.0
        return min(1.0, self.covered_seconds / self.duration_seconds)


def sampled_profile(
    samples: FoldedSamples, start_time: float, duration: float, interval: float, description: str
) -> Profile:
    """The profile of a request from the sampler's samples (a snapshot)."""
    records = list(samples.records())
    stacks = [stack for stack, _, _, _ in records]
    cpu = samples.cpu_seconds

    def session(weights: list[float]) -> Optional[Session]:
        weighted = list(zip(stacks, weights))
        return session_from_samples(weighted, start_time, duration, interval, description, cpu)

    measured = cpu is not None
    return Profile(
        session=session([seconds for _, seconds, _, _ in records]),
        engine="sampling",
        covered_seconds=samples.seconds,
        duration_seconds=duration,
        cpu_seconds=cpu,
        wait_seconds=samples.wait_seconds,
        cpu_session=session([part for _, _, part, _ in records]) if measured else None,
        wait_session=session([part for _, _, _, part in records]) if measured else None,
    )


def precise_profile(session: Session, duration: float) -> Profile:
    """The profile of a request from the precise engine's pyinstrument session, whose
    ``cpu_time`` the engine set to the request thread's CPU time."""
    cpu = session.cpu_time
    wait = max(session.duration - cpu, 0.0)
    return Profile(session, "pyinstrument", session.duration, duration, cpu, wait)


def session_from_samples(
    samples: Sequence[tuple[Stack, float]],
    start_time: float,
    duration: float,
    interval: float,
    description: str,
    cpu_time: Optional[float] = None,
) -> Optional[Session]:
    """A pyinstrument session from ``(stack, seconds)`` records; None when there are none.

    ``cpu_time`` is what pyinstrument's header shows as CPU utilisation, over
    ``duration``; 0 when not measured (pyinstrument needs a number).
    """
    records = [(list(stack), seconds) for stack, seconds in samples if stack and seconds > 0]
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
        cpu_time=cpu_time or 0.0,
        sys_path=list(sys.path),
        sys_prefixes=Session.current_sys_prefixes(),
    )


def hot_frames(session: Optional[Session], limit: Optional[int] = 5) -> tuple[HotFrame, ...]:
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


def cpu_and_wait_by_function(profile: Profile) -> dict[tuple[str, str], tuple[float, float]]:
    """(function, location) of each function in :func:`hot_frames` -> its (CPU, waiting)
    seconds; empty when the profile does not split them (the precise engine)."""
    if profile.cpu_session is None and profile.wait_session is None:
        return {}
    cpu = {(f.function, f.location): f.seconds for f in hot_frames(profile.cpu_session, None)}
    wait = {(f.function, f.location): f.seconds for f in hot_frames(profile.wait_session, None)}
    return {key: (cpu.get(key, 0.0), wait.get(key, 0.0)) for key in cpu.keys() | wait.keys()}
