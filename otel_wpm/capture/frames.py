"""Frames as pyinstrument identifies them, shared by the thread and task samplers.

Usage::

    frames = current_frames()            # sys._current_frames(), safe on CPython 3.11
    stack = stack_of(frame)              # ("main\x00app.py\x001", ..., "work\x00app.py\x0040")
    identifiers = [frame_identifier(f) for f in coroutine_frames]

A frame identifier is pyinstrument's: name NUL file NUL first line. Runs on the
sampler thread.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Optional

MAX_STACK_DEPTH = 256
# Before 3.12 a collection starts in whichever allocation crosses the threshold, so one can
# start inside sys._current_frames(); from 3.12 on it waits for the eval loop.
_COLLECTS_INSIDE_CALLS = sys.version_info < (3, 12)
_identifier_cache: dict[CodeType, str] = {}
_IDENTIFIER_CACHE_LIMIT = 20_000


def current_frames() -> dict[int, FrameType]:
    """The frame each thread runs now: ``sys._current_frames()``, with the cyclic garbage
    collector held off during the call on CPython 3.11.

    There a collection can start inside the call (it makes a frame object for each
    thread) while the call holds the runtime's lock on the list of threads. A
    finalizer that then releases the GIL lets a thread that is starting or ending
    take the GIL and wait for that lock, which the collecting thread holds while it
    waits for the GIL: the process hangs (CPython gh-106883; 3.12 collects only
    between bytecodes). The collector is left alone when the app turned it off.
    """
    if _COLLECTS_INSIDE_CALLS and gc.isenabled():
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            gc.enable()
    return sys._current_frames()


def _identifier(code: CodeType) -> str:
    if len(_identifier_cache) >= _IDENTIFIER_CACHE_LIMIT:
        _identifier_cache.clear()
    identifier = f"{code.co_name}\x00{code.co_filename}\x00{code.co_firstlineno}"
    _identifier_cache[code] = identifier
    return identifier


def frame_identifier(frame: FrameType) -> str:
    code = frame.f_code
    return _identifier_cache.get(code) or _identifier(code)


def callers(frame: Optional[FrameType], limit: int = MAX_STACK_DEPTH) -> Iterator[FrameType]:
    """``frame`` and its callers, innermost first, at most ``limit`` of them."""
    for _ in range(limit):
        if frame is None:
            return
        yield frame
        frame = frame.f_back


def stack_of(frame: Optional[FrameType]) -> tuple[str, ...]:
    """Identifiers of ``frame`` and its callers, outermost first."""
    identifiers: list[str] = []
    known = _identifier_cache.get  # the loop runs for every frame of every sample
    for _ in range(MAX_STACK_DEPTH):
        if frame is None:
            break
        code = frame.f_code
        identifiers.append(known(code) or _identifier(code))
        frame = frame.f_back
    identifiers.reverse()
    return tuple(identifiers)
