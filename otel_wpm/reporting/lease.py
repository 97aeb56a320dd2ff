"""A lease: which one process, of all hosts sharing a bucket, may prune it now.

Usage::

    from otel_wpm.reporting.lease import BucketLease, RedisLease

    lease = BucketLease(obstore_store, ".otel-wpm/retention.lease", seconds=60)
    lease = RedisLease("redis://redis:6379/0", "otel_wpm:retention:bucket/prefix", seconds=60)
    until = lease.acquire()      # time.time() until which this process holds it, or None

Runs on the report thread. A lease is never released: it also spaces the
pruning passes of the whole fleet, one per ``seconds`` at most, so a bucket of
many hosts is not listed by each of them in turn. The holder stops deleting when
its lease runs out, so two passes never overlap.

:class:`BucketLease` keeps the lease in the bucket as a small JSON object
(``{"owner": ..., "until": ...}``) written with conditional requests: a new
lease only if none exists (``If-None-Match: *``), an expired one replaced only
if nobody replaced it first (``If-Match: <etag>``). It first checks once that
the server honours ``If-None-Match`` (some S3-compatible servers ignore it) and
raises :class:`LeaseUnsupported` otherwise. Hosts compare ``until`` with their
own clocks, which NTP keeps well within a lease's length.

:class:`RedisLease` is ``SET key owner NX EX seconds`` (the ``redis`` extra).
"""

from __future__ import annotations

import abc
import json
import os
import re
import socket
import time
import uuid
from typing import Any, Optional

from .._runtime.redis_client import redis_client

#: A pass stops deleting this long before its lease runs out.
SAFETY_SECONDS = 5.0
_PROBE_KEY = ".otel-wpm/conditional-write-probe"
_URL = re.compile(r"https?://\S+")
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")


class LeaseUnsupported(OSError):
    """The lease cannot be kept where it was asked to be."""


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease(abc.ABC):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: Not worth asking before this: the lease is held until then, as far as we know.
        self._next_try = 0.0

    def acquire(self) -> Optional[float]:
        """Until when (``time.time()``) this process may prune; None if another may."""
        now = time.time()
        if now < self._next_try:
            return None
        until = self._acquire(now)
        if until is None:
            return None
        # ours now; the next pass of the fleet comes after it, whoever makes it
        self._next_try = until
        return until - SAFETY_SECONDS

    @abc.abstractmethod
    def _acquire(self, now: float) -> Optional[float]:
        """The lease's end if this process got it; otherwise None (noting until when not)."""


class BucketLease(Lease):
    """The lease as an object in the bucket, taken with conditional writes."""

    def __init__(self, store: Any, key: str, seconds: float) -> None:
        super().__init__(seconds)
        self._store = store
        self.key = key
        self._checked = False

    def _acquire(self, now: float) -> Optional[float]:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        if not self._checked:
            self._check_conditional_writes()
        until = now + self.seconds
        body = json.dumps({"owner": _owner(), "until": until}).encode()
        try:
            obstore.put(self._store, self.key, body, mode="create")
            return until
        except AlreadyExistsError:
            pass
        current = obstore.get(self._store, self.key)
        held_until = _until(bytes(current.bytes()))
        if held_until > now:
            self._next_try = held_until
            return None
        try:
            obstore.put(self._store, self.key, body, mode={"e_tag": current.meta["e_tag"]})
        except PreconditionError:  # another process replaced the expired lease first
            self._next_try = now + self.seconds
            return None
        return until

    def _check_conditional_writes(self) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, BaseError

        obstore.put(self._store, _PROBE_KEY, b"{}")
        try:
            obstore.put(self._store, _PROBE_KEY, b"{}", mode="create")
        except AlreadyExistsError:
            self._checked = True
            return
        except BaseError as exc:  # e.g. 501 Not Implemented
            raise LeaseUnsupported(
                f"the bucket refuses conditional writes ({describe_error(exc)})"
            ) from None
        raise LeaseUnsupported(
            "the bucket ignores conditional writes (If-None-Match); set dedup_redis_url "
            "to keep the pruning lease in Redis, or rely on a lifecycle rule"
        )


def _until(body: bytes) -> float:
    """The end of a lease as written; 0 (expired) if it cannot be read."""
    try:
        until = json.loads(body)["until"]
    except (ValueError, TypeError, KeyError):
        return 0.0
    return float(until) if isinstance(until, (int, float)) else 0.0


class RedisLease(Lease):
    """The lease as a Redis key that expires by itself."""

    def __init__(self, url: str, key: str, seconds: float) -> None:
        super().__init__(seconds)
        self.key = key
        self._client = redis_client(url)

    def _acquire(self, now: float) -> Optional[float]:
        import redis

        seconds = max(1, round(self.seconds))
        try:
            taken = self._client.set(self.key, _owner(), nx=True, ex=seconds)
            if taken:
                return now + seconds
            left = self._client.ttl(self.key)
        except redis.RedisError as exc:
            raise LeaseUnsupported(f"Redis cannot hold the lease: {exc}") from None
        self._next_try = now + (left if left and left > 0 else seconds)
        return None


def describe_error(exc: BaseException) -> str:
    """An S3 client error in a line: its message holds the URL and the whole answer."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = _URL.sub("", text.splitlines()[0]).split(": <?xml")[0]
    code = _S3_CODE.search(text)
    reason = " ".join(first.split())[:300]
    return f"{reason} ({code[1]})" if code else reason
