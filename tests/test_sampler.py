"""The stack sampler, driven tick by tick with a fake clock."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Iterator
from types import FrameType, SimpleNamespace
from typing import Any, Optional

import pytest

from otel_wpm.inflight import InFlightRequest, InFlightRequests
from otel_wpm.sampler import SamplerListener, StackSampler, stack_of

MS = 1_000_000
_span_ids = itertools.count(1)


class Recorder(SamplerListener):
    def __init__(self) -> None:
        self.crossed: list[InFlightRequest] = []
        self.hung: list[InFlightRequest] = []
        self.admitted: list[tuple[InFlightRequest, list[str]]] = []
        self.admit_answer = True

    def admit(self, request: InFlightRequest, frame: Optional[FrameType]) -> bool:
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        self.admitted.append((request, names))
        return self.admit_answer

    def on_threshold_crossed(self, request: InFlightRequest) -> None:
        self.crossed.append(request)

    def on_hung(self, request: InFlightRequest) -> None:
        self.hung.append(request)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * MS

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def parked_thread():
    """A thread parked inside a function we can look for in its stack."""
    gate = threading.Event()
    ready = threading.Event()

    def parked_in_this_function() -> None:
        ready.set()
        gate.wait(30)

    thread = threading.Thread(target=parked_in_this_function)
    thread.start()
    ready.wait(10)
    yield thread
    gate.set()
    thread.join(10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def listener() -> Recorder:
    return Recorder()


@pytest.fixture
def requests() -> InFlightRequests:
    return InFlightRequests()


@pytest.fixture
def sampler(clock: Clock, listener: Recorder, requests: InFlightRequests) -> Iterator[StackSampler]:
    """A sampler on the fake clock, told to ``listener``; stopped after the test."""
    sampler = StackSampler(
        listener,
        requests,
        interval_seconds=0.01,
        sample_after_seconds=0.05,
        threshold_seconds=0.1,
        hung_after_seconds=0.5,
        clock_ns=clock,
    )
    yield sampler
    sampler.stop()


def span_started(clock: Clock) -> SimpleNamespace:
    """Enough of an SDK span for the sampler: start and end time, and a context."""
    return SimpleNamespace(
        start_time=clock.now, end_time=None, context=SimpleNamespace(span_id=next(_span_ids))
    )


def start_on(thread: threading.Thread, clock: Clock, requests: InFlightRequests) -> Any:
    span = span_started(clock)
    assert requests.start(span, thread.ident or 0) == []
    return span


def state(requests: InFlightRequests, thread: threading.Thread, span: Any) -> InFlightRequest:
    found = requests.state_of(thread.ident or 0, span)
    assert found is not None
    return found


def advance(clock: Clock, sampler: StackSampler, ms: int, times: int = 1) -> None:
    """``times`` times: move the clock on by ``ms`` milliseconds, then tick."""
    for _ in range(times):
        clock.now += ms * MS
        sampler.tick()


def test_young_requests_are_not_sampled(
    parked_thread: threading.Thread,
    clock: Clock,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    span = start_on(parked_thread, clock, requests)
    advance(clock, sampler, 40)
    assert state(requests, parked_thread, span).samples == []


def test_requests_past_the_delay_are_sampled_with_their_own_stack(
    parked_thread: threading.Thread,
    clock: Clock,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    span = start_on(parked_thread, clock, requests)
    advance(clock, sampler, 30, times=3)
    request = state(requests, parked_thread, span)
    assert len(request.samples) == 2  # at 60 and 90 ms; 30 ms was too young
    stack, seconds = request.samples[0]
    assert any(frame.startswith("parked_in_this_function\x00") for frame in stack)
    assert not any("test_requests_past_the_delay" in frame for frame in stack)
    assert seconds == pytest.approx(0.01)
    assert request.samples[1][1] == pytest.approx(0.03)
    assert request.sampled_seconds() == pytest.approx(0.04)


def test_the_listener_is_asked_once_with_the_frame_the_thread_runs(
    parked_thread: threading.Thread,
    clock: Clock,
    listener: Recorder,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    span = start_on(parked_thread, clock, requests)
    advance(clock, sampler, 30, times=4)
    assert [request.span for request, _ in listener.admitted] == [span]
    frame_names = [name for _, stack in listener.admitted for name in stack]
    assert "parked_in_this_function" in frame_names


def test_an_ignored_request_is_not_sampled(
    parked_thread: threading.Thread,
    clock: Clock,
    listener: Recorder,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    listener.admit_answer = False
    span = start_on(parked_thread, clock, requests)
    advance(clock, sampler, 30, times=5)
    request = state(requests, parked_thread, span)
    assert request.ignored
    assert request.samples == []
    assert listener.crossed == []


def test_threshold_and_hung_are_told_once(
    parked_thread: threading.Thread,
    clock: Clock,
    listener: Recorder,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    span = start_on(parked_thread, clock, requests)
    advance(clock, sampler, 10, times=70)
    assert [request.span for request in listener.crossed] == [span]
    assert [request.span for request in listener.hung] == [span]


def test_an_ended_span_is_not_sampled(
    parked_thread: threading.Thread,
    clock: Clock,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    span = start_on(parked_thread, clock, requests)
    advance(clock, sampler, 60)
    request = state(requests, parked_thread, span)
    span.end_time = clock.now  # ended; on_end has not run yet
    advance(clock, sampler, 30, times=3)
    assert len(request.samples) == 1


def test_nested_requests_share_the_thread_and_both_get_samples(
    parked_thread: threading.Thread,
    clock: Clock,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    outer = start_on(parked_thread, clock, requests)
    inner = InFlightRequest(span_started(clock), parked_thread.ident or 0, nested=True)
    requests.keep(inner)
    advance(clock, sampler, 60)
    assert len(state(requests, parked_thread, outer).samples) == len(inner.samples) == 1
    assert requests.end_nested(inner.span, parked_thread.ident or 0) is inner
    assert requests.nested() == []


def test_stack_of_is_outermost_first() -> None:
    def inner():
        return stack_of(sys._getframe())

    stack = inner()
    assert stack[-1].startswith("inner\x00")
    assert stack[-2].startswith("test_stack_of_is_outermost_first\x00")


def test_an_idle_sampler_sleeps_until_the_oldest_request_is_due(
    parked_thread: threading.Thread,
    clock: Clock,
    sampler: StackSampler,
    requests: InFlightRequests,
) -> None:
    assert sampler.tick() == pytest.approx(0.05)  # nothing in flight: sample_after
    span = start_on(parked_thread, clock, requests)
    clock.now += 20 * MS
    assert sampler.tick() == pytest.approx(0.03)  # due in 30 ms
    clock.now += 30 * MS
    assert sampler.tick() == pytest.approx(0.01)  # sampling: one interval
    assert len(state(requests, parked_thread, span).samples) == 1
