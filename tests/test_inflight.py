"""The registry of requests in flight, with real SDK spans."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from otel_wpm.active_settings import ActiveSettings
from otel_wpm.capture.inflight import InFlightRequest, InFlightRequests
from otel_wpm.config import Config

THREAD = 101
OTHER_THREAD = 202
SECOND = 1_000_000_000
SETTINGS = ActiveSettings.from_config(Config(threshold_seconds=1.0, enable_local_file=False))


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


def watch(
    requests: InFlightRequests,
    span: Span,
    thread: int = THREAD,
    settings: ActiveSettings = SETTINGS,
) -> Sequence[InFlightRequest]:
    """What the processor does when a request's span starts on ``thread``."""
    return requests.start(span, span.context, thread, thread, settings)


def end(span: Span, ended: EndedSpans, after_ns: int) -> ReadableSpan:
    span.end(end_time=(span.start_time or 0) + after_ns)
    return ended.ended[-1]


def test_a_span_ended_on_its_thread_is_matched_by_its_read_only_copy(
    tracer, ended: EndedSpans
) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    watch(requests, span)
    state = requests.state_of(THREAD, span, SETTINGS)
    finished = end(span, ended, 2 * SECOND)
    assert finished is not span
    assert requests.end(finished, THREAD) == (SETTINGS, state)
    assert requests.running() == []
    assert not requests.is_watching(THREAD)


def test_a_new_span_on_a_thread_returns_the_one_that_never_ended(tracer) -> None:
    requests = InFlightRequests()
    never_ended = start(tracer)
    watch(requests, never_ended)
    kept = InFlightRequest(never_ended, THREAD, SETTINGS)
    requests.keep(kept)
    fresh = start(tracer)
    assert list(watch(requests, fresh)) == [kept]
    assert requests.running() == [(THREAD, fresh, SETTINGS)]


def test_a_span_that_ended_is_not_stale(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    first = start(tracer)
    watch(requests, first)
    requests.leave(end(first, ended, 1000).context, THREAD)
    fresh = start(tracer)
    assert list(watch(requests, fresh)) == []


def test_a_thread_whose_span_ended_elsewhere_is_not_watching(tracer, ended: EndedSpans) -> None:
    """A decorated function started there afterwards is not nested in that old request."""
    requests = InFlightRequests()
    span = start(tracer)
    watch(requests, span)
    end(span, ended, 1000)  # ended, but on_end ran on another thread
    assert not requests.is_watching(THREAD)


def test_a_span_ended_on_another_thread_is_found(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    watch(requests, span)
    state = requests.state_of(THREAD, span, SETTINGS)
    finished = end(span, ended, 2 * SECOND)
    assert requests.end(finished, OTHER_THREAD) == (SETTINGS, state)


def test_states_of_fast_ended_spans_are_pruned_and_slow_ones_kept(
    tracer, ended: EndedSpans
) -> None:
    """Each by the threshold of the settings it started under: 1 s and 0.2 s here."""
    strict = ActiveSettings.from_config(Config(threshold_seconds=0.2, enable_local_file=False))
    requests = InFlightRequests()
    fast, slow = start(tracer), start(tracer)
    watch(requests, fast)
    watch(requests, slow, OTHER_THREAD, settings=strict)
    requests.state_of(THREAD, fast, SETTINGS)
    slow_state = requests.state_of(OTHER_THREAD, slow, strict)
    finished_fast = end(fast, ended, SECOND // 2)
    finished_slow = end(slow, ended, SECOND // 2)
    requests.prune()  # the sampler, between span end and on_end
    assert requests.leave(finished_fast.context, THREAD) == (SETTINGS, False)
    assert requests.end(finished_slow, OTHER_THREAD) == (strict, slow_state)
    assert requests.state_of(THREAD, fast, SETTINGS) is None


def test_no_state_is_made_for_a_span_that_ended(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    span = start(tracer)
    watch(requests, span)
    end(span, ended, 1000)
    assert requests.state_of(THREAD, span, SETTINGS) is None
    assert requests.running() == []


def test_unknown_spans_are_left_alone(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    watched = start(tracer)
    watch(requests, watched)
    other = end(start(tracer), ended, 1000)
    assert requests.leave(other.context, THREAD) is None
    assert requests.end(other, THREAD) == (None, None)
    assert requests.running() == [(THREAD, watched, SETTINGS)]


def test_nested_requests_end_by_span(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    outer, inner_span = start(tracer), start(tracer)
    watch(requests, outer)
    inner = InFlightRequest(inner_span, THREAD, SETTINGS, nested=True)
    requests.keep(inner)
    assert requests.nested() == [inner]
    assert requests.end_nested(end(inner_span, ended, 1000), THREAD) is inner
    assert requests.nested() == []
    assert requests.is_watching(THREAD)


def test_the_registry_is_empty_in_a_forked_child(tracer) -> None:
    """The parent's requests run on threads the child does not have."""
    requests = InFlightRequests()
    span = start(tracer)
    watch(requests, span)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if requests.running() == [] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert requests.running() == [(THREAD, span, SETTINGS)]


def test_leaving_says_whether_the_span_has_state_to_collect(tracer, ended: EndedSpans) -> None:
    requests = InFlightRequests()
    plain, sampled = start(tracer), start(tracer)
    watch(requests, plain)
    assert requests.leave(end(plain, ended, 1000).context, THREAD) == (SETTINGS, False)
    watch(requests, sampled)
    state = requests.state_of(THREAD, sampled, SETTINGS)
    finished = end(sampled, ended, 1000)
    assert requests.leave(finished.context, THREAD) == (SETTINGS, True)
    assert requests.take_state(finished, THREAD) is state
    assert requests.take_state(finished, THREAD) is None
