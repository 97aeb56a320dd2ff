"""``Reporter``: from a slow request to a report file and an alert.

Usage (this is what ``ProfilingSpanProcessor`` does)::

    reporter = Reporter(config, stats)
    name = reporter.report_file(span, request)         # sampler thread: named before the end,
    link = reporter.report_link(span, request, name)   # so the live span can link to it
    reporter.report(span, request, duration, session, spans)  # request thread: copy, queue
    reporter.report_running(span, request, age, samples, spans)  # sampler thread: hung
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

import dataclasses
import logging
import os
import re
import socket
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
from ..alerting.alert import Alert, HotFrame, SlowSpan, test_alert
from ..alerting.dispatch import ALERT_SETTINGS, AlertDispatcher
from ..capture.inflight import InFlightRequest
from ..capture.request import snapshot
from ..capture.route import route_template
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
        base = request.settings.config.report_base_url
        if base:
            return f"{base}/trace/{format_trace_id(span.context.trace_id)}"
        store = request.settings.store
        return store.link(file_name) if store is not None else None

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
            trace_url=_trace_url(span, config.trace_url_template),
            in_flight=in_flight,
            spans=tuple(spans.of_request(span)) if spans is not None else (),
            spans_not_kept=spans.not_kept if spans is not None else 0,
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
        from .profile import hot_frames
        from .render import render_report

        slow, settings = job
        try:
            hot = hot_frames(slow.profile.session)
            spans = summarise_spans(
                slow.spans,
                slow.start_time,
                slow.duration_seconds,
                settings.masker,
                slow.spans_not_kept,
            )
            # "replace": request data can hold lone surrogates (a JSON body with "\ud800",
            # multipart names decoded with surrogateescape), which UTF-8 cannot encode.
            page = render_report(slow, settings.masker, hot, spans)
            content = page.encode("utf-8", "replace")
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

    def send_test_alert(self, config: Config) -> dict[str, Any]:
        """Send a test alert through every exporter now; says which worked."""
        probe = test_alert(config.service_name or "otel-wpm", config.trace_url_template)
        return self._alerts.send_test_alert(probe)

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


def _trace_url(span: ReadableSpan, template: Optional[str]) -> Optional[str]:
    if not template:
        return None
    return template.format(
        trace_id=format_trace_id(span.context.trace_id),
        span_id=format_span_id(span.context.span_id),
    )


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _joined(thread: threading.Thread, deadline: float) -> bool:
    thread.join(_left(deadline))
    return not thread.is_alive()
