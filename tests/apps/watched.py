"""A WSGI app watched by otel-wpm the way users set it up, for tests; served on 127.0.0.1.

    with served(app, Config(threshold_seconds=0.2, local_output_dir=str(tmp_path))) as watched:
        requests.get(watched.url + "/slow", timeout=10)
        [span] = watched.server_spans()  # exported, and its report written
        [report] = watched.reports()

:func:`watch` builds, :func:`served` builds and serves on werkzeug's threaded server,
then shuts the provider down. Two set-ups:

* ``watch(app, config)``: ``app`` behind OpenTelemetry's WSGI middleware, traced by
  an SDK ``TracerProvider`` holding a ``ProfilingSpanProcessor(config)``. Without a
  config it is the "OpenTelemetry only" baseline. ``provider=`` gives the provider to
  use (by default a new one with OS-random ids and no exit hook).
* ``watch(flask_app, monitor=monitor)``: the one-liner users paste,
  ``app.wsgi_app = monitor.create_middleware()(app.wsgi_app)``, on the monitor's
  provider and processor (whoever made the monitor shuts it down).

Either way a :class:`WaitableSpanExporter` is the provider's last processor, so when
a span is exported our processor has seen it end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from apps.helpers import DEADLINE_SECONDS, report_files
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import format_trace_id
from span_capture import WaitableSpanExporter
from wsgi_servers import serve_threaded

from otel_wpm import Config, PerformanceMonitor, ProfilingSpanProcessor

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class SystemRandomIdGenerator(IdGenerator):
    """Trace and span ids from the OS: hypothesis re-seeds ``random`` for every example,
    which makes the SDK's default generator repeat ids across examples."""

    _random = random.SystemRandom()

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


@dataclass(frozen=True)
class Watched:
    """A watched app (``wsgi``, what a server runs), its provider, processor and exporter."""

    wsgi: WSGIApp
    provider: TracerProvider
    exporter: WaitableSpanExporter
    optional_processor: Optional[ProfilingSpanProcessor]
    url: str = ""  # while served

    @property
    def processor(self) -> ProfilingSpanProcessor:
        assert self.optional_processor is not None, "OpenTelemetry only: there is no processor"
        return self.optional_processor

    def reports(self) -> list[Path]:
        return report_files(Path(self.processor.config.local_output_dir))

    def server_spans(self, count: int = 1) -> list[ReadableSpan]:
        """The first ``count`` exported server spans, once their reports are written."""
        spans = self.exporter.wait_for_server_spans(count, DEADLINE_SECONDS)
        self._flush()
        return spans

    def span_of(self, trace_id: str) -> ReadableSpan:
        """The exported server span of ``trace_id``; the processor has seen it end."""

        def of_trace(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
            return [s for s in spans if format_trace_id(s.context.trace_id) == trace_id]

        [span] = of_trace(self.exporter.wait_for(of_trace, DEADLINE_SECONDS))
        return span

    def settle(self, trace_id: str) -> ReadableSpan:
        """Wait for the span of ``trace_id`` and for its report and alerts to be handled."""
        span = self.span_of(trace_id)
        self._flush()
        return span

    def _flush(self) -> None:
        if self.optional_processor is not None:
            assert self.optional_processor.force_flush(int(DEADLINE_SECONDS * 1000))


def watch(
    app: Any,
    config: Optional[Config] = None,
    *,
    provider: Optional[TracerProvider] = None,
    monitor: Optional[PerformanceMonitor] = None,
) -> Watched:
    """``app`` watched under ``config`` (None: traced only), or by ``monitor``; see above."""
    processor: Optional[ProfilingSpanProcessor]
    if monitor is not None:
        assert config is None and provider is None, "the monitor has its own"
        app.wsgi_app = monitor.create_middleware()(app.wsgi_app)
        wsgi, provider, processor = app, monitor.tracer_provider, monitor.processor
    else:
        provider = provider or TracerProvider(
            shutdown_on_exit=False, id_generator=SystemRandomIdGenerator()
        )
        processor = ProfilingSpanProcessor(config) if config is not None else None
        if processor is not None:
            provider.add_span_processor(processor)
        wsgi = OpenTelemetryMiddleware(app, tracer_provider=provider)
    exporter = WaitableSpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Watched(wsgi, provider, exporter, processor)


@contextlib.contextmanager
def served(
    app: Any, config: Optional[Config] = None, *, monitor: Optional[PerformanceMonitor] = None
) -> Iterator[Watched]:
    """:func:`watch`, served on 127.0.0.1 (``.url``); its own provider is shut down after."""
    watched = watch(app, config, monitor=monitor)
    try:
        with serve_threaded(watched.wsgi) as url:
            yield dataclasses.replace(watched, url=url)
    finally:
        if monitor is None:
            watched.provider.shutdown()
