"""The reports of one store and their metadata, read once per report version.

Usage::

    from otel_wpm.server.index import ReportIndex, open_reports

    store = open_reports("performance_reports")  # or "s3://bucket/prefix"; ReportDirectoryError
    index = ReportIndex(store)                   # if it cannot be read
    snapshot = index.snapshot()                  # every report, sorted; the same object
    for entry in snapshot.newest_first():        # until a report is added, changed or removed
        print(entry.file.name, entry.text("route"), entry.duration, entry.problem)
    report = index.open_report(name)             # OpenedReport(stream, size), or None

Each call of :meth:`ReportIndex.snapshot` lists the store (a bucket at most
every few seconds) and reads the metadata of only the reports that are new or
changed since the last call (by name, mtime and size: for a bucket, a ranged
GET of the report's first bytes); removed ones are dropped. Reports are ordered
by :attr:`Entry.key`, the request's start time then the file name, a total
order that pages of the report list continue from (new reports never shift a
page that is already shown).

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
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from .._runtime.logs import LogOnce
from ..reporting.report_format import (
    ReportFile,
    UnreadableMetadata,
    metadata_from_name,
    parse_metadata,
)
from ..reporting.store import OpenedReport, ReportStore, open_store

logger = logging.getLogger(__name__)

#: Where a report sorts: its request's start time (seconds since the epoch), then its name.
SortKey = tuple[float, str]


class ReportDirectoryError(ValueError):
    """The store to serve cannot be read: a directory that does not exist, a bucket that
    cannot be listed."""


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


def open_reports(
    location: str | os.PathLike[str], endpoint_url: Optional[str] = None
) -> ReportStore:
    """The store to serve (a directory or an ``s3://`` URL), checked it can be read.

    Raises :class:`ReportDirectoryError` naming it and saying why not.
    """
    try:
        return open_store(os.fspath(location), endpoint_url, check=True)
    except OSError as err:
        raise ReportDirectoryError(str(err)) from None


class ReportIndex:
    """The reports of a store with their metadata, cached by (name, mtime, size).

    A store whose listing costs requests (a bucket) is listed at most once per its
    ``refresh_seconds``; new reports are read ``read_concurrency`` at a time.
    """

    def __init__(self, store: ReportStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, int, Entry]] = {}
        self._snapshot = Snapshot([], version=0)
        self._listed_at = float("-inf")
        self._lock = threading.Lock()
        self._unreadable = LogOnce(logger)

    def snapshot(self) -> Snapshot:
        """Every report in the store now; the previous snapshot if nothing changed."""
        with self._lock:
            if time.monotonic() - self._listed_at < self.store.refresh_seconds:
                return self._snapshot
            files = self.store.reports()
            self._listed_at = time.monotonic()
            changed = len(files) != len(self._cache)
            present = {file.name for file in files}
            fresh = [file for file in files if not self._cached(file)]
            for file, entry in zip(fresh, self._read_all(fresh)):
                self._cache[file.name] = (file.mtime, file.size, entry)
                changed = True
            for gone in self._cache.keys() - present:
                del self._cache[gone]
                changed = True
            if changed:
                entries = [cached[2] for cached in self._cache.values()]
                self._snapshot = Snapshot(entries, self._snapshot.version + 1)
            return self._snapshot

    def _cached(self, file: ReportFile) -> Optional[Entry]:
        cached = self._cache.get(file.name)
        if cached is None or cached[:2] != (file.mtime, file.size):
            return None
        return cached[2]

    def _read_all(self, files: list[ReportFile]) -> list[Entry]:
        if self.store.read_concurrency <= 1 or len(files) <= 1:
            return [self._read(file) for file in files]
        with ThreadPoolExecutor(self.store.read_concurrency, "otel-wpm-index") as pool:
            return list(pool.map(self._read, files))

    def for_trace(self, trace_id: str) -> list[Entry]:
        """The reports of one trace (``trace_id`` in lower-case hex), newest first."""
        files = self.store.reports_of_trace(trace_id)
        with self._lock:
            known = [(file, self._cached(file)) for file in files]
        entries = [entry or self._read(file) for file, entry in known]
        entries.sort(key=lambda entry: entry.key, reverse=True)
        return entries

    def _read(self, file: ReportFile) -> Entry:
        try:
            meta = parse_metadata(self.store.read_head(file.name))
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

    def open_report(self, name: str) -> Optional[OpenedReport]:
        """Report ``name`` opened for reading; None unless it is a report of the store."""
        return self.store.open_report(name)
