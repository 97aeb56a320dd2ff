"""Failures told once, not once per request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import Any

from . import forksafe

logger = logging.getLogger(__name__)


def _in_group(kind: Hashable, group: Hashable) -> bool:
    return kind == group or (isinstance(kind, tuple) and bool(kind) and kind[0] == group)


class LogOnce:
    """Logs a failure the first time its ``kind`` is seen; repeats are only counted.

    Kinds may be tuples whose first item names a group (``("mattermost", "auth")``).
    ``recovered(group, ...)`` forgets every kind of that group and says so once,
    so a failure that comes back after things worked again is logged again.
    """

    def __init__(self, target: logging.Logger = logger) -> None:
        self._logger = target
        self._lock = threading.Lock()
        self._seen: dict[Hashable, int] = {}
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def warning(self, kind: Hashable, message: str, *args: Any, exc_info: bool = False) -> bool:
        with self._lock:
            count = self._seen.get(kind, 0)
            self._seen[kind] = count + 1
        if count == 0:
            self._logger.warning(message, *args, exc_info=exc_info)
        return count == 0

    def recovered(self, group: Hashable, message: str, *args: Any) -> bool:
        with self._lock:
            kinds = [kind for kind in self._seen if _in_group(kind, group)]
            for kind in kinds:
                del self._seen[kind]
        if kinds:
            self._logger.info(message, *args)
        return bool(kinds)

    def count(self, kind: Hashable) -> int:
        with self._lock:
            return self._seen.get(kind, 0)
