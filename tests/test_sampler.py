"""The stack sampler, driven tick by tick with a fake clock."""

from __future__ import annotations

import gc
import itertools
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import FrameType, SimpleNamespace
from typing import Any

import pytest

from otel_wpm.active_settings import ActiveSettings
from otel_wpm.capture.inflight import InFlightRequest, InFlightRequests
from otel_wpm.capture.sampler import StackSampler, stack_of
from otel_wpm.capture.samples import Stack
from otel_wpm.config import Config

MS = 1_000_000
_span_ids = itertools.count(1)
# every request sampled every 30 ms, full rate (a tick every 10 ms) after 50 ms,
# slow at 100 ms, hung at 500 ms
SETTINGS = ActiveSettings.from_config(
    Config(
        threshold_seconds=0.1,
        sample_after_fraction=0.5,
        hung_request_factor=5,
        sampling_interval_seconds=0.01,
        early_sampling_interval_seconds=0.03,
        enable_local_file=False,
    )
)
# the same without early sampling
NO_EARLY = ActiveSettings.from_config(SETTINGS.config.replace(early_sampling_interval_seconds=0))


class Recorder:
    """What the sampler asks and tells, through the callables it is given."""

    def __init__(self) -> None:
        self.crossed: list[InFlightRequest] = []
        self.hung: list[InFlightRequest] = []
        self.admitted: list[tuple[InFlightRequest, list[str]]] = []
        self.admit_answer = True

    def admit(self, request: InFlightRequest, frames: Iterable[FrameType]) -> bool:
        names = [frame.f_code.co_name for frame in frames]
        self.admitted.append((request, names))
        return self.admit_answer

    def crossed_threshold(self, request: InFlightRequest) -> None:
        self.crossed.append(request)

    def hangs(self, request: InFlightRequest) -> None:
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


@dataclass
class Rig:
    """A sampler on a fake clock, its registry and listener, and a parked request thread."""

    thread: threading.Thread
    clock: Clock
    listener: Recorder
    requests: InFlightRequests
    sampler: StackSampler

    @property
    def thread_id(self) -> int:
        return self.thread.ident or 0

    def new_span(self) -> SimpleNamespace:
        """Enough of an SDK span for the sampler: start and end time, and a context."""
        return SimpleNamespace(
            start_time=self.clock.now,
            end_time=None,
            context=SimpleNamespace(span_id=next(_span_ids)),
        )

    def start(self, settings: ActiveSettings = SETTINGS) -> Any:
        span = self.new_span()
        assert (
            list(self.requests.start(span, span.context, self.thread_id, self.thread_id, settings))
            == []
        )
        return span

    def state(self, span: Any) -> InFlightRequest:
        found = self.requests.state_of(self.thread_id, span, SETTINGS)
        assert found is not None
        return found

    def advance(self, ms: int, times: int = 1) -> None:
        """``times`` times: move the clock on by ``ms`` milliseconds, then tick."""
        for _ in range(times):
            self.clock.now += ms * MS
            self.sampler.tick()


@pytest.fixture
def rig(parked_thread: threading.Thread) -> Iterator[Rig]:
    clock, listener, requests = Clock(), Recorder(), InFlightRequests()
    sampler = StackSampler(
        requests,
        admit=listener.admit,
        on_threshold_crossed=listener.crossed_threshold,
        on_hung=listener.hangs,
        settings=SETTINGS,
        clock_ns=clock,
    )
    yield Rig(parked_thread, clock, listener, requests, sampler)
    sampler.stop()


def records(request: InFlightRequest) -> list[tuple[Stack, float, float, float]]:
    return list(request.samples.snapshot().records())


def test_without_early_sampling_young_requests_are_not_sampled(rig: Rig) -> None:
    rig.sampler.configure(NO_EARLY)
    span = rig.start()
    rig.advance(40)
    assert not rig.state(span).samples


def test_requests_past_the_delay_are_sampled_with_their_own_stack(rig: Rig) -> None:
    rig.sampler.configure(NO_EARLY)
    span = rig.start()
    rig.advance(30, times=3)
    request = rig.state(span)
    [(stack, seconds, _, _)] = records(request)  # at 60 and 90 ms, the same stack
    assert any(frame.startswith("parked_in_this_function\x00") for frame in stack)
    assert not any("test_requests_past_the_delay" in frame for frame in stack)
    # the first sample stands for one interval, the second for the 30 ms since the first
    assert seconds == pytest.approx(0.04)
    assert request.sampled_seconds() == pytest.approx(0.04)


def test_young_requests_are_sampled_each_early_round_without_being_admitted(rig: Rig) -> None:
    span = rig.start()
    rig.advance(10, times=4)  # early rounds at 10 and 40 ms (30 ms apart); due at 50 ms
    request = rig.state(span)
    assert rig.listener.admitted == []
    assert request.sampled_seconds() == pytest.approx(0.04)
    rig.advance(10)
    assert [admitted for admitted, _ in rig.listener.admitted] == [request]
    assert request.sampled_seconds() == pytest.approx(0.05)


def test_the_first_sample_stands_for_the_time_since_the_request_started(rig: Rig) -> None:
    rig.advance(10)  # an early round with nothing in flight
    rig.clock.now += 5 * MS
    span = rig.start()  # 5 ms after that round
    rig.advance(25)  # the next early round
    assert rig.state(span).sampled_seconds() == pytest.approx(0.025)
    rig.advance(10, times=10)
    assert rig.state(span).sampled_seconds() == pytest.approx(0.125)  # its whole age


def test_an_early_round_leaves_a_request_younger_than_an_interval_to_the_next(rig: Rig) -> None:
    rig.advance(10)  # an early round with nothing in flight; the next is 30 ms later
    rig.clock.now += 25 * MS
    span = rig.start()
    rig.advance(5)  # the next round: the request is 5 ms old, most end sooner
    assert not rig.state(span).samples
    rig.advance(30)  # the round after: one sample, standing for its 35 ms
    assert rig.state(span).sampled_seconds() == pytest.approx(0.035)


def test_an_early_round_leaves_a_request_younger_than_half_an_early_interval(rig: Rig) -> None:
    # Most requests of a busy service end within a few tens of milliseconds; sampling
    # them costs the sampler and tells nothing. Half an early interval (15 ms here)
    # bounds what the first sample stands for at one and a half early intervals.
    rig.advance(10)  # an early round with nothing in flight; the next is 30 ms later
    rig.clock.now += 18 * MS
    span = rig.start()
    rig.advance(12)  # the next round: 12 ms old, older than one sampling interval
    assert not rig.state(span).samples
    rig.advance(30)  # the round after: one sample, standing for its 42 ms
    assert rig.state(span).sampled_seconds() == pytest.approx(0.042)


def test_a_waiting_thread_is_sampled_as_waiting(rig: Rig) -> None:
    span = rig.start()
    rig.advance(10, times=10)
    samples = rig.state(span).samples.snapshot()
    # the parked thread uses no CPU; the first sample's CPU time is not measured
    assert samples.cpu_seconds is not None and samples.wait_seconds is not None
    assert samples.cpu_seconds < samples.wait_seconds
    assert samples.cpu_seconds + samples.wait_seconds < samples.seconds


def test_admit_is_asked_once_with_the_frame_the_thread_runs(rig: Rig) -> None:
    span = rig.start()
    rig.advance(30, times=4)
    assert [request.span for request, _ in rig.listener.admitted] == [span]
    frame_names = [name for _, stack in rig.listener.admitted for name in stack]
    assert "parked_in_this_function" in frame_names


def test_an_ignored_request_is_not_sampled_once_due(rig: Rig) -> None:
    rig.listener.admit_answer = False
    span = rig.start()
    rig.advance(30)
    request = rig.state(span)
    young = request.sampled_seconds()
    rig.advance(30, times=5)
    assert request.ignored
    assert request.sampled_seconds() == young
    assert rig.listener.crossed == []


def test_threshold_and_hung_are_told_once(rig: Rig) -> None:
    span = rig.start()
    rig.advance(10, times=70)
    assert [request.span for request in rig.listener.crossed] == [span]
    assert [request.span for request in rig.listener.hung] == [span]


def test_an_ended_span_is_not_sampled(rig: Rig) -> None:
    span = rig.start()
    rig.advance(60)
    request = rig.state(span)
    sampled = request.sampled_seconds()
    span.end_time = rig.clock.now  # ended; on_end has not run yet
    rig.advance(30, times=3)
    assert request.sampled_seconds() == sampled


def test_nested_requests_share_the_thread_and_both_get_samples(rig: Rig) -> None:
    outer = rig.start()
    inner = InFlightRequest(rig.new_span(), rig.thread_id, SETTINGS, nested=True)
    rig.requests.keep(inner)
    rig.advance(60)
    assert rig.state(outer).sampled_seconds() == inner.sampled_seconds() == pytest.approx(0.06)
    assert rig.requests.end_nested(inner.span, rig.thread_id) is inner
    assert rig.requests.nested() == []


def test_stack_of_is_outermost_first() -> None:
    def inner():
        return stack_of(sys._getframe())

    stack = inner()
    assert stack[-1].startswith("inner\x00")
    assert stack[-2].startswith("test_stack_of_is_outermost_first\x00")


def test_without_early_sampling_an_idle_sampler_sleeps_until_a_request_is_due(rig: Rig) -> None:
    rig.sampler.configure(NO_EARLY)
    assert rig.sampler.tick() == pytest.approx(0.05)  # nothing in flight: sample_after
    span = rig.start()
    rig.clock.now += 20 * MS
    assert rig.sampler.tick() == pytest.approx(0.03)  # due in 30 ms
    rig.clock.now += 30 * MS
    assert rig.sampler.tick() == pytest.approx(0.01)  # sampling: one interval
    assert rig.state(span).samples


def test_an_idle_sampler_wakes_for_each_early_round(rig: Rig) -> None:
    assert rig.sampler.tick() == pytest.approx(0.03)  # nothing in flight: the next round
    rig.clock.now += 30 * MS
    span = rig.start()
    rig.clock.now += 20 * MS
    assert rig.sampler.tick() == pytest.approx(0.03)  # a round now, the next in 30 ms
    assert rig.state(span).sampled_seconds() == pytest.approx(0.02)
    rig.clock.now += 20 * MS
    assert rig.sampler.tick() == pytest.approx(0.01)  # due in 10 ms: sooner than a round


def test_a_request_keeps_the_thresholds_it_started_under(rig: Rig) -> None:
    span = rig.start(settings=SETTINGS)
    rig.advance(10, times=5)
    lenient = ActiveSettings.from_config(SETTINGS.config.replace(threshold_seconds=10))
    rig.sampler.configure(lenient)  # as update_config does, while the request runs
    rig.advance(10, times=7)
    assert [request.span for request in rig.listener.crossed] == [span]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 collects only between bytecodes")
def test_no_garbage_collection_starts_while_the_stacks_are_read(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.11 a collection inside sys._current_frames() can deadlock the process
    (CPython gh-106883); the collector is held off for the call, then restored."""
    collector_on: list[bool] = []
    read_stacks = sys._current_frames

    def current_frames() -> dict[int, FrameType]:
        collector_on.append(gc.isenabled())
        return read_stacks()

    monkeypatch.setattr(sys, "_current_frames", current_frames)
    span = rig.start()
    rig.advance(60)
    assert rig.state(span).samples
    assert collector_on == [False]
    assert gc.isenabled()


def test_the_stacks_are_read_with_the_collector_the_app_turned_off(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    span = rig.start()
    gc.disable()
    try:
        rig.advance(60)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert rig.state(span).samples
