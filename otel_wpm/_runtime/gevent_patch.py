"""gevent: notice when gevent monkey-patches this process, and what that changes for us.

Usage (the processor, at start-up)::

    gevent_patch.watch(on_patched)       # on_patched() runs once threading is gevent's
    gevent_patch.threading_is_patched()  # already patched before we started?

gunicorn's gevent worker patches the standard library in the worker, after
``fork()``, so locks and conditions made before (at import, or when the fork
renewed them) are the real ones, shared by every greenlet of the worker's one
thread: a real ``RLock`` lets a second greenlet in. When gevent announces that it
patched everything (``GeventDidPatchAllEvent``, through ``zope.event``, which
gevent depends on) the per-process state is renewed again (:mod:`.forksafe`),
now with gevent's primitives, and our "threads" become greenlets.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from . import forksafe
from .installed import is_installed

logger = logging.getLogger(__name__)
_listeners: list[Callable[[], None]] = []


def threading_is_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def watch(on_patched: Callable[[], None]) -> None:
    """Call ``on_patched`` when gevent patches threading here (now, if it already has)."""
    if on_patched in _listeners:
        return
    _listeners.append(on_patched)
    if threading_is_patched():
        on_patched()
    elif len(_listeners) == 1 and is_installed("zope.event"):
        import zope.event

        zope.event.subscribers.append(_on_event)


def _on_event(event: Any) -> None:
    if type(event).__name__ != "GeventDidPatchAllEvent" or not threading_is_patched():
        return
    forksafe.renew_all()
    for listener in list(_listeners):
        try:
            listener()
        except Exception:
            logger.warning("otel-wpm could not adapt to gevent", exc_info=True)
