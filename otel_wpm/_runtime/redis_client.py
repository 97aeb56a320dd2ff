"""The Redis client of ``dedup_redis_url``, for de-duplication and the pruning lease.

Usage::

    from otel_wpm._runtime.redis_client import redis_client

    client = redis_client("redis://redis:6379/0")   # RuntimeError without the redis extra

Short socket timeouts: a Redis that does not answer must not hold a background
thread for long.
"""

from __future__ import annotations

from typing import Any

SOCKET_TIMEOUT_SECONDS = 2.0


def redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError:
        raise RuntimeError(
            "dedup_redis_url is set but the redis package is not installed: "
            "pip install 'otel-wpm[redis]'"
        ) from None
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS
    )
