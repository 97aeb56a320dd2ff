"""The spans of a watched request's trace that end while it runs, kept for its report.

Usage (this is what ``ProfilingSpanProcessor`` does)::

    kept = TraceSpans()
    kept.watch(request_span.context)  # on_start of a request: one dict write
    kept.add(span)                    # on_end of any other span: one dict lookup,
                                      # and an append if its trace is watched
    spans = kept.leave(request_span, request_span.context)
                                      # on_end of the request: its trace's KeptSpans, or None
    spans = kept.so_far(request_span) # sampler thread: a copy while the request runs
    spans.of_request(request_span)    # those below the request: its own
    spans.not_kept                    # how many past the limit were only counted

Spans are keyed by trace id, so a database call or an outgoing HTTP call is
kept whichever thread (or task) ends it. The spans are kept as they are (an
ended span does not change) and only looked through if the request turns out
slow; a fast request drops its list at its end. A request's list is made when
the first span of its trace ends: most requests of a busy service make none.
Each request keeps the first :data:`MAX_SPANS_PER_REQUEST` spans and counts the
rest.

Which of them are the request's own is worked out once it is known to be
slow (:meth:`KeptSpans.of_request`): those below its span. Rarely, two watched
requests of one trace run here at once (the service calls itself, or a caller
fans out to it in parallel); they share one list, and each takes the spans
below its own span.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from .._runtime import forksafe

#: The most spans kept per request; the rest are only counted.
MAX_SPANS_PER_REQUEST = 500


class KeptSpans(list[ReadableSpan]):
    """The spans kept for a trace, in the order they ended, and how many more there were.

    ``not_kept`` and ``shared`` are class defaults until set: ``not_kept`` by a span
    past the limit (spans of one trace ending at the same moment on two threads may
    then be counted as one), ``shared`` when a second watched request of the trace
    starts here.
    """

    not_kept: int = 0
    shared: bool = False

    def copy(self) -> KeptSpans:
        copy = KeptSpans(self)
        copy.not_kept, copy.shared = self.not_kept, self.shared
        return copy

    def of_request(self, request: ReadableSpan) -> list[ReadableSpan]:
        """The spans below ``request``: their chain of parents, through these spans,
        reaches it.

        Never those whose chain ends at a root span, or at the request's own parent
        (the caller's span, when the caller runs in this process and its span ends
        first). A chain that ends at a span not kept here (one still open, or past
        the limit) counts as below the request, unless the trace is ``shared``: its
        other requests' spans end that way too.
        """
        parents = {span.context.span_id: _parent_id(span) for span in self}
        below: dict[Optional[int], bool] = {request.context.span_id: True, None: False}
        if request.parent is not None:
            below[request.parent.span_id] = False
        own = []
        for span in self:
            chain = [span.context.span_id]
            ancestor = parents[chain[0]]
            while ancestor not in below and ancestor in parents and ancestor not in chain:
                chain.append(ancestor)
                ancestor = parents[ancestor]
            found = below.get(ancestor, not self.shared)
            below.update(dict.fromkeys(chain, found))
            if found:
                own.append(span)
        return own


def _parent_id(span: ReadableSpan) -> Optional[int]:
    return span.parent.span_id if span.parent is not None else None


class TraceSpans:
    """Lists of ended spans by the trace id of the watched requests running.

    Until a span of its trace ends, a watched trace's entry is the context of the
    request span that watched it first: a marker that costs no allocation.
    """

    def __init__(self, limit: int = MAX_SPANS_PER_REQUEST) -> None:
        self.limit = limit
        self.after_fork_in_child()
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # for a trace's first span and for shared traces
        self._spans: dict[int, Any] = {}  # trace id -> KeptSpans, or the marker
        self._requests: dict[int, int] = {}  # traces with more than one watched request

    def watch(self, context: SpanContext) -> None:
        """Keep the spans of the trace of ``context``, a request span's, from now until
        :meth:`leave`."""
        if self._spans.setdefault(context.trace_id, context) is not context:
            self._share(context.trace_id)

    def _share(self, trace_id: int) -> None:
        with self._lock:
            self._requests[trace_id] = self._requests.get(trace_id, 1) + 1
            spans = self._spans.get(trace_id)
            if type(spans) is KeptSpans:
                spans.shared = True

    def add(self, span: ReadableSpan) -> None:
        """Keep ``span`` if a watched request of its trace runs."""
        spans = self._spans.get(span.context.trace_id)
        if spans is None:
            return
        if type(spans) is not KeptSpans:
            spans = self._first_list(span.context.trace_id)
            if spans is None:
                return
        if len(spans) < self.limit:
            spans.append(span)
        else:
            spans.not_kept += 1

    def _first_list(self, trace_id: int) -> Optional[KeptSpans]:
        """The list of a watched trace that has none yet (made under the lock: spans of
        one trace may end on two threads at once)."""
        with self._lock:
            spans = self._spans.get(trace_id)
            if spans is None or type(spans) is KeptSpans:
                return spans
            spans = self._spans[trace_id] = KeptSpans()
            spans.shared = trace_id in self._requests
            return spans

    def leave(self, span: ReadableSpan, context: SpanContext) -> Optional[KeptSpans]:
        """Stop keeping spans for ``span``, a watched request that ended, whose context is
        ``context``: its trace's spans (see :meth:`KeptSpans.of_request` for its own),
        None if none ended."""
        trace_id = context.trace_id
        if self._requests and trace_id in self._requests:
            return self._leave_shared(span, trace_id)
        spans = self._spans.pop(trace_id, None)
        return spans if type(spans) is KeptSpans else None

    def _leave_shared(self, span: ReadableSpan, trace_id: int) -> Optional[KeptSpans]:
        with self._lock:
            spans = self._spans.get(trace_id)
            others = self._requests.get(trace_id, 1) - 1
            if others < 1:
                self._requests.pop(trace_id, None)
                self._spans.pop(trace_id, None)
                return spans if type(spans) is KeptSpans else None
            self._requests[trace_id] = others
            if type(spans) is not KeptSpans:
                # the others' spans may descend from this one: keep the link
                kept = self._spans[trace_id] = KeptSpans([span])
                kept.shared = True
                return None
            copy = spans.copy()
            spans.append(span)
            return copy

    def so_far(self, span: ReadableSpan) -> KeptSpans:
        """The spans of ``span``'s trace kept so far, while it still runs (a copy)."""
        spans = self._spans.get(span.context.trace_id)
        return spans.copy() if type(spans) is KeptSpans else KeptSpans()
