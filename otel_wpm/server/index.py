"""The reports of one directory and their metadata, read once per file version.

Usage::

    from otel_wpm.server.index import ReportIndex

    index = ReportIndex("performance_reports")   # ReportDirectoryError if it is not a directory
    snapshot = index.snapshot()                  # every report, sorted; the same object
    for entry in snapshot.newest_first():        # until a file is added, changed or removed
        print(entry.file.name, entry.text("route"), entry.duration, entry.problem)
    report = index.open_report(name)             # an open binary file, or None

Each call of :meth:`ReportIndex.snapshot` lists the directory and reads only
the reports that are new or changed since the last call (by name, mtime and
size); removed ones are dropped. Reports are ordered by :attr:`Entry.key`, the
request's start time then the file name, a total order that pages of the report
list continue from (new reports never shift a page that is already shown).

A report whose metadata cannot be read (missing, truncated, not JSON, an
absurd number, text that is not valid Unicode) is listed by what its file name
says, with ``entry.problem`` saying why; the first such file is logged, the
others only counted, and nothing in one file can stop the others being listed.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
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

#: Where a report sorts: its request's start time (seconds since the epoch), then its name.
SortKey = tuple[float, str]


class ReportDirectoryError(ValueError):
    """The directory to serve does not exist or is not a directory."""


@dataclass(frozen=True)
class Entry:
    """One row of the index: a report file, its metadata, and why that came from its name."""

    file: ReportFile
    meta: dict[str, Any]
    #: the request's start, seconds since the epoch (0 when neither metadata nor name tell)
    started: float
    problem: Optional[str] = None

    @property
    def key(self) -> SortKey:
        return (self.started, self.file.name)

    def text(self, key: str) -> str:
        value = self.meta.get(key)
        return "" if value is None else str(value)

    @property
    def duration(self) -> Optional[float]:
        value = self.meta.get("duration_seconds")
        return None if value is None else float(value)


def _start_of(meta: dict[str, Any], name: str) -> float:
    for text in (meta.get("start_time"), metadata_from_name(name).get("start_time")):
        if not isinstance(text, str):
            continue
        try:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp()
        except (ValueError, OverflowError, OSError):
            continue
    return 0.0


class Snapshot:
    """The reports of the directory at one moment, oldest first by :attr:`Entry.key`."""

    def __init__(self, entries: list[Entry], version: int) -> None:
        entries.sort(key=lambda entry: entry.key)
        self.entries: tuple[Entry, ...] = tuple(entries)
        self._keys = [entry.key for entry in entries]
        #: grows by one each time the directory is seen to have changed
        self.version = version
        self.unreadable = sum(1 for entry in entries if entry.problem)

    def __len__(self) -> int:
        return len(self.entries)

    def newest_first(self, older_than: Optional[SortKey] = None) -> Iterator[Entry]:
        """The reports sorting before ``older_than`` (all if None), newest first."""
        end = len(self._keys) if older_than is None else bisect.bisect_left(self._keys, older_than)
        for position in range(end - 1, -1, -1):
            yield self.entries[position]

    def oldest_first(self, newer_than: SortKey) -> Iterator[Entry]:
        """The reports sorting after ``newer_than``, oldest first."""
        for position in range(bisect.bisect_right(self._keys, newer_than), len(self._keys)):
            yield self.entries[position]


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
        self._snapshot = Snapshot([], version=0)
        self._lock = threading.Lock()
        self._unreadable = LogOnce(logger)

    def snapshot(self) -> Snapshot:
        """Every report in the directory now; the previous snapshot if nothing changed."""
        files = scan(self.directory)
        with self._lock:
            changed = len(files) != len(self._cache)
            present = set()
            for file in files:
                present.add(file.name)
                cached = self._cache.get(file.name)
                if cached is None or cached[:2] != (file.mtime, file.size):
                    self._cache[file.name] = (file.mtime, file.size, self._read(file))
                    changed = True
            for gone in self._cache.keys() - present:
                del self._cache[gone]
                changed = True
            if changed:
                entries = [cached[2] for cached in self._cache.values()]
                self._snapshot = Snapshot(entries, self._snapshot.version + 1)
            return self._snapshot

    def for_trace(self, trace_id: str) -> list[Entry]:
        """The reports of one trace (``trace_id`` in lower-case hex), newest first."""
        files = [file for file in scan(self.directory) if trace_id_of(file.name) == trace_id]
        entries = [self._entry(file) for file in files]
        entries.sort(key=lambda entry: entry.key, reverse=True)
        return entries

    def _entry(self, file: ReportFile) -> Entry:
        with self._lock:
            cached = self._cache.get(file.name)
        if cached is not None and cached[:2] == (file.mtime, file.size):
            return cached[2]
        return self._read(file)

    def _read(self, file: ReportFile) -> Entry:
        try:
            meta = read_metadata(file.path)
            return Entry(file, meta, _start_of(meta, file.name))
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
        meta = metadata_from_name(file.name)
        return Entry(file, meta, _start_of(meta, file.name), problem)

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
