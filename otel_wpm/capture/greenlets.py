"""Requests served by greenlets (gevent), sampled by the sampler, then a greenlet too.

Usage (the sampler, for a due request that a greenlet serves)::

    sample_greenlet(request, now_ns, since_ns, cadence_ns)
    frames = greenlet_frames(request)       # innermost first, for ``admit``
    fill_unsampled(request, end_ns)         # when it ends: what the sampler never saw

Once gevent patches threading (:mod:`otel_wpm._runtime.gevent_patch`), requests
are keyed by their greenlet and the sampler thread is a greenlet: it runs only
while every request greenlet waits, so each sample is where one waits (its
``gr_frame``). A greenlet that runs without yielding keeps the sampler from
running: the time it could not sample goes to a ``[gevent hub busy]`` frame,
not to the next stack it sees, and that code is not seen.
"""

from __future__ import annotations

from types import FrameType

from .frames import callers, stack_of
from .inflight import InFlightRequest

#: A sample for the time the sampler could not run: some greenlet held the hub.
HUB_BUSY = ("[gevent hub busy]\x00<gevent>\x000",)


def greenlet_frames(request: InFlightRequest) -> list[FrameType]:
    """The frames of the request's greenlet, innermost first (none while it runs)."""
    return list(callers(getattr(request.greenlet, "gr_frame", None)))


def sample_greenlet(request: InFlightRequest, now_ns: int, since_ns: int, cadence_ns: int) -> None:
    """One sample of a suspended greenlet; nothing while it runs or once it is dead.

    The sampler comes round every ``cadence_ns``; a longer gap since the last sample
    is time it could not run. Greenlets share their thread's CPU clock, so no
    sample measures CPU time.
    """
    frame = getattr(request.greenlet, "gr_frame", None)
    if frame is None:
        return
    previous = request.last_sample_ns
    if previous is not None and now_ns - previous > 2 * cadence_ns:
        request.add_sample(HUB_BUSY, now_ns - cadence_ns, None)
    request.add_sample(stack_of(frame), now_ns, None, since_ns)


def fill_unsampled(request: InFlightRequest, end_ns: int) -> None:
    """Charge the time since the last sample (all of it, if none) to ``[gevent hub busy]``
    when the sampler missed it: the greenlet ran to its end without yielding."""
    config = request.settings.config
    cadence = max(config.sampling_interval_seconds, config.early_sampling_interval_seconds)
    cadence_ns = int(cadence * 1e9)
    previous = request.last_sample_ns
    if previous is None or end_ns - previous > 2 * cadence_ns:
        request.add_sample(HUB_BUSY, end_ns, None)
