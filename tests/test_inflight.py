"""The registry of requests in flight, with real SDK spans."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from otel_wpm.capture.inflight import InFlightRequest, InFlightRequests

THREAD = 101
OTHER_THREAD = 202
SECOND = 1_000_000_000


class EndedSpans(SpanProcessor):
    """Keeps what ``on_end`` gets: the read-only copy, as our processor sees it."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


@pytest.fixture
def ended() -> EndedSpans:
    return EndedSpans()


@pytest.fixture
def tracer(ended: EndedSpans):
    provider = TracerProvider()
    provider.add_span_processor(ended)
    return provider.get_tracer("test")


def start(tracer, start_time: int = 10 * SECOND) -> Span:
    return tracer.start_span("GET /x", kind=SpanKind.SERVER, start_time=start_time)


def end(span: Span, ended: EndedSpans, after_ns: int) -> ReadableSpan:
    span.end(end_time=(span.start_time or 0) + after_ns)
    return ended.ended[-1]


def test_a_span_ended_on_its_thread_is_matched_by_its_read_only_copy(
    tracer, ended: EndedSpans
) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    requests.start(span, THREAD)
    state = requests.state_of(THREAD, span)
    finished = end(span, ended, 2 * SECOND)
    assert finished is not span
    assert requests.end(finished, THREAD) == (True, state)
    assert requests.running() == []
    assert not requests.is_watching_thread(THREAD)


def test_a_new_span_on_a_thread_returns_the_one_that_never_ended(tracer) -> None:
    requests = InFlightRequests()
    never_ended = start(tracer)
    requests.start(never_ended, THREAD)
    kept = InFlightRequest(never_ended, THREAD)
    requests.keep(kept)
    fresh = start(tracer)
    assert list(requests.start(fresh, THREAD)) == [kept]
    assert requests.running() == [(THREAD, fresh)]


def test_a_span_that_ended_is_not_stale(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    first = start(tracer)
    requests.start(first, THREAD)
    requests.leave(end(first, ended, 1000), THREAD)
    assert list(requests.start(start(tracer), THREAD)) == []


def test_a_thread_whose_span_ended_elsewhere_is_not_watching(tracer, ended: EndedSpans) -> None:
    """A decorated function started there afterwards is not nested in that old request."""
    requests = InFlightRequests()
    span = start(tracer)
    requests.start(span, THREAD)
    end(span, ended, 1000)  # ended, but on_end ran on another thread
    assert not requests.is_watching_thread(THREAD)


def test_a_span_ended_on_another_thread_is_found(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    requests.start(span, THREAD)
    state = requests.state_of(THREAD, span)
    finished = end(span, ended, 2 * SECOND)
    assert requests.end(finished, OTHER_THREAD) == (True, state)


def test_states_of_fast_ended_spans_are_pruned_and_slow_ones_kept(
    tracer, ended: EndedSpans
) -> None:
    requests = InFlightRequests()
    fast, slow = start(tracer), start(tracer)
    requests.start(fast, THREAD)
    requests.start(slow, OTHER_THREAD)
    requests.state_of(THREAD, fast)
    slow_state = requests.state_of(OTHER_THREAD, slow)
    end(fast, ended, SECOND // 2)
    finished_slow = end(slow, ended, 2 * SECOND)
    requests.prune(threshold_ns=SECOND)  # the sampler, between span end and on_end
    assert requests.end(finished_slow, OTHER_THREAD) == (True, slow_state)
    assert requests.state_of(THREAD, fast) is None


def test_no_state_is_made_for_a_span_that_ended(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    requests.start(span, THREAD)
    end(span, ended, 1000)
    assert requests.state_of(THREAD, span) is None
    assert requests.running() == []


def test_unknown_spans_are_left_alone(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    watched = start(tracer)
    requests.start(watched, THREAD)
    other = end(start(tracer), ended, 1000)
    assert not requests.leave(other, THREAD)
    assert requests.end(other, THREAD) == (False, None)
    assert requests.running() == [(THREAD, watched)]


def test_nested_requests_end_by_span(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    outer, inner_span = start(tracer), start(tracer)
    requests.start(outer, THREAD)
    inner = InFlightRequest(inner_span, THREAD, nested=True)
    requests.keep(inner)
    assert requests.nested() == [inner]
    assert requests.end_nested(end(inner_span, ended, 1000), THREAD) is inner
    assert requests.nested() == []
    assert requests.is_watching_thread(THREAD)


def test_the_registry_is_empty_in_a_forked_child(tracer) -> None:
    requests = InFlightRequests()
    requests.start(start(tracer), THREAD)
    requests.after_fork_in_child()
    assert requests.running() == []


def test_a_thread_has_state_to_collect_until_its_span_ends(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    requests.start(span, THREAD)
    assert not requests.has_state(THREAD)
    state = requests.state_of(THREAD, span)
    assert requests.has_state(THREAD)
    assert requests.end(end(span, ended, 1000), THREAD) == (True, state)
    assert not requests.has_state(THREAD)
