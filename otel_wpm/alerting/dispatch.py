"""Alerts delivered in the background, de-duplicated, without ever slowing a request.

Usage::

    dispatcher = AlertDispatcher.from_config(config, stats)  # exporters and store it names
    dispatcher = AlertDispatcher(                            # or parts of your choosing
        [LocalFileExporter(output_dir), MattermostExporter(...)],
        dedup=SQLiteDedupStore(output_dir / "dedup.sqlite3"),
        window_seconds=24 * 3600,
        stats=stats,
    )
    dispatcher.submit(alert)          # from the request path: never blocks, never raises
    dispatcher.flush(timeout=5.0)     # wait until everything queued was handled
    dispatcher.shutdown(timeout=5.0)  # at exit
    dispatcher.retire()               # replaced at run time: deliver the queue, then close

One :class:`BackgroundWorker` thread per process delivers the queue. It starts
on the first ``submit``; after ``fork`` the child starts afresh (its own thread,
empty queue), so every gunicorn worker delivers its own alerts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .._runtime import forksafe
from .._runtime.logs import LogOnce
from .._runtime.stats import Stats
from .._runtime.worker import BackgroundWorker
from ..exporters import LocalFileExporter, MattermostExporter
from ..exporters.base import AlertExporter, ExportError
from .alert import Alert
from .dedup import DedupStore, MemoryDedupStore, RedisDedupStore, SQLiteDedupStore

if TYPE_CHECKING:
    from ..config import Config

logger = logging.getLogger(__name__)

#: The SQLite de-duplication store's file in ``local_output_dir``.
DEDUP_FILE_NAME = ".otel-wpm-dedup.sqlite3"
#: The settings :meth:`AlertDispatcher.from_config` reads: when one changes, it is rebuilt.
ALERT_SETTINGS = (
    "enable_local_file",
    "local_output_dir",
    "enable_mattermost",
    "mattermost_server_url",
    "mattermost_token",
    "mattermost_channel_id",
    "mattermost_timeout_seconds",
    "dedup_redis_url",
    "alert_window_days",
    "alert_queue_size",
)


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
        self._log_once = LogOnce(logger)
        self._worker: BackgroundWorker[Alert] = BackgroundWorker(
            "otel-wpm-alerts", self._deliver_safely, self.queue_size, self._dropped
        )
        forksafe.register(self)

    @classmethod
    def from_config(cls, config: Config, stats: Stats) -> AlertDispatcher:
        """The exporters ``config`` enables, and its de-duplication store and window."""
        return cls(
            _exporters(config),
            _dedup_store(config),
            window_seconds=config.alert_window_days * 86400,
            stats=stats,
            queue_size=config.alert_queue_size,
        )

    def submit(self, alert: Alert) -> None:
        """Queue an alert; when the queue is full the oldest queued alert is dropped."""
        try:
            self._worker.submit(alert)
        except Exception:  # the request path must never see our errors
            self._log_once.warning(("submit", "error"), "Could not queue an alert", exc_info=True)

    def _dropped(self, alert: Alert) -> None:
        self.stats.incr("alerts_dropped")
        self._log_once.warning(
            ("queue", "full"), "Alert queue full or closed: dropping alerts (counted in stats)"
        )

    def flush(self, timeout: float) -> bool:
        """Wait until every queued alert was handled; False if ``timeout`` ran out first."""
        return self._worker.flush(timeout)

    def shutdown(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout``, then stop; closes exporters and store."""
        if not self._worker.shutdown(timeout):
            logger.warning("Alerts still queued at shutdown after %.1f s; dropping them", timeout)
        self._close_all()

    def retire(self) -> threading.Thread:
        """Stop and close once everything queued was handled, on a thread of its own.

        For a dispatcher replaced at run time: its caller does not wait, and nothing
        queued is dropped however long delivery takes (each exporter bounds its calls).
        """
        thread = threading.Thread(
            target=self.shutdown,
            args=(threading.TIMEOUT_MAX,),
            name="otel-wpm-alerts-retiring",
            daemon=True,
        )
        thread.start()
        return thread

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

    def _deliver_safely(self, alert: Alert) -> None:
        try:
            self._deliver(alert)
        except Exception:  # keep the thread alive whatever happens
            self.stats.incr("internal_errors")
            self._log_once.warning(
                ("deliver", "error"), "Unexpected error delivering an alert", exc_info=True
            )

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
        if log:
            self._log_once.recovered(exporter.name, "Alert exporter %s works again", exporter.name)
        return None

    def _log_export_failure(self, exporter: AlertExporter, kind: str, reason: str) -> None:
        self._log_once.warning(
            (exporter.name, kind),
            "Alert exporter %s failed: %s (further failures of this kind are not logged)",
            exporter.name,
            reason,
        )

    def after_fork_in_child(self) -> None:
        # The worker renews its own thread and queue; the parts hold connections and locks.
        parts: list[AlertExporter | DedupStore] = [*self.exporters, self.dedup]
        for part in parts:
            try:
                part.after_fork_in_child()
            except Exception:  # a child must start even if one part can't reset
                logger.warning("Could not reset %r after fork", part, exc_info=True)


def _describe(error: Exception) -> str:
    if isinstance(error, ExportError):
        hint = " - will not work until the configuration is fixed" if error.permanent else ""
        return f"{error.message}{hint}"
    return f"{type(error).__name__}: {error}"


def _exporters(config: Config) -> list[AlertExporter]:
    exporters: list[AlertExporter] = []
    if config.enable_local_file:
        exporters.append(LocalFileExporter(config.local_output_dir))
    if config.enable_mattermost:
        server_url, token = config.mattermost_server_url, config.mattermost_token
        channel_id = config.mattermost_channel_id
        assert server_url and token and channel_id, "Config requires them with enable_mattermost"
        exporters.append(
            MattermostExporter(
                server_url, token, channel_id, timeout_seconds=config.mattermost_timeout_seconds
            )
        )
    return exporters


def _dedup_store(config: Config) -> DedupStore:
    """Redis when configured (several hosts), else SQLite beside the reports (one host)."""
    if config.dedup_redis_url:
        return RedisDedupStore(config.dedup_redis_url)
    if config.enable_local_file:
        return SQLiteDedupStore(Path(config.local_output_dir) / DEDUP_FILE_NAME)
    return MemoryDedupStore()
