"""The stack sampler, driven tick by tick with a fake clock."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from otel_wpm.sampler import InFlightRequest, SamplerListener, StackSampler, stack_of

MS = 1_000_000


class Recorder(SamplerListener):
    def __init__(self) -> None:
        self.crossed: list[InFlightRequest] = []
        self.hung: list[InFlightRequest] = []

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
def sampler(clock: Clock, listener: Recorder) -> Iterator[StackSampler]:
    """A sampler on the fake clock, told to ``listener``; stopped after the test."""
    sampler = StackSampler(
        listener,
        interval_seconds=0.01,
        sample_after_seconds=0.05,
        threshold_seconds=0.1,
        hung_after_seconds=0.5,
        clock_ns=clock,
    )
    yield sampler
    sampler.stop()


def request_on(thread: threading.Thread, clock: Clock) -> InFlightRequest:
    return InFlightRequest(span=SimpleNamespace(), thread_id=thread.ident or 0, start_ns=clock.now)


def advance(clock: Clock, sampler: StackSampler, ms: int, times: int = 1) -> None:
    """``times`` times: move the clock on by ``ms`` milliseconds, then tick."""
    for _ in range(times):
        clock.now += ms * MS
        sampler.tick()


def test_young_requests_are_not_sampled(
    parked_thread: threading.Thread, clock: Clock, sampler: StackSampler
) -> None:
    request = request_on(parked_thread, clock)
    sampler.register(request, nested=False)
    advance(clock, sampler, 40)
    assert request.samples == []


def test_requests_past_the_delay_are_sampled_with_their_own_stack(
    parked_thread: threading.Thread, clock: Clock, sampler: StackSampler
) -> None:
    request = request_on(parked_thread, clock)
    sampler.register(request, nested=False)
    advance(clock, sampler, 30, times=3)
    assert len(request.samples) == 2  # at 60 and 90 ms; 30 ms was too young
    stack, seconds = request.samples[0]
    assert any(frame.startswith("parked_in_this_function\x00") for frame in stack)
    assert not any("test_requests_past_the_delay" in frame for frame in stack)
    assert seconds == pytest.approx(0.01)
    assert request.samples[1][1] == pytest.approx(0.03)
    assert request.sampled_seconds() == pytest.approx(0.04)


def test_threshold_and_hung_are_told_once(
    parked_thread: threading.Thread, clock: Clock, listener: Recorder, sampler: StackSampler
) -> None:
    request = request_on(parked_thread, clock)
    sampler.register(request, nested=False)
    advance(clock, sampler, 10, times=70)
    assert listener.crossed == [request]
    assert listener.hung == [request]


def test_a_new_request_on_a_thread_evicts_a_stale_one(
    parked_thread: threading.Thread, clock: Clock, sampler: StackSampler
) -> None:
    stale = request_on(parked_thread, clock)
    assert sampler.register(stale, nested=False) == []
    fresh = request_on(parked_thread, clock)
    assert sampler.register(fresh, nested=False) == [stale]
    assert sampler.in_flight() == [fresh]


def test_nested_requests_share_the_thread_and_both_get_samples(
    parked_thread: threading.Thread, clock: Clock, sampler: StackSampler
) -> None:
    outer = request_on(parked_thread, clock)
    inner = request_on(parked_thread, clock)
    sampler.register(outer, nested=False)
    assert sampler.register(inner, nested=True) == []
    advance(clock, sampler, 60)
    assert len(outer.samples) == len(inner.samples) == 1
    sampler.unregister(inner)
    assert sampler.in_flight() == [outer]


def test_stack_of_is_outermost_first() -> None:
    def inner():
        return stack_of(sys._getframe())

    stack = inner()
    assert stack[-1].startswith("inner\x00")
    assert stack[-2].startswith("test_stack_of_is_outermost_first\x00")


def test_an_idle_sampler_sleeps_until_the_oldest_request_is_due(
    parked_thread: threading.Thread, clock: Clock, sampler: StackSampler
) -> None:
    assert sampler.tick() == pytest.approx(0.05)  # nothing in flight: sample_after
    request = request_on(parked_thread, clock)
    sampler.register(request, nested=False)
    clock.now += 20 * MS
    assert sampler.tick() == pytest.approx(0.03)  # due in 30 ms
    clock.now += 30 * MS
    assert sampler.tick() == pytest.approx(0.01)  # sampling: one interval
    assert len(request.samples) == 1
