"""Requests served by asyncio tasks: keyed by task, located and sampled from another thread.

A real event loop runs on its own thread; the test thread plays the sampler.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import weakref
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from apps.helpers import wait_until
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, set_span_in_context

from otel_wpm.active_settings import ActiveSettings
from otel_wpm.capture.inflight import InFlightRequests, request_key
from otel_wpm.capture.loops.sampler import LoopSampler
from otel_wpm.capture.loops.tasks import WAITING_FOR_LOOP, ChildTasks, LoopView, State, locate
from otel_wpm.capture.loops.workers import WorkerThreads
from otel_wpm.config import Config
from otel_wpm.processor import ProfilingSpanProcessor

SETTINGS = ActiveSettings.from_config(Config(threshold_seconds=1.0, enable_local_file=False))
TRACER = TracerProvider().get_tracer("test")


class Loop:
    """An event loop on its own thread; coroutines are started on it from the test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.release = threading.Event()  # lets spinning coroutines finish

    @property
    def thread_id(self) -> int:
        return self.thread.ident or 0

    def start(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task of ``coroutine``, handed back before it runs (it may hold the loop)."""
        created: list[asyncio.Task[Any]] = []
        handed = threading.Event()

        def create() -> None:
            created.append(self.loop.create_task(coroutine))
            handed.set()

        self.loop.call_soon_threadsafe(create)
        assert handed.wait(10)
        return created[0]

    def where(self, task: asyncio.Task[Any]) -> Any:
        frames = sys._current_frames()
        try:
            view = LoopView(frames.get(self.thread_id))
            workers = WorkerThreads(frames, skip={self.thread_id})
            return locate(task, view, workers, ChildTasks())
        finally:
            del frames

    def close(self) -> None:
        self.release.set()

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def start(requests: InFlightRequests, span: Any) -> None:
    """What the processor does when a request's span starts in a task."""
    thread_id = threading.get_ident()
    key = request_key(thread_id)
    requests.start(span, span.context, key, thread_id, SETTINGS)


def names(location: Any) -> list[str]:
    return [identifier.partition("\x00")[0] for identifier in location.stack()]


# --- the work the tasks do --------------------------------------------------------------


async def slow_a() -> None:
    await asyncio.sleep(30)


def spin_b(release: threading.Event) -> None:
    while not release.is_set():
        time.sleep(0)  # keeps the GIL moving, never yields to the loop


async def request_b(release: threading.Event, opens: Any = None) -> None:
    if opens is not None:
        opens.set()  # wakes whoever waits on it, while this task holds the loop
    spin_b(release)


async def waits_on(gate: asyncio.Event) -> None:
    await gate.wait()


async def gathered_child() -> None:
    await asyncio.sleep(30)


async def other_child() -> None:
    await asyncio.sleep(0)


async def gathering() -> None:
    await asyncio.gather(gathered_child(), other_child())


async def waited_for() -> None:
    await asyncio.sleep(30)


async def waiting_for() -> None:
    await asyncio.wait_for(waited_for(), 30)


async def in_group() -> None:
    await asyncio.sleep(30)


async def grouping() -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(in_group())


def blocking_job(release: threading.Event) -> None:
    release.wait(30)


async def to_thread(release: threading.Event) -> None:
    await asyncio.to_thread(blocking_job, release)


async def awaits(tasks: dict[str, Any], name: str, gate: asyncio.Event) -> None:
    await gate.wait()
    await tasks[name]


async def waits_for_all(tasks: dict[str, Any], name: str, gate: asyncio.Event) -> None:
    await gate.wait()
    await asyncio.wait({tasks[name]})


# --- keying --------------------------------------------------------------------------


def test_a_request_is_keyed_by_its_task_inside_a_loop_and_by_its_thread_outside(
    loop: Loop,
) -> None:
    async def key() -> Any:
        return request_key(threading.get_ident()), asyncio.current_task()

    key_inside, task = asyncio.run_coroutine_threadsafe(key(), loop.loop).result(10)
    assert key_inside is task
    assert request_key(threading.get_ident()) == threading.get_ident()


def test_requests_on_one_loop_are_kept_apart_and_a_finished_task_is_forgotten(
    loop: Loop,
) -> None:
    requests = InFlightRequests()

    async def serve(span: Any) -> None:
        start(requests, span)
        await asyncio.sleep(0)

    spans = [TRACER.start_span(f"GET /{n}", kind=SpanKind.SERVER) for n in range(2)]
    tasks = [loop.start(serve(span)) for span in spans]
    wait_until(lambda: all(task.done() for task in tasks), "both tasks to finish")
    assert {span for _, span, _ in requests.running()} == set(spans)
    assert [span for _, span in requests.tasks_on(loop.thread_id)] != []

    stale = requests.prune()  # neither span ended, and their tasks are done
    assert {request.span for request in stale} == set(spans)
    assert {request.task for request in stale} == set(tasks)
    assert requests.prune() == []
    assert requests.running() == []


class EndedSpans(SpanProcessor):
    """Holds what every other processor was handed at a span's end, weakly."""

    def __init__(self) -> None:
        self.spans: list[weakref.ref[ReadableSpan]] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(weakref.ref(span))


def test_a_finished_task_s_unended_request_lets_go_of_its_trace_s_spans(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    processor = ProfilingSpanProcessor(Config(threshold_seconds=30, enable_local_file=False))
    ended = EndedSpans()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(ended)
    tracer = provider.get_tracer("test")
    kept_while_it_ran: list[bool] = []

    async def serve() -> None:  # a request whose server span is never ended
        request = tracer.start_span("GET /left-open", kind=SpanKind.SERVER)
        tracer.start_span("SELECT", context=set_span_in_context(request)).end()
        kept_while_it_ran.append(ended.spans[0]() is not None)  # kept for its report

    wait_until(loop.start(serve()).done, "the task to finish")
    assert kept_while_it_ran == [True]
    [kept] = ended.spans

    def forgotten() -> bool:
        gc.collect()
        return kept() is None

    try:
        wait_until(forgotten, "the sampler to forget the request and its trace's spans")
    finally:
        provider.shutdown()
    stale = [r for r in caplog.records if "never ended" in r.getMessage()]
    assert len(stale) == 1
    assert "served by task" in stale[0].getMessage()


# --- where a task-served request is -------------------------------------------------------


def test_awaiting_running_and_waiting_for_the_loop(loop: Loop) -> None:
    awaiting = loop.start(slow_a())
    wait_until(lambda: loop.where(awaiting).state == State.AWAITING, "slow_a to await")
    assert names(loop.where(awaiting))[-3:] == ["slow_a", "sleep", "[await]"]

    gate = asyncio.Event()
    ready = loop.start(waits_on(gate))
    wait_until(lambda: loop.where(ready).state == State.AWAITING, "waits_on to await")
    spinning = loop.start(request_b(loop.release, opens=gate))
    wait_until(lambda: loop.where(spinning).state == State.ON_CPU, "request_b to run")

    running = loop.where(spinning)
    assert names(running)[:2] == ["request_b", "spin_b"]
    waiting = loop.where(ready)
    assert waiting.state == State.READY
    assert waiting.stack()[-1] == WAITING_FOR_LOOP


@pytest.mark.parametrize(
    ("parent", "child"),
    [(gathering, "gathered_child"), (waiting_for, "waited_for"), (grouping, "in_group")],
    ids=["gather", "wait_for", "TaskGroup"],
)
def test_a_request_is_followed_into_the_tasks_it_waits_for(
    loop: Loop, parent: Any, child: str
) -> None:
    task = loop.start(parent())

    def shows_child() -> bool:
        return child in names(loop.where(task))

    wait_until(shows_child, f"{child} in the stack of {parent.__name__}")
    assert names(loop.where(task))[0] == parent.__name__


def test_a_request_awaiting_a_worker_thread_shows_the_worker_s_stack(loop: Loop) -> None:
    task = loop.start(to_thread(loop.release))
    wait_until(lambda: loop.where(task).state == State.IN_WORKER, "the job to run")

    location = loop.where(task)
    assert names(location)[0] == "to_thread"
    assert "blocking_job" in names(location)
    assert location.worker_thread not in (None, loop.thread_id)


def test_tasks_awaiting_each_other_end_the_walk(loop: Loop) -> None:
    tasks: dict[str, Any] = {}
    gate = asyncio.Event()
    tasks["first"] = first = loop.start(waits_for_all(tasks, "second", gate))
    tasks["second"] = loop.start(awaits(tasks, "first", gate))
    loop.loop.call_soon_threadsafe(gate.set)

    wait_until(lambda: "awaits" in names(loop.where(first)), "the cycle to close")
    location = loop.where(first)
    assert location.state == State.AWAITING
    assert names(location).count("waits_for_all") == 1


# --- samples and who held the loop ----------------------------------------------------------


def test_a_waiting_request_names_the_request_that_held_its_loop(loop: Loop) -> None:
    requests = InFlightRequests()
    sampler = LoopSampler(requests)
    a_span = TRACER.start_span("GET /a", kind=SpanKind.SERVER, attributes={"http.route": "/a"})
    b_span = TRACER.start_span("GET /b", kind=SpanKind.SERVER, attributes={"http.route": "/b"})

    async def serve(span: Any, work: Coroutine[Any, Any, Any]) -> None:
        start(requests, span)
        await work

    a_task = loop.start(serve(a_span, slow_a()))
    wait_until(lambda: loop.where(a_task).state == State.AWAITING, "/a to await")
    b_task = loop.start(serve(b_span, request_b(loop.release)))
    wait_until(lambda: loop.where(b_task).state == State.ON_CPU, "/b to hold the loop")

    a_request = requests.state_of(a_task, a_span, SETTINGS)
    b_request = requests.state_of(b_task, b_span, SETTINGS)
    assert a_request is not None and b_request is not None
    loop_cpu = time.pthread_getcpuclockid(loop.thread_id)
    for tick in range(3):
        used = time.clock_gettime_ns(loop_cpu)
        wait_until(lambda: time.clock_gettime_ns(loop_cpu) > used + 1_000_000, "/b to spin")
        frames = sys._current_frames()
        now = time.time_ns()
        assert sampler.sample([a_request, b_request], frames, now, 10_000_000) == {
            a_request,
            b_request,
        }
        del frames

    held = a_request.loop_waits.summary()
    ((holder, seconds),) = held.holders
    assert holder.request == "GET /b"
    assert holder.trace_id == f"{b_span.get_span_context().trace_id:032x}"
    assert "spin_b" in holder.function
    assert seconds > 0
    assert b_request.loop_waits is None  # it was on the CPU every time
    assert all("spin_b" in "".join(stack) for stack, *_ in b_request.samples.records())
    # CPU from the loop thread's clock while /b runs; /a only waits
    assert (b_request.samples.cpu_seconds or 0.0) > 0
    assert a_request.samples.cpu_seconds == 0.0
    assert (a_request.samples.wait_seconds or 0.0) > 0
    assert not any("spin_b" in "".join(stack) for stack, *_ in a_request.samples.records())


def test_a_request_on_a_thread_that_cannot_be_read_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from otel_wpm.capture.sampler import StackSampler

    requests = InFlightRequests()
    sampler = StackSampler(
        requests,
        admit=lambda request, frames: True,
        on_threshold_crossed=lambda request: None,
        on_hung=lambda request: None,
        settings=SETTINGS,
    )
    span = TRACER.start_span("GET /gone", kind=SpanKind.SERVER, start_time=1)
    # started on a thread that is gone (as a green thread is never an OS thread)
    gone = threading.Thread(
        target=lambda: requests.start(
            span, span.context, threading.get_ident(), threading.get_ident(), SETTINGS
        )
    )
    gone.start()
    gone.join(10)

    sampler.tick()
    sampler.tick()
    said = [r.getMessage() for r in caplog.records if "no running OS thread" in r.getMessage()]
    assert len(said) == 1
    ((_, _, settings),) = requests.running()
    assert settings is SETTINGS


def test_only_a_due_request_is_followed_into_its_task_groups(loop: Loop) -> None:
    requests = InFlightRequests()
    sampler = LoopSampler(requests)
    span = TRACER.start_span("GET /group", kind=SpanKind.SERVER)

    async def serve() -> None:
        start(requests, span)
        await grouping()

    task = loop.start(serve())
    wait_until(lambda: "in_group" in names(loop.where(task)), "the group's task to await")
    request = requests.state_of(task, span, SETTINGS)
    assert request is not None

    def sampled_stack() -> tuple[str, ...]:
        frames = sys._current_frames()
        try:
            sampler.sample([request], frames, time.time_ns(), 0)
        finally:
            del frames
        return next(reversed(list(request.samples.records())))[0]

    # young (early rounds): no frame's locals are read, the group's task is not followed
    assert not any(name.startswith("in_group\x00") for name in sampled_stack())
    request.checked = True  # admitted: due for full-rate sampling
    assert any(name.startswith("in_group\x00") for name in sampled_stack())
