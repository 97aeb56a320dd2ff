"""``ProfilingSpanProcessor``: profile request spans, report the slow ones.

Usage with an SDK ``TracerProvider`` you already have::

    from opentelemetry.sdk.trace import TracerProvider
    from otel_wpm import Config, ProfilingSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(ProfilingSpanProcessor(Config(threshold_seconds=0.5)))

What it watches: server spans that are local roots (no parent, or a remote
parent), from whichever instrumentation made them, and spans of functions
decorated by ``PerformanceMonitor.create_decorator()``. Every other span costs
a few attribute reads.

The path of a watched span:

1. ``on_start`` (request thread): record it in :class:`InFlightRequests` under
   its thread. Only a request that can carry a body (not GET, HEAD, ...) gets a
   :class:`RecordingInput` in front of ``wsgi.input``; with the precise engine,
   a budgeted share get a pyinstrument profiler.
2. Sampler thread: once the span is older than ``sample_after_fraction`` x
   threshold, check the black-list, find the WSGI environ on the request's
   stack, and sample the stack. Once older than the threshold, mark the *live*
   span with ``wpm.slow`` and ``wpm.report.url`` so the trace links to the
   report; once older than ``hung_request_factor`` x threshold, report it
   while it still runs.
3. ``on_end`` (request thread): a fast span costs a counter and a dict delete;
   a slow one is copied into a :class:`SlowRequest` and queued.
4. Report thread: render the HTML, write the file, hand an :class:`Alert` to
   the alert dispatcher, which de-duplicates and delivers on its own thread.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Optional

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from ._runtime.logs import LogOnce
from ._runtime.stats import Stats
from ._runtime.worker import BackgroundWorker
from .alerting.pipeline import AlertPipeline
from .capture import attributes
from .capture.inflight import InFlightRequest, InFlightRequests, Stack
from .capture.precise import OverheadBudget, measure_slowdown, start_profiler, stop_profiler
from .capture.request import find_wsgi_environ, snapshot, start_recording
from .capture.sampler import SamplerListener, StackSampler, stack_of
from .capture.semconv import HttpFacts, http_facts, may_carry_body
from .config import Config
from .masking import SecretMasker
from .reporting.profile import Profile, session_from_samples
from .reporting.render import SlowRequest, render_report
from .reporting.report_format import report_file_name
from .reporting.store import ReportStore

logger = logging.getLogger(__name__)
_NOT_A_METHOD = re.compile(r"[^A-Za-z_-]")


def _is_decorated_function(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    if scope is None or scope.name != attributes.TRACER_NAME:
        return False
    return bool((span.attributes or {}).get(attributes.PROFILE))


def _facts_of(span: ReadableSpan) -> HttpFacts:
    if span.kind is SpanKind.SERVER:
        return http_facts(span.attributes)
    return HttpFacts(
        method="CALL", path=span.name, query="", url=span.name, route=span.name, status=None
    )


def _description(method: str) -> str:
    # pyinstrument puts this in a <script> element unescaped; a method is client input
    return f"{_NOT_A_METHOD.sub('', method)[:16] or 'HTTP'} request"


class ProfilingSpanProcessor(SpanProcessor, SamplerListener):
    """An OpenTelemetry span processor that explains slow requests with a profile."""

    def __init__(self, config: Optional[Config] = None) -> None:
        self._config = config if config is not None else Config.from_env()
        self._url_filter = self._config.url_filter
        self.stats = Stats()
        self._failures = LogOnce(logger)
        self._requests = InFlightRequests()
        self._functions: dict[int, bool] = {}  # decorated functions' span ids: nested?
        self._started_cpu = time.process_time()
        self._sampler = StackSampler(self, self._requests, **self._sampler_settings(self._config))
        self._reports: BackgroundWorker[SlowRequest] = BackgroundWorker(
            "otel-wpm-reports", self._report, self._config.report_queue_size, self._report_dropped
        )
        self._apply(self._config)

    # --- configuration -------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @staticmethod
    def _sampler_settings(config: Config) -> dict[str, Any]:
        threshold = config.threshold_seconds
        factor = config.hung_request_factor
        return {
            "interval_seconds": config.sampling_interval_seconds,
            "sample_after_seconds": threshold * config.sample_after_fraction,
            "threshold_seconds": threshold,
            "hung_after_seconds": threshold * factor if factor else None,
        }

    def _apply(self, config: Config) -> None:
        self._threshold_ns = int(config.threshold_seconds * 1e9)
        self._enabled = config.enabled
        logging.getLogger("otel_wpm").setLevel(config.log_level)
        self._captures_request = config.capture_headers or config.capture_body_bytes > 0
        self._captures_body = config.capture_body_bytes > 0
        self._masker = SecretMasker.from_env(config.mask_keys)
        self._store = ReportStore.from_config(config) if config.enable_local_file else None
        self._budget = (
            OverheadBudget(config.max_performance_overhead, measure_slowdown())
            if config.engine == "pyinstrument"
            else None
        )
        self._alerts = AlertPipeline(config, self.stats)

    def update_config(self, config: Config) -> None:
        """Use ``config`` from now on; requests in flight finish under the old one."""
        old_alerts = self._alerts
        config.use_url_filter(self._url_filter)
        self._config = config
        self._sampler.configure(**self._sampler_settings(config))
        self._apply(config)
        old_alerts.shutdown(config.shutdown_timeout_seconds)

    # --- SpanProcessor -------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        try:
            # A request: a server span that is a local root. Tested inline, here and in
            # on_end, as both run for every span the app makes.
            if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
                if self._enabled:
                    self._watch(span, threading.get_ident())
            elif _is_decorated_function(span):
                self._watch_function(span)
        except Exception:
            self._failures.warning("on_start", "otel-wpm failed to watch a span", exc_info=True)

    def _watch(self, span: Span, thread_id: int) -> None:
        # Kept short on purpose: this runs on every request. The black-list is checked,
        # and the WSGI environ found, by the sampler thread once a request has run long
        # enough to matter; only a body must be caught here, before the app reads it.
        stale = self._requests.start(span, thread_id)
        if stale:
            self._forget_stale(stale)
        self._sampler.ensure_started()
        record_body = self._captures_body and may_carry_body(span)
        if record_body or self._budget is not None:
            self._watch_closely(span, thread_id, record_body)

    def _watch_closely(self, span: Span, thread_id: int, record_body: bool) -> None:
        """Put a recorder in front of the request body; run the precise engine's profiler."""
        request = InFlightRequest(span, thread_id)
        if record_body:
            self._start_capture(request, sys._getframe(1))
        if self._budget is not None and self._should_profile_precisely(span):
            request.profiler = start_profiler(self._config.sampling_interval_seconds / 10)
            request.sampling_paused = request.profiler is not None
        if request.environ is not None or request.profiler is not None:
            self._requests.keep(request)

    def _watch_function(self, span: Span) -> None:
        """A span of a function decorated by ``PerformanceMonitor.create_decorator()``."""
        thread_id = threading.get_ident()
        nested = self._requests.is_watching_thread(thread_id)
        if nested:
            self._requests.keep(InFlightRequest(span, thread_id, nested=True))
        else:
            self._watch(span, thread_id)  # not inside a request: it is the request
        self._functions[span.context.span_id] = nested

    def _start_capture(self, request: InFlightRequest, frame: Optional[FrameType]) -> None:
        self._find_environ(request, frame)
        if request.environ is not None:
            request.recorder = start_recording(request.environ, self._config.capture_body_bytes)

    def _should_profile_precisely(self, span: Span) -> bool:
        assert self._budget is not None
        return self._budget.should_profile() and not self._is_blacklisted(span)

    def _is_blacklisted(self, span: ReadableSpan) -> bool:
        if span.kind is not SpanKind.SERVER:
            return False
        facts = http_facts(span.attributes)
        return self._url_filter.matches(facts.url, facts.path)

    def _forget_stale(self, stale: Sequence[InFlightRequest]) -> None:
        for request in stale:
            self._functions.pop(request.span.context.span_id, None)
            if request.profiler is not None:
                stop_profiler(request.profiler)
        self._failures.warning(
            "stale",
            "otel-wpm: a watched span never ended on thread %d; its state was discarded",
            stale[0].thread_id,
        )

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
                self._end_request(span)
            elif self._functions and span.context.span_id in self._functions:
                self._end_function(span)
        except Exception:
            self._failures.warning("on_end", "otel-wpm failed to finish a span", exc_info=True)

    def _end_request(self, span: ReadableSpan) -> None:
        # Kept short on purpose: a fast request without state (no body recorder, no
        # profiler, not yet sampled) ends here. Whatever the config is now: a request
        # watched under an earlier one still ends, and its profiler still stops.
        thread_id = threading.get_ident()
        duration_ns = (span.end_time or time.time_ns()) - (span.start_time or 0)
        if duration_ns < self._threshold_ns and not self._requests.has_state(thread_id):
            if self._requests.leave(span, thread_id):
                self.stats.count_request(thread_id)
            return
        watched, request = self._requests.end(span, thread_id)
        if watched:
            self.stats.count_request(thread_id)
            self._finish(span, request, duration_ns)

    def _end_function(self, span: ReadableSpan) -> None:
        thread_id = threading.get_ident()
        self.stats.count_request(thread_id)
        if self._functions.pop(span.context.span_id, False):
            request = self._requests.end_nested(span, thread_id)
        else:
            request = self._requests.end(span, thread_id)[1]
        duration_ns = (span.end_time or time.time_ns()) - (span.start_time or 0)
        self._finish(span, request, duration_ns)

    def _finish(
        self, span: ReadableSpan, request: Optional[InFlightRequest], duration_ns: int
    ) -> None:
        session = None
        if request is not None and request.profiler is not None:
            session = stop_profiler(request.profiler)
            self.stats.incr("profiles_precise")
        if duration_ns < self._threshold_ns:
            return
        if request is not None and request.ignored:
            return  # counted when the sampler ignored it
        if self._is_blacklisted(span):
            self.stats.incr("blacklisted_requests")
            return
        if request is None:
            request = InFlightRequest(span, threading.get_ident())
        self._find_environ(request, sys._getframe())  # ended before the sampler looked
        duration = duration_ns / 1e9
        self.stats.incr("slow_requests")
        self.stats.record_slow_duration(duration)
        self._reports.submit(self._slow_request(span, request, duration, session))

    # --- SamplerListener (sampler thread) ------------------------------------------------

    def admit(self, request: InFlightRequest, frame: Optional[FrameType]) -> bool:
        if self._is_blacklisted(request.span):
            self.stats.incr("blacklisted_requests")
            return False
        self._find_environ(request, frame)
        return True

    def _find_environ(self, request: InFlightRequest, frame: Optional[FrameType]) -> None:
        if (
            frame is not None
            and request.environ is None
            and self._captures_request
            and not request.nested
        ):
            request.environ = find_wsgi_environ(frame)

    def on_threshold_crossed(self, request: InFlightRequest) -> None:
        span = request.span
        if span.end_time is not None:
            return
        file_name = self._report_file_name(span, request, in_flight=False)
        request.report_file = file_name
        link = self._report_link(span, file_name)
        span.set_attribute(attributes.SLOW, True)
        span.set_attribute(attributes.THRESHOLD_SECONDS, self._config.threshold_seconds)
        span.set_attribute(attributes.REPORT_FILE, file_name)
        if link:
            span.set_attribute(attributes.REPORT_URL, link)

    def on_hung(self, request: InFlightRequest) -> None:
        span = request.span
        if span.end_time is not None:
            return
        age = (time.time_ns() - request.start_ns) / 1e9
        samples = None
        if not request.samples:
            # The precise engine's profiler owns this thread and the sampler leaves it
            # alone; its profile can only be read when the request ends. Show where the
            # request is stuck now instead of an empty report.
            frame = sys._current_frames().get(request.thread_id)
            if frame is not None:
                samples = [(stack_of(frame), age)]
            del frame
        self._reports.submit(
            self._slow_request(span, request, age, None, in_flight=True, samples=samples)
        )

    # --- building reports ----------------------------------------------------------------

    def _report_file_name(
        self, span: ReadableSpan, request: InFlightRequest, in_flight: bool
    ) -> str:
        facts = _facts_of(span)
        return report_file_name(
            datetime.fromtimestamp(request.start_ns / 1e9, tz=timezone.utc),
            facts.method,
            facts.route_or_path,
            format_trace_id(span.context.trace_id),
            format_span_id(span.context.span_id),
            in_flight,
        )

    def _report_link(self, span: ReadableSpan, file_name: str) -> Optional[str]:
        base = self._config.report_base_url
        if base:
            return f"{base}/trace/{format_trace_id(span.context.trace_id)}"
        if self._store is not None:
            return str(self._store.path_of(file_name))
        return None

    def _trace_url(self, span: ReadableSpan) -> Optional[str]:
        template = self._config.trace_url_template
        if not template:
            return None
        return template.format(
            trace_id=format_trace_id(span.context.trace_id),
            span_id=format_span_id(span.context.span_id),
        )

    def _service_name(self, span: ReadableSpan) -> str:
        if self._config.service_name:
            return self._config.service_name
        return str(span.resource.attributes.get("service.name", "unknown_service"))

    def _slow_request(
        self,
        span: ReadableSpan,
        request: InFlightRequest,
        duration: float,
        session: Any,
        in_flight: bool = False,
        samples: Optional[list[tuple[Stack, float]]] = None,
    ) -> SlowRequest:
        facts = _facts_of(span)
        samples = list(request.samples) if samples is None else samples
        interval = self._config.sampling_interval_seconds
        if session is not None:
            profile = Profile(session, "pyinstrument", session.duration, duration)
        else:
            session = session_from_samples(
                samples, request.start_ns / 1e9, duration, interval, _description(facts.method)
            )
            profile = Profile(session, "sampling", request.sampled_seconds(), duration)
        file_name = (
            self._report_file_name(span, request, in_flight=True)
            if in_flight
            else request.report_file or self._report_file_name(span, request, in_flight=False)
        )
        return SlowRequest(
            service=self._service_name(span),
            facts=facts,
            trace_id=format_trace_id(span.context.trace_id),
            span_id=format_span_id(span.context.span_id),
            start_time=request.start_ns / 1e9,
            duration_seconds=duration,
            threshold_seconds=self._config.threshold_seconds,
            raw_request=snapshot(request.environ, request.recorder, self._config.capture_headers),
            profile=profile,
            report_file=file_name,
            report_link=self._report_link(span, file_name),
            trace_url=self._trace_url(span),
            in_flight=in_flight,
        )

    # --- report thread -------------------------------------------------------------------

    def _report(self, slow: SlowRequest) -> None:
        try:
            # "replace": request data can hold lone surrogates (a JSON body with "\ud800",
            # multipart names decoded with surrogateescape), which UTF-8 cannot encode.
            content = render_report(slow, self._masker).encode("utf-8", "replace")
        except Exception:
            self.stats.incr("internal_errors")
            self._failures.warning(
                "report-render", "otel-wpm failed to render a report", exc_info=True
            )
            return
        path = None
        if self._store is not None:
            path = self._write(slow.report_file, content)
        self._alerts.submit(slow, path, content, self._masker)

    def _write(self, file_name: str, content: bytes) -> Optional[os.PathLike[str]]:
        assert self._store is not None
        try:
            path = self._store.write(file_name, content)
        except OSError as exc:
            self.stats.incr("reports_failed")
            self._failures.warning(
                "report-write",
                "otel-wpm cannot write reports to %s: %s",
                self._store.directory,
                exc.strerror or exc,
            )
            return None
        self._failures.recovered(
            "report-write", "otel-wpm writes reports to %s again", self._store.directory
        )
        self.stats.incr("reports_written")
        return path

    def _report_dropped(self, slow: SlowRequest) -> None:
        self.stats.incr("reports_failed")
        self._failures.warning("report-queue", "otel-wpm report queue is full; dropping the oldest")

    # --- lifecycle -----------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        if self._budget is not None:
            self.stats.set_overhead(self._budget.estimated_overhead(), **self._budget.details())
        else:
            process_cpu = max(time.process_time() - self._started_cpu, 1e-9)
            self.stats.set_overhead(
                self._sampler.cpu_seconds / process_cpu,
                method="CPU time of the sampler thread / CPU time of the process",
            )
        return self.stats.snapshot()

    def reset_stats(self) -> None:
        self.stats.reset()

    def test_alert_system(self) -> dict[str, Any]:
        """Send a test alert through every enabled exporter, now; says which worked."""
        service = self._config.service_name or "otel-wpm"
        return self._alerts.send_test_alert(service, self._config.trace_url_template)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        reports_done = self._reports.flush(timeout_millis / 1000)
        return reports_done and self._alerts.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self) -> None:
        timeout = self._config.shutdown_timeout_seconds
        deadline = time.monotonic() + timeout
        self._sampler.stop()
        self._reports.shutdown(timeout)
        self._alerts.shutdown(max(0.0, deadline - time.monotonic()))
