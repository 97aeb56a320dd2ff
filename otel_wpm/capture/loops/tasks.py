"""Where a request served by an asyncio task is, read from another thread.

Usage (the loop sampler, :mod:`.sampler`, on the sampler thread)::

    view = LoopView(current_frames()[loop_thread_id])
    location = locate(task, view, WorkerThreads(frames, skip={loop_thread_id}))
    location.state, location.stack()      # "awaiting", ("run_asgi\x00...", ..., "[await]")

Every request of an event loop shares the loop's thread, so the thread's stack
is not the request's. At one instant a task-served request is:

* **on CPU**: its task (or a task it awaits) is the one running: the loop
  thread's frames from that task's coroutine inwards;
* **awaiting**: suspended at an ``await``: its coroutine chain (``cr_await``,
  into awaited tasks through their waiter future, and into the tasks its frames
  hold in a task group) and pyinstrument's ``[await]`` leaf;
* **in a worker thread**: awaiting a function a thread pool runs for it
  (:mod:`.workers`): the chain, then that thread's frames;
* **waiting for the loop**: ready to run while other code holds the loop: the
  chain and a ``[waiting for the loop]`` leaf.

The running task is found without asking asyncio, which is not safe from
another thread: its coroutine's frame is on the loop thread's stack. Chains
change while they are walked, so ``None`` is tolerated, depth is bounded and a
task is never visited twice. Only known types are looked into (coroutines,
generators, tasks, task groups), so no application code runs here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, CoroutineType, FrameType, GeneratorType
from typing import Any, Optional

from ..frames import MAX_STACK_DEPTH, callers, frame_identifier
from ..inflight import Stack
from .workers import WorkerThreads

#: pyinstrument's leaf for time a coroutine spent suspended at an await (its own name
#: for it, pyinstrument.frame.AWAIT_FRAME_IDENTIFIER; spelt here so that pyinstrument
#: is imported only with the first profile).
AWAIT_FRAME_IDENTIFIER = "[await]"
#: The leaf of a sample taken while the request was ready to run but the loop was held.
WAITING_FOR_LOOP = "[waiting for the loop]\x00<event loop>\x000"
_MAX_TASKS = 16  # awaited tasks followed from one request
_HANDLE_RUN: CodeType = asyncio.events.Handle._run.__code__
_ASYNCIO_DIRECTORY = os.path.dirname(asyncio.__file__)
#: CO_ITERABLE_COROUTINE | CO_COROUTINE: a frame a task's step runs
COROUTINE_FLAGS = 0x100 | 0x80


class State:
    ON_CPU = "on CPU"
    AWAITING = "awaiting"
    IN_WORKER = "in a worker thread"
    READY = "waiting for the loop"


@dataclass
class Location:
    """Where a task-served request is at one instant; ``frames`` outermost first."""

    state: str
    frames: list[FrameType]
    worker_thread: Optional[int] = None

    def stack(self) -> Stack:
        identifiers = [frame_identifier(frame) for frame in self.frames]
        if self.state == State.AWAITING:
            identifiers.append(AWAIT_FRAME_IDENTIFIER)
        elif self.state == State.READY:
            identifiers.append(WAITING_FOR_LOOP)
        return tuple(identifiers)


# --- the loop thread ---------------------------------------------------------------


class LoopView:
    """The loop thread's stack at one instant, and what runs on it."""

    def __init__(self, frame: Optional[FrameType]) -> None:
        self.live = list(callers(frame))  # innermost first
        self.position = {id(live): index for index, live in enumerate(self.live)}
        self.running_from: Optional[int] = None  # the outermost frame of what holds the loop
        for index, live in enumerate(self.live):
            if live.f_code.co_flags & COROUTINE_FLAGS:
                self.running_from = index  # the running task's coroutine, outermost wins
            elif live.f_code is _HANDLE_RUN:
                if self.running_from is None and index > 0:
                    self.running_from = index - 1  # a callback
                break

    def frames_from(self, index: int) -> list[FrameType]:
        """The live frames from ``index`` inwards, outermost first."""
        return self.live[index::-1]

    def running(self, task: Any) -> Optional[int]:
        """Where ``task``'s coroutine is on the loop thread's stack, if it is running."""
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None) if isinstance(coro, CoroutineType) else None
        return self.position.get(id(frame)) if frame is not None else None


# --- walking a task ------------------------------------------------------------------


def await_chain(awaitable: Any, limit: int = MAX_STACK_DEPTH) -> list[FrameType]:
    """The frames of a suspended coroutine and of what it awaits, outermost first."""
    chain: list[FrameType] = []
    while len(chain) < limit:
        if isinstance(awaitable, CoroutineType):
            frame, awaitable = awaitable.cr_frame, awaitable.cr_await
        elif isinstance(awaitable, GeneratorType):
            frame, awaitable = awaitable.gi_frame, awaitable.gi_yieldfrom
        else:
            break
        if frame is None:
            break
        chain.append(frame)
    return chain


class ChildTasks:
    """The tasks a request's coroutines started and wait for, found in their frames.

    A task group's tasks (asyncio's, or anyio's: Starlette's ``BaseHTTPMiddleware``,
    so FastAPI's ``@app.middleware("http")``, runs the app in one), and the tasks
    asyncio's own helpers hold (``wait_for``'s ``fut``, ``wait``'s set). Each frame's
    locals are read once, while it stays in the request's chain.
    """

    def __init__(self) -> None:
        self._read: dict[int, tuple[FrameType, list[Any]]] = {}

    def of(self, chain: Sequence[FrameType]) -> list[Any]:
        read = {}
        tasks: list[Any] = []
        for frame in chain:
            entry = self._read.get(id(frame))
            if entry is None or entry[0] is not frame:
                entry = (frame, _task_holders_in(frame))
            read[id(frame)] = entry
            for holder in entry[1]:
                tasks += _tasks_of(holder)
        self._read = read  # frames that left the chain are let go
        return tasks


def _task_holders_in(frame: FrameType) -> list[Any]:
    kinds = _task_group_types()
    if frame.f_code.co_filename.startswith(_ASYNCIO_DIRECTORY):
        kinds += (asyncio.Task, set, list, tuple)
    return [value for value in frame.f_locals.values() if isinstance(value, kinds)]


def _task_group_types() -> tuple[type, ...]:
    anyio = sys.modules.get("anyio.abc")
    anyio_group = getattr(anyio, "TaskGroup", None)
    return (
        (asyncio.TaskGroup, anyio_group) if isinstance(anyio_group, type) else (asyncio.TaskGroup,)
    )


def _tasks_of(holder: Any) -> list[Any]:
    if isinstance(holder, asyncio.Task):
        return [holder]
    if not isinstance(holder, (set, list, tuple)):
        holder = getattr(holder, "_tasks", ())  # a task group's set, which its loop changes
    return [task for task in list(holder) if isinstance(task, asyncio.Task)]


def _awaited_tasks(waiter: Any) -> list[Any]:
    if isinstance(waiter, asyncio.Task):
        return [waiter]
    children = getattr(waiter, "_children", None)  # asyncio.gather's future
    if isinstance(children, list):
        return [child for child in children if isinstance(child, asyncio.Task)]
    return []


def locate(
    task: Any, view: LoopView, workers: WorkerThreads, children: Optional[ChildTasks] = None
) -> Location:
    """Where the request served by ``task`` is now (see the module docstring).

    Without ``children`` only what costs no frame's locals is followed (awaited
    tasks, ``gather``): not task groups nor worker threads. The early samples of a
    request too young to be due, which most requests never outlive, are taken so.
    """
    frames: list[FrameType] = []
    seen: set[int] = set()
    for _ in range(_MAX_TASKS):
        seen.add(id(task))
        running_at = view.running(task)
        if running_at is not None:
            return Location(State.ON_CPU, frames + view.frames_from(running_at))
        chain = await_chain(task.get_coro(), MAX_STACK_DEPTH - len(frames))
        frames += chain
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return Location(State.READY if not task.done() else State.AWAITING, frames)
        awaited = [t for t in _awaited_tasks(waiter) if id(t) not in seen]
        if not awaited and chain and children is not None:
            job = workers.running(chain[-1])
            if job is not None:
                return Location(State.IN_WORKER, frames + job[1], job[0])
            awaited = [t for t in children.of(chain) if id(t) not in seen and not t.done()]
        if not awaited:
            return Location(State.AWAITING, frames)
        task = _next_task(awaited, view)
    return Location(State.AWAITING, frames)


def _next_task(awaited: Sequence[Any], view: LoopView) -> Any:
    """The awaited task to follow: the running one, else the first still pending."""
    for task in awaited:
        if view.running(task) is not None:
            return task
    for task in awaited:
        if not task.done():
            return task
    return awaited[0]
