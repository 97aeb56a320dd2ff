"""Which worker thread runs the function an asyncio request awaits, from the sampler thread.

Usage::

    workers = WorkerThreads(current_frames(), skip={loop_thread_id})
    job = workers.running(innermost_coroutine_frame)
    if job is not None:
        thread_id, frames = job       # frames: the worker's, outermost first, from its runner

Frameworks run blocking code in a thread pool and await the result: FastAPI's
``def`` endpoints and Starlette's ``run_in_threadpool`` (anyio's worker threads),
``asyncio.to_thread``, asgiref's ``sync_to_async`` (Django's sync views under
ASGI). Each of them copies the awaiting task's ``contextvars.Context`` and runs
the function inside it on the worker, so the same ``Context`` object is on both
sides: a local of the coroutine frame that awaits the result, and a local (or
held by a local) of a frame at the bottom of the worker thread that runs the
function. Matching that object by identity ties the worker's stack to exactly
the request that waits for it.

Only the types involved are looked into (``Context``, its bound ``run``,
``functools.partial``, ``concurrent.futures``' work item), never arbitrary
attributes, so no application code runs on the sampler thread.
"""

from __future__ import annotations

import functools
import queue
from concurrent.futures.thread import _WorkItem
from contextvars import Context
from types import BuiltinMethodType, FrameType
from typing import Any, Optional

from ..frames import callers

#: How many frames from the bottom of a thread are searched for the runner of a job:
#: anyio's is the 3rd, concurrent.futures' the 5th, asgiref's the 7th.
_RUNNER_DEPTH = 10
#: An idle anyio worker still holds its last job's Context, waiting in Queue.get.
_IDLE_FILES = frozenset({queue.__file__})

Job = tuple[int, list[FrameType]]


def _context_in(value: Any) -> Optional[Context]:
    """The Context ``value`` is, or runs a function in, if it is one of the known shapes."""
    for _ in range(3):
        if isinstance(value, Context):
            return value
        if isinstance(value, BuiltinMethodType):  # context.run
            owner = value.__self__
            return owner if isinstance(owner, Context) else None
        if isinstance(value, functools.partial):  # partial(context.run, func, ...)
            value = value.func
        elif isinstance(value, _WorkItem):  # asyncio.to_thread's job in a ThreadPoolExecutor
            value = value.fn
        else:
            return None
    return None


def _contexts_in(frame: FrameType) -> list[Context]:
    found = []
    for value in frame.f_locals.values():
        context = _context_in(value)
        if context is not None:
            found.append(context)
    return found


def awaited_context(frame: FrameType) -> Optional[Context]:
    """The Context of the job that the suspended coroutine ``frame`` awaits, if any."""
    contexts = _contexts_in(frame)
    return contexts[0] if contexts else None


class WorkerThreads:
    """The jobs running on worker threads right now, by their Context; built on first use."""

    def __init__(self, frames: dict[int, FrameType], skip: set[int]) -> None:
        self._frames = frames
        self._skip = skip
        self._jobs: Optional[dict[int, Job]] = None

    def running(self, awaiting: FrameType) -> Optional[Job]:
        """The thread running the job the coroutine frame ``awaiting`` waits for, and its
        frames from the job's runner inwards; None if no thread runs it now."""
        context = awaited_context(awaiting)
        if context is None:
            return None
        if self._jobs is None:
            self._jobs = self._find_jobs()
        return self._jobs.get(id(context))

    def _find_jobs(self) -> dict[int, Job]:
        jobs: dict[int, Job] = {}
        for thread_id, frame in self._frames.items():
            if thread_id in self._skip:
                continue
            stack = list(callers(frame))
            stack.reverse()  # outermost first
            for depth, runner in enumerate(stack[:_RUNNER_DEPTH]):
                contexts = _contexts_in(runner)
                if not contexts:
                    continue
                job = stack[depth:]
                if len(job) > 1 and job[1].f_code.co_filename not in _IDLE_FILES:
                    for context in contexts:
                        jobs[id(context)] = (thread_id, job)
                break
        return jobs
