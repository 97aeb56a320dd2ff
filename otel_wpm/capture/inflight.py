"""The requests being served right now, shared by the processor and the sampler.

Every request passes through here at its start and at its end, so that path is
one dict write at the start (a tuple of the span, its context, the
:class:`~otel_wpm.active_settings.ActiveSettings` it started under and the thread
serving it) and a read and a delete at the end, with no lock; only the thread
serving a request writes its key. A request keeps those settings to its end,
whatever ``update_config`` does meanwhile.

A request is keyed by what serves it (:func:`request_key`): the thread, or, inside
a running asyncio event loop, whose requests all share one thread, the task; under
gevent, the greenlet (:func:`key_by_greenlet`).

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

import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union, cast

from .._runtime import forksafe
from .samples import FoldedSamples, Stack

if TYPE_CHECKING:
    from asyncio import Task

    from ..active_settings import ActiveSettings

#: What serves a request: a thread id, the asyncio Task inside a running loop, or a
#: greenlet once gevent patched threading.
RequestKey = Union[int, "Task[Any]", Any]
#: A watched span while it runs: (the span, its SpanContext, the settings it started under,
#: the thread it started on: for a task, its loop's).
_Running = tuple[Any, Any, "ActiveSettings", int]
_current_greenlet: Optional[Callable[[], Any]] = None
# asyncio's, once it is imported: no event loop runs before, and a WSGI app that
# never imports asyncio does not pay for importing it.
_get_running_loop: Optional[Callable[[], Any]] = None
_current_task: Any = None
_task_type: Optional[type] = None


def _bind_asyncio() -> Callable[[], Any]:
    global _get_running_loop, _current_task, _task_type
    import asyncio

    _current_task, _task_type = asyncio.current_task, asyncio.Task
    _get_running_loop = asyncio._get_running_loop
    return _get_running_loop


def key_by_greenlet(getcurrent: Callable[[], Any]) -> bool:
    """From now on, key requests outside an event loop by ``getcurrent()``, their greenlet;
    False if they already were."""
    global _current_greenlet
    changed, _current_greenlet = _current_greenlet is not getcurrent, getcurrent
    return changed


def task_of(key: RequestKey) -> Optional[Task[Any]]:
    """The task that ``key`` names, or None."""
    if _task_type is not None and isinstance(key, _task_type):
        return cast("Task[Any]", key)
    return None


def request_key(thread_id: int) -> RequestKey:
    """The key of the request starting or ending here, on ``thread_id``.

    Outside an event loop (WSGI) this costs one C call on top of the thread id.
    Code run on a loop outside any task (a plain callback) is keyed by its thread.
    """
    if _get_running_loop is not None:
        loop = _get_running_loop()
    elif "asyncio" in sys.modules:
        loop = _bind_asyncio()()
    else:
        loop = None
    if loop is None:
        return thread_id if _current_greenlet is None else _current_greenlet()
    return _current_task(loop) or thread_id


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
    loop_waits: Any = None  # capture.loops.waits.LoopWaits, once a task-served request is sampled
    child_tasks: Any = None  # capture.loops.tasks' ChildTasks: what its coroutines' frames hold
    greenlet: Any = None  # the greenlet serving it, under gevent

    def __init__(
        self,
        span: Any,
        thread_id: int,
        settings: ActiveSettings,
        nested: bool = False,
        task: Optional[Task[Any]] = None,
    ) -> None:
        self.span = span
        self.thread_id = thread_id  # the serving thread; for a task, its loop's thread
        self.task = task  # the asyncio Task serving it, on an event loop
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

    @property
    def key(self) -> RequestKey:
        if self.task is not None:
            return self.task
        return self.greenlet if self.greenlet is not None else self.thread_id

    def sampled_seconds(self) -> float:
        """The time the samples stand for, from the request's start to the last sample."""
        return self.samples.seconds


class InFlightRequests:
    """Watched spans by what serves them (see :func:`request_key`), with their state."""

    def __init__(self) -> None:
        self.after_fork_in_child()
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        # Only the thread serving a request writes its key, and a dict get or set is
        # atomic, so the request path takes no lock.
        self._running: dict[RequestKey, _Running] = {}
        self._states: dict[RequestKey, InFlightRequest] = {}
        self._nested: dict[RequestKey, list[InFlightRequest]] = {}

    # --- request thread ----------------------------------------------------------------

    def start(
        self, span: Any, context: Any, key: RequestKey, thread_id: int, settings: ActiveSettings
    ) -> Sequence[InFlightRequest]:
        """Watch ``span`` (whose context is ``context``), served by ``key`` on ``thread_id``,
        under ``settings``; returns what a span served by ``key`` that never ended left
        behind."""
        previous = self._running.get(key)
        self._running[key] = (span, context, settings, thread_id)
        if previous is not None and previous[0].end_time is None:
            return self._stale(previous, key)
        return ()

    def _stale(self, previous: _Running, key: RequestKey) -> Sequence[InFlightRequest]:
        span, _, settings, _ = previous
        with self._lock:
            state = self._states.pop(key, None)
            nested = self._nested.pop(key, [])
        if state is None or state.span is not span:
            state = self.state_for(span, key, settings)
        return [state, *nested]

    def keep(self, request: InFlightRequest) -> None:
        """Keep state for a span just started by ``request.key``."""
        with self._lock:
            if request.nested:
                self._nested.setdefault(request.key, []).append(request)
            else:
                self._states[request.key] = request

    def leave(self, context: Any, key: RequestKey) -> Optional[tuple[ActiveSettings, bool]]:
        """Stop watching the span of ``context`` if ``key`` serves it: the settings it
        started under, and whether it has state to collect with :meth:`take_state`.

        None when it is not watched under ``key``. Whether it has state is read without
        the lock: once a span has ended the sampler makes no state for it, and only the
        thread serving ``key`` keeps state for its own spans.
        """
        running = self._running.get(key)
        if running is None:
            return None
        _, started, settings, _ = running
        # on_end gets a read-only copy of the span, which shares the live span's context
        if started is not context and started.span_id != context.span_id:
            return None
        del self._running[key]
        return settings, key in self._states

    def take_state(self, span: Any, key: RequestKey) -> Optional[InFlightRequest]:
        """The state of ``span``, which ``key`` served and which has ended, if it has one."""
        with self._lock:
            state = self._states.get(key)
            if state is None or not _same_span(state.span, span):
                return None
            del self._states[key]
            return state

    def end(
        self, span: Any, key: RequestKey
    ) -> tuple[Optional[ActiveSettings], Optional[InFlightRequest]]:
        """Stop watching ``span``: the settings it started under (None if it was not
        watched), and its state if it has one.

        ``span`` is looked for under ``key`` first, then under every key: a span may
        end on another thread or task than the one it started on (never under WSGI).
        """
        context = span.context
        watched = self.leave(context, key)
        if watched is None:
            for other, (running, *_) in list(self._running.items()):
                if running.end_time is not None and _same_span(running, span):
                    watched = self.leave(context, other)
                    key = other
                    break
        state = self.take_state(span, key)
        if state is not None:
            return state.settings, state
        return (watched[0] if watched is not None else None), None

    def end_nested(self, span: Any, key: RequestKey) -> Optional[InFlightRequest]:
        """Stop watching a nested span and take its state."""
        with self._lock:
            for other in (key, *self._nested):
                served = self._nested.get(other, [])
                for request in served:
                    if _same_span(request.span, span):
                        served.remove(request)
                        if not served:
                            del self._nested[other]
                        return request
        return None

    def is_watching(self, key: RequestKey) -> bool:
        """Whether a watched span is running under ``key`` (for decorated functions)."""
        running = self._running.get(key)
        return running is not None and running[0].end_time is None

    # --- sampler thread ----------------------------------------------------------------

    def any_running(self) -> bool:
        """Whether a watched span may be running: a cheap hint, read without the lock."""
        return bool(self._running) or bool(self._nested)

    def running(self) -> list[tuple[RequestKey, Any, ActiveSettings]]:
        """(key, span, the settings it started under) of every watched span running."""
        running = []
        for key, (span, _, settings, _) in list(self._running.items()):
            if span.end_time is None:
                running.append((key, span, settings))
        return running

    def tasks_on(self, thread_id: int) -> list[tuple[Task[Any], Any]]:
        """(task, span) of every watched span that a task of the loop on ``thread_id`` serves."""
        found = []
        for key, (span, _, _, running_on) in list(self._running.items()):
            task = task_of(key)
            if task is not None and running_on == thread_id:
                found.append((task, span))
        return found

    def state_of(
        self, key: RequestKey, span: Any, settings: ActiveSettings
    ) -> Optional[InFlightRequest]:
        """The state of a running span, made if it has none; None once it has ended."""
        with self._lock:
            if span.end_time is not None:
                return None
            state = self._states.get(key)
            if state is None or state.span is not span:
                state = self._states[key] = self.state_for(span, key, settings)
            return state

    def state_for(self, span: Any, key: RequestKey, settings: ActiveSettings) -> InFlightRequest:
        """A new state for ``span``, served by ``key`` (not kept: see :meth:`keep`)."""
        if type(key) is int:
            return InFlightRequest(span, key, settings)
        task = task_of(key)
        if task is not None:
            running = self._running.get(key)
            loop_thread = running[3] if running is not None else 0
            return InFlightRequest(span, loop_thread, settings, task=task)
        request = InFlightRequest(span, 0, settings)
        request.greenlet = key
        return request

    def prune(self) -> list[InFlightRequest]:
        """Drop the states of spans that ended fast: their ``on_end`` does not collect them.

        Also stop watching the spans of finished tasks and greenlets that never ended
        (a thread's next request finds its stale span, but a task serves only one):
        returns what they left behind, for the owner to forget (as :meth:`start` does).
        """
        with self._lock:
            for key, state in list(self._states.items()):
                span = state.span
                ended_fast = span.end_time is not None and (
                    span.end_time - span.start_time < state.settings.threshold_ns
                )
                if ended_fast and state.profiler is None:
                    del self._states[key]
        stale: list[InFlightRequest] = []
        for key, running in list(self._running.items()):
            if type(key) is not int and running[0].end_time is None and _finished(key):
                stale.extend(self._stale(running, key))
                self.leave(running[1], key)
        return stale

    def nested(self) -> list[InFlightRequest]:
        with self._lock:
            return [request for served in self._nested.values() for request in served]


def _finished(key: RequestKey) -> bool:
    """Whether the task or greenlet ``key`` is done (it serves no request any more)."""
    task = task_of(key)
    return task.done() if task is not None else bool(getattr(key, "dead", False))


def _same_span(live: Any, ended: Any) -> bool:
    # on_end gets a read-only copy of the span; it shares the live span's context
    return live.context is ended.context or live.context.span_id == ended.context.span_id
