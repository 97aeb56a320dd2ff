"""The interface every alert exporter implements, and the retries they share.

Usage::

    class StdoutExporter(AlertExporter):
        name = "stdout"

        def export(self, alert: Alert) -> None:
            try:
                print(alert.route, alert.duration_seconds)
            except OSError as error:
                raise ExportError(f"stdout is closed: {error}", kind="io") from None

An exporter does its own retries; when it gives up it raises :class:`ExportError`,
whose message is safe to log (no secrets) and whose ``permanent`` flag says that
retrying later will not help until the configuration is fixed. An exporter that
talks HTTP through ``requests`` can lean on :func:`http_failure` and
:class:`RetryPolicy`::

    def export(self, alert: Alert) -> None:
        RetryPolicy(max_retries=0 if alert.is_test else 4).run(lambda: self._send(alert))

    def _send(self, alert: Alert) -> None:
        try:
            requests.post(self.url, json=record(alert), timeout=5).raise_for_status()
        except requests.RequestException as error:
            raise http_failure(error, "the webhook", "post the alert") from None
"""

from __future__ import annotations

import logging
import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from ..alerting.alert import Alert

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class ExportError(Exception):
    """An alert could not be delivered.

    ``kind`` is a short, stable reason (``"auth"``, ``"timeout"``, ``"disk"``...)
    so callers can log each kind of failure once instead of once per alert.
    ``retry_after`` is how long the other side asked us to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        kind: str = "error",
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.kind = kind
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ExportError({self.message!r}, permanent={self.permanent}, kind={self.kind!r})"


class AlertExporter(ABC):
    """Delivers alerts somewhere: a file, a chat channel..."""

    name: str = "exporter"

    @abstractmethod
    def export(self, alert: Alert) -> None:
        """Deliver one alert, or raise :class:`ExportError` once retries are exhausted.

        A test alert (``alert.is_test``) is for a person waiting on the answer:
        try once, and let the error say why it failed.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the exporter holds (connections, files)."""

    def after_fork_in_child(self) -> None:  # noqa: B027 - optional hook
        """In a forked child: drop locks and connections inherited from the parent."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient :class:`ExportError` with exponential backoff and jitter."""

    max_retries: int = 4
    backoff_base_seconds: float = 0.5
    max_backoff_seconds: float = 30.0

    def run(self, attempt: Callable[[], _T], sleep: Callable[[float], None] = time.sleep) -> _T:
        """``attempt()`` until it returns, fails permanently, or the retries are spent."""
        retry = 0
        while True:
            try:
                return attempt()
            except ExportError as error:
                if error.permanent or retry >= self.max_retries:
                    raise
                delay = self.delay(retry, error.retry_after)
                logger.debug("%s; retrying in %.2f s", error, delay)
            sleep(delay)
            retry += 1

    def delay(self, retry: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based); ``Retry-After`` wins."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        delay = self.backoff_base_seconds * (2**retry)
        delay += random.uniform(0, delay / 10)  # noqa: S311 - jitter, not security
        return min(delay, self.max_backoff_seconds)


def http_failure(error: Exception, service: str, action: str) -> ExportError:
    """The :class:`ExportError` for what ``requests`` raised while talking to ``service``.

    Timeouts, connection failures, 429 (with its ``Retry-After``) and 5xx are
    worth retrying; any other status is permanent. Messages carry no URL
    query, header or body, so they are safe to log.
    """
    import requests  # only HTTP exporters get here; they have imported it already

    if isinstance(error, requests.HTTPError) and error.response is not None:
        return _status_failure(error.response, service, action)
    if isinstance(error, requests.Timeout):
        return ExportError(f"{service} did not answer in time to {action}", kind="timeout")
    if isinstance(error, requests.ConnectionError):
        return ExportError(
            f"cannot connect to {service} to {action}: {root_cause(error)}", kind="connection"
        )
    return ExportError(
        f"failed to {action} on {service}: {type(error).__name__}", permanent=True, kind="error"
    )


def _status_failure(response: requests.Response, service: str, action: str) -> ExportError:
    status = response.status_code
    if status == 429:
        return ExportError(
            f"{service} rate-limited the request to {action} (429)",
            kind="rate_limited",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if status >= 500:
        return ExportError(f"{service} failed to {action} ({status})", kind="server_error")
    return ExportError(
        f"{service} refused to {action} ({status})", permanent=True, kind="http_error"
    )


def root_cause(error: BaseException) -> str:
    """The innermost reason of a wrapped network error: ``"Connection refused"``."""
    seen: set[int] = set()
    reason: BaseException = error
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = current
        nested = getattr(current, "reason", None)  # urllib3's MaxRetryError
        if not isinstance(nested, BaseException) and current.args:
            nested = current.args[0]  # requests wraps urllib3's error as its first argument
        if not isinstance(nested, BaseException):
            nested = current.__cause__ or current.__context__
        current = nested
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # for the rare answer that is an HTTP date

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
