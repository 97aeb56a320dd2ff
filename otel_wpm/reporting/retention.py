"""Keep a report store within its limits: oldest reports go first.

Usage::

    from otel_wpm.reporting.retention import Retention, RetentionLimits, prune

    limits = RetentionLimits(max_files=1000, max_bytes=512 * 2**20, max_age_days=30)
    prune("performance_reports", limits)         # one pass now; returns what it removed

    retention = Retention.for_directory("performance_reports", limits)
    retention.after_write(len(content))          # cheap; prunes only when due
    retention = Retention(store.prune_pass, limits, "s3://bucket/reports")   # any store's pass

A limit of 0 means unlimited. Only report files (:mod:`otel_wpm.reporting.report_format`)
are ever deleted; their age is their modification time, ties broken by name.
A pass also deletes the temporary file of a report whose writer was killed
mid-write, once it is an hour old.

Several processes may write into one directory. A pass takes a non-blocking
``flock`` on ``.otel-wpm-retention.lock`` there, so one process prunes at a
time and the others skip rather than wait; a file another process removed
first is simply gone. If that lock file cannot be used, passes go on, serialised
within each process, and that is logged once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from .._runtime.logs import LogOnce
from .report_format import ReportFile, is_temporary_file, scan

if TYPE_CHECKING:
    from ..config import Config

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: passes are not serialised
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
_failures = LogOnce(logger)
_LOCK_FAILURE = "retention-lock"
_PRUNE_FAILURE = "retention-prune"
# The fallback when the lock file is unusable: one lock a directory, in this process.
_PROCESS_LOCKS: dict[Path, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()

LOCK_FILE_NAME = ".otel-wpm-retention.lock"
_SECONDS_PER_DAY = 86400.0
_CLEARLY_OVER = 1.1
#: A report is written in milliseconds; a temporary file this old has no writer left.
ABANDONED_AFTER_SECONDS = 3600.0


@dataclass(frozen=True)
class RetentionLimits:
    """How many reports, how many bytes of them, and how old; 0 = unlimited."""

    max_files: int = 0
    max_bytes: int = 0
    max_age_days: float = 0

    @classmethod
    def from_config(cls, config: Config) -> RetentionLimits:
        return cls(config.report_max_files, config.report_max_bytes, config.report_max_age_days)

    @property
    def unlimited(self) -> bool:
        return not (self.max_files or self.max_bytes or self.max_age_days)


@dataclass
class PruneResult:
    """What one pass removed and what it left."""

    removed: list[str] = field(default_factory=list)
    kept_files: int = 0
    kept_bytes: int = 0


Report = TypeVar("Report", bound=ReportFile)


def select_expired(
    reports: Sequence[Report], limits: RetentionLimits, now: float
) -> tuple[list[Report], list[Report]]:
    """Split ``reports`` into (to remove, to keep) under ``limits``."""
    oldest_first = sorted(reports, key=lambda report: (report.mtime, report.name))
    if limits.max_age_days:
        cutoff = now - limits.max_age_days * _SECONDS_PER_DAY
        expired = [report for report in oldest_first if report.mtime < cutoff]
        kept = oldest_first[len(expired) :]
    else:
        expired, kept = [], oldest_first
    if limits.max_files and len(kept) > limits.max_files:
        excess = len(kept) - limits.max_files
        expired, kept = expired + kept[:excess], kept[excess:]
    if limits.max_bytes:
        total = sum(report.size for report in kept)
        while kept and total > limits.max_bytes:
            total -= kept[0].size
            expired.append(kept.pop(0))
    return expired, kept


@contextlib.contextmanager
def _exclusive(directory: Path, wait: bool) -> Iterator[bool]:
    """Hold the directory's retention lock; yields False if another pass holds it.

    When the lock file cannot be used (a directory in its place, no permission, a
    file system without locks), passes are serialised within this process only,
    and that is logged once.
    """
    if fcntl is None:
        yield True
        return
    path = directory / LOCK_FILE_NAME
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        _lock_unusable(path, exc)
        with _in_process_lock(directory, wait) as acquired:
            yield acquired
        return
    try:
        locked = _flock(descriptor, wait, path)
        if locked is None:
            with _in_process_lock(directory, wait) as acquired:
                yield acquired
        else:
            yield locked
    finally:
        os.close(descriptor)  # closing releases the lock


def _flock(descriptor: int, wait: bool, path: Path) -> Optional[bool]:
    """True when locked, False when another holds the lock, None when locks do not work."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        _lock_unusable(path, exc)
        return None
    _failures.recovered(_LOCK_FAILURE, "otel-wpm can use %s again", path)
    return True


def _lock_unusable(path: Path, exc: OSError) -> None:
    _failures.warning(
        (_LOCK_FAILURE, str(path)),
        "otel-wpm cannot use the retention lock %s (%s); pruning goes on, serialised "
        "within this process only",
        path,
        exc.strerror or exc,
    )


@contextlib.contextmanager
def _in_process_lock(directory: Path, wait: bool) -> Iterator[bool]:
    with _PROCESS_LOCKS_GUARD:
        lock = _PROCESS_LOCKS.setdefault(directory.resolve(), threading.Lock())
    acquired = lock.acquire(blocking=wait)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


def prune(
    directory: str | os.PathLike[str],
    limits: RetentionLimits,
    now: Optional[float] = None,
    wait: bool = False,
) -> Optional[PruneResult]:
    """One pass over ``directory``; None if another process is pruning it (and not ``wait``)."""
    directory = Path(directory)
    if limits.unlimited or not directory.is_dir():
        return PruneResult()
    with _exclusive(directory, wait) as acquired:
        if not acquired:
            return None
        now = time.time() if now is None else now
        expired, kept = select_expired(scan(directory), limits, now)
        abandoned = [
            temporary
            for temporary in scan(directory, matches=is_temporary_file)
            if temporary.mtime < now - ABANDONED_AFTER_SECONDS
        ]
        for report in expired + abandoned:
            with contextlib.suppress(FileNotFoundError):
                (directory / report.name).unlink()
        if expired:
            logger.debug("otel-wpm retention removed %d reports from %s", len(expired), directory)
        return PruneResult(
            [report.name for report in expired], len(kept), sum(report.size for report in kept)
        )


#: One pruning pass: ``wait`` for another process's pass to end rather than skip;
#: returns None when skipped.
PrunePass = Callable[[bool], Optional[PruneResult]]


class Retention:
    """Decides when a store is due a pruning pass, so writers do not list it every time.

    A pass runs after ``every_writes`` writes or ``every_seconds`` seconds since
    the last one, and at once when this process's own writes alone have taken
    the store clearly (over 10 %) past a count or size limit. So a full store
    is not listed on every write; it overshoots by a few reports at most.
    ``where`` names the store in log messages.
    """

    def __init__(
        self,
        prune_pass: PrunePass,
        limits: RetentionLimits,
        where: str,
        every_writes: int = 20,
        every_seconds: float = 10.0,
    ) -> None:
        self.prune_pass = prune_pass
        self.limits = limits
        self.where = where
        self.every_writes = every_writes
        self.every_seconds = every_seconds
        self._lock = threading.Lock()
        self._writes = 0
        self._last_pass = float("-inf")
        # What the store holds as far as this process knows: the last pass's
        # result plus our writes since. Other processes' writes come on top.
        self._files = 0
        self._bytes = 0

    @classmethod
    def for_directory(
        cls,
        directory: str | os.PathLike[str],
        limits: RetentionLimits,
        every_writes: int = 20,
        every_seconds: float = 10.0,
    ) -> Retention:
        """Retention of a local directory: passes of :func:`prune`."""

        def prune_pass(wait: bool) -> Optional[PruneResult]:
            return prune(directory, limits, wait=wait)

        return cls(prune_pass, limits, os.fspath(directory), every_writes, every_seconds)

    def after_write(self, size: int) -> Optional[PruneResult]:
        """Note a new report of ``size`` bytes; prune if due. Never raises ``OSError``."""
        if self.limits.unlimited:
            return None
        with self._lock:
            self._writes += 1
            self._files += 1
            self._bytes += size
            due = self._due()
        if not due:
            return None
        try:
            result = self.prune()
        except OSError as exc:
            _failures.warning(
                (_PRUNE_FAILURE, self.where),
                "otel-wpm cannot prune reports in %s: %s",
                self.where,
                exc.strerror or exc,
            )
            return None
        _failures.recovered(_PRUNE_FAILURE, "otel-wpm prunes reports in %s again", self.where)
        return result

    def prune(self, wait: bool = False) -> Optional[PruneResult]:
        """A pass now; None if another process is doing one (and not ``wait``)."""
        result = self.prune_pass(wait)
        with self._lock:
            self._writes = 0
            self._last_pass = time.monotonic()
            if result is not None:
                self._files, self._bytes = result.kept_files, result.kept_bytes
        return result

    def _due(self) -> bool:
        limits = self.limits
        return (
            self._writes >= self.every_writes
            or time.monotonic() - self._last_pass >= self.every_seconds
            or bool(limits.max_files and self._files > limits.max_files * _CLEARLY_OVER)
            or bool(limits.max_bytes and self._bytes > limits.max_bytes * _CLEARLY_OVER)
        )
