"""The requests being served right now, shared by the processor and the sampler.

Every request passes through here at its start and at its end, so that path is
two dict writes at the start (the span, and a reference to the
:class:`~otel_wpm.active_settings.ActiveSettings` it started under) and a delete and a read at
the end, keyed by the serving thread, with no lock and no allocation; only the
thread serving a request writes its keys. A request keeps those settings to its
end, whatever ``update_config`` does meanwhile.

The state a request needs only when it runs long (samples, threshold flags,
captured input) lives in an :class:`InFlightRequest`, made on demand: by the
sampler thread when the request becomes due for sampling, or at the start when
the request already has something to keep (a body recorder, a precise profiler).
States are written under a lock by whoever makes them, collected by the request
thread when a slow request ends, and pruned by the sampler when a fast one did.

Decorated functions running inside a request ("nested") are rare and kept apart,
under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from .._runtime import forksafe
from .samples import FoldedSamples, Stack

if TYPE_CHECKING:
    from ..active_settings import ActiveSettings


class InFlightRequest:
    """What is known about one watched span while it runs.

    Most fields are class-level defaults until the sampler or the processor sets
    them. Compared by identity: a request is only ever itself.
    """

    environ: Optional[dict[str, Any]] = None
    route: Optional[str] = None  # the framework's route template, read while the request runs
    recorder: Any = None  # the RecordingInput in front of wsgi.input, if any
    profiler: Any = None  # a precise.ThreadProfiler when the precise engine picked this one
    report_file: Optional[str] = None
    last_sample_ns: Optional[int] = None
    last_cpu_ns: Optional[int] = None  # the thread's CPU clock at the last sample
    cpu_clock: Optional[int] = None  # the clock id of the thread's CPU time, once sampled
    checked: bool = False  # the owner was asked whether to sample it
    ignored: bool = False  # the owner said no (a black-listed URL)
    crossed_threshold: bool = False
    reported_hung: bool = False
    sampling_paused: bool = False  # another profiler (precise engine) watches this thread

    def __init__(
        self, span: Any, thread_id: int, settings: ActiveSettings, nested: bool = False
    ) -> None:
        self.span = span
        self.thread_id = thread_id
        self.settings = settings  # the settings in force when the span started
        self.start_ns: int = span.start_time
        self.nested = nested
        self.samples = FoldedSamples()

    def add_sample(
        self, stack: Stack, now_ns: int, cpu_ns: Optional[int], since_ns: int = 0
    ) -> None:
        """``stack`` is what the thread runs at ``now_ns``; its CPU clock reads ``cpu_ns``.

        A sample stands for the time since the previous one, as in pyinstrument. The
        first stands for the time since the request started, or since ``since_ns``
        if later (when the sampler cannot tell it did not run unseen before that).
        Its CPU time is the clock's advance since the previous sample, so the
        first sample's is not measured.
        """
        previous = self.last_sample_ns
        if previous is None:
            previous = max(self.start_ns, since_ns)
        cpu = None
        if cpu_ns is not None and self.last_cpu_ns is not None:
            cpu = (cpu_ns - self.last_cpu_ns) / 1e9
        self.samples.add(stack, max(now_ns - previous, 0) / 1e9, cpu)
        self.last_sample_ns = now_ns
        self.last_cpu_ns = cpu_ns

    def sampled_seconds(self) -> float:
        """The time the samples stand for, from the request's start to the last sample."""
        return self.samples.seconds


class InFlightRequests:
    """Watched spans by the thread serving them, with their state when they have one."""

    def __init__(self) -> None:
        self.after_fork_in_child()
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        # Only the thread serving a request writes its key in _spans and _settings,
        # and a dict get or set is atomic, so the request path takes no lock.
        self._spans: dict[int, Any] = {}
        self._settings: dict[int, ActiveSettings] = {}
        self._states: dict[int, InFlightRequest] = {}
        self._nested: dict[int, list[InFlightRequest]] = {}

    # --- request thread ----------------------------------------------------------------

    def start(
        self, span: Any, thread_id: int, settings: ActiveSettings
    ) -> Sequence[InFlightRequest]:
        """Watch ``span`` under ``settings``; returns what a span on this thread that never
        ended left behind."""
        previous = self._spans.get(thread_id)
        stale: Sequence[InFlightRequest] = ()
        if previous is not None and previous.end_time is None:
            stale = self._stale(previous, thread_id)
        self._settings[thread_id] = settings
        self._spans[thread_id] = span
        return stale

    def _stale(self, previous: Any, thread_id: int) -> Sequence[InFlightRequest]:
        with self._lock:
            state = self._states.pop(thread_id, None)
            nested = self._nested.pop(thread_id, [])
        if state is None or state.span is not previous:
            state = InFlightRequest(previous, thread_id, self._settings[thread_id])
        return [state, *nested]

    def keep(self, request: InFlightRequest) -> None:
        """Keep state for a span just started on ``request.thread_id``."""
        with self._lock:
            if request.nested:
                self._nested.setdefault(request.thread_id, []).append(request)
            else:
                self._states[request.thread_id] = request

    def leave(self, span: Any, thread_id: int) -> Optional[ActiveSettings]:
        """Stop watching ``span`` if it runs on ``thread_id``: the settings it started under.

        None when it is not watched on this thread. Its state stays for :meth:`take_state`.
        """
        running = self._spans.get(thread_id)
        if running is None or not _same_span(running, span):
            return None
        del self._spans[thread_id]
        # Left in place: the thread's next start overwrites it, and reading is cheaper.
        return self._settings[thread_id]

    def has_state(self, thread_id: int) -> bool:
        """Whether the span ending on ``thread_id`` has state to collect with :meth:`take_state`.

        Read without the lock: once a span has ended the sampler makes no state for
        it, and only this thread keeps state for its own spans.
        """
        return thread_id in self._states

    def take_state(self, span: Any, thread_id: int) -> Optional[InFlightRequest]:
        """The state of ``span``, which ran on ``thread_id`` and has ended, if it has one."""
        with self._lock:
            state = self._states.get(thread_id)
            if state is None or not _same_span(state.span, span):
                return None
            del self._states[thread_id]
            return state

    def end(
        self, span: Any, thread_id: int
    ) -> tuple[Optional[ActiveSettings], Optional[InFlightRequest]]:
        """Stop watching ``span``: the settings it started under (None if it was not
        watched), and its state if it has one.

        ``span`` is looked for on ``thread_id`` first, then on every thread: a span
        may end on another thread than the one it started on (never under WSGI).
        """
        settings = self.leave(span, thread_id)
        if settings is None:
            for other, running in list(self._spans.items()):
                if running.end_time is not None and _same_span(running, span):
                    thread_id, settings = other, self._settings.get(other)
                    break
        state = self.take_state(span, thread_id)
        return (state.settings, state) if state is not None else (settings, None)

    def end_nested(self, span: Any, thread_id: int) -> Optional[InFlightRequest]:
        """Stop watching a nested span and take its state."""
        with self._lock:
            for other in (thread_id, *self._nested):
                on_thread = self._nested.get(other, [])
                for request in on_thread:
                    if _same_span(request.span, span):
                        on_thread.remove(request)
                        if not on_thread:
                            del self._nested[other]
                        return request
        return None

    def is_watching_thread(self, thread_id: int) -> bool:
        """Whether a watched span is running on ``thread_id`` (for decorated functions)."""
        running = self._spans.get(thread_id)
        return running is not None and running.end_time is None

    # --- sampler thread ----------------------------------------------------------------

    def any_running(self) -> bool:
        """Whether a watched span may be running: a cheap hint, read without the lock."""
        return bool(self._spans) or bool(self._nested)

    def running(self) -> list[tuple[int, Any, ActiveSettings]]:
        """(thread id, span, the settings it started under) of every watched span running."""
        running = []
        for thread_id, span in list(self._spans.items()):
            settings = self._settings.get(thread_id)
            if span.end_time is None and settings is not None:
                running.append((thread_id, span, settings))
        return running

    def state_of(
        self, thread_id: int, span: Any, settings: ActiveSettings
    ) -> Optional[InFlightRequest]:
        """The state of a running span, made if it has none; None once it has ended."""
        with self._lock:
            if span.end_time is not None:
                return None
            state = self._states.get(thread_id)
            if state is None or state.span is not span:
                state = self._states[thread_id] = InFlightRequest(span, thread_id, settings)
            return state

    def prune(self) -> None:
        """Drop the states of spans that ended fast: their ``on_end`` does not collect them."""
        with self._lock:
            for thread_id, state in list(self._states.items()):
                span = state.span
                ended_fast = span.end_time is not None and (
                    span.end_time - span.start_time < state.settings.threshold_ns
                )
                if ended_fast and state.profiler is None:
                    del self._states[thread_id]

    def nested(self) -> list[InFlightRequest]:
        with self._lock:
            return [request for on_thread in self._nested.values() for request in on_thread]


def _same_span(live: Any, ended: Any) -> bool:
    # on_end gets a read-only copy of the span; it shares the live span's context
    return live.context is ended.context or live.context.span_id == ended.context.span_id
