"""A thread that waits for a coroutine on an event loop: the task doing its request's work.

Usage (the loop sampler, for a request a thread serves)::

    bridge = bridged_task(frame)         # the frame the request's thread runs now
    if bridge is not None:
        waiting, task = bridge           # the thread's frames down to the wait, then the task's

Django under ASGI runs middleware that is not async-capable (OpenTelemetry's
Django middleware among them) in a worker thread through asgiref's
``sync_to_async``, and the async view from there through ``async_to_sync``: the
request's span starts on the worker thread, which then only waits while the
view runs as a task on the event loop. asgiref's ``AsyncToSync.__call__`` holds
the coroutine it scheduled (``awaitable``, asgiref's ``main_wrap``), whose frame
holds the task running it (``current_task``). Only asgiref's frames are read,
and only when asgiref is loaded.

While the thread waits, it may run sync code the task hands back to it (a sync
view, through ``sync_to_async(thread_sensitive=True)``): then its own stack is
the request's, and no task is returned.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from types import CodeType, CoroutineType, FrameType
from typing import Any, Optional

from ..frames import callers

_WAITING_FILES = frozenset({threading.__file__, queue.__file__})


def _bridge_codes() -> tuple[CodeType, ...]:
    asgiref_sync = sys.modules.get("asgiref.sync")
    bridge = getattr(asgiref_sync, "AsyncToSync", None)
    call = vars(bridge).get("__call__") if isinstance(bridge, type) else None
    code = getattr(call, "__code__", None)
    return (code,) if isinstance(code, CodeType) else ()


def bridged_task(frame: Optional[FrameType]) -> Optional[tuple[list[FrameType], Any]]:
    """The frames of a thread running ``frame``, outermost first, down to where it waits
    in ``async_to_sync``, and the task it waits for; None if it waits for none."""
    codes = _bridge_codes()
    if not codes or frame is None:
        return None
    if frame.f_code.co_filename not in _WAITING_FILES:
        return None  # not waiting: running, perhaps sync code the task handed back
    stack = list(callers(frame))
    for index, caller in enumerate(stack):
        if caller.f_code in codes:
            task = _task_of(caller.f_locals.get("awaitable"))
            if task is None:
                return None
            waiting = stack[index:]
            waiting.reverse()
            return waiting, task
    return None


def _task_of(awaitable: Any) -> Optional[Any]:
    if not isinstance(awaitable, CoroutineType) or awaitable.cr_frame is None:
        return None
    task = awaitable.cr_frame.f_locals.get("current_task")
    return task if isinstance(task, asyncio.Task) else None


def loop_thread_of(task: Any) -> int:
    """The thread running ``task``'s event loop (0 when the loop does not say)."""
    thread_id = getattr(task.get_loop(), "_thread_id", None)
    return thread_id if isinstance(thread_id, int) else 0
