"""Who held an event loop while a request waited on it, and for how long.

Usage (the loop sampler, on the sampler thread)::

    holder = request_holder(span, functions_of(frames, APPLICATION_PREFIXES))
    waits = LoopWaits()
    waits.add(holder, seconds=0.01, ready=False)   # each sample the request was not running
    held = waits.summary()                         # for the report: heaviest holder first

A holder is another request (method, route, trace id), or a task or callback
that serves none, with the application functions it was running.
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Optional

from opentelemetry.trace import format_trace_id

from ..semconv import http_facts

_HOLDERS_KEPT = 50
_OWN_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class LoopHolder:
    """What held an event loop: a request or a task or callback serving none, and the
    application function it ran (``outer > inner (file:line)``)."""

    function: str
    request: Optional[str] = None  # "GET /b/{item}"
    trace_id: Optional[str] = None
    task: Optional[str] = None  # the coroutine function of a task serving no request


@dataclass(frozen=True)
class HeldLoop:
    """What :class:`LoopWaits` found, copied for the report: heaviest holder first."""

    ready_seconds: float
    held_seconds: float
    holders: tuple[tuple[LoopHolder, float], ...]


class LoopWaits:
    """Who held the loop while one request was not running on it, and for how long.

    Written by the sampler thread only; read when the request ends.
    """

    def __init__(self) -> None:
        self.held: dict[LoopHolder, float] = {}
        self.ready_seconds = 0.0  # ready to run, the loop held by others

    def add(self, holder: Optional[LoopHolder], seconds: float, ready: bool) -> None:
        if ready:
            self.ready_seconds += seconds
        if holder is not None and (holder in self.held or len(self.held) < _HOLDERS_KEPT):
            self.held[holder] = self.held.get(holder, 0.0) + seconds

    def summary(self, limit: int = 10) -> HeldLoop:
        held = list(self.held.items())  # one C call: the sampler may still be adding
        heaviest = sorted(held, key=lambda item: item[1], reverse=True)
        return HeldLoop(self.ready_seconds, sum(s for _, s in held), tuple(heaviest[:limit]))


def _library_prefixes() -> list[str]:
    """Where the interpreter and installed packages live: not the application's code."""
    prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    prefixes += site.getsitepackages() + [site.getusersitepackages()]
    return [prefix for prefix in prefixes if prefix]


#: Code under these paths is not the application's (and neither is otel-wpm's own).
APPLICATION_PREFIXES = (*sorted(set(_library_prefixes())), _OWN_DIRECTORY)


def _is_application_code(code: CodeType, prefixes: tuple[str, ...]) -> bool:
    path = code.co_filename
    return not path.startswith(prefixes) and not path.startswith("<")


def functions_of(frames: Sequence[FrameType], prefixes: tuple[str, ...], limit: int = 3) -> str:
    """The innermost application functions of ``frames`` (innermost first), as
    ``outer > inner (file:line)``; the innermost frame when none is the application's."""
    codes = [frame.f_code for frame in frames if _is_application_code(frame.f_code, prefixes)]
    codes = codes[:limit] or [frames[0].f_code]
    innermost = codes[0]
    where = f"{os.path.basename(innermost.co_filename)}:{innermost.co_firstlineno}"
    return " > ".join(code.co_qualname for code in reversed(codes)) + f" ({where})"


def request_holder(request_span: Any, function: str) -> LoopHolder:
    """The request of ``request_span`` held the loop, running ``function``."""
    facts = http_facts(request_span.attributes)
    trace_id = format_trace_id(request_span.context.trace_id)
    return LoopHolder(function, f"{facts.method} {facts.route_key}", trace_id)
