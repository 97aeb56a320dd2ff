"""One background thread that samples the stacks of threads serving slow-ish requests.

This is the default profiling engine. Nothing runs on the request path but a
dictionary insert at start and a removal at end. Every ``interval`` seconds the
sampler thread looks at the requests in flight; those older than ``sample_after``
seconds get their thread's current stack recorded (``sys._current_frames()``).
Requests that finish sooner cost nothing more. The same tick also tells the
owner when a request crosses the slow threshold or the hung threshold, while the
request is still running.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Optional

from .._runtime import forksafe
from .inflight import InFlightRequest, InFlightRequests, Stack

logger = logging.getLogger(__name__)

_MAX_STACK_DEPTH = 256
_identifier_cache: dict[Any, str] = {}
_IDENTIFIER_CACHE_LIMIT = 20_000


def _identifier(frame: FrameType) -> str:
    code = frame.f_code
    identifier = _identifier_cache.get(code)
    if identifier is None:
        if len(_identifier_cache) >= _IDENTIFIER_CACHE_LIMIT:
            _identifier_cache.clear()
        # pyinstrument's frame identifier format: name NUL file NUL first line
        identifier = f"{code.co_name}\x00{code.co_filename}\x00{code.co_firstlineno}"
        _identifier_cache[code] = identifier
    return identifier


def stack_of(frame: Optional[FrameType]) -> Stack:
    """Identifiers of ``frame`` and its callers, outermost first."""
    identifiers: list[str] = []
    while frame is not None and len(identifiers) < _MAX_STACK_DEPTH:
        identifiers.append(_identifier(frame))
        frame = frame.f_back
    identifiers.reverse()
    return tuple(identifiers)


class SamplerListener:
    """What the sampler asks and tells its owner, from the sampler thread."""

    def admit(self, request: InFlightRequest, frame: Optional[FrameType]) -> bool:
        """Asked once, when a request first becomes due, with the frame its thread runs now.

        False ignores the request from then on.
        """
        return True

    def on_threshold_crossed(self, request: InFlightRequest) -> None: ...

    def on_hung(self, request: InFlightRequest) -> None: ...


class StackSampler:
    """Samples the threads of in-flight requests; one thread per process, started lazily."""

    def __init__(
        self,
        listener: SamplerListener,
        requests: InFlightRequests,
        interval_seconds: float,
        sample_after_seconds: float,
        threshold_seconds: float,
        hung_after_seconds: Optional[float],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._listener = listener
        self._requests = requests
        self._clock_ns = clock_ns
        self.configure(
            interval_seconds, sample_after_seconds, threshold_seconds, hung_after_seconds
        )
        self.after_fork_in_child()
        self.cpu_seconds = 0.0
        forksafe.register(self)

    def configure(
        self,
        interval_seconds: float,
        sample_after_seconds: float,
        threshold_seconds: float,
        hung_after_seconds: Optional[float],
    ) -> None:
        self._interval = interval_seconds
        self._sample_after_ns = int(sample_after_seconds * 1e9)
        self._threshold_ns = int(threshold_seconds * 1e9)
        self._hung_after_ns = int(hung_after_seconds * 1e9) if hung_after_seconds else None

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def ensure_started(self) -> None:
        if self._thread is None:
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="otel-wpm-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        started_cpu = time.thread_time()
        wait = self._interval
        while not self._stop.wait(wait):
            try:
                wait = self.tick()
            except Exception:
                wait = self._interval
                logger.exception("otel-wpm sampler tick failed")
            self.cpu_seconds = time.thread_time() - started_cpu

    def tick(self) -> float:
        """Sample what is due and report threshold crossings (also callable from tests).

        Returns how long the thread may sleep before the next tick: one interval
        while requests are being sampled, else until the oldest request becomes
        due. A request registered while we sleep is due ``sample_after`` after
        its start, never sooner than that wake-up, so an idle process wakes a
        few times a second instead of a hundred.
        """
        now = self._clock_ns()
        due, until_due = self._due(now)
        frames = sys._current_frames() if due else {}
        due = [r for r in due if self._keep(r, frames.get(r.thread_id))]
        if not due:
            return max(self._interval, min([self._sample_after_ns, *until_due]) / 1e9)
        interval_ns = int(self._interval * 1e9)
        stacks: dict[int, Stack] = {}
        for request in due:
            frame = frames.get(request.thread_id)
            if frame is None or request.sampling_paused:
                continue
            if request.thread_id not in stacks:
                stacks[request.thread_id] = stack_of(frame)
            request.add_sample(stacks[request.thread_id], now, interval_ns)
        del frames
        for request in due:
            self._notify(request, now - request.start_ns)
        return self._interval

    def _due(self, now: int) -> tuple[list[InFlightRequest], list[int]]:
        """The requests old enough to sample, and how long until each younger one is."""
        due: list[InFlightRequest] = []
        until_due: list[int] = []
        self._requests.prune(self._threshold_ns)
        for thread_id, span in self._requests.running():
            wait = span.start_time + self._sample_after_ns - now
            if wait > 0:
                until_due.append(wait)
                continue
            request = self._requests.state_of(thread_id, span)
            if request is not None:
                due.append(request)
        due += [r for r in self._requests.nested() if now - r.start_ns >= self._sample_after_ns]
        return due, until_due

    def _keep(self, request: InFlightRequest, frame: Optional[FrameType]) -> bool:
        if not request.checked:
            request.checked = True
            request.ignored = not self._listener.admit(request, frame)
        return not request.ignored

    def _notify(self, request: InFlightRequest, age_ns: int) -> None:
        if not request.crossed_threshold and age_ns >= self._threshold_ns:
            request.crossed_threshold = True
            self._listener.on_threshold_crossed(request)
        hung = self._hung_after_ns
        if hung is not None and not request.reported_hung and age_ns >= hung:
            request.reported_hung = True
            self._listener.on_hung(request)
