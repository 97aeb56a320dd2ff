"""An in-memory span exporter that tests can wait on."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Callable

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


class WaitableSpanExporter(InMemorySpanExporter):
    """Keeps finished spans and lets a test block until the ones it expects have arrived."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = threading.Condition()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        with self._arrived:
            self._arrived.notify_all()
        return result

    def wait_for(
        self, predicate: Callable[[tuple[ReadableSpan, ...]], bool], timeout: float = 30
    ) -> tuple[ReadableSpan, ...]:
        with self._arrived:
            ok = self._arrived.wait_for(lambda: predicate(self.get_finished_spans()), timeout)
        spans = self.get_finished_spans()
        assert ok, f"expected spans did not arrive within {timeout} s; got {spans}"
        return spans

    def wait_for_server_spans(self, count: int, timeout: float = 30) -> list[ReadableSpan]:
        def server_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
            return [s for s in spans if s.kind is SpanKind.SERVER]

        spans = self.wait_for(lambda spans: len(server_spans(spans)) >= count, timeout)
        return server_spans(spans)
