"""Renew per-process state in a child after ``fork()`` (gunicorn pre-fork workers).

Threads do not survive ``fork()`` and a lock held by another thread at that
moment stays held forever in the child. Objects that own threads or locks
register here and get ``after_fork_in_child()`` called in every new child, and
again when gevent monkey-patches the process (:mod:`.gevent_patch`).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

logger = logging.getLogger(__name__)


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(owner: ForkAware) -> None:
    _registered.add(owner)


def renew_all() -> None:
    for owner in list(_registered):
        try:
            owner.after_fork_in_child()
        except Exception:  # a child must start even if one part cannot renew itself
            logger.warning("otel-wpm could not renew %r after fork", owner, exc_info=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=renew_all)
