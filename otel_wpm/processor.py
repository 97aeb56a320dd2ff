"""``ProfilingSpanProcessor``: profile request spans, report the slow ones.

Usage with an SDK ``TracerProvider`` you already have::

    from opentelemetry.sdk.trace import TracerProvider
    from otel_wpm import Config, ProfilingSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(ProfilingSpanProcessor(Config(threshold_seconds=0.5)))

What it watches: server spans that are local roots (no parent, or a remote
parent), from whichever instrumentation made them, and, once
:meth:`~ProfilingSpanProcessor.watch_decorated_functions` was called, spans of
functions decorated by ``PerformanceMonitor.create_decorator()``. Every other
span costs a few attribute reads, and a dict lookup when it ends.

The path of a watched span:

1. ``on_start`` (request thread): record it in :class:`InFlightRequests` under
   its thread, with the :class:`ActiveSettings` in force, which it keeps to its
   end, and start keeping the spans of its trace (:class:`TraceSpans`).
   Only a request that can carry a body (not GET, HEAD, ...) gets a
   :class:`RecordingInput` in front of ``wsgi.input``; with the precise engine,
   a budgeted share get a pyinstrument profiler.
2. Sampler thread (:class:`StackSampler`): once the span is older than
   ``sample_after_fraction`` x threshold, ``_admit`` checks the black-list and
   finds the WSGI environ on the request's stack (and the route template the
   framework matched), then its stack is sampled.
   Once older than the threshold, ``_mark_slow`` gives the *live* span
   ``wpm.slow`` and ``wpm.report.url`` so the trace links to the report; once
   older than ``hung_request_factor`` x threshold, ``_report_hung`` reports it
   while it still runs.
3. ``on_end`` (request thread): any other span of a watched request's trace is
   kept for its report (one dict lookup by trace id, and an append), but the
   spans OpenTelemetry's ASGI middleware makes for each message sent or received; a fast
   request costs a counter and a few dict deletes; a slow one goes, with its
   spans, to the :class:`Reporter`, which copies it and queues it.
4. Report thread (:class:`Reporter`): render the HTML, write the file, hand an
   ``Alert`` to the alert dispatcher, which de-duplicates and delivers it on its
   own thread.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any, Optional

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from ._runtime import gevent_patch
from ._runtime.logs import LogOnce
from ._runtime.request_cost import measure_request_cost
from ._runtime.stats import Stats
from .active_settings import ActiveSettings
from .capture import attributes
from .capture.asgi import recording_receive
from .capture.frames import callers, current_frames, stack_of
from .capture.greenlets import fill_unsampled
from .capture.inflight import (
    InFlightRequest,
    InFlightRequests,
    RequestKey,
    key_by_greenlet,
    request_key,
    task_of,
)
from .capture.precise import OverheadBudget, start_profiler, stop_profiler
from .capture.request import find_request, start_recording
from .capture.route import keep_framework_request, route_template
from .capture.sampler import StackSampler
from .capture.semconv import ASGI_MESSAGE_SPANS, http_facts, is_websocket, may_carry_body
from .capture.trace_spans import KeptSpans, TraceSpans
from .config import Config
from .reporting.reporter import Reporter

logger = logging.getLogger(__name__)


def _is_decorated_function(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    if scope is None or scope.name != attributes.TRACER_NAME:
        return False
    return bool((span.attributes or {}).get(attributes.PROFILE))


def _remember_route(request: InFlightRequest) -> None:
    # While the request runs: Flask takes its request object out of the environ at the end.
    if request.route is None:
        request.route = route_template(request.environ)


class ProfilingSpanProcessor(SpanProcessor):
    """An OpenTelemetry span processor that explains slow requests with a profile."""

    def __init__(self, config: Optional[Config] = None, *, stats: Optional[Stats] = None) -> None:
        """``stats``: the counters to keep (default: new ones, also OpenTelemetry metrics)."""
        config = config if config is not None else Config.from_env()
        self._url_filter = config.url_filter
        self.stats = stats if stats is not None else Stats()
        self._request_cost_seconds: Optional[float] = None  # measured by the first get_stats()
        self._failures = LogOnce(logger)
        self._requests = InFlightRequests()
        self._functions: dict[int, bool] = {}  # decorated functions' span ids: nested?
        self._decorated_functions = False  # whether spans of decorated functions may come
        self._trace_spans = TraceSpans()  # the spans of watched requests, for their reports
        self._settings = ActiveSettings.from_config(config)
        self._sampler = StackSampler(
            self._requests,
            admit=self._admit,
            on_threshold_crossed=self._mark_slow,
            on_hung=self._report_hung,
            settings=self._settings,
            on_cpu=self.stats.charge_cpu,
            on_stale=self._forget_stale,
        )
        self._reporter = Reporter(config, self.stats)
        _set_log_level(config)
        gevent_patch.watch(_key_by_greenlet)

    # --- configuration -------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._settings.config

    @property
    def settings(self) -> ActiveSettings:
        """The settings requests starting now run under."""
        return self._settings

    @property
    def reporter(self) -> Reporter:
        return self._reporter

    def update_config(self, config: Config) -> None:
        """Use ``config`` for requests that start from now on.

        Requests in flight finish under the settings they started with. Only what
        ``config`` changes is rebuilt: the precise engine is not calibrated again
        unless the engine changes, nor the alert dispatcher unless an alert setting
        changes (the old one then delivers its queue in the background).
        """
        config.use_url_filter(self._url_filter)
        settings = ActiveSettings.from_config(config, previous=self._settings)
        self._reporter.update_config(self._settings.config, config)
        self._sampler.configure(settings)
        self._settings = settings
        _set_log_level(config)

    def watch_decorated_functions(self) -> None:
        """Watch the spans of functions decorated by ``PerformanceMonitor.create_decorator()``
        too (until then, other spans are not looked at when they start)."""
        self._decorated_functions = True

    # --- span start (request thread) ----------------------------------------------------

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        try:
            # A request: a server span that is a local root. Tested inline, here and in
            # on_end, as both run for every span the app makes.
            if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
                settings = self._settings
                if settings.enabled:
                    self._watch(span, threading.get_ident(), settings)
            elif self._decorated_functions and _is_decorated_function(span):
                settings = self._settings
                if settings.enabled:
                    self._watch_function(span, settings)
        except Exception:
            self._failures.warning("on_start", "otel-wpm failed to watch a span", exc_info=True)

    def _watch(self, span: Span, thread_id: int, settings: ActiveSettings) -> None:
        # Kept short on purpose: this runs on every request. The black-list is checked,
        # and the WSGI environ found, by the sampler thread once a request has run long
        # enough to matter; only a body must be caught here, before the app reads it.
        key = request_key(thread_id)
        context = span.context
        stale = self._requests.start(span, context, key, thread_id, settings)
        if stale:
            self._forget_stale(stale)
        self._trace_spans.watch(context)
        if self._sampler.asleep:
            self._sampler.wake()
        if key is not thread_id and (task := task_of(key)) is not None:
            # The precise engine's profiler is per thread, and every task of a loop shares
            # its thread, so task-served requests are always sampled; only the facade's
            # body recorder is kept.
            recorder = recording_receive.get()
            if recorder is not None and settings.captures_body:
                self._keep_recorder(span, task, settings, recorder)
            return
        record_body = settings.captures_body and may_carry_body(span)
        if record_body or settings.budget is not None:
            self._watch_closely(self._requests.state_for(span, key, settings), record_body)

    def _keep_recorder(
        self, span: Span, task: RequestKey, settings: ActiveSettings, recorder: Any
    ) -> None:
        """Keep the facade's recorder of the body of a request a task serves."""
        request = self._requests.state_for(span, task, settings)
        request.recorder = recorder
        self._requests.keep(request)

    def _watch_closely(self, request: InFlightRequest, record_body: bool) -> None:
        """Put a recorder in front of the request body; run the precise engine's profiler
        (per thread: not for a greenlet, which shares its thread with the others)."""
        budget = request.settings.budget if request.greenlet is None else None
        if record_body:
            self._start_capture(request, callers(sys._getframe(1)))
        if budget is not None and self._should_profile_precisely(request.span, budget):
            interval = request.settings.config.sampling_interval_seconds
            request.profiler = start_profiler(interval / 10)
            request.sampling_paused = request.profiler is not None
        if request.environ is not None or request.profiler is not None:
            self._requests.keep(request)

    def _watch_function(self, span: Span, settings: ActiveSettings) -> None:
        """A span of a function decorated by ``PerformanceMonitor.create_decorator()``."""
        thread_id = threading.get_ident()
        key = request_key(thread_id)
        nested = self._requests.is_watching(key)
        if nested:
            request = self._requests.state_for(span, key, settings)
            request.nested = True
            self._requests.keep(request)
        else:
            self._watch(span, thread_id, settings)  # not inside a request: it is the request
        self._functions[span.context.span_id] = nested

    def _start_capture(self, request: InFlightRequest, frames: Iterable[FrameType]) -> None:
        self._find_environ(request, frames)
        if request.environ is not None:
            body_bytes = request.settings.config.capture_body_bytes
            request.recorder = start_recording(request.environ, body_bytes)

    def _should_profile_precisely(self, span: Span, budget: OverheadBudget) -> bool:
        return budget.should_profile() and not self._is_blacklisted(span)

    def _is_blacklisted(self, span: ReadableSpan) -> bool:
        if span.kind is not SpanKind.SERVER:
            return False
        facts = http_facts(span.attributes)
        return self._url_filter.matches(facts.url, facts.path)

    def _forget_stale(self, stale: Sequence[InFlightRequest]) -> None:
        """Forget requests whose span never ended: found by the next request of their thread
        (request thread), or once their task or greenlet finished (sampler thread)."""
        for request in stale:
            self._functions.pop(request.span.context.span_id, None)
            self._trace_spans.leave(request.span, request.span.context)
            if request.profiler is not None:
                stop_profiler(request.profiler)
        self._failures.warning(
            "stale",
            "otel-wpm: a watched span never ended (served by %s); its state was discarded",
            _served_by(stale[0]),
        )

    # --- sampler thread -----------------------------------------------------------------

    def _admit(self, request: InFlightRequest, frames: Iterable[FrameType]) -> bool:
        if is_websocket(request.span.attributes):
            return False
        if self._is_blacklisted(request.span):
            self.stats.incr("blacklisted_requests")
            return False
        frames = list(frames)
        self._find_environ(request, frames)
        if request.environ is not None:
            # Django's request (and its route) is on the stack only while it runs.
            keep_framework_request(request.environ, frames)
            _remember_route(request)
        return True

    def _find_environ(self, request: InFlightRequest, frames: Iterable[FrameType]) -> None:
        """The request's WSGI environ or ASGI scope, from the frames it runs (innermost first).

        Looked for even when nothing of the request is captured: its route is there.
        """
        if request.environ is None and not request.nested:
            request.environ = find_request(frames)

    def _mark_slow(self, request: InFlightRequest) -> None:
        span = request.span
        if span.end_time is not None:
            return
        _remember_route(request)
        file_name = self._reporter.report_file(span, request)
        request.report_file = file_name
        link = self._reporter.report_link(span, request, file_name)
        span.set_attribute(attributes.SLOW, True)
        span.set_attribute(attributes.THRESHOLD_SECONDS, request.settings.config.threshold_seconds)
        span.set_attribute(attributes.REPORT_FILE, file_name)
        if link:
            span.set_attribute(attributes.REPORT_URL, link)

    def _report_hung(self, request: InFlightRequest) -> None:
        span = request.span
        if span.end_time is not None:
            return
        age = (time.time_ns() - request.start_ns) / 1e9
        samples = request.samples.snapshot()
        if not samples and request.task is not None:
            from .capture.loops.sampler import current_stack

            samples.add(current_stack(request), age)
        elif not samples:
            # The precise engine's profiler owns this thread and the sampler leaves it
            # alone; its profile can only be read when the request ends. Show where the
            # request is stuck now instead of an empty report.
            frame = current_frames().get(request.thread_id)
            if frame is not None:
                samples.add(stack_of(frame), age)
            del frame
        spans = self._trace_spans.so_far(span)
        self._reporter.report_running(span, request, age, samples, spans)

    # --- span end (request thread) -------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        try:
            kind = span.kind
            if kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
                self._end_request(span)
                return
            if self._functions and span.context.span_id in self._functions:
                self._end_function(span)
            elif kind is SpanKind.INTERNAL and span.name.endswith(ASGI_MESSAGE_SPANS):
                return  # the ASGI server's plumbing, not the request's work
            # any other span: one dict lookup, unless its trace's request is watched
            self._trace_spans.add(span)
        except Exception:
            self._failures.warning("on_end", "otel-wpm failed to finish a span", exc_info=True)

    def _end_request(self, span: ReadableSpan) -> None:
        # Kept short on purpose: a fast request without state (no body recorder, no
        # profiler, not yet sampled) ends here. It is judged by the settings it started
        # under, whatever the config is now, and its profiler always stops.
        thread_id = threading.get_ident()
        key = request_key(thread_id)
        duration_ns = (span.end_time or time.time_ns()) - (span.start_time or 0)
        context = span.context
        spans = self._trace_spans.leave(span, context)
        watched = self._requests.leave(context, key)
        if watched is None:  # not watched, or it started on another thread or task
            if duration_ns >= self._settings.threshold_ns:
                self._end_elsewhere(span, key, thread_id, duration_ns, spans)
            return
        settings, has_state = watched
        self.stats.count_request(thread_id, duration_ns)
        if duration_ns >= settings.threshold_ns or has_state:
            request = self._requests.take_state(span, key)
            self._finish(span, request, settings, duration_ns, spans)

    def _end_elsewhere(
        self,
        span: ReadableSpan,
        key: RequestKey,
        thread_id: int,
        duration_ns: int,
        spans: Optional[KeptSpans],
    ) -> None:
        settings, request = self._requests.end(span, key)
        if settings is not None:
            self.stats.count_request(thread_id, duration_ns)
            self._finish(span, request, settings, duration_ns, spans)

    def _end_function(self, span: ReadableSpan) -> None:
        thread_id = threading.get_ident()
        key = request_key(thread_id)
        duration_ns = (span.end_time or time.time_ns()) - (span.start_time or 0)
        spans = None
        if self._functions.pop(span.context.span_id, False):
            # Nested: its time is already in the time of the request it runs in.
            self.stats.count_request(thread_id)
            request = self._requests.end_nested(span, key)
            settings = request.settings if request is not None else None
        else:
            self.stats.count_request(thread_id, duration_ns)
            spans = self._trace_spans.leave(span, span.context)
            settings, request = self._requests.end(span, key)
        self._finish(span, request, settings or self._settings, duration_ns, spans)

    def _finish(
        self,
        span: ReadableSpan,
        request: Optional[InFlightRequest],
        settings: ActiveSettings,
        duration_ns: int,
        spans: Optional[KeptSpans],
    ) -> None:
        session = None
        if request is not None and request.profiler is not None:
            session = stop_profiler(request.profiler)
            self.stats.incr("profiles_precise")
        if duration_ns < settings.threshold_ns:
            return
        if request is not None and request.ignored:
            return  # counted when the sampler ignored it
        if is_websocket(span.attributes):
            return
        if self._is_blacklisted(span):
            self.stats.incr("blacklisted_requests")
            return
        if request is None:
            key = request_key(threading.get_ident())
            request = self._requests.state_for(span, key, settings)
        if request.recorder is None and request.task is not None:
            request.recorder = recording_receive.get()  # the facade's, inside the span
        self._find_environ(request, callers(sys._getframe()))  # ended before the sampler looked
        if request.greenlet is not None:
            fill_unsampled(request, span.end_time or time.time_ns())
        duration = duration_ns / 1e9
        self.stats.incr("slow_requests")
        self.stats.record_slow_duration(duration)
        self._reporter.report(span, request, duration, session, spans)

    # --- stats, alerts, lifecycle ---------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """The counters, and ``overhead_stats``: what watching adds to the requests watched.

        The first call measures the fixed cost of watching one request (a few ms).
        """
        if self._request_cost_seconds is None:
            self._request_cost_seconds = _measured_request_cost(self.config)
        stats = self.stats.snapshot(self._request_cost_seconds)
        overhead = stats["overhead_stats"]
        budget = self._settings.budget
        if budget is not None and overhead["sample_count"]:
            # The precise engine's profiler slows the requests it runs in: its bound.
            details = budget.details()
            overhead["average_overhead"] += budget.estimated_overhead()
            overhead["method"] += f" + {details.pop('method')}"
            overhead.update(details)
        return stats

    def reset_stats(self) -> None:
        self.stats.reset()

    def test_alert_system(self) -> dict[str, Any]:
        """Send a test alert, with a small real report, through every enabled exporter now;
        says which worked."""
        return self._reporter.send_test_alert(self._settings)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._reporter.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        self._sampler.stop()
        self._reporter.shutdown(self._settings.config.shutdown_timeout_seconds)


def _measured_request_cost(config: Config) -> float:
    # A throwaway processor with the same settings that keeps nothing: no report, alert
    # or metric, and no profiler (the precise engine's cost is its budget's bound).
    try:
        probe = ProfilingSpanProcessor(
            config.replace(
                enabled=True,
                engine="sampling",
                enable_local_file=False,
                enable_mattermost=False,
                dedup_redis_url=None,
            ),
            stats=Stats(export_metrics=False),
        )
        try:
            return measure_request_cost(probe)
        finally:
            probe.shutdown()
    except Exception:  # get_stats() must answer; called once per processor, so logged once
        logger.warning("otel-wpm could not measure the cost of a request", exc_info=True)
        return 0.0


def _served_by(request: InFlightRequest) -> str:
    if request.task is not None:
        return f"task {request.task.get_name()} on thread {request.thread_id}"
    if request.greenlet is not None:
        return f"greenlet {request.greenlet!r}"
    return f"thread {request.thread_id}"


def _key_by_greenlet() -> None:
    """gevent patched threading: every request is served by a greenlet of one thread."""
    from greenlet import getcurrent

    if key_by_greenlet(getcurrent):
        logger.info(
            "otel-wpm: gevent patched this process; requests are sampled per greenlet while "
            "they wait, and time a greenlet runs without yielding shows as [gevent hub busy]"
        )


def _set_log_level(config: Config) -> None:
    # The one place the level of the otel_wpm logger (and so of its children) is set.
    logging.getLogger("otel_wpm").setLevel(config.log_level)
