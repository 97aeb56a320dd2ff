"""One exporter's delivery: its own bounded queue, thread and de-duplication window.

Usage (this is what :class:`~.dispatch.AlertDispatcher` does, one lane an exporter)::

    lane = DeliveryLane(exporter, "mattermost", store, window_seconds=86400, stats=stats)
    lane.submit(alert)         # never blocks; when the queue is full the oldest is dropped
    lane.flush(timeout=5.0)    # wait until everything queued was handled
    lane.shutdown(timeout=5.0) # handle what is queued within the timeout, drop the rest

The lane's thread takes one alert at a time: it claims the window of
``"<lane> <alert.dedup_key>"`` in the de-duplication store, delivers the alert
through its exporter, and gives the claim back (:meth:`DedupStore.release`)
when the delivery failed, so the next alert of that route is tried again. So
each exporter has a window of its own: the local file has its line once per
window even while Mattermost fails, and Mattermost, once it works again, posts
the next slow request of a route whose alert it could not deliver.

Each delivery (one alert through one lane) ends in exactly one of the counters
``alerts_sent``, ``alerts_failed``, ``alerts_suppressed`` or ``alerts_dropped``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

from .._runtime.logs import LogOnce
from .._runtime.stats import Stats
from .._runtime.worker import BackgroundWorker
from ..exporters.base import AlertExporter, ExportError
from .alert import Alert
from .dedup import Claim, DedupStore

logger = logging.getLogger(__name__)


class DeliveryLane:
    """Delivers alerts through one exporter, on a thread of its own."""

    def __init__(
        self,
        exporter: AlertExporter,
        name: str,
        dedup: DedupStore,
        window_seconds: float,
        stats: Stats,
        queue_size: int = 1000,
    ) -> None:
        self.exporter = exporter
        self.name = name  # unique among the dispatcher's lanes: it keys the window
        self.dedup = dedup
        self.window_seconds = window_seconds
        self.stats = stats
        self._log_once = LogOnce(logger)
        self._worker: BackgroundWorker[Alert] = BackgroundWorker(
            f"otel-wpm-alerts-{name}",
            self._deliver_safely,
            queue_size,
            self._dropped,
            on_cpu=stats.charge_cpu,
        )

    def __repr__(self) -> str:
        return f"DeliveryLane({self.name!r}, {self.exporter!r})"

    def submit(self, alert: Alert) -> None:
        """Queue ``alert``; when the queue is full the oldest queued alert is dropped."""
        self._worker.submit(alert)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued alert was handled; False if ``timeout`` ran out first."""
        return self._worker.flush(timeout)

    def shutdown(self, timeout: float) -> None:
        """Handle what is queued within ``timeout``, drop (and count) the rest, then stop."""
        if not self._worker.shutdown(timeout):
            logger.warning(
                "Alerts for %s still queued at shutdown after %.1f s; dropping them",
                self.name,
                timeout,
            )

    def _dropped(self, alert: Alert) -> None:
        self.stats.incr("alerts_dropped")
        self._log_once.warning(
            ("queue", "full"),
            "Alert queue full or closed for %s: dropping alerts (counted in stats)",
            self.name,
        )

    def _deliver_safely(self, alert: Alert) -> None:
        try:
            self._deliver(alert)
        except Exception:  # keep the thread alive whatever happens
            self.stats.incr("internal_errors")
            self._log_once.warning(
                ("deliver", "error"), "Unexpected error delivering an alert", exc_info=True
            )

    def _deliver(self, alert: Alert) -> None:
        claim: Optional[Claim] = None
        if not alert.is_test:
            claim = self.dedup.claim(f"{self.name} {alert.dedup_key}", self.window_seconds)
            if not claim.send:
                self.stats.incr("alerts_suppressed")
                return
            alert = replace(alert, suppressed_since_last=claim.suppressed)
        error = export_once(self.exporter, alert)
        if error is None:
            self.stats.incr("alerts_sent")
            self._log_once.recovered("export", "Alert exporter %s works again", self.name)
            return
        self.stats.incr("alerts_failed")
        self._log_once.warning(
            ("export", error.kind),
            "Alert exporter %s failed: %s (further failures of this kind are not logged)",
            self.name,
            _describe(error),
        )
        if claim is not None:
            self.dedup.release(claim)


def export_once(exporter: AlertExporter, alert: Alert) -> Optional[ExportError]:
    """Deliver ``alert`` through ``exporter``; why it failed (safe to show), or None."""
    try:
        exporter.export(alert)
    except ExportError as error:
        return error
    except Exception as error:  # noqa: BLE001 - a broken exporter must not stop the others
        name = type(error).__name__
        return ExportError(f"{name}: {error}", kind=name)
    return None


def _describe(error: ExportError) -> str:
    hint = " - will not work until the configuration is fixed" if error.permanent else ""
    return f"{error.message}{hint}"
