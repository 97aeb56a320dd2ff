"""Logging helpers: the ``otel_wpm`` logger, and failures told once rather than per request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable
from typing import Any

logger = logging.getLogger("otel_wpm")


class LogOnce:
    """Logs a failure the first time its ``kind`` is seen; later ones of that kind are counted.

    ``recovered(kind)`` forgets the kind (and says so), so a failure that comes
    back after things worked again is logged again.
    """

    def __init__(self, target: logging.Logger = logger) -> None:
        self._logger = target
        self._lock = threading.Lock()
        self._seen: dict[Hashable, int] = {}

    def warning(self, kind: Hashable, message: str, *args: Any, exc_info: bool = False) -> bool:
        with self._lock:
            count = self._seen.get(kind, 0)
            self._seen[kind] = count + 1
        if count == 0:
            self._logger.warning(message, *args, exc_info=exc_info)
        return count == 0

    def recovered(self, kind: Hashable, message: str, *args: Any) -> None:
        with self._lock:
            repeats = self._seen.pop(kind, None)
        if repeats is not None:
            self._logger.warning(message + " (after %d failures)", *args, repeats)

    def count(self, kind: Hashable) -> int:
        with self._lock:
            return self._seen.get(kind, 0)
