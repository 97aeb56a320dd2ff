"""The least the request path's required work can cost: a ladder of inline watchers.

Usage::

    python bench/request_floor.py                 # 15 alternating rounds, ~1 min
    python bench/request_floor.py --rounds 31

Each rung is a span processor written inline, with no call of its own, that does
one more piece of the work otel-wpm's request path must do than the rung below:

====================  ==============================================================
``minimal``           ``bench/app.py``'s minimal watcher: the span under its thread, a
                      count, the duration checked
``+settings``         the settings in force kept with the request, in one tuple with
                      its context and thread; at the end, the span matched by context
``+trace_mark``       its trace marked, so the spans that end while it runs are kept
                      for its report (section 1 of the span-keeping design)
``+task_key``         keyed by what serves it (``request_key``: thread, or asyncio
                      task), at both ends
``+body``             the body decision from the span name (the facade's body capture)
``wpm``               ``ProfilingSpanProcessor`` itself (sampler thread not started)
====================  ==============================================================

Every rung gets the same fresh GET server span at each request: made and ended
by an SDK tracer with no processor, its ``on_start`` and ``on_end`` called around
its end as the SDK calls them. CPU time of this thread per request, medians of
alternating rounds, and the difference to a processor that does nothing. A rung
is a floor, not a design: it keeps nothing that a slow request would need.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from bench.app import WPM_OPTIONS, _add_reference_processor  # noqa: E402
from otel_wpm import Config, ProfilingSpanProcessor  # noqa: E402
from otel_wpm.active_settings import ActiveSettings  # noqa: E402
from otel_wpm.capture.inflight import request_key  # noqa: E402
from otel_wpm.capture.semconv import may_carry_body  # noqa: E402

RUNGS = ("minimal", "+settings", "+trace_mark", "+task_key", "+body", "wpm")
ATTRIBUTES = {"http.method": "GET", "http.target": "/fast", "http.scheme": "http"}


class InlineWatcher(SpanProcessor):
    """The work of the first ``level`` rungs above ``minimal``, written inline."""

    def __init__(self, level: int, settings: Any) -> None:
        self.level = level
        self.settings = settings
        self.running: dict[Any, Any] = {}
        self.traces: dict[int, Any] = {}
        self.counts: dict[int, int] = {}

    def on_start(self, span: Any, parent_context: Optional[Any] = None) -> None:
        if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
            settings = self.settings
            if settings.enabled:
                thread_id = threading.get_ident()
                key = request_key(thread_id) if self.level >= 3 else thread_id
                context = span.context
                self.running[key] = (span, context, settings, thread_id)
                if self.level >= 2:
                    self.traces.setdefault(context.trace_id, context)
                if self.level >= 4 and settings.captures_body:
                    may_carry_body(span)

    def on_end(self, span: Any) -> None:
        if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
            thread_id = threading.get_ident()
            self.counts[thread_id] = self.counts.get(thread_id, 0) + 1
            key = request_key(thread_id) if self.level >= 3 else thread_id
            duration_ns = span.end_time - span.start_time
            context = span.context
            if self.level >= 2:
                self.traces.pop(context.trace_id, None)
            running = self.running.get(key)
            if running is not None and running[1].span_id == context.span_id:
                del self.running[key]
                if duration_ns >= running[2].threshold_ns:
                    raise AssertionError("a /fast request cannot be slow")


def processor(rung: str) -> SpanProcessor:
    if rung == "noop":
        return SpanProcessor()
    if rung == "minimal":
        provider = TracerProvider()
        _add_reference_processor(provider, "otel_minimal")
        return provider._active_span_processor._span_processors[0]
    config = Config(**WPM_OPTIONS, local_output_dir=tempfile.mkdtemp())
    if rung != "wpm":
        return InlineWatcher(RUNGS.index(rung), ActiveSettings.from_config(config))
    wpm = ProfilingSpanProcessor(config)
    wpm._sampler.asleep = False  # never woken: this times the request path alone
    return wpm


def microseconds_per_request(watcher: SpanProcessor, tracer: Any, calls: int) -> float:
    on_start, on_end = watcher.on_start, watcher.on_end
    started = time.thread_time()
    for _ in range(calls):
        span = tracer.start_span("GET /fast", kind=SpanKind.SERVER, attributes=ATTRIBUTES)
        on_start(span)
        span.end()
        on_end(span._readable_span())
    return (time.thread_time() - started) / calls * 1e6


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000, help="requests per round")
    args = parser.parse_args(argv)
    tracer = TracerProvider().get_tracer("bench.request_floor")
    watchers = {rung: processor(rung) for rung in ("noop", *RUNGS)}
    timings: dict[str, list[float]] = {rung: [] for rung in watchers}
    for watcher in watchers.values():  # warm-up
        microseconds_per_request(watcher, tracer, args.calls // 5)
    for _ in range(args.rounds):
        for rung, watcher in watchers.items():
            timings[rung].append(microseconds_per_request(watcher, tracer, args.calls))
    base = statistics.median(timings["noop"])
    print(f"a GET server span, {args.rounds} rounds x {args.calls}, CPU us per request:")
    for rung, values in timings.items():
        median = statistics.median(values)
        spread = f"[{min(values):.2f}-{max(values):.2f}]"
        print(f"  {rung:12s} {median:7.2f} {spread:15s} {median - base:+6.2f} over noop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
