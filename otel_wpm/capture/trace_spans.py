"""The spans of a watched request's trace that end while it runs, kept for its report.

Usage (this is what ``ProfilingSpanProcessor`` does)::

    kept = TraceSpans()
    kept.watch(request_span)          # on_start of a request: one list, one dict write
    kept.add(span)                    # on_end of any other span: one dict lookup,
                                      # and an append if its trace is watched
    spans = kept.leave(request_span)  # on_end of the request: its KeptSpans, or None
    spans.not_kept                    # how many past the limit were only counted
    spans = kept.so_far(request_span) # sampler thread: a copy while the request runs

Spans are keyed by trace id, so a database call or an outgoing HTTP call is
kept whichever thread (or task) ends it. The spans are kept as they are (an
ended span does not change) and are only read, on the report thread, if the
request turns out slow; a fast request drops its list at its end. Each request
keeps the first :data:`MAX_SPANS_PER_REQUEST` spans and counts the rest.

Rarely, two watched requests of one trace run here at once: the service calls
itself, or a caller fans out to it in parallel. Their spans are kept in one
list and each request takes, at its end, the spans descending from its own
span (see :func:`descendants`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Optional

from opentelemetry.sdk.trace import ReadableSpan

from .._runtime import forksafe

#: The most spans kept per request; the rest are only counted.
MAX_SPANS_PER_REQUEST = 500


class KeptSpans(list[ReadableSpan]):
    """The spans kept for a request, in the order they ended, and how many more there were.

    ``not_kept`` is a class default until a span past the limit sets it; spans of one
    trace ending at the same moment on two threads may then be counted as one.
    """

    not_kept: int = 0


class TraceSpans:
    """Lists of ended spans by the trace id of the watched requests running."""

    def __init__(self, limit: int = MAX_SPANS_PER_REQUEST) -> None:
        self.limit = limit
        self.after_fork_in_child()
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # for traces with several requests, which are rare
        self._spans: dict[int, KeptSpans] = {}
        self._requests: dict[int, int] = {}  # traces with more than one watched request

    def watch(self, span: ReadableSpan) -> None:
        """Keep the spans of ``span``'s trace from now until :meth:`leave`."""
        fresh = KeptSpans()
        trace_id = span.context.trace_id
        if self._spans.setdefault(trace_id, fresh) is not fresh:
            with self._lock:
                self._requests[trace_id] = self._requests.get(trace_id, 1) + 1

    def add(self, span: ReadableSpan) -> None:
        """Keep ``span`` if a watched request of its trace runs."""
        spans = self._spans.get(span.context.trace_id)
        if spans is not None:
            if len(spans) < self.limit:
                spans.append(span)
            else:
                spans.not_kept += 1

    def leave(self, span: ReadableSpan) -> Optional[KeptSpans]:
        """Stop keeping spans for ``span``, a watched request that ended: what was kept."""
        trace_id = span.context.trace_id
        if self._requests and trace_id in self._requests:
            return self._leave_shared(span)
        return self._spans.pop(trace_id, None) or None

    def _leave_shared(self, span: ReadableSpan) -> Optional[KeptSpans]:
        trace_id = span.context.trace_id
        with self._lock:
            spans = self._spans.get(trace_id)
            others = self._requests.get(trace_id, 1) - 1
            if spans is None or others < 1:
                self._requests.pop(trace_id, None)
                self._spans.pop(trace_id, None)
            else:
                self._requests[trace_id] = others
                # the others' spans may descend from this one: keep the link
                spans.append(span)
        if spans is None:
            return None
        own = _own(spans, span)
        return own if own or own.not_kept else None

    def so_far(self, span: ReadableSpan) -> KeptSpans:
        """What is kept for ``span``, a watched request still running (a copy)."""
        trace_id = span.context.trace_id
        spans = self._spans.get(trace_id, KeptSpans())
        if self._requests and trace_id in self._requests:
            return _own(spans, span)
        copy = KeptSpans(spans)
        copy.not_kept = spans.not_kept
        return copy


def _own(spans: KeptSpans, request: ReadableSpan) -> KeptSpans:
    own = KeptSpans(descendants(spans, request.context.span_id))
    own.not_kept = spans.not_kept  # of the whole trace: which request they were is unknown
    return own


def descendants(spans: Sequence[ReadableSpan], span_id: int) -> list[ReadableSpan]:
    """The spans among ``spans`` whose chain of parents leads to ``span_id``."""
    children: dict[int, list[int]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span.context.span_id)
    found: set[int] = set()
    pending = [span_id]
    while pending:
        for child in children.pop(pending.pop(), ()):
            found.add(child)
            pending.append(child)
    return [span for span in spans if span.context.span_id in found]
