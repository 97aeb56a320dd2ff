"""Samples the due requests that asyncio tasks work for, and who holds their loop.

Usage (what :class:`~otel_wpm.capture.sampler.StackSampler` does each tick)::

    loops = LoopSampler(requests)              # the InFlightRequests registry
    sampled = loops.sample(requests, frames, now_ns, since_ns)   # as InFlightRequest.add_sample
    # each request in ``sampled`` got one sample (see :mod:`.tasks`), and
    # request.loop_waits says who held its loop while it was not running

A request is sampled here when a task serves it, or when the thread serving it
waits for a task (:mod:`.bridges`). Requests are grouped by the thread of their
loop; each loop's stack is read once a tick. While a request is awaiting or
ready, whatever holds its loop is charged in its
:class:`~.waits.LoopWaits`: another request (the one the running task
serves), or a task or callback serving none.

A sample's CPU time is read from the clock of the thread it ran on: the loop's
while its task runs (the loop's CPU over the slice, so it can include other
tasks' when several ran), a worker thread's while it runs a job for it, none
while it awaits or waits for the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import CoroutineType, FrameType
from typing import Any, Optional

from ..frames import current_frames
from ..inflight import InFlightRequest, InFlightRequests, Stack
from ..thread_cpu import cpu_clock_of, cpu_time_ns
from .bridges import bridged_task, loop_thread_of
from .tasks import COROUTINE_FLAGS, ChildTasks, Location, LoopView, State, locate
from .waits import (
    APPLICATION_PREFIXES,
    LoopHolder,
    LoopWaits,
    functions_of,
    request_holder,
)
from .workers import WorkerThreads


@dataclass
class Served:
    """A due request and the task doing its work, on the loop of ``loop_thread``.

    A request a thread serves may wait for a task (:mod:`.bridges`): ``waiting`` are
    that thread's frames down to the wait, outermost first.
    """

    request: InFlightRequest
    task: Any
    loop_thread: int
    waiting: list[FrameType] = field(default_factory=list)

    @classmethod
    def of(cls, request: InFlightRequest, frames: dict[int, FrameType]) -> Optional[Served]:
        if request.task is not None:
            return cls(request, request.task, request.thread_id)
        bridge = bridged_task(frames.get(request.thread_id))
        if bridge is None:
            return None
        waiting, task = bridge
        return cls(request, task, loop_thread_of(task), waiting)

    def locate(self, view: LoopView, workers: WorkerThreads) -> Location:
        # Task groups and worker threads are looked for once the request is due (checked).
        children = _children_of(self.request) if self.request.checked else None
        location = locate(self.task, view, workers, children)
        location.frames[:0] = self.waiting
        return location


class LoopSampler:
    """Samples the due requests that asyncio tasks work for; see the module docstring."""

    def __init__(self, requests: InFlightRequests) -> None:
        self._requests = requests

    def sample(
        self,
        due: Sequence[InFlightRequest],
        frames: dict[int, FrameType],
        now_ns: int,
        since_ns: int,
    ) -> set[InFlightRequest]:
        """Sample the due requests a task serves or a thread of theirs waits for: those."""
        by_loop: dict[int, list[Served]] = {}
        for request in due:
            served = None if request.sampling_paused else Served.of(request, frames)
            if served is not None:
                by_loop.setdefault(served.loop_thread, []).append(served)
        if not by_loop:
            return set()
        workers = WorkerThreads(frames, skip={*by_loop, threading.get_ident()})
        for thread_id, served_here in by_loop.items():
            view = LoopView(frames.get(thread_id))
            self._sample_loop(thread_id, view, served_here, workers, now_ns, since_ns)
        return {served.request for group in by_loop.values() for served in group}

    def _sample_loop(
        self,
        thread_id: int,
        view: LoopView,
        served_here: Sequence[Served],
        workers: WorkerThreads,
        now_ns: int,
        since_ns: int,
    ) -> None:
        where = {served.request: served.locate(view, workers) for served in served_here}
        holder: Optional[LoopHolder] = None
        holder_known = False
        for request, location in where.items():
            if location.state in (State.AWAITING, State.READY):
                if not holder_known:
                    holder, holder_known = self._holder(thread_id, view, where), True
                if request.loop_waits is None:
                    request.loop_waits = LoopWaits()
                seconds = _weight(request, now_ns, since_ns)
                request.loop_waits.add(holder, seconds, location.state == State.READY)
            cpu_ns = _cpu_reading(request, location, thread_id)
            request.add_sample(location.stack(), now_ns, cpu_ns, since_ns)

    def _holder(
        self, thread_id: int, view: LoopView, where: dict[InFlightRequest, Location]
    ) -> Optional[LoopHolder]:
        """What holds the loop of ``view``, or None while the loop itself runs (idle)."""
        start = view.running_from
        if start is None:
            return None
        function = functions_of(view.live[: start + 1], APPLICATION_PREFIXES)
        for request, location in where.items():
            if location.state == State.ON_CPU:
                return request_holder(request.span, function)
        root = view.live[start]
        for task, span in self._requests.tasks_on(thread_id):
            coro = task.get_coro()
            if isinstance(coro, CoroutineType) and coro.cr_frame is root:
                return request_holder(span, function)
        if root.f_code.co_flags & COROUTINE_FLAGS:
            return LoopHolder(function, task=root.f_code.co_qualname)
        return LoopHolder(function)  # a callback


def task_frames(request: InFlightRequest, frames: dict[int, FrameType]) -> list[FrameType]:
    """The frames the task-served ``request`` runs now, innermost first."""
    running = _location_now(request, frames).frames
    running.reverse()
    return running


def current_stack(request: InFlightRequest) -> Stack:
    """One stack of the task-served ``request`` now (a hung request that has no samples)."""
    frames = current_frames()
    try:
        return _location_now(request, frames).stack()
    finally:
        del frames


def _location_now(request: InFlightRequest, frames: dict[int, FrameType]) -> Location:
    view = LoopView(frames.get(request.thread_id))
    workers = WorkerThreads(frames, skip={request.thread_id, threading.get_ident()})
    return locate(request.task, view, workers, _children_of(request))


def _children_of(request: InFlightRequest) -> ChildTasks:
    if request.child_tasks is None:
        request.child_tasks = ChildTasks()
    return request.child_tasks


def _weight(request: InFlightRequest, now_ns: int, since_ns: int) -> float:
    """What a sample taken at ``now_ns`` weighs, as ``InFlightRequest.add_sample`` weighs it."""
    previous = request.last_sample_ns
    if previous is None:
        previous = max(request.start_ns, since_ns)
    return max(now_ns - previous, 0) / 1e9


def _cpu_reading(request: InFlightRequest, location: Location, loop_thread: int) -> Optional[int]:
    """The CPU clock reading to record with this sample (see the module docstring).

    Not running: the last reading again, so the slice used no CPU (and the next
    slice on a CPU clock starts a new one). A slice that starts on another
    thread's clock than the last reading is not measured.
    """
    if location.state in (State.AWAITING, State.READY):
        request.cpu_clock = None
        if request.last_cpu_ns is None:
            request.last_cpu_ns = 0
        return request.last_cpu_ns
    clock = cpu_clock_of(location.worker_thread or loop_thread)
    if clock != request.cpu_clock:
        request.cpu_clock, request.last_cpu_ns = clock, None
    return cpu_time_ns(clock)
