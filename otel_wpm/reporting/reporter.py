"""``Reporter``: from a slow request to a report file and an alert.

Usage (this is what ``ProfilingSpanProcessor`` does)::

    reporter = Reporter(config, stats)
    name = reporter.report_file(span, request)         # sampler thread: named before the end,
    link = reporter.report_link(span, request, name)   # so the live span can link to it
    reporter.report(span, request, duration, session, spans)  # request thread: copy, queue
    reporter.report_running(span, request, age, samples, spans)  # sampler thread: hung
    reporter.send_test_alert(settings)                 # a small real report, sent now
    reporter.update_config(old_config, new_config)     # rebuilds alerting only if it changed
    reporter.flush(timeout_seconds)
    reporter.shutdown(timeout_seconds)

The calling thread only copies what it must out of the span and its state into
a :class:`SlowRequest` and queues it. The report thread (one a process) works
out where the time went (the hot frames, and what the request's spans add up
to), renders the page, writes it into the store of the
settings the request started under, and hands an :class:`Alert` to the alert
dispatcher, whose own thread de-duplicates and delivers it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from .._runtime.logs import LogOnce
from .._runtime.stats import Stats
from .._runtime.worker import BackgroundWorker
from ..active_settings import ActiveSettings, changed
from ..alerting.alert import Alert, HotFrame, SlowSpan
from ..alerting.dispatch import ALERT_SETTINGS, AlertDispatcher
from ..capture.inflight import InFlightRequest
from ..capture.request import RawRequest, snapshot
from ..capture.route import route_template
from ..capture.sampler import stack_of
from ..capture.samples import FoldedSamples
from ..capture.semconv import HttpFacts, http_facts
from ..capture.trace_spans import KeptSpans
from ..config import Config
from ..masking import SecretMasker
from .report_format import report_file_name
from .slow_request import SlowRequest
from .spans import SpanSummary, summarise_spans
from .store import ReportStore

logger = logging.getLogger(__name__)
_NOT_A_METHOD = re.compile(r"[^A-Za-z_-]")

# A slow request and the settings in force when it started (its store and masker),
# or a store whose pending reports are due another try.
_Job = Union[tuple[SlowRequest, ActiveSettings], ReportStore]


class Reporter:
    """Owns the report queue and thread, and the alert dispatcher; see the module docstring."""

    def __init__(self, config: Config, stats: Stats) -> None:
        self.stats = stats
        self._failures = LogOnce(logger)
        self._reports: BackgroundWorker[_Job] = BackgroundWorker(
            "otel-wpm-reports",
            self._report,
            config.report_queue_size,
            self._report_dropped,
            on_cpu=stats.charge_cpu,
        )
        self._alerts_lock = threading.Lock()  # the report thread submits, update_config swaps
        self._alerts = AlertDispatcher.from_config(config, stats)
        self._retiring: list[threading.Thread] = []
        self._retry_lock = threading.Lock()
        self._retry_timer: Optional[threading.Timer] = None

    @property
    def alerts(self) -> AlertDispatcher:
        """The alert dispatcher in force."""
        return self._alerts

    def update_config(self, old: Config, new: Config) -> None:
        """Take ``new``'s queue bound; a new alert dispatcher if an alert setting changed.

        The replaced dispatcher delivers what it holds on a thread of its own, so
        this returns at once, even while Mattermost hangs, and drops nothing.
        """
        self._reports.queue_size = new.report_queue_size
        if not changed(old, new, ALERT_SETTINGS):
            return
        replacement = AlertDispatcher.from_config(new, self.stats)
        with self._alerts_lock:
            retired, self._alerts = self._alerts, replacement
        self._retiring = [thread for thread in self._retiring if thread.is_alive()]
        self._retiring.append(retired.retire())

    # --- naming and linking the report (sampler thread, request thread) ---------------

    def report_file(
        self, span: ReadableSpan, request: InFlightRequest, in_flight: bool = False
    ) -> str:
        """The report's file name: start time, method, route, trace and span ids."""
        facts = _facts_of(span, request)
        return report_file_name(
            datetime.fromtimestamp(request.start_ns / 1e9, tz=timezone.utc),
            facts.method,
            facts.route_key,
            format_trace_id(span.context.trace_id),
            format_span_id(span.context.span_id),
            in_flight,
        )

    def report_link(
        self, span: ReadableSpan, request: InFlightRequest, file_name: str
    ) -> Optional[str]:
        """Where the trace points to: the report server's page of the trace, else the file."""
        return _report_link(request.settings, format_trace_id(span.context.trace_id), file_name)

    # --- queueing a report (request thread, sampler thread) ---------------------------

    def report(
        self,
        span: ReadableSpan,
        request: InFlightRequest,
        duration: float,
        session: Any,
        spans: Optional[KeptSpans] = None,
    ) -> None:
        """Queue the report of a slow request that has ended; ``session`` is pyinstrument's,
        ``spans`` those of its trace that ended while it ran."""
        file_name = request.report_file or self.report_file(span, request)
        samples = request.samples.snapshot()
        slow = self._slow_request(span, request, duration, session, file_name, samples, spans)
        self._reports.submit((slow, request.settings))

    def report_running(
        self,
        span: ReadableSpan,
        request: InFlightRequest,
        age: float,
        samples: FoldedSamples,
        spans: Optional[KeptSpans] = None,
    ) -> None:
        """Queue the report of a request still running past its hung threshold."""
        file_name = self.report_file(span, request, in_flight=True)
        slow = self._slow_request(
            span, request, age, None, file_name, samples, spans, in_flight=True
        )
        self._reports.submit((slow, request.settings))

    def _slow_request(
        self,
        span: ReadableSpan,
        request: InFlightRequest,
        duration: float,
        session: Any,
        file_name: str,
        samples: FoldedSamples,
        spans: Optional[KeptSpans],
        in_flight: bool = False,
    ) -> SlowRequest:
        # Imported with the first slow request: pyinstrument brings its renderers along.
        from .profile import precise_profile, sampled_profile

        facts = _facts_of(span, request)
        config = request.settings.config
        if session is not None:
            profile = precise_profile(session, duration)
        else:
            profile = sampled_profile(
                samples,
                request.start_ns / 1e9,
                duration,
                config.sampling_interval_seconds,
                _description(facts.method),
            )
        return SlowRequest(
            service=config.service_name or _service_name(span),
            host=_host_name(span),
            facts=facts,
            trace_id=format_trace_id(span.context.trace_id),
            span_id=format_span_id(span.context.span_id),
            start_time=request.start_ns / 1e9,
            duration_seconds=duration,
            threshold_seconds=config.threshold_seconds,
            raw_request=snapshot(
                request.environ if request.settings.captures_request else None,
                request.recorder,
                config.capture_headers,
            ),
            profile=profile,
            report_file=file_name,
            report_link=self.report_link(span, request, file_name),
            trace_url=_trace_url(
                config.trace_url_template,
                format_trace_id(span.context.trace_id),
                format_span_id(span.context.span_id),
            ),
            in_flight=in_flight,
            spans=tuple(spans.of_request(span)) if spans is not None else (),
            spans_not_kept=spans.not_kept if spans is not None else 0,
            held_loop=request.loop_waits.summary() if request.loop_waits is not None else None,
        )

    def _report_dropped(self, job: _Job) -> None:
        if isinstance(job, ReportStore):
            return  # a retry: the reports stay pending, the next write tries again
        self.stats.incr("reports_failed")
        self._failures.warning("report-queue", "otel-wpm report queue is full; dropping the oldest")

    # --- report thread ------------------------------------------------------------------

    def _report(self, job: _Job) -> None:
        if isinstance(job, ReportStore):
            job.retry_pending()
            self._retry_later(job)
            return
        slow, settings = job
        try:
            hot, spans, content = _rendered(slow, settings.masker)
        except Exception:
            self.stats.incr("internal_errors")
            self._failures.warning(
                "report-render", "otel-wpm failed to render a report", exc_info=True
            )
            return
        path = None
        if settings.store is not None:
            path = self._write(settings.store, slow.report_file, content)
            self._retry_later(settings.store)
        alert = build_alert(slow, path, content, settings.masker, hot, spans)
        with self._alerts_lock:
            self._alerts.submit(alert)

    def _write(self, store: ReportStore, file_name: str, content: bytes) -> Optional[Path]:
        try:
            path = store.write(file_name, content)
        except OSError as exc:
            self.stats.incr("reports_failed")
            self._failures.warning(
                "report-write",
                "otel-wpm cannot write reports to %s: %s",
                store.location,
                exc.strerror or exc,
            )
            return None
        self._failures.recovered(
            "report-write", "otel-wpm writes reports to %s again", store.location
        )
        self.stats.incr("reports_written")
        return path

    def _retry_later(self, store: ReportStore) -> None:
        """Queue another try of the store's pending reports when it is due (a timer waits)."""
        delay = store.retry_delay()
        if delay is None:
            return
        with self._retry_lock:
            if self._retry_timer is not None and self._retry_timer.is_alive():
                return
            timer = threading.Timer(delay, self._reports.submit, args=(store,))
            timer.name = "otel-wpm-report-retry"
            timer.daemon = True
            self._retry_timer = timer
        timer.start()

    # --- lifecycle ------------------------------------------------------------------------

    def send_test_alert(self, settings: ActiveSettings) -> dict[str, Any]:
        """Send a test alert with its report through every exporter now; says which worked.

        The report is a real one, made like any other (rendered, written to the store of
        ``settings``, attached), of a made-up request (:func:`probe_request`).
        """
        slow = probe_request(settings)
        hot, spans, content = _rendered(slow, settings.masker)
        path = None
        if settings.store is not None:
            # A directory that refuses the report refuses alerts.jsonl too: that says why.
            with contextlib.suppress(OSError):
                path = settings.store.write(slow.report_file, content)
        alert = build_alert(slow, path, content, settings.masker, hot, spans)
        return self._alerts.send_test_alert(dataclasses.replace(alert, is_test=True))

    def flush(self, timeout: float) -> bool:
        """Wait until queued reports are written and their alerts delivered."""
        deadline = time.monotonic() + timeout
        reports_done = self._reports.flush(timeout)
        alerts_done = self._alerts.flush(_left(deadline))
        retired_done = all(_joined(thread, deadline) for thread in self._retiring)
        return reports_done and alerts_done and retired_done

    def shutdown(self, timeout: float) -> None:
        """Write what is queued and deliver its alerts within ``timeout``, then stop."""
        deadline = time.monotonic() + timeout
        with self._retry_lock:
            if self._retry_timer is not None:
                self._retry_timer.cancel()
        self._reports.shutdown(timeout)
        self._alerts.shutdown(_left(deadline))
        for thread in self._retiring:
            _joined(thread, deadline)


#: The made-up request of a test alert, and its ids.
TEST_ALERT_ROUTE = "/otel-wpm/test-alert"
TEST_ALERT_TRACE_ID, TEST_ALERT_SPAN_ID = "0" * 31 + "1", "0" * 15 + "1"
_TEST_SAMPLES, _TEST_INTERVAL = 3, 0.01


def probe_request(settings: ActiveSettings) -> SlowRequest:
    """``GET /otel-wpm/test-alert``, whose profile is a few samples of the calling stack."""
    from .profile import sampled_profile  # pyinstrument: on first use

    config = settings.config
    duration = _TEST_SAMPLES * _TEST_INTERVAL
    started = time.time() - duration
    samples = FoldedSamples()
    for _ in range(_TEST_SAMPLES):
        samples.add(stack_of(sys._getframe()), _TEST_INTERVAL)
    profile = sampled_profile(samples, started, duration, _TEST_INTERVAL, "GET request")
    file_name = report_file_name(
        datetime.fromtimestamp(started, tz=timezone.utc),
        "GET",
        TEST_ALERT_ROUTE,
        TEST_ALERT_TRACE_ID,
        TEST_ALERT_SPAN_ID,
        in_flight=False,
    )
    return SlowRequest(
        service=config.service_name or "otel-wpm",
        facts=HttpFacts(
            method="GET",
            path=TEST_ALERT_ROUTE,
            query="",
            url=TEST_ALERT_ROUTE,
            route=TEST_ALERT_ROUTE,
            status=200,
        ),
        trace_id=TEST_ALERT_TRACE_ID,
        span_id=TEST_ALERT_SPAN_ID,
        start_time=started,
        duration_seconds=duration,
        threshold_seconds=config.threshold_seconds,
        raw_request=RawRequest(),
        profile=profile,
        report_file=file_name,
        report_link=_report_link(settings, TEST_ALERT_TRACE_ID, file_name),
        trace_url=_trace_url(config.trace_url_template, TEST_ALERT_TRACE_ID, TEST_ALERT_SPAN_ID),
    )


def _rendered(
    slow: SlowRequest, masker: SecretMasker
) -> tuple[tuple[HotFrame, ...], SpanSummary, bytes]:
    """The hot frames and the spans of ``slow`` (for the page and the alert), and its page."""
    # Imported when first needed (on the report thread): rendering loads pyinstrument.
    from .profile import hot_frames
    from .render import render_report

    hot = hot_frames(slow.profile.session)
    spans = summarise_spans(
        slow.spans, slow.start_time, slow.duration_seconds, masker, slow.spans_not_kept
    )
    # "replace": request data can hold lone surrogates (a JSON body with "\ud800",
    # multipart names decoded with surrogateescape), which UTF-8 cannot encode.
    return hot, spans, render_report(slow, masker, hot, spans).encode("utf-8", "replace")


def build_alert(
    slow: SlowRequest,
    report_path: Optional[os.PathLike[str]],
    report: bytes,
    masker: SecretMasker,
    hot: Sequence[HotFrame],
    spans: Optional[SpanSummary] = None,
) -> Alert:
    """The alert about ``slow``, whose report was written to ``report_path`` (if it was)."""
    slowest = spans.slowest[0] if spans is not None and spans.slowest else None
    return Alert(
        service=slow.service,
        method=slow.facts.method,
        route=slow.facts.route_key,
        url=masker.mask_url(slow.facts.url),
        status=slow.facts.status,
        duration_seconds=slow.duration_seconds,
        threshold_seconds=slow.threshold_seconds,
        host=slow.host,
        trace_id=slow.trace_id,
        span_id=slow.span_id,
        start_time=slow.started_at,
        trace_url=slow.trace_url,
        report_url=slow.report_link,
        report_path=Path(report_path) if report_path else None,
        report_filename=slow.report_file,
        report_html=report,
        hot_frames=tuple(hot),
        slowest_span=SlowSpan(slowest.description, slowest.kind, slowest.duration_seconds)
        if slowest is not None
        else None,
        in_flight=slow.in_flight,
    )


def _facts_of(span: ReadableSpan, request: InFlightRequest) -> HttpFacts:
    if span.kind is SpanKind.SERVER:
        facts = http_facts(span.attributes)
        if facts.route is None:  # no instrumentation set http.route: ask the framework
            route = request.route or route_template(request.environ)
            facts = dataclasses.replace(facts, route=route)
        return facts
    return HttpFacts(
        method="CALL", path=span.name, query="", url=span.name, route=span.name, status=None
    )


def _description(method: str) -> str:
    # pyinstrument puts this in a <script> element unescaped; a method is client input
    return f"{_NOT_A_METHOD.sub('', method)[:16] or 'HTTP'} request"


def _service_name(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name", "unknown_service"))


def _host_name(span: ReadableSpan) -> str:
    """The resource's ``host.name`` (``OTEL_RESOURCE_ATTRIBUTES``, a detector), else ours."""
    return str(span.resource.attributes.get("host.name") or socket.gethostname())


def _report_link(settings: ActiveSettings, trace_id: str, file_name: str) -> Optional[str]:
    base = settings.config.report_base_url
    if base:
        return f"{base}/trace/{trace_id}"
    return settings.store.link(file_name) if settings.store is not None else None


def _trace_url(template: Optional[str], trace_id: str, span_id: str) -> Optional[str]:
    return template.format(trace_id=trace_id, span_id=span_id) if template else None


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _joined(thread: threading.Thread, deadline: float) -> bool:
    thread.join(_left(deadline))
    return not thread.is_alive()
