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

Each exporter has a lane of its own (:mod:`.lane`): a bounded queue, a thread
and a de-duplication window, so a slow or hung exporter (Mattermost trickling
bytes) holds back no other (the local file). Threads start on the first
``submit``; after ``fork`` the child starts afresh (its own threads, empty
queues), so every gunicorn worker delivers its own alerts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._runtime import forksafe
from .._runtime.logs import LogOnce
from .._runtime.stats import Stats
from ..exporters import LocalFileExporter
from ..exporters.base import AlertExporter
from .alert import Alert
from .dedup import DedupStore, MemoryDedupStore, RedisDedupStore, SQLiteDedupStore
from .lane import DeliveryLane, export_once

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
    """Hands each alert to one delivery lane per exporter; see the module docstring."""

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
        self.lanes = [
            DeliveryLane(exporter, name, dedup, window_seconds, stats, self.queue_size)
            for exporter, name in zip(self.exporters, _lane_names(self.exporters))
        ]
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
        """Queue an alert in every lane; a full lane drops its oldest queued alert."""
        for lane in self.lanes:
            try:
                lane.submit(alert)
            except Exception:  # the request path must never see our errors
                self._log_once.warning(
                    ("submit", "error"), "Could not queue an alert", exc_info=True
                )

    def flush(self, timeout: float) -> bool:
        """Wait until every lane handled what it was given; False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        return all(lane.flush(_left(deadline)) for lane in self.lanes)

    def shutdown(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout``, then stop; closes exporters and store.

        The lanes drain side by side, each on its own thread: a hung exporter uses
        up the time of its own lane only, and its queue is dropped at the deadline.
        """
        deadline = time.monotonic() + timeout
        for lane in self.lanes:
            lane.shutdown(_left(deadline))
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
        """Send ``alert`` through every exporter now, bypassing lanes and de-duplication.

        Returns ``{"success": bool, "notifier_results": {name: bool}, "error": str | None}``;
        the error text is safe to show (no secrets). Not counted in the stats.
        """
        results: dict[str, bool] = {}
        errors: list[str] = []
        for exporter in self.exporters:
            error = export_once(exporter, alert)
            results[exporter.name] = error is None
            if error is not None:
                errors.append(f"{exporter.name}: {error.message}")
        if not self.exporters:
            errors.append("no alert exporters are configured")
        return {
            "success": bool(results) and all(results.values()),
            "notifier_results": results,
            "error": "; ".join(errors) or None,
        }

    def after_fork_in_child(self) -> None:
        # Each lane's worker renews its own thread and queue; the parts hold connections and locks.
        parts: list[AlertExporter | DedupStore] = [*self.exporters, self.dedup]
        for part in parts:
            try:
                part.after_fork_in_child()
            except Exception:  # a child must start even if one part can't reset
                logger.warning("Could not reset %r after fork", part, exc_info=True)


def _lane_names(exporters: Sequence[AlertExporter]) -> list[str]:
    """Each exporter's name, numbered when several share one (``webhook``, ``webhook-2``)."""
    names: list[str] = []
    for exporter in exporters:
        name, number = exporter.name, 1
        while name in names:
            number += 1
            name = f"{exporter.name}-{number}"
        names.append(name)
    return names


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _exporters(config: Config) -> list[AlertExporter]:
    exporters: list[AlertExporter] = []
    if config.enable_local_file:
        exporters.append(LocalFileExporter(config.local_output_dir))
    if config.enable_mattermost:
        from ..exporters.mattermost import MattermostExporter  # loads requests: only when used

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
