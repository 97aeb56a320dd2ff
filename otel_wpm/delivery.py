"""Alerts delivered in the background, de-duplicated, without ever slowing a request.

Usage::

    dispatcher = AlertDispatcher(
        [LocalFileExporter(output_dir), MattermostExporter(...)],
        dedup=SQLiteDedupStore(output_dir / "dedup.sqlite3"),
        window_seconds=24 * 3600,
        stats=stats,
    )
    dispatcher.submit(alert)          # from the request path: never blocks, never raises
    dispatcher.flush(timeout=5.0)     # wait until everything queued was handled
    dispatcher.shutdown(timeout=5.0)  # at exit

One daemon thread per process delivers the queue. It starts on the first
``submit``; after ``fork`` the child starts afresh (its own thread, empty queue),
so every gunicorn worker delivers its own alerts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any, Optional

from otel_wpm.alert import Alert
from otel_wpm.dedup import DedupStore
from otel_wpm.exporters.base import AlertExporter, ExportError
from otel_wpm.stats import Stats

logger = logging.getLogger("otel_wpm.delivery")


class _LogOnce:
    """Logs a warning the first time a key is seen, until that key is forgotten."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._seen: set[Hashable] = set()

    def warning(self, key: Hashable, message: str, *args: Any, **kwargs: Any) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._log.warning(message, *args, **kwargs)
        return True

    def forget(self, group: Hashable) -> bool:
        """Forget the keys ``(group, ...)``; True if there were any."""
        with self._lock:
            keys = {key for key in self._seen if isinstance(key, tuple) and key[0] == group}
            self._seen -= keys
        return bool(keys)


class AlertDispatcher:
    """Queues alerts and hands them to every exporter from a background thread."""

    def __init__(
        self,
        exporters: Sequence[AlertExporter],
        dedup: DedupStore,
        window_seconds: float,
        stats: Stats,
        queue_size: int = 1000,
    ) -> None:
        self.exporters = list(exporters)
        self.dedup = dedup
        self.window_seconds = window_seconds
        self.stats = stats
        self.queue_size = max(1, queue_size)
        self._log_once = _LogOnce(logger)
        self._reset_state()
        _DISPATCHERS.add(self)

    def _reset_state(self) -> None:
        self._condition = threading.Condition()
        self._queue: deque[Alert] = deque()
        self._delivering = False
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def submit(self, alert: Alert) -> None:
        """Queue an alert; when the queue is full the oldest queued alert is dropped."""
        try:
            self._enqueue(alert)
        except Exception:  # noqa: BLE001 - the request path must never see our errors
            self._log_once.warning(("submit", "error"), "Could not queue an alert", exc_info=True)

    def _enqueue(self, alert: Alert) -> None:
        dropped = 0
        with self._condition:
            if self._stopping:
                dropped = 1
            else:
                while len(self._queue) >= self.queue_size:
                    self._queue.popleft()
                    dropped += 1
                self._queue.append(alert)
                self._start_thread()
                self._condition.notify_all()
        if dropped:
            self.stats.incr("alerts_dropped", dropped)
            self._log_once.warning(
                ("queue", "full"), "Alert queue full or closed: dropping alerts (counted in stats)"
            )

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otel-wpm-alerts", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued alert was handled; False if ``timeout`` ran out first."""
        with self._condition:
            return self._condition.wait_for(self._idle, timeout)

    def _idle(self) -> bool:
        return not self._queue and not self._delivering

    def shutdown(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout``, then stop; closes exporters and store."""
        deadline = time.monotonic() + timeout
        if not self.flush(timeout):
            logger.warning("Alerts still queued at shutdown after %.1f s; dropping them", timeout)
        with self._condition:
            self._stopping = True
            left = len(self._queue)
            self._queue.clear()
            self._condition.notify_all()
            thread = self._thread
        if left:
            self.stats.incr("alerts_dropped", left)
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._close_all()

    def _close_all(self) -> None:
        closeables: list[AlertExporter | DedupStore] = [*self.exporters, self.dedup]
        for closeable in closeables:
            try:
                closeable.close()
            except Exception:  # noqa: BLE001 - closing must not stop the others closing
                logger.warning("Could not close %r", closeable, exc_info=True)

    def send_test_alert(self, alert: Alert) -> dict[str, Any]:
        """Send ``alert`` through every exporter now, bypassing queue and de-duplication.

        Returns ``{"success": bool, "notifier_results": {name: bool}, "error": str | None}``;
        the error text is safe to show (no secrets).
        """
        results: dict[str, bool] = {}
        errors: list[str] = []
        for exporter in self.exporters:
            error = self._export_one(exporter, alert, log=False)
            results[exporter.name] = error is None
            if error is not None:
                errors.append(f"{exporter.name}: {error}")
        if not self.exporters:
            errors.append("no alert exporters are configured")
        return {
            "success": bool(results) and all(results.values()),
            "notifier_results": results,
            "error": "; ".join(errors) or None,
        }

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                alert = self._queue.popleft()
                self._delivering = True
            try:
                self._deliver(alert)
            except Exception:  # noqa: BLE001 - keep the thread alive whatever happens
                self.stats.incr("internal_errors")
                self._log_once.warning(
                    ("deliver", "error"), "Unexpected error delivering an alert", exc_info=True
                )
            finally:
                with self._condition:
                    self._delivering = False
                    self._condition.notify_all()

    def _deliver(self, alert: Alert) -> None:
        if not alert.is_test:
            send, suppressed = self._claim(alert.dedup_key)
            if not send:
                self.stats.incr("alerts_suppressed")
                return
            alert = replace(alert, suppressed_since_last=suppressed)
        delivered = False
        for exporter in self.exporters:
            if self._export_one(exporter, alert, log=True) is None:
                delivered = True
            else:
                self.stats.incr("alerts_failed")
        if delivered:
            self.stats.incr("alerts_sent")

    def _claim(self, key: str) -> tuple[bool, int]:
        try:
            return self.dedup.claim(key, self.window_seconds)
        except Exception:  # noqa: BLE001 - stores fail open themselves; this is for others
            self._log_once.warning(
                ("dedup", "error"), "De-duplication failed; sending the alert", exc_info=True
            )
            return True, 0

    def _export_one(self, exporter: AlertExporter, alert: Alert, log: bool) -> Optional[str]:
        """Export through one exporter; the failure reason (safe to show), or None."""
        try:
            exporter.export(alert)
        except ExportError as error:
            if log:
                self._log_export_failure(exporter, error.kind, _describe(error))
            return error.message
        except Exception as error:  # noqa: BLE001 - a broken exporter must not stop the others
            if log:
                self._log_export_failure(exporter, type(error).__name__, _describe(error))
            return f"{type(error).__name__}: {error}"
        if log and self._log_once.forget(exporter.name):
            logger.info("Alert exporter %s works again", exporter.name)
        return None

    def _log_export_failure(self, exporter: AlertExporter, kind: str, reason: str) -> None:
        self._log_once.warning(
            (exporter.name, kind),
            "Alert exporter %s failed: %s (further failures of this kind are not logged)",
            exporter.name,
            reason,
        )

    def _reset_after_fork(self) -> None:
        # The parent's thread does not exist here and its lock may have been held
        # at fork time; its queued alerts are the parent's to deliver.
        stopped = self._stopping
        self._reset_state()
        self._stopping = stopped
        self._log_once = _LogOnce(logger)
        parts: list[AlertExporter | DedupStore] = [*self.exporters, self.dedup]
        for part in parts:
            try:
                part.reset_after_fork()
            except Exception:  # noqa: BLE001 - a child must start even if one part can't reset
                logger.warning("Could not reset %r after fork", part, exc_info=True)


def _describe(error: Exception) -> str:
    if isinstance(error, ExportError):
        hint = " - will not work until the configuration is fixed" if error.permanent else ""
        return f"{error.message}{hint}"
    return f"{type(error).__name__}: {error}"


_DISPATCHERS: weakref.WeakSet[AlertDispatcher] = weakref.WeakSet()


def _reset_dispatchers_after_fork() -> None:
    for dispatcher in list(_DISPATCHERS):
        dispatcher._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_dispatchers_after_fork)
