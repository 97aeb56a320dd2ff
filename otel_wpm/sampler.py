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
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Optional

from . import forksafe

logger = logging.getLogger("otel_wpm")

Stack = tuple[str, ...]

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


@dataclass(eq=False)  # identity: field-by-field equality would be slow and wrong here
class InFlightRequest:
    """A watched request span while it runs, as the sampler and the processor see it."""

    span: Any
    thread_id: int
    start_ns: int
    environ: Optional[dict[str, Any]] = None
    recorder: Any = None  # the RecordingInput in front of wsgi.input, if any
    profiler: Any = None  # a pyinstrument Profiler when the precise engine picked this one
    report_file: Optional[str] = None
    samples: list[tuple[Stack, float]] = field(default_factory=list)
    first_sample_ns: Optional[int] = None
    last_sample_ns: Optional[int] = None
    checked: bool = False  # the owner was asked whether to sample it
    ignored: bool = False  # the owner said no (a black-listed URL)
    crossed_threshold: bool = False
    reported_hung: bool = False
    sampling_paused: bool = False  # another profiler (precise engine) watches this thread

    def add_sample(self, stack: Stack, now_ns: int, interval_ns: int) -> None:
        previous = self.last_sample_ns
        if previous is None:
            previous = max(self.start_ns, now_ns - interval_ns)
            self.first_sample_ns = previous
        self.samples.append((stack, (now_ns - previous) / 1e9))
        self.last_sample_ns = now_ns

    def sampled_seconds(self) -> float:
        if self.first_sample_ns is None or self.last_sample_ns is None:
            return 0.0
        return (self.last_sample_ns - self.first_sample_ns) / 1e9


class SamplerListener:
    """What the sampler asks and tells its owner, from the sampler thread."""

    def should_sample(self, request: InFlightRequest) -> bool:
        """Asked once, when a request first becomes due; False ignores it from then on."""
        return True

    def on_threshold_crossed(self, request: InFlightRequest) -> None: ...

    def on_hung(self, request: InFlightRequest) -> None: ...


class StackSampler:
    """Samples the threads of in-flight requests; one thread per process, started lazily."""

    def __init__(
        self,
        listener: SamplerListener,
        interval_seconds: float,
        sample_after_seconds: float,
        threshold_seconds: float,
        hung_after_seconds: Optional[float],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._listener = listener
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
        self._in_flight: dict[int, list[InFlightRequest]] = {}
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def register(self, request: InFlightRequest, nested: bool) -> list[InFlightRequest]:
        """Watch ``request``.

        A ``nested`` request runs inside another watched one on the same thread
        (a decorated function in a request) and shares its samples. A request that
        is not nested starts afresh on its thread: anything still registered there
        belongs to a span that never ended, and is returned as stale.
        """
        with self._lock:
            on_thread = self._in_flight.setdefault(request.thread_id, [])
            stale = [] if nested else on_thread[:]
            if stale:
                on_thread.clear()
            on_thread.append(request)
            if self._thread is None:
                self._start_thread()
        return stale

    def unregister(self, request: InFlightRequest) -> None:
        with self._lock:
            on_thread = self._in_flight.get(request.thread_id, [])
            if request in on_thread:
                on_thread.remove(request)
            if not on_thread:
                self._in_flight.pop(request.thread_id, None)

    def is_watching_thread(self, thread_id: int) -> bool:
        with self._lock:
            return bool(self._in_flight.get(thread_id))

    def in_flight(self) -> list[InFlightRequest]:
        with self._lock:
            return [request for on_thread in self._in_flight.values() for request in on_thread]

    def _start_thread(self) -> None:
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
        in_flight = self.in_flight()
        due = [r for r in in_flight if now - r.start_ns >= self._sample_after_ns and self._keep(r)]
        if not due:
            until_due = [r.start_ns + self._sample_after_ns - now for r in in_flight]
            return max(self._interval, min([self._sample_after_ns, *until_due]) / 1e9)
        frames = sys._current_frames()
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

    def _keep(self, request: InFlightRequest) -> bool:
        if not request.checked:
            request.checked = True
            request.ignored = not self._listener.should_sample(request)
        return not request.ignored

    def _notify(self, request: InFlightRequest, age_ns: int) -> None:
        if not request.crossed_threshold and age_ns >= self._threshold_ns:
            request.crossed_threshold = True
            self._listener.on_threshold_crossed(request)
        hung = self._hung_after_ns
        if hung is not None and not request.reported_hung and age_ns >= hung:
            request.reported_hung = True
            self._listener.on_hung(request)
