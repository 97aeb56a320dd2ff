"""Reports in an S3-compatible bucket, shared by every host (the ``s3`` extra: obstore).

Usage::

    from otel_wpm.reporting.s3_store import S3ReportStore

    store = S3ReportStore(
        "s3://my-bucket/reports",
        endpoint_url=None,                      # or MinIO, Ceph, R2, GCS interop
        limits=RetentionLimits(max_files=10000),
        spool_directory="performance_reports/.otel-wpm-spool",
        spool_max_bytes=128 * 2**20,
        redis_url=None,                         # the pruning lease: Redis, else the bucket
    )
    store.write(file_name, html_bytes)          # report thread: one PUT, or the spool

Endpoint, region and credentials come from the standard ``AWS_*`` variables
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, web identity for
EKS, the instance or container role), read by obstore;
``report_store_endpoint_url`` takes precedence over ``AWS_ENDPOINT_URL``.

Layout: report ``<name>`` is the object ``<prefix>/<trace_id>/<name>``, so the
reports of a trace are one LIST of ``<prefix>/<trace_id>/``. A single PUT is
atomic: an object is whole or absent. Readers get the metadata from the first
:data:`~.report_format.METADATA_READ_BYTES` of the object (a ranged GET), never
the whole report. ``<prefix>/.otel-wpm/`` holds the pruning lease.

When the bucket cannot be reached or refuses the credentials, reports go to a
local spool directory (owner-only, at most ``spool_max_bytes``: the oldest are
dropped past it, and that is logged once) and the failure is logged once. The
next attempt waits 2, 4, 8, ... up to 30 s; meanwhile reports go straight to the
spool, so the report thread never waits on a bucket that is down. Once an
upload works, the spool is uploaded, oldest first. Several processes may share
a spool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO
from typing import TYPE_CHECKING, Optional

from .._runtime.logs import LogOnce
from .lease import BucketLease, Lease, RedisLease, describe_error
from .local_store import LocalReportStore
from .report_format import (
    METADATA_READ_BYTES,
    ReportFile,
    is_report_file,
    scan,
    trace_id_of,
)
from .retention import PruneResult, Retention, RetentionLimits, select_expired
from .store import OpenedReport, ReportStore, split_s3_url

try:
    import obstore
    from obstore.exceptions import BaseError
    from obstore.store import S3Store
except ImportError:  # pragma: no cover - exercised without the extra
    raise RuntimeError(
        "report_store is an s3:// URL but obstore is not installed: pip install 'otel-wpm[s3]'"
    ) from None

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import RetryConfig

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/html; charset=utf-8"
LEASE_KEY = ".otel-wpm/retention.lease"
#: A pruning pass of the whole fleet at most this often; also how long a pass may take.
LEASE_SECONDS = 60.0
#: The longest wait between two attempts while the bucket is down.
MAX_RETRY_SECONDS = 30.0
#: Spooled reports uploaded per call of ``retry_pending`` (the rest at the next one).
DRAIN_BATCH = 50
#: S3 deletes at most this many objects a request.
DELETE_BATCH = 1000

_KEY = re.compile(r"\A(?P<trace_id>[0-9a-f]{32})/(?P<name>[^/]+)\Z")
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
# Short: the report thread must not hang on a bucket that does not answer.
_CONNECT_TIMEOUT = "2s"
_TIMEOUT = "10s"
_RETRY: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=5)}
_CLIENT_ERRORS = (BaseError, OSError)


class BucketUnavailable(OSError):
    """The bucket cannot be reached, refused the request, or refused the credentials."""


@contextlib.contextmanager
def _bucket_errors(doing: str) -> Iterator[None]:
    """Client errors as :class:`BucketUnavailable` (a missing bucket is one too)."""
    try:
        yield
    except _CLIENT_ERRORS as exc:
        raise BucketUnavailable(f"cannot {doing}: {describe_error(exc)}") from None


def key_of(file_name: str) -> str:
    """The object key (under the prefix) of report ``file_name``."""
    trace_id = trace_id_of(file_name)
    if trace_id is None:
        raise ValueError(f"not a report file name: {file_name!r}")
    return f"{trace_id}/{file_name}"


def _report_file(meta: ObjectMeta) -> Optional[ReportFile]:
    match = _KEY.match(meta["path"])
    if match is None or trace_id_of(match["name"]) != match["trace_id"]:
        return None  # the lease, or anything else that is not a report of ours
    return ReportFile(match["name"], meta["last_modified"].timestamp(), int(meta["size"]))


class S3ReportStore(ReportStore):
    """Reports as objects in a bucket; see the module docstring."""

    refresh_seconds = 5.0
    read_concurrency = 16

    def __init__(
        self,
        url: str,
        endpoint_url: Optional[str] = None,
        limits: Optional[RetentionLimits] = None,
        spool_directory: Optional[str | os.PathLike[str]] = None,
        spool_max_bytes: int = 0,
        redis_url: Optional[str] = None,
    ) -> None:
        self.bucket, self.prefix = split_s3_url(url)
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config={"endpoint": endpoint_url} if endpoint_url else None,
            client_options={
                "connect_timeout": _CONNECT_TIMEOUT,
                "timeout": _TIMEOUT,
                "allow_http": _is_http(endpoint_url),
            },
            retry_config=_RETRY,
        )
        self.limits = limits or RetentionLimits()
        self.retention = Retention(
            self.prune_pass, self.limits, self.location, every_writes=100, every_seconds=60.0
        )
        self.lease: Lease = (
            RedisLease(redis_url, f"otel_wpm:retention:{self.location}", LEASE_SECONDS)
            if redis_url
            else BucketLease(self._client, LEASE_KEY, LEASE_SECONDS)
        )
        self._failures = LogOnce(logger)
        self._failed_in_row = 0
        self._retry_at = 0.0  # time.monotonic() of the next attempt while the bucket is down
        self._spool: Optional[LocalReportStore] = None
        self._spool_retention: Optional[Retention] = None
        self._spooled = False
        if spool_directory is not None and spool_max_bytes > 0:
            self._spool = LocalReportStore(spool_directory)
            self._spool_retention = Retention.for_directory(
                self._spool.directory, RetentionLimits(max_bytes=spool_max_bytes)
            )
            self._spooled = bool(scan(self._spool.directory))

    def link(self, file_name: str) -> str:
        return f"{self.location}/{key_of(file_name)}"

    # --- the report thread ------------------------------------------------------------

    def write(self, file_name: str, content: bytes) -> None:
        """Upload ``content``; spool it if the bucket is down. Raises ``OSError`` if neither."""
        key = key_of(file_name)
        if time.monotonic() < self._retry_at:
            self._keep_aside(file_name, content, "the bucket did not answer a moment ago")
            return
        try:
            self._put(key, content)
        except BucketUnavailable as exc:
            self._unreachable(exc)
            self._keep_aside(file_name, content, str(exc))
            return
        self.retention.after_write(len(content))
        if self._spooled:
            self._upload_spool()

    def retry_delay(self) -> Optional[float]:
        if not self._spooled:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def retry_pending(self) -> None:
        if self._spooled and time.monotonic() >= self._retry_at:
            self._upload_spool()

    def _put(self, key: str, content: bytes) -> None:
        with _bucket_errors(f"upload to {self.location}"):
            obstore.put(self._client, key, content, attributes={"Content-Type": CONTENT_TYPE})
        if self._failed_in_row:
            self._failed_in_row = 0
            self._retry_at = 0.0
            self._failures.recovered(
                "upload", "otel-wpm uploads reports to %s again", self.location
            )

    def _unreachable(self, exc: BucketUnavailable) -> None:
        self._failed_in_row += 1
        delay = min(2.0**self._failed_in_row, MAX_RETRY_SECONDS)
        self._retry_at = time.monotonic() + delay
        spool = self._spool.location if self._spool else None
        self._failures.warning(
            ("upload", self.location),
            "otel-wpm %s; %s",
            exc,
            f"keeping reports in {spool} until it answers" if spool else "reports are lost",
        )

    def _keep_aside(self, file_name: str, content: bytes, reason: str) -> None:
        if self._spool is None or self._spool_retention is None:
            raise BucketUnavailable(f"{reason}, and the spool is off (report_spool_max_bytes)")
        self._spool.write(file_name, content)
        self._spooled = True
        pruned = self._spool_retention.after_write(len(content))
        if pruned is not None and pruned.removed:
            self._failures.warning(
                ("spool-full", self.location),
                "otel-wpm spool %s is full (report_spool_max_bytes = %d): dropped the oldest "
                "%d reports, and will drop more while %s is down",
                self._spool.location,
                self._spool_retention.limits.max_bytes,
                len(pruned.removed),
                self.location,
            )

    def _upload_spool(self) -> None:
        """Upload up to :data:`DRAIN_BATCH` spooled reports, oldest first."""
        assert self._spool is not None
        waiting = sorted(scan(self._spool.directory), key=lambda file: (file.mtime, file.name))
        for report in waiting[:DRAIN_BATCH]:
            path = self._spool.directory / report.name
            try:
                content = path.read_bytes()
            except FileNotFoundError:  # another process uploaded it
                continue
            try:
                self._put(key_of(report.name), content)
            except BucketUnavailable as exc:
                self._unreachable(exc)
                return
            path.unlink(missing_ok=True)
            self.retention.after_write(len(content))
        self._spooled = len(waiting) > DRAIN_BATCH

    def prune_pass(self, wait: bool = False) -> Optional[PruneResult]:
        """A pass over the whole bucket prefix, if this process gets the lease."""
        until = self.lease.acquire()
        if until is None:
            return None
        expired, kept = select_expired(self.reports(), self.limits, time.time())
        removed: list[str] = []
        for start in range(0, len(expired), DELETE_BATCH):
            if time.time() >= until:  # the lease runs out: leave the rest to the next pass
                kept += expired[start:]
                break
            names = [report.name for report in expired[start : start + DELETE_BATCH]]
            with _bucket_errors(f"delete reports in {self.location}"):
                obstore.delete(self._client, [key_of(name) for name in names])
            removed += names
        if removed:
            where = self.location
            logger.debug("otel-wpm retention removed %d reports from %s", len(removed), where)
        return PruneResult(removed, len(kept), sum(report.size for report in kept))

    # --- readers ------------------------------------------------------------------------

    def check(self) -> None:
        with _bucket_errors(f"list {self.location}"):
            next(iter(obstore.list(self._client, chunk_size=1)), None)

    def reports(self) -> list[ReportFile]:
        return self._listed(None)

    def reports_of_trace(self, trace_id: str) -> list[ReportFile]:
        return self._listed(f"{trace_id}/")

    def _listed(self, prefix: Optional[str]) -> list[ReportFile]:
        found = []
        with _bucket_errors(f"list {self.location}"):
            for batch in obstore.list(self._client, prefix=prefix, chunk_size=1000):
                for meta in batch:
                    report = _report_file(meta)
                    if report is not None:
                        found.append(report)
        return found

    def read_head(self, file_name: str, size: int = METADATA_READ_BYTES) -> bytes:
        with _bucket_errors(f"read {file_name} in {self.location}"):
            answer = obstore.get(self._client, key_of(file_name), options={"range": (0, size)})
            return bytes(answer.bytes())

    def open_report(self, file_name: str) -> Optional[OpenedReport]:
        if not is_report_file(file_name):
            return None
        try:
            content = bytes(obstore.get(self._client, key_of(file_name)).bytes())
        except FileNotFoundError:  # no such report (or no such bucket)
            return None
        except _CLIENT_ERRORS as exc:
            raise BucketUnavailable(f"cannot read {file_name}: {describe_error(exc)}") from None
        return OpenedReport(BytesIO(content), len(content))


def _is_http(endpoint_url: Optional[str]) -> bool:
    """Whether the endpoint is plain HTTP (a local MinIO, a test server): obstore refuses it
    unless told."""
    endpoint = endpoint_url or next(
        (os.environ[name] for name in _ENDPOINT_VARIABLES if os.environ.get(name)), ""
    )
    return endpoint.lower().startswith("http://")
