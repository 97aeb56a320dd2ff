"""From a written report to alerts: build the :class:`Alert`, pick exporters and de-dup store."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..config import Config
from ..exporters import AlertExporter, LocalFileExporter, MattermostExporter
from ..masking import SecretMasker
from ..reporting.profile import hot_frames
from ..reporting.render import SlowRequest
from .alert import Alert
from .dedup import DedupStore, MemoryDedupStore, RedisDedupStore, SQLiteDedupStore
from .dispatch import AlertDispatcher

DEDUP_FILE_NAME = ".otel-wpm-dedup.sqlite3"


def build_exporters(config: Config) -> list[AlertExporter]:
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


def build_dedup_store(config: Config) -> DedupStore:
    """Redis when configured (several hosts), else SQLite beside the reports (one host)."""
    if config.dedup_redis_url:
        return RedisDedupStore(config.dedup_redis_url)
    if config.enable_local_file:
        return SQLiteDedupStore(Path(config.local_output_dir) / DEDUP_FILE_NAME)
    return MemoryDedupStore()


def build_alert(
    slow: SlowRequest, report_path: Optional[os.PathLike[str]], report: bytes, masker: SecretMasker
) -> Alert:
    return Alert(
        service=slow.service,
        method=slow.facts.method,
        route=slow.facts.route_or_path,
        url=masker.mask_url(slow.facts.url),
        status=slow.facts.status,
        duration_seconds=slow.duration_seconds,
        threshold_seconds=slow.threshold_seconds,
        host=socket.gethostname(),
        trace_id=slow.trace_id,
        span_id=slow.span_id,
        start_time=slow.started_at,
        trace_url=slow.trace_url,
        report_url=slow.report_link,
        report_path=Path(report_path) if report_path else None,
        report_filename=slow.report_file,
        report_html=report,
        hot_frames=hot_frames(slow.profile.session),
        in_flight=slow.in_flight,
    )


def test_alert(service: str, trace_url_template: Optional[str]) -> Alert:
    """An alert that says it is a test, with made-up ids, to check the exporters end to end."""
    trace_id, span_id = "0" * 31 + "1", "0" * 15 + "1"
    return Alert(
        service=service,
        method="GET",
        route="/otel-wpm/test-alert",
        url="/otel-wpm/test-alert",
        status=200,
        duration_seconds=0.0,
        threshold_seconds=0.0,
        host=socket.gethostname(),
        trace_id=trace_id,
        span_id=span_id,
        start_time=datetime.now(timezone.utc),
        trace_url=trace_url_template.format(trace_id=trace_id, span_id=span_id)
        if trace_url_template
        else None,
        report_url=None,
        report_path=None,
        report_filename="otel-wpm-test-alert.html",
        is_test=True,
    )


class AlertPipeline:
    """The exporters, de-dup store and delivery thread for one configuration."""

    def __init__(self, config: Config, stats: Any) -> None:
        self.dispatcher = AlertDispatcher(
            build_exporters(config),
            build_dedup_store(config),
            window_seconds=config.alert_window_days * 86400,
            stats=stats,
            queue_size=config.alert_queue_size,
        )

    def submit(
        self,
        slow: SlowRequest,
        report_path: Optional[os.PathLike[str]],
        report: bytes,
        masker: SecretMasker,
    ) -> None:
        self.dispatcher.submit(build_alert(slow, report_path, report, masker))

    def send_test_alert(self, service: str, trace_url_template: Optional[str]) -> dict[str, Any]:
        return self.dispatcher.send_test_alert(test_alert(service, trace_url_template))

    def flush(self, timeout: float) -> bool:
        return self.dispatcher.flush(timeout)

    def shutdown(self, timeout: float) -> None:
        self.dispatcher.shutdown(timeout)
