"""A request's samples: folded with bounded memory, weighed by CPU and waiting time."""

from __future__ import annotations

import dataclasses
import threading
import time
import tracemalloc
from types import SimpleNamespace

import pytest
from apps.helpers import wait_until
from test_report import slow_request

from otel_wpm.active_settings import ActiveSettings
from otel_wpm.capture.inflight import InFlightRequest
from otel_wpm.capture.precise import start_profiler, stop_profiler
from otel_wpm.capture.samples import MAX_ENTRIES, MAX_STACKS_PER_SLICE, FoldedSamples, Stack
from otel_wpm.capture.thread_cpu import cpu_clock_of, cpu_time_ns
from otel_wpm.config import Config
from otel_wpm.masking import SecretMasker
from otel_wpm.reporting.profile import cpu_and_wait_by_function, hot_frames, sampled_profile
from otel_wpm.reporting.render import render_report
from otel_wpm.reporting.report_format import parse_metadata

MS = 1_000_000
SETTINGS = ActiveSettings.from_config(Config(threshold_seconds=1.0, enable_local_file=False))
#: A request's memory for its samples stays under this, whatever its duration.
MEMORY_BOUND_BYTES = 4 * 1024 * 1024


def frame(function: str, line: int = 1) -> str:
    """A frame identifier in this file, which pyinstrument counts as application code."""
    return f"{function}\x00{__file__}\x00{line}"


# 50 frames of a server and framework (all application code here, to keep it simple)
OUTER: Stack = tuple(frame(f"layer_{depth}", depth) for depth in range(50))
HANDLER: Stack = (*OUTER, frame("handle_request", 100))
QUERY: Stack = (*HANDLER, frame("run_query", 200))
RENDER: Stack = (*HANDLER, frame("render_page", 300))
#: One second of the request: 0.5 s in run_query, 0.3 s in render_page, 0.2 s in the handler.
ONE_SECOND: list[Stack] = [QUERY] * 50 + [RENDER] * 30 + [HANDLER] * 20


def read_metadata_of(page: str) -> dict:
    return parse_metadata(page.encode("utf-8"))


def long_request(seconds: int, cpu_of: dict[Stack, float]) -> InFlightRequest:
    """A request sampled every 10 ms for ``seconds`` on a fake clock; each sample's CPU
    time is its stack's share in ``cpu_of``, of the 10 ms."""
    span = SimpleNamespace(start_time=0, end_time=None, context=SimpleNamespace(span_id=1))
    request = InFlightRequest(span, thread_id=1, settings=SETTINGS)
    now = cpu = 0
    for second in range(seconds):
        # the order within each second changes, so runs of one stack stay short
        pattern = ONE_SECOND[second % 7 :] + ONE_SECOND[: second % 7]
        for stack in pattern:
            now += 10 * MS
            cpu += int(10 * MS * cpu_of.get(stack, 0.0))
            request.add_sample(stack, now, cpu)
    return request


def test_a_long_request_keeps_its_samples_within_a_fixed_bound() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        one_minute = long_request(60, {})
        after_a_minute = tracemalloc.get_traced_memory()[0] - before
        ten_minutes = long_request(600, {})
        after_ten_minutes = tracemalloc.get_traced_memory()[0] - before - after_a_minute
    finally:
        tracemalloc.stop()
    assert one_minute.samples.entry_count <= MAX_ENTRIES
    assert ten_minutes.samples.entry_count <= MAX_ENTRIES
    assert after_a_minute < MEMORY_BOUND_BYTES
    assert after_ten_minutes < MEMORY_BOUND_BYTES
    assert one_minute.sampled_seconds() == pytest.approx(60.0)
    assert ten_minutes.sampled_seconds() == pytest.approx(600.0)


def test_a_long_request_still_shows_the_right_functions_with_the_right_shares() -> None:
    request = long_request(60, {QUERY: 0.1, RENDER: 1.0, HANDLER: 0.5})
    profile = sampled_profile(request.samples.snapshot(), 0.0, 60.0, 0.01, "GET request")
    shares = {hot.function: hot.share for hot in hot_frames(profile.session)}
    assert shares == pytest.approx({"run_query": 0.5, "render_page": 0.3, "handle_request": 0.2})
    split = {name: seconds for (name, _), seconds in cpu_and_wait_by_function(profile).items()}
    # CPU: 10 % of run_query's 30 s, all of render_page's 18 s, half of the handler's 12 s;
    # the first sample's CPU time is not measured
    assert split["run_query"] == pytest.approx((3.0, 27.0), abs=0.02)
    assert split["render_page"] == pytest.approx((18.0, 0.0), abs=0.02)
    assert split["handle_request"] == pytest.approx((6.0, 6.0), abs=0.02)
    assert profile.cpu_seconds == pytest.approx(27.0, abs=0.02)
    assert profile.wait_seconds == pytest.approx(33.0, abs=0.02)


def test_a_short_request_keeps_every_sample_in_order() -> None:
    samples = FoldedSamples()
    for stack in [QUERY, QUERY, RENDER, QUERY, HANDLER]:
        samples.add(stack, 0.01)
    kept = [(stack[-1].split("\x00")[0], round(s, 6)) for stack, s, _, _ in samples.records()]
    assert kept == [
        ("run_query", 0.02),
        ("render_page", 0.01),
        ("run_query", 0.01),
        ("handle_request", 0.01),
    ]
    assert samples.cpu_seconds is None and samples.wait_seconds is None


def test_without_a_cpu_clock_the_report_says_cpu_time_was_not_measured() -> None:
    samples = FoldedSamples()
    for stack in ONE_SECOND:
        samples.add(stack, 0.01)  # no CPU reading: the platform cannot read the clock
    profile = sampled_profile(samples, 0.0, 1.0, 0.01, "GET request")
    assert profile.cpu_seconds is None and profile.wait_seconds is None
    slow = dataclasses.replace(slow_request("/orders", "", []), profile=profile)
    page = render_report(slow, SecretMasker(), hot_frames(profile.session))
    assert "CPU time not measured on this platform" in page
    assert "CPU 0.000 s" not in page
    assert "cpu_seconds" not in read_metadata_of(page)


def test_a_time_slice_with_too_many_stacks_charges_the_rarest_to_their_callers() -> None:
    samples = FoldedSamples()
    for second in range(600):  # coarsened until each slice spans seconds
        samples.add(QUERY, 0.5)
        samples.add((*RENDER, frame(f"helper_{second}", second)), 0.01)
    assert all(len(part) <= MAX_STACKS_PER_SLICE for part in samples._slices)
    in_query = sum(seconds for stack, seconds, _, _ in samples.records() if stack == QUERY)
    in_render = sum(
        seconds for stack, seconds, _, _ in samples.records() if stack[: len(RENDER)] == RENDER
    )
    assert in_query == pytest.approx(300.0)
    assert in_render == pytest.approx(6.0)  # the helpers' time, some of it in their caller


def test_another_threads_cpu_clock_reads_its_own_time_until_it_exits() -> None:
    go, done = threading.Event(), threading.Event()
    clock: list[int | None] = []

    def worker() -> None:
        clock.append(cpu_clock_of(threading.get_ident()))
        go.wait(10)
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass
        done.set()
        go.clear()
        go.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        while not clock:
            thread.join(0.01)
        assert clock[0] is not None
        before = cpu_time_ns(clock[0])
        go.set()
        assert done.wait(10)
        after = cpu_time_ns(clock[0])
        assert before is not None and after is not None and after - before >= 50 * MS
    finally:
        go.set()
        thread.join(10)
    # the thread is gone (its OS thread ends just after join() returns), and so is its clock
    wait_until(lambda: cpu_time_ns(clock[0]) is None, "the thread's clock gone")


def test_the_precise_engine_reports_its_own_threads_cpu_not_the_process() -> None:
    burned = threading.Event()

    def burn() -> None:
        while time.thread_time() < 0.05:
            sum(i * i for i in range(500))
        burned.set()

    profiler = start_profiler(0.001)
    assert profiler is not None
    burner = threading.Thread(target=burn)
    burner.start()
    assert burned.wait(30)  # this thread waits while the other burns 50 ms of CPU
    burner.join(10)
    session = stop_profiler(profiler)
    assert session is not None
    assert session.cpu_time < 0.05  # pyinstrument's own figure would count both threads
