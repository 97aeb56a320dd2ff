"""Where reports are kept: the interface the report thread writes through and the server reads.

Usage::

    from otel_wpm.reporting.store import open_store, store_from_config

    store = store_from_config(config)           # None when no report is kept
    path = store.write(file_name, html_bytes)   # report thread: whole or absent; the local
                                                # file holding it, or None (a bucket)
    store.link(file_name)                       # where it will be: a path or an s3:// URL
    delay = store.retry_delay()                 # None, or seconds until retry_pending()
    store.retry_pending()                       # report thread: upload what was kept aside

    store = open_store("s3://bucket/reports")   # or a directory: what ``otel-wpm serve`` reads
    for report in store.reports():              # ReportFile: name, mtime, size
        head = store.read_head(report.name)     # the first bytes, where the metadata is
    store.reports_of_trace(trace_id)            # one lookup
    opened = store.open_report(file_name)       # OpenedReport(stream, size), or None

Two kinds: :class:`~.local_store.LocalReportStore` (a directory, the default:
``local_output_dir``) and :class:`~.s3_store.S3ReportStore` (an S3-compatible
bucket, the ``s3`` extra), chosen by the ``report_store`` setting.
"""

from __future__ import annotations

import abc
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

from .report_format import METADATA_READ_BYTES, ReportFile
from .retention import PruneResult, Retention

if TYPE_CHECKING:
    from ..config import Config

S3_SCHEME = "s3://"
# S3's rules for bucket names (3-63 lower-case letters, digits, dots and hyphens).
_BUCKET_NAME = re.compile(r"\A[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
#: The spool of a bucket store, in ``local_output_dir``.
SPOOL_DIRECTORY_NAME = ".otel-wpm-spool"


def is_s3_url(location: str) -> bool:
    return location.lower().startswith(S3_SCHEME)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError saying why not."""
    if not is_s3_url(url):
        raise ValueError("only s3:// URLs name a bucket")
    bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
    if not _BUCKET_NAME.match(bucket):
        raise ValueError("the bucket name must be 3 to 63 lower-case letters, digits, . or -")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError("the prefix must not have empty, . or .. parts")
    return bucket, prefix


@dataclass
class OpenedReport:
    """A report opened for reading; the reader closes ``stream``."""

    stream: BinaryIO
    size: int


class ReportStore(abc.ABC):
    """Where reports are kept. Writes come from the report thread; reads from the server."""

    #: The store as people name it: a directory or an ``s3://`` URL.
    location: str
    #: Its pruning schedule and limits.
    retention: Retention
    #: How long a reader may use a listing before listing again (seconds).
    refresh_seconds: float = 0.0
    #: How many reports a reader may read at once.
    read_concurrency: int = 1

    # --- the report thread ------------------------------------------------------------

    @abc.abstractmethod
    def write(self, file_name: str, content: bytes) -> Optional[Path]:
        """Keep ``content`` as ``file_name``: whole or not at all; raises ``OSError``.

        Returns the local file that holds it, or None when it is not a local file.
        """

    @abc.abstractmethod
    def link(self, file_name: str) -> str:
        """Where report ``file_name`` is (or will be): a path or a URL."""

    @abc.abstractmethod
    def retry_delay(self) -> Optional[float]:
        """Seconds until :meth:`retry_pending` has work to try, or None if it has none."""

    @abc.abstractmethod
    def retry_pending(self) -> None:
        """Try again what could not be stored at once (the report thread calls it)."""

    @abc.abstractmethod
    def prune_pass(self, wait: bool = False) -> Optional[PruneResult]:
        """One pruning pass now; None when another process is doing one (and not ``wait``)."""

    # --- readers ------------------------------------------------------------------------

    @abc.abstractmethod
    def reports(self) -> list[ReportFile]:
        """Every report in the store now."""

    @abc.abstractmethod
    def reports_of_trace(self, trace_id: str) -> list[ReportFile]:
        """The reports of one trace (lower-case hex)."""

    @abc.abstractmethod
    def read_head(self, file_name: str, size: int = METADATA_READ_BYTES) -> bytes:
        """The first ``size`` bytes of a report; raises ``OSError``."""

    @abc.abstractmethod
    def open_report(self, file_name: str) -> Optional[OpenedReport]:
        """Report ``file_name`` opened for reading; None unless it is a report of this store."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ``OSError`` saying why the store cannot be read (the server starts with it)."""


def open_store(
    location: str, endpoint_url: Optional[str] = None, check: bool = False
) -> ReportStore:
    """The store at ``location``, a directory or an ``s3://bucket/prefix`` URL, for reading.

    With ``check``, raises ``OSError`` when it cannot be read (a missing directory, a
    bucket that cannot be listed).
    """
    store: ReportStore
    if is_s3_url(location):
        from .s3_store import S3ReportStore

        store = S3ReportStore(location, endpoint_url=endpoint_url)
    else:
        from .local_store import LocalReportStore

        store = LocalReportStore(location)
    if check:
        store.check()
    return store


def report_location(config: Config) -> Optional[str]:
    """Where reports go under ``config``: an absolute directory, an ``s3://`` URL, or None."""
    location = config.report_store
    if location is None:
        if not config.enable_local_file:
            return None
        location = config.local_output_dir
    return location if is_s3_url(location) else os.path.abspath(os.path.expanduser(location))


def store_from_config(config: Config) -> Optional[ReportStore]:
    """The store reports are written to under ``config``; None when none are kept.

    ``report_store`` names it; unset, reports go to ``local_output_dir`` when
    ``enable_local_file`` is true. A bucket keeps reports it cannot upload at once
    in a spool in ``local_output_dir``.
    """
    from .local_store import LocalReportStore
    from .retention import RetentionLimits

    location = report_location(config)
    if location is None:
        return None
    limits = RetentionLimits.from_config(config)
    if not is_s3_url(location):
        return LocalReportStore(location, limits)
    from .s3_store import S3ReportStore

    return S3ReportStore(
        location,
        endpoint_url=config.report_store_endpoint_url,
        limits=limits,
        spool_directory=Path(config.local_output_dir) / SPOOL_DIRECTORY_NAME,
        spool_max_bytes=config.report_spool_max_bytes,
        redis_url=config.dedup_redis_url,
    )
