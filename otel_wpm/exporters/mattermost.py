"""Alerts posted to a Mattermost channel, with the HTML report attached.

Usage::

    exporter = MattermostExporter(
        "https://chat.example.com", token=bot_token, channel_id="4xp9fdt7...",
        timeout_seconds=10.0, max_retries=4,
    )
    exporter.export(alert)   # raises ExportError when Mattermost can't be reached

Talks to the server through ``mattermostdriver`` (the ``mattermost`` extra). The
token never appears in logs, exception messages or ``repr``.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlsplit

import requests

from ..alerting.alert import Alert, HotFrame
from .base import AlertExporter, ExportError

logger = logging.getLogger(__name__)

API_BASEPATH = "/api/v4"
MAX_HOT_FRAMES = 5
_DEFAULT_PORTS = {"https": 443, "http": 80}
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_T = TypeVar("_T")


def driver_options(server_url: str, token: str, timeout_seconds: float) -> dict[str, Any]:
    """Split a Mattermost URL as people write it into ``mattermostdriver.Driver`` options.

    >>> driver_options("https://example.com/mattermost", "t", 5)["basepath"]
    '/mattermost/api/v4'
    """
    parts = urlsplit(server_url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
        parts = parts._replace(netloc="")
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(
            f"mattermost_server_url must be an http(s) URL like https://chat.example.com, "
            f"got {server_url!r}"
        )
    host = parts.hostname
    prefix = parts.path.rstrip("/")
    return {
        "scheme": parts.scheme,
        "url": f"[{host}]" if ":" in host else host,
        "port": port or _DEFAULT_PORTS[parts.scheme],
        "basepath": prefix + API_BASEPATH,
        "token": token,
        "request_timeout": timeout_seconds,
        "timeout": timeout_seconds,
        "verify": True,
    }


class MattermostExporter(AlertExporter):
    """Posts each alert to one channel; retries transient failures with backoff."""

    name = "mattermost"

    def __init__(
        self,
        server_url: str,
        token: str,
        channel_id: str,
        timeout_seconds: float = 10.0,
        max_retries: int = 4,
        backoff_base_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        options = driver_options(server_url, token, timeout_seconds)
        try:
            from mattermostdriver import Driver
        except ImportError:
            raise RuntimeError(
                "mattermost_server_url is set but mattermostdriver is not installed: "
                "pip install 'otel-wpm[mattermost]'"
            ) from None
        self.server_url = server_url
        self.channel_id = channel_id
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._token = token
        self._driver = Driver(options)
        self._login_lock = threading.Lock()
        self._logged_in = False
        self._warned_about_attachments = False

    def __repr__(self) -> str:
        return f"MattermostExporter({self.server_url!r}, channel_id={self.channel_id!r})"

    def reset_after_fork(self) -> None:
        # The parent's delivery thread may have held the lock at fork time.
        self._login_lock = threading.Lock()

    def export(self, alert: Alert) -> None:
        message = format_markdown(alert)
        self._ensure_logged_in()
        file_ids = self._upload_report(alert) if alert.report_html else []
        self._call("create the post", lambda: self._create_post(message, file_ids))

    def _ensure_logged_in(self) -> None:
        with self._login_lock:
            if not self._logged_in:
                self._call("log in", self._login)
                self._logged_in = True

    def _login(self) -> None:
        user = self._driver.login()
        if not isinstance(user, dict) or "id" not in user:
            raise _UnexpectedAnswer("the server did not answer /users/me with a user")

    def _upload_report(self, alert: Alert) -> list[str]:
        try:
            return [self._call("upload the report", lambda: self._upload(alert))]
        except ExportError as error:
            if error.kind not in ("too_large", "feature_disabled"):
                raise
            # The alert matters more than its attachment: post it with the link only.
            if not self._warned_about_attachments:
                self._warned_about_attachments = True
                logger.warning("Posting Mattermost alerts without the report: %s", error)
            return []

    def _upload(self, alert: Alert) -> str:
        files = {"files": (alert.report_filename, alert.report_html, "text/html")}
        answer = self._driver.files.upload_file(self.channel_id, files=files)
        try:
            return str(answer["file_infos"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise _UnexpectedAnswer("the file upload answer has no file id") from None

    def _create_post(self, message: str, file_ids: list[str]) -> None:
        post: dict[str, Any] = {"channel_id": self.channel_id, "message": message}
        if file_ids:
            post["file_ids"] = file_ids
        answer = self._driver.posts.create_post(post)
        if not isinstance(answer, dict) or "id" not in answer:
            raise _UnexpectedAnswer("the post creation answer has no post id")

    def _call(self, action: str, call: Callable[[], _T]) -> _T:
        """Run one API call, retrying transient failures; raise ExportError at the end."""
        attempt = 0
        while True:
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - every failure is classified below
                failure = self._classify(action, error)
            if not failure.retryable or attempt >= self.max_retries:
                raise failure.error
            delay = self._delay(attempt, failure.retry_after)
            logger.debug("Mattermost: %s; retrying in %.2f s", failure.error, delay)
            self._sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        delay = self.backoff_base_seconds * (2**attempt)
        delay += random.uniform(0, delay / 10)  # noqa: S311 - jitter, not security
        return min(delay, self.max_backoff_seconds)

    def _classify(self, action: str, error: Exception) -> _Failure:
        from mattermostdriver import exceptions as driver_errors

        detail = self._redact(str(error))
        if isinstance(error, driver_errors.NoAccessTokenProvided):
            return _permanent("auth", "Mattermost rejected the token (401): check mattermost_token")
        if isinstance(error, (driver_errors.NotEnoughPermissions, driver_errors.ResourceNotFound)):
            if action == "log in":
                return _permanent(
                    "not_found",
                    f"no Mattermost API at {self._driver.client.url} (403/404): "
                    "check mattermost_server_url",
                )
            return _permanent(
                "channel",
                f"channel {self.channel_id} not found or no permission to post "
                f"(403/404) while trying to {action}: {detail}",
            )
        if isinstance(error, driver_errors.InvalidOrMissingParameters):
            return _permanent(
                "invalid", f"Mattermost rejected the request to {action} (400): {detail}"
            )
        if isinstance(error, driver_errors.ContentTooLarge):
            return _permanent("too_large", "Mattermost refused the report as too large (413)")
        if isinstance(error, driver_errors.FeatureDisabled):
            return _permanent(
                "feature_disabled",
                f"the Mattermost server has this feature disabled (501): {detail}",
            )
        if isinstance(error, driver_errors.MethodNotAllowed):
            return _permanent("invalid", f"Mattermost refused the method (405) to {action}")
        if isinstance(error, requests.HTTPError) and error.response is not None:
            return self._classify_status(action, error.response)
        if isinstance(error, requests.Timeout):
            return _transient("timeout", f"Mattermost did not answer in time to {action}")
        if isinstance(error, requests.ConnectionError):
            return _transient("connection", f"cannot connect to Mattermost to {action}: {detail}")
        if isinstance(error, _UnexpectedAnswer):
            return _permanent("bad_answer", f"unexpected Mattermost answer: {error}")
        if isinstance(error, ValueError):  # a body that is not JSON, e.g. a proxy's error page
            return _permanent(
                "bad_answer",
                f"Mattermost answered with something not JSON to "
                f"{action}: check mattermost_server_url",
            )
        return _permanent(
            "error", f"failed to {action} on Mattermost: {type(error).__name__}: {detail}"
        )

    def _classify_status(self, action: str, response: requests.Response) -> _Failure:
        status = response.status_code
        if status == 429:
            return _transient(
                "rate_limited",
                f"Mattermost rate-limited the request to {action} (429)",
                retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status >= 500:
            return _transient("server_error", f"Mattermost failed to {action} ({status})")
        return _permanent("http_error", f"Mattermost refused to {action} ({status})")

    def _redact(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "[redacted]")
        return _BEARER.sub(r"\1[redacted]", text)


class _UnexpectedAnswer(Exception):
    pass


@dataclass(frozen=True)
class _Failure:
    error: ExportError
    retryable: bool
    retry_after: Optional[float] = None


def _permanent(kind: str, message: str) -> _Failure:
    return _Failure(ExportError(message, permanent=True, kind=kind), retryable=False)


def _transient(kind: str, message: str, retry_after: Optional[float] = None) -> _Failure:
    return _Failure(ExportError(message, kind=kind), retryable=True, retry_after=retry_after)


def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def format_markdown(alert: Alert) -> str:
    """The Mattermost message for an alert.

    Request-derived text (URL, route, host...) goes in code spans, so a path
    like ``/@channel`` can neither notify anyone nor inject markdown.
    """
    lines = [
        f"#### {_title(alert)}",
        f"**Service:** {_code(alert.service)}",
        f"**Request:** {_code(f'{alert.method} {alert.route}')}",
        f"**URL:** {_code(alert.url)}",
        f"**Duration:** {_duration(alert)}",
        f"**Status:** {_status(alert)}",
        f"**Host:** {_code(alert.host)}",
        f"**Trace ID:** {_code(alert.trace_id)}",
    ]
    links = [
        f"[{label}]({_link(url)})"
        for label, url in (("trace", alert.trace_url), ("report", alert.report_url))
        if url
    ]
    if links:
        lines.append("**Links:** " + " · ".join(links))
    if alert.suppressed_since_last > 0:
        count = alert.suppressed_since_last
        noun = "alert" if count == 1 else "alerts"
        lines.append(f"_{count} similar {noun} suppressed since the last one_")
    if alert.hot_frames:
        lines.append("**Where the time went:**")
        lines.extend(_hot_frame_line(frame) for frame in alert.hot_frames[:MAX_HOT_FRAMES])
    return "\n".join(lines)


def _title(alert: Alert) -> str:
    if alert.is_test:
        return ":white_check_mark: otel-wpm test alert"
    if alert.in_flight:
        return ":rotating_light: Request still running"
    return ":warning: Slow request"


def _duration(alert: Alert) -> str:
    running = " and counting" if alert.in_flight else ""
    return f"{alert.duration_seconds:.2f} s{running} (threshold {alert.threshold_seconds:.2f} s)"


def _status(alert: Alert) -> str:
    if alert.status is not None:
        return str(alert.status)
    return "still running" if alert.in_flight else "unknown"


def _hot_frame_line(frame: HotFrame) -> str:
    return (
        f"- {_code(frame.function)} — {_code(frame.location)} — "
        f"{frame.seconds:.2f} s — {frame.share * 100:.0f} %"
    )


def _code(text: str) -> str:
    """An inline code span that the text cannot close or break."""
    flat = " ".join(text.split()).replace("`", "'")
    return f"`{flat}`" if flat else "—"


def _link(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
