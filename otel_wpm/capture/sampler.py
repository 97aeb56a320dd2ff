"""One background thread that samples the stacks of threads serving slow-ish requests.

Usage::

    sampler = StackSampler(
        requests,                   # the InFlightRequests registry
        admit=owner.admit,          # asked once, when a request becomes due: sample it?
        on_threshold_crossed=owner.mark_slow,
        on_hung=owner.report_hung,
        settings=settings,          # the ActiveSettings in force: the tick
        on_cpu=stats.charge_cpu,    # told the CPU time of each tick while requests run
        on_stale=owner.forget,      # given the requests of finished tasks whose span never ended
    )
    if sampler.asleep:             # from the request path: one attribute read once awake
        sampler.wake()
    sampler.configure(new_settings)

This is the default profiling engine. Nothing runs on the request path but the
registry's dict writes at start and deletes at end. The sampler thread records
the current stack of each request's thread (``sys._current_frames()``) in two
phases, so a slow request is covered from its start while fast ones cost next
to nothing:

* early: every ``early_interval`` (100 ms by default), every request in flight
  for half an early interval (50 ms; at least one ``interval``) gets a sample.
  Nothing else is done for it: no black-list, no WSGI environ, no callbacks.
  Most requests end before they are ever looked at (an early sample of a
  request that ends fast is work thrown away), the others get a sample or two
  at 10 rounds a second, and the first sample of a request stands for the time
  since its start (at most one and a half early intervals), so coverage starts
  with the request.
* full rate: once older than its ``sample_after``, a request is admitted
  (``admit``) and sampled every ``interval`` (10 ms).

Once no request has been in flight for a second (``stay_awake_seconds``), the
thread sleeps until one starts (the request path reads ``asleep`` and only then
calls :meth:`StackSampler.wake`): an idle process is not woken at all. It does
not sleep sooner because a wake costs the request that does it more than a tick
costs: tens of microseconds of CPU on the request's thread, and under an event
loop much more, as the woken thread then waits a long time for the GIL (the
loop releases and takes it back around each ``epoll_wait``, so CPython never
asks it to hand over) and each release in the meantime signals it again. A
steady stream of short requests, each ended before a tick sees it, would
otherwise wake it for nearly every one. Each wake and tick costs more than the
work it does (a few hundred microseconds of CPU, with cold caches, against a
few for the tick itself), so the rounds are as few as coverage allows.

Each sample also reads the thread's own CPU clock (:mod:`.thread_cpu`): the
clock's advance since the previous sample is the CPU time of that slice, the
rest of it the thread waited (on I/O, a lock, a sleep, or the GIL held by
another thread).

A request an asyncio task serves shares its thread with the loop's other
requests: :class:`~.loops.sampler.LoopSampler` samples the task's own stack
instead (and a thread that waits for a task, the task's). A greenlet's request
is sampled where the greenlet waits (:mod:`.greenlets`).

The full-rate tick calls ``on_threshold_crossed`` when a request passes its
slow threshold and ``on_hung`` when it passes its hung threshold, while it
still runs. Each request is judged by the thresholds of the settings it
started under. The CPU time of a tick is told to ``on_cpu`` when requests were
in flight: an idle tick takes nothing from any request.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Callable, Optional

from .._runtime import forksafe
from .._runtime.logs import LogOnce
from .frames import callers, current_frames, stack_of
from .greenlets import greenlet_frames, sample_greenlet
from .inflight import InFlightRequest, InFlightRequests
from .samples import Stack
from .thread_cpu import cpu_clock_of, cpu_time_ns

if TYPE_CHECKING:
    from ..active_settings import ActiveSettings
    from .loops.sampler import LoopSampler

#: Asked with the request's frames, innermost first.
Admit = Callable[[InFlightRequest, Sequence[FrameType]], bool]
Notify = Callable[[InFlightRequest], None]
Forget = Callable[[Sequence[InFlightRequest]], None]
#: How long the thread sleeps with no request in flight, unless a request wakes it first.
IDLE_WAIT_SECONDS = 60.0
#: How long the thread goes on ticking with no request in flight before it sleeps.
STAY_AWAKE_SECONDS = 1.0

logger = logging.getLogger(__name__)
_failures = LogOnce(logger)


class StackSampler:
    """Samples the threads of in-flight requests; one thread per process, started lazily.

    The callbacks run on the sampler thread. ``admit`` is asked once, when a
    request first becomes due, with the frames it runs now, innermost first;
    False ignores the request from then on.
    """

    def __init__(
        self,
        requests: InFlightRequests,
        admit: Admit,
        on_threshold_crossed: Notify,
        on_hung: Notify,
        settings: ActiveSettings,
        clock_ns: Callable[[], int] = time.time_ns,
        on_cpu: Callable[[float], None] = lambda seconds: None,
        on_stale: Forget = lambda requests: None,
        stay_awake_seconds: float = STAY_AWAKE_SECONDS,
    ) -> None:
        self._requests = requests
        self._stay_awake_ns = int(stay_awake_seconds * 1e9)
        self._loops: Optional[LoopSampler] = None  # made once asyncio is imported
        self._admit = admit
        self._on_threshold_crossed = on_threshold_crossed
        self._on_hung = on_hung
        self._clock_ns = clock_ns
        self._on_cpu = on_cpu
        self._on_stale = on_stale
        self.configure(settings)
        self.after_fork_in_child()
        forksafe.register(self)

    def configure(self, settings: ActiveSettings) -> None:
        """The settings in force: the ticks, and how soon a request starting now becomes due."""
        config = settings.config
        self._interval = config.sampling_interval_seconds
        self._interval_ns = int(self._interval * 1e9)
        self._early_interval_ns = int(config.early_sampling_interval_seconds * 1e9)
        self._early_after_ns = max(self._interval_ns, self._early_interval_ns // 2)  # min. age
        self._sample_after_ns = settings.sample_after_ns

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._alarm = threading.Event()  # wakes the thread: a request started, or stop()
        # True while no thread runs, or while it sleeps because no request was in flight:
        # the request path reads this one attribute.
        self.asleep = True
        self._last_early_ns = 0  # when the last early round was

    def wake(self) -> None:
        """Start the thread, or wake it from its idle sleep. The request path calls this,
        after registering the request, only when it reads ``asleep`` true."""
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="otel-wpm-sampler", daemon=True
                )
                self._thread.start()
            self.asleep = False
            self._alarm.set()

    def stop(self) -> None:
        self._stop.set()
        self._alarm.set()
        with self._lock:
            thread, self._thread = self._thread, None
            self.asleep = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        wait = self._interval
        busy_ns = self._clock_ns()  # when a request was last in flight, or woke the thread
        while True:
            woken = self._alarm.wait(wait)
            self._alarm.clear()
            if self._stop.is_set():
                return
            started_cpu = time.thread_time()
            in_flight = self._requests.any_running()
            try:
                wait = self.tick()
            except Exception:
                wait = self._interval
                logger.exception("otel-wpm sampler tick failed")
            if in_flight:
                self._on_cpu(time.thread_time() - started_cpu)
            if in_flight or woken:
                busy_ns = self._clock_ns()
            elif self._clock_ns() - busy_ns >= self._stay_awake_ns and self._fall_asleep():
                wait = IDLE_WAIT_SECONDS

    def _fall_asleep(self) -> bool:
        """Whether no request is in flight, so the thread may sleep until one starts.

        Checked again after ``asleep`` is set: a request registers itself before it
        reads ``asleep``, so one starting meanwhile is either seen here or wakes us.
        """
        if self._requests.any_running():
            return False
        self.asleep = True
        if self._requests.any_running():
            self.asleep = False
            return False
        return True

    def tick(self) -> float:
        """Sample what is due and report threshold crossings (also callable from tests).

        Returns how long the thread may sleep before the next tick: one interval
        while requests are sampled at full rate, else until the next early round
        or until the oldest request becomes due, whichever comes first. (With no
        request in flight, the thread then sleeps until one starts.)
        """
        now = self._clock_ns()
        early = self._early_interval_ns > 0 and now - self._last_early_ns >= self._early_interval_ns
        # A request's first sample stands for the time since it started when early rounds
        # look at every request (they leave one only while it is younger than an interval);
        # without them, for one interval at most.
        since = 0 if self._early_interval_ns else now - self._interval_ns
        due, young, until_due = self._in_flight(now, early)
        frames = current_frames() if due or young else {}
        due = [r for r in due if self._keep(r, frames)]
        self._sample([*due, *young], frames, now, since)
        del frames
        if early:
            self._last_early_ns = now
        for request in due:
            self._notify(request, now - request.start_ns)
        if due:
            return self._interval
        if self._early_interval_ns:
            until_due.append(self._last_early_ns + self._early_interval_ns - now)
        else:
            until_due.append(self._sample_after_ns)
        return max(self._interval, min(until_due) / 1e9)

    def _in_flight(
        self, now: int, early: bool
    ) -> tuple[list[InFlightRequest], list[InFlightRequest], list[int]]:
        """The requests old enough for full-rate sampling; the younger ones if this is an
        early round (but those younger than half an early interval: most requests are,
        and end before the next round); and how long until each younger one is due."""
        due: list[InFlightRequest] = []
        young: list[InFlightRequest] = []
        until_due: list[int] = []
        stale = self._requests.prune()
        if stale:
            self._on_stale(stale)
        for key, span, settings in self._requests.running():
            age = now - span.start_time
            wait = settings.sample_after_ns - age
            if wait > 0:
                until_due.append(wait)
                if not early or age < self._early_after_ns:
                    continue
            request = self._requests.state_of(key, span, settings)
            if request is not None:
                (young if wait > 0 else due).append(request)
        for request in self._requests.nested():
            age = now - request.start_ns
            if age >= request.settings.sample_after_ns:
                due.append(request)
            elif early and age >= self._early_after_ns:
                young.append(request)
        return due, young, until_due

    def _sample(
        self, requests: list[InFlightRequest], frames: dict[int, FrameType], now: int, since: int
    ) -> None:
        requests = [r for r in requests if not (r.sampling_paused or r.ignored)]
        on_loops = self._on_loops(requests, frames, now, since)
        stacks: dict[int, Stack] = {}
        for request in requests:
            if request in on_loops:
                continue
            if request.greenlet is not None:
                sample_greenlet(request, now, since, self._early_interval_ns or self._interval_ns)
                continue
            frame = frames.get(request.thread_id)
            if frame is None:
                self._cannot_read(request)
                continue
            stack = stacks.get(request.thread_id)
            if stack is None:
                stack = stacks[request.thread_id] = stack_of(frame)
            if request.last_sample_ns is None:
                request.cpu_clock = cpu_clock_of(request.thread_id)
            request.add_sample(stack, now, cpu_time_ns(request.cpu_clock), since)

    def _on_loops(
        self, requests: list[InFlightRequest], frames: dict[int, FrameType], now: int, since: int
    ) -> set[InFlightRequest]:
        """Sample the requests event loops serve (:mod:`.loops`): those."""
        if self._loops is None:
            if "asyncio" not in sys.modules:
                return set()  # no task, and no thread waiting for one
            from .loops.sampler import LoopSampler

            self._loops = LoopSampler(self._requests)
        return self._loops.sample(requests, frames, now, since)

    def _cannot_read(self, request: InFlightRequest) -> None:
        if request.span.end_time is None:  # its thread may have ended with it
            _failures.warning(
                "no-thread",
                "otel-wpm: thread %d of a request is no running OS thread (it ended with the "
                "span open, or it is a green thread of a library otel-wpm cannot read, such "
                "as eventlet): it is not sampled; see 'Async apps' in the README",
                request.thread_id,
            )

    def _keep(self, request: InFlightRequest, frames: dict[int, FrameType]) -> bool:
        if not request.checked:
            request.checked = True
            if request.task is not None:
                from .loops.sampler import task_frames

                running = task_frames(request, frames)
            elif request.greenlet is not None:
                running = greenlet_frames(request)
            else:
                running = list(callers(frames.get(request.thread_id)))
            request.ignored = not self._admit(request, running)
        return not request.ignored

    def _notify(self, request: InFlightRequest, age_ns: int) -> None:
        settings = request.settings
        if not request.crossed_threshold and age_ns >= settings.threshold_ns:
            request.crossed_threshold = True
            self._on_threshold_crossed(request)
        hung = settings.hung_after_ns
        if hung is not None and not request.reported_hung and age_ns >= hung:
            request.reported_hung = True
            self._on_hung(request)
