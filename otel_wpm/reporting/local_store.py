"""Reports in a local directory: one owner-only HTML file per slow request.

Usage::

    from otel_wpm.reporting.local_store import LocalReportStore
    from otel_wpm.reporting.retention import RetentionLimits

    store = LocalReportStore("performance_reports", limits=RetentionLimits(max_files=1000))
    path = store.write(file_name, html_bytes)   # atomic; prunes old reports when due
    store.reports()                             # what the report server lists

With limits, writes keep the directory within them (see :mod:`otel_wpm.reporting.retention`).
Several processes may share the directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .report_format import (
    METADATA_READ_BYTES,
    ReportFile,
    is_report_file,
    scan,
    temporary_name,
    trace_id_of,
)
from .retention import PruneResult, Retention, RetentionLimits, prune
from .store import OpenedReport, ReportStore

_DIRECTORY_MODE = 0o700
_FILE_MODE = 0o600


class LocalReportStore(ReportStore):
    """Writes report files atomically (a temporary file renamed into place)."""

    def __init__(
        self, directory: str | os.PathLike[str], limits: Optional[RetentionLimits] = None
    ) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.location = str(self.directory)
        self.limits = limits or RetentionLimits()
        self.retention = Retention(self.prune_pass, self.limits, self.location)

    def path_of(self, file_name: str) -> Path:
        if (
            os.sep in file_name
            or (os.altsep and os.altsep in file_name)
            or file_name in ("", ".", "..")
        ):
            raise ValueError(f"not a plain file name: {file_name!r}")
        return self.directory / file_name

    def link(self, file_name: str) -> str:
        return str(self.path_of(file_name))

    def ensure_directory(self) -> None:
        self.directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)

    def write(self, file_name: str, content: bytes) -> Path:
        """Write ``content`` as ``file_name``; readers never see a half-written file."""
        self.ensure_directory()
        target = self.path_of(file_name)
        temporary = target.with_name(temporary_name(file_name, os.getpid()))
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(content)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self.retention.after_write(len(content))
        return target

    def retry_delay(self) -> None:
        return None  # a write succeeds or fails at once: nothing is kept for later

    def retry_pending(self) -> None:
        return None

    def prune_pass(self, wait: bool = False) -> Optional[PruneResult]:
        return prune(self.directory, self.limits, wait=wait)

    # --- readers ------------------------------------------------------------------------

    def check(self) -> None:
        if not self.directory.exists():
            raise FileNotFoundError(f"report directory {self.directory} does not exist")
        if not self.directory.is_dir():
            raise NotADirectoryError(f"report directory {self.directory} is not a directory")

    def reports(self) -> list[ReportFile]:
        return scan(self.directory)

    def reports_of_trace(self, trace_id: str) -> list[ReportFile]:
        return [report for report in scan(self.directory) if trace_id_of(report.name) == trace_id]

    def read_head(self, file_name: str, size: int = METADATA_READ_BYTES) -> bytes:
        with open(self.path_of(file_name), "rb") as stream:
            return stream.read(size)

    def open_report(self, file_name: str) -> Optional[OpenedReport]:
        if not is_report_file(file_name):
            return None
        try:
            root = self.directory.resolve(strict=True)
            # a symlink is followed only to another report in this same directory
            resolved = (root / file_name).resolve(strict=True)
            if resolved.parent != root or not is_report_file(resolved.name):
                return None
            if not resolved.is_file():
                return None
            stream = open(resolved, "rb")  # noqa: SIM115 - the reader closes it
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return None
        return OpenedReport(stream, os.fstat(stream.fileno()).st_size)
