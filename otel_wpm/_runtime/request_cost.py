"""The fixed cost of watching one request: ``on_start`` and ``on_end`` of a fast request.

Usage::

    probe = ProfilingSpanProcessor(config, stats=Stats(export_metrics=False))  # throwaway
    seconds = measure_request_cost(probe)   # CPU seconds per request, ~5 ms to find out
    probe.shutdown()

Measured once, like the precise engine's slowdown: a batch of ended GET server spans
goes through the processor's ``on_start`` and ``on_end``, and the CPU time of the
thread (``time.thread_time()``, which other threads do not disturb) is read around
the batch. The least of a few batches is kept. It runs on a thread of its own, where
no profiler runs (the precise engine's may, on a request thread calling
``get_stats()``); the spans are roots, so no request is their parent.
"""

from __future__ import annotations

import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

_ROUNDS = 5
_BATCH = 200


def _fast_requests(count: int) -> list[Span]:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("otel_wpm.request_cost")
    spans = []
    for _ in range(count):
        span = tracer.start_span(
            "GET /otel-wpm/request-cost",
            context=Context(),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET",
                "url.path": "/otel-wpm/request-cost",
                "http.route": "/otel-wpm/request-cost",
            },
        )
        span.end()
        assert isinstance(span, Span)  # the SDK's, with kind and parent
        spans.append(span)
    return spans


def measure_request_cost(processor: SpanProcessor) -> float:
    """CPU seconds ``processor`` spends in ``on_start`` + ``on_end`` of one fast request.

    ``processor`` is a throwaway: the requests go into its registry and its counters.
    """
    from concurrent.futures import ThreadPoolExecutor  # once, at the first get_stats()

    with ThreadPoolExecutor(1, thread_name_prefix="otel-wpm-request-cost") as executor:
        return executor.submit(_measure, processor).result()


def _measure(processor: SpanProcessor) -> float:
    spans = _fast_requests(_BATCH)
    best = float("inf")
    for _ in range(_ROUNDS):
        started = time.thread_time()
        for span in spans:
            processor.on_start(span)
            processor.on_end(span)
        best = min(best, time.thread_time() - started)
    return best / _BATCH
