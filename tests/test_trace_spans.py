"""The spans kept for a watched request: its trace's, while it runs, bounded, its own when shared.

Real SDK spans from a real tracer; the registry is driven the way the processor drives it.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from otel_wpm.capture.trace_spans import TraceSpans

tracer = TracerProvider().get_tracer("test")


def ended(name: str, **kwargs) -> ReadableSpan:
    span = tracer.start_span(name, **kwargs)
    span.end()
    return span  # type: ignore[return-value]


def names(spans) -> list[str]:
    return [span.name for span in spans]


def child_of(parent, name: str) -> ReadableSpan:
    return ended(name, context=trace.set_span_in_context(parent))


def test_spans_of_a_watched_trace_are_kept_until_the_request_leaves() -> None:
    kept = TraceSpans()
    request = tracer.start_span("GET /orders", kind=SpanKind.SERVER)
    kept.watch(request.context)
    child_of(request, "before")  # made and ended before add: only add() counts
    query = child_of(request, "SELECT")
    call = child_of(request, "GET")
    kept.add(query)
    kept.add(call)
    kept.add(ended("another trace"))
    request.end()
    spans = kept.leave(request, request.context)
    assert names(spans) == ["SELECT", "GET"] and spans.not_kept == 0
    kept.add(child_of(request, "after its end"))
    assert kept.leave(request, request.context) is None


def test_the_caller_span_is_not_the_request_s_own_even_when_it_ends_first() -> None:
    """A client in this process calls the service: its span ends as the answer arrives,
    sometimes before the server span has ended."""
    kept = TraceSpans()
    call = tracer.start_span("GET", kind=SpanKind.CLIENT)
    request = tracer.start_span(
        "GET /orders", context=trace.set_span_in_context(call), kind=SpanKind.SERVER
    )
    kept.watch(request.context)
    kept.add(child_of(request, "SELECT"))
    call.end()
    kept.add(call)
    request.end()
    spans = kept.leave(request, request.context)
    assert names(spans) == ["SELECT", "GET"]
    assert names(spans.of_request(request)) == ["SELECT"]


def test_a_span_under_one_not_kept_still_counts_as_the_request_s() -> None:
    """Its parent is still open (work left running), or was past the limit."""
    kept = TraceSpans()
    request = tracer.start_span("GET /orders", kind=SpanKind.SERVER)
    kept.watch(request.context)
    still_open = tracer.start_span("background", context=trace.set_span_in_context(request))
    kept.add(child_of(still_open, "SELECT"))
    request.end()
    assert names(kept.leave(request, request.context).of_request(request)) == ["SELECT"]


def test_a_request_without_spans_leaves_nothing() -> None:
    kept = TraceSpans()
    request = tracer.start_span("GET /fast", kind=SpanKind.SERVER)
    kept.watch(request.context)
    request.end()
    assert kept.leave(request, request.context) is None
    assert kept.so_far(request) == [] and kept.so_far(request).not_kept == 0


def test_past_the_limit_spans_are_counted_not_kept() -> None:
    kept = TraceSpans(limit=3)
    request = tracer.start_span("GET /many", kind=SpanKind.SERVER)
    kept.watch(request.context)
    for number in range(10):
        kept.add(child_of(request, f"query {number}"))
    assert len(kept.so_far(request)) == 3 and kept.so_far(request).not_kept == 7
    spans = kept.leave(request, request.context)
    assert names(spans) == ["query 0", "query 1", "query 2"] and spans.not_kept == 7


def test_a_copy_while_it_runs() -> None:
    kept = TraceSpans()
    request = tracer.start_span("GET /hung", kind=SpanKind.SERVER)
    kept.watch(request.context)
    kept.add(child_of(request, "first"))
    spans = kept.so_far(request)
    kept.add(child_of(request, "second"))
    assert names(spans) == ["first"]
    assert names(kept.leave(request, request.context)) == ["first", "second"]


def remote_parent(trace_id: int) -> trace.Context:
    caller = SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(caller))


def test_two_requests_of_one_trace_each_take_their_own_spans() -> None:
    """A caller fans out to this service twice at once, under one trace."""
    kept = TraceSpans()
    parent = remote_parent(0x0AF7651916CD43DD8448EB211C80319C)
    a = tracer.start_span("GET /a", context=parent, kind=SpanKind.SERVER)
    b = tracer.start_span("GET /b", context=parent, kind=SpanKind.SERVER)
    kept.watch(a.context)
    kept.watch(b.context)
    a_work = tracer.start_span("a work", context=trace.set_span_in_context(a))
    kept.add(child_of(a_work, "a query"))
    a_work.end()
    kept.add(a_work)
    kept.add(child_of(b, "b query"))
    a.end()
    assert names(kept.leave(a, a.context).of_request(a)) == ["a query", "a work"]
    kept.add(child_of(b, "b call"))
    b.end()
    assert names(kept.leave(b, b.context).of_request(b)) == ["b query", "b call"]
    assert kept.leave(b, b.context) is None  # nothing left behind


def test_a_request_calling_its_own_service_keeps_the_inner_request_spans_too() -> None:
    kept = TraceSpans()
    outer = tracer.start_span("GET /outer", kind=SpanKind.SERVER)
    kept.watch(outer.context)
    call = tracer.start_span("GET", context=trace.set_span_in_context(outer))
    # the inner server span's parent is the outgoing call, as propagation makes it
    inner = tracer.start_span(
        "GET /inner", context=trace.set_span_in_context(call), kind=SpanKind.SERVER
    )
    kept.watch(inner.context)
    kept.add(child_of(inner, "inner query"))
    inner.end()
    assert names(kept.leave(inner, inner.context).of_request(inner)) == ["inner query"]
    call.end()
    kept.add(call)
    outer.end()
    spans = kept.leave(outer, outer.context)
    assert names(spans.of_request(outer)) == ["inner query", "GET /inner", "GET"]


def test_a_forked_child_keeps_nothing_of_its_parent() -> None:
    kept = TraceSpans()
    request = tracer.start_span("GET /orders", kind=SpanKind.SERVER)
    kept.watch(request.context)
    kept.add(child_of(request, "SELECT"))
    kept.after_fork_in_child()
    assert kept.leave(request, request.context) is None


def test_a_request_whose_trace_ends_no_span_leaves_nothing() -> None:
    kept = TraceSpans()
    request = tracer.start_span("GET /fast", kind=SpanKind.SERVER)
    kept.watch(request.context)
    request.end()
    assert kept.leave(request, request.context) is None
    kept.add(child_of(request, "after its end"))
    assert kept.so_far(request) == []


def test_a_shared_trace_whose_first_request_ends_before_any_span_keeps_the_link() -> None:
    """The outer request ends first with no span of its own yet: the inner one's spans are
    still found below it."""
    kept = TraceSpans()
    outer = tracer.start_span("GET /outer", kind=SpanKind.SERVER)
    inner = tracer.start_span(
        "GET /inner", context=trace.set_span_in_context(outer), kind=SpanKind.SERVER
    )
    kept.watch(outer.context)
    kept.watch(inner.context)
    outer.end()
    assert kept.leave(outer, outer.context) is None
    kept.add(child_of(inner, "inner query"))
    inner.end()
    spans = kept.leave(inner, inner.context)
    assert spans.shared and names(spans.of_request(inner)) == ["inner query"]
    assert kept.leave(inner, inner.context) is None
