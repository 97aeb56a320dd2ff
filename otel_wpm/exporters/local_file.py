"""Alerts appended as JSON lines to ``<output_dir>/alerts.jsonl``.

Usage::

    exporter = LocalFileExporter("/var/lib/otel-wpm")
    exporter.export(alert)   # one line in /var/lib/otel-wpm/alerts.jsonl

Every line is whole JSON. Several worker processes may append to the same file:
each takes an ``flock`` on it and writes its line with a single ``write``; when
that write comes up short (a full disk), the file is cut back to where the line
began. Past ``max_bytes`` the file is renamed ``alerts.jsonl.1`` (replacing the
previous one) and a new one is started, so the two never hold much more than
twice ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..alerting.alert import Alert
from .base import AlertExporter, ExportError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are not serialised
    fcntl = None  # type: ignore[assignment]

ALERTS_FILE_NAME = "alerts.jsonl"
#: About 8,000 alerts; the file and its one rotated copy stay within twice this.
DEFAULT_MAX_BYTES = 8 * 2**20


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
        "slowest_span": dataclasses.asdict(alert.slowest_span) if alert.slowest_span else None,
        "suppressed_since_last": alert.suppressed_since_last,
        "in_flight": alert.in_flight,
        "is_test": alert.is_test,
    }


class LocalFileExporter(AlertExporter):
    """Appends one JSON line per alert to ``alerts.jsonl`` in ``output_dir``."""

    name = "local_file"

    def __init__(
        self, output_dir: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / ALERTS_FILE_NAME
        self.max_bytes = max_bytes  # 0 = never rotate

    def __repr__(self) -> str:
        return f"LocalFileExporter({str(self.output_dir)!r})"

    def export(self, alert: Alert) -> None:
        line = json.dumps(alert_record(alert), ensure_ascii=False) + "\n"
        try:
            self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _append_line(self.path, line.encode("utf-8"), self.max_bytes)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ExportError(f"cannot append to {self.path}: {reason}", kind="disk") from None


def rotated_path(path: Path) -> Path:
    """Where ``alerts.jsonl`` goes when it is full: ``alerts.jsonl.1``."""
    return path.with_name(path.name + ".1")


def _append_line(path: Path, line: bytes, max_bytes: int) -> None:
    descriptor = _open_locked(path)
    size = os.fstat(descriptor).st_size
    if max_bytes and size and size + len(line) > max_bytes:
        try:
            os.replace(path, rotated_path(path))
        finally:
            os.close(descriptor)  # a process waiting for this lock then finds the new file
        descriptor = _open_locked(path)
    try:
        _write_whole(descriptor, line)
    finally:
        os.close(descriptor)


def _open_locked(path: Path) -> int:
    """A descriptor appending to ``path``, locked, on the file now at ``path``."""
    while True:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if fcntl is None:
            return descriptor
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass  # rotated away while we waited for the lock: open the new file
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)


def _write_whole(descriptor: int, line: bytes) -> None:
    """One ``write``; if it fails or comes up short, nothing of the line stays."""
    start = os.fstat(descriptor).st_size  # under the lock, so where this line begins
    try:
        written = os.write(descriptor, line)
        if written < len(line):
            raise OSError(0, f"only {written} of {len(line)} bytes written (disk full?)")
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, start)
        raise
