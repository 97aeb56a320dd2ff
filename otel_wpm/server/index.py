"""The reports of one directory and their metadata, read once per file version.

Usage::

    from otel_wpm.server.index import ReportIndex

    index = ReportIndex("performance_reports")   # ReportDirectoryError if it is not a directory
    for entry in index.entries():                # newest first
        print(entry.file.name, entry.text("route"), entry.duration, entry.problem)
    report = index.open_report(name)             # an open binary file, or None

A report whose metadata cannot be read (missing, truncated, not JSON, an
absurd number, text that is not valid Unicode) is listed by what its file name
says, with ``entry.problem`` saying why; the first such file is logged, the
others only counted, and nothing in one file can stop the others being listed.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional

from .._runtime.logs import LogOnce
from ..reporting.report_format import (
    ReportFile,
    UnreadableMetadata,
    is_report_file,
    metadata_from_name,
    read_metadata,
    scan,
    trace_id_of,
)

logger = logging.getLogger(__name__)


class ReportDirectoryError(ValueError):
    """The directory to serve does not exist or is not a directory."""


@dataclass(frozen=True)
class Entry:
    """One row of the index: a report file, its metadata, and why that came from its name."""

    file: ReportFile
    meta: dict[str, Any]
    problem: Optional[str] = None

    def text(self, key: str) -> str:
        value = self.meta.get(key)
        return "" if value is None else str(value)

    @property
    def duration(self) -> Optional[float]:
        value = self.meta.get("duration_seconds")
        return None if value is None else float(value)


def report_directory(directory: str | os.PathLike[str]) -> Path:
    """``directory`` as an absolute path; raises :class:`ReportDirectoryError` naming it."""
    path = Path(directory).expanduser().absolute()
    if not path.exists():
        raise ReportDirectoryError(f"report directory {path} does not exist")
    if not path.is_dir():
        raise ReportDirectoryError(f"report directory {path} is not a directory")
    return path


class ReportIndex:
    """The reports of a directory with their metadata, cached by (name, mtime, size)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = report_directory(directory)
        self._cache: dict[str, tuple[float, int, Entry]] = {}
        self._lock = threading.Lock()
        self._unreadable = LogOnce(logger)

    def entries(self) -> list[Entry]:
        """All reports, newest first."""
        files = scan(self.directory)
        with self._lock:
            present = {file.name for file in files}
            for gone in self._cache.keys() - present:
                del self._cache[gone]
        return self._entries(files)

    def for_trace(self, trace_id: str) -> list[Entry]:
        """The reports of one trace (``trace_id`` in lower-case hex), newest first."""
        files = [file for file in scan(self.directory) if trace_id_of(file.name) == trace_id]
        return self._entries(files)

    def _entries(self, files: list[ReportFile]) -> list[Entry]:
        entries = [self._entry(file) for file in files]
        # names start with the request's start time, to the second
        entries.sort(key=lambda entry: (entry.file.name[:16], entry.file.mtime), reverse=True)
        return entries

    def _entry(self, file: ReportFile) -> Entry:
        with self._lock:
            cached = self._cache.get(file.name)
        if cached is not None and cached[:2] == (file.mtime, file.size):
            return cached[2]
        entry = self._read(file)
        with self._lock:
            self._cache[file.name] = (file.mtime, file.size, entry)
        return entry

    def _read(self, file: ReportFile) -> Entry:
        try:
            return Entry(file, read_metadata(file.path))
        except UnreadableMetadata as err:
            problem = str(err)
        except OSError as err:
            problem = f"cannot be read ({err.strerror or err})"
        if not self._unreadable.warning(
            "unreadable metadata",
            "report %s: %s; listed by its file name (the index page counts such reports)",
            file.name,
            problem,
        ):
            logger.debug("report %s: %s; listed by its file name", file.name, problem)
        return Entry(file, metadata_from_name(file.name), problem)

    def open_report(self, name: str) -> Optional[BinaryIO]:
        """Report ``name`` opened for reading; None unless it is a report file in the directory."""
        if not is_report_file(name):
            return None
        try:
            root = self.directory.resolve(strict=True)
            # a symlink is followed only to another report in this same directory
            resolved = (root / name).resolve(strict=True)
            if resolved.parent != root or not is_report_file(resolved.name):
                return None
            if not resolved.is_file():
                return None
            return open(resolved, "rb")  # noqa: SIM115 - the response closes it once sent
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return None
