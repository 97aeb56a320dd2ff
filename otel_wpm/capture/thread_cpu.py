"""Reading the CPU time of another thread (Linux and most Unixes; not macOS or Windows).

Usage (on the sampler thread, about the thread serving a request)::

    clock = cpu_clock_of(thread_id)     # None where threads' CPU clocks cannot be read
    used_ns = cpu_time_ns(clock)        # None once that thread has exited

``thread_id`` is the thread's ``threading.get_ident()``, which is its pthread
handle on these platforms. Read the clock while the thread still serves the
request: once it has exited, its clock is gone.
"""

from __future__ import annotations

import time
from typing import Optional

_pthread_getcpuclockid = getattr(time, "pthread_getcpuclockid", None)


def cpu_clock_of(thread_id: int) -> Optional[int]:
    """The id of the clock counting ``thread_id``'s CPU time; None if there is none."""
    if _pthread_getcpuclockid is None:
        return None
    try:
        return int(_pthread_getcpuclockid(thread_id))
    except (OSError, OverflowError):
        return None


def cpu_time_ns(clock: Optional[int]) -> Optional[int]:
    """The CPU time counted by ``clock`` so far, in nanoseconds; None if it cannot be read."""
    if clock is None:
        return None
    try:
        return time.clock_gettime_ns(clock)
    except OSError:  # the thread has exited
        return None
