"""Alerts appended as JSON lines to ``<output_dir>/alerts.jsonl``.

Usage::

    exporter = LocalFileExporter("/var/lib/otel-wpm")
    exporter.export(alert)   # one line in /var/lib/otel-wpm/alerts.jsonl

Several worker processes may append to the same file: each line is written by a
single ``write`` on a descriptor opened with ``O_APPEND``, so lines never interleave.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..alerting.alert import Alert
from .base import AlertExporter, ExportError

ALERTS_FILE_NAME = "alerts.jsonl"


def alert_record(alert: Alert) -> dict[str, Any]:
    """The JSON-serialisable fields of an alert written to ``alerts.jsonl``."""
    return {
        "time": alert.start_time.isoformat(),
        "service": alert.service,
        "method": alert.method,
        "route": alert.route,
        "url": alert.url,
        "status": alert.status,
        "duration_seconds": alert.duration_seconds,
        "threshold_seconds": alert.threshold_seconds,
        "host": alert.host,
        "trace_id": alert.trace_id,
        "span_id": alert.span_id,
        "trace_url": alert.trace_url,
        "report_url": alert.report_url,
        "report_file": alert.report_filename,
        "hot_frames": [
            {
                "function": frame.function,
                "location": frame.location,
                "seconds": frame.seconds,
                "share": frame.share,
            }
            for frame in alert.hot_frames
        ],
        "suppressed_since_last": alert.suppressed_since_last,
        "in_flight": alert.in_flight,
        "is_test": alert.is_test,
    }


class LocalFileExporter(AlertExporter):
    """Appends one JSON line per alert to ``alerts.jsonl`` in ``output_dir``."""

    name = "local_file"

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / ALERTS_FILE_NAME

    def __repr__(self) -> str:
        return f"LocalFileExporter({str(self.output_dir)!r})"

    def export(self, alert: Alert) -> None:
        line = json.dumps(alert_record(alert), ensure_ascii=False) + "\n"
        try:
            self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _append(self.path, line.encode("utf-8"))
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ExportError(f"cannot append to {self.path}: {reason}", kind="disk") from None


def _append(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        written = os.write(descriptor, data)
        # A short write only happens when the disk is full; finish the line anyway
        # so the file stays one JSON document per line.
        while written < len(data):
            written += os.write(descriptor, data[written:])
    finally:
        os.close(descriptor)
