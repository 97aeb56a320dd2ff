"""Alerts posted to a Mattermost channel, with the HTML report attached.

Usage::

    exporter = MattermostExporter(
        "https://chat.example.com", token=bot_token, channel_id="4xp9fdt7...",
        timeout_seconds=10.0, max_retries=4,
    )
    exporter.export(alert)   # raises ExportError when Mattermost can't be reached

Talks to the server through ``mattermostdriver`` (the ``mattermost`` extra).
``timeout_seconds`` is a deadline for one delivery attempt as a whole (log in,
upload the report, create the post), however slowly the server answers. A
failed attempt is retried with backoff; a test alert is tried once. The token
never appears in logs, exception messages or ``repr``. The message itself is
made by :mod:`.mattermost_message`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlsplit

import requests

from ..alerting.alert import Alert
from ..masking import SecretMasker
from .base import AlertExporter, ExportError, RetryPolicy, http_failure
from .deadline import Deadline
from .mattermost_message import format_markdown

logger = logging.getLogger(__name__)

API_BASEPATH = "/api/v4"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_T = TypeVar("_T")


def driver_options(server_url: str, token: str) -> dict[str, Any]:
    """Split a Mattermost URL as people write it into ``mattermostdriver.Driver`` options.

    The URL is checked by :mod:`otel_wpm.config` (``mattermost_server_url``).

    >>> driver_options("https://example.com/mattermost", "t")["basepath"]
    '/mattermost/api/v4'
    """
    parts = urlsplit(server_url.strip())
    host = parts.hostname or ""
    return {
        "scheme": parts.scheme,
        "url": f"[{host}]" if ":" in host else host,
        "port": parts.port or _DEFAULT_PORTS.get(parts.scheme, 443),
        "basepath": parts.path.rstrip("/") + API_BASEPATH,
        "token": token,
        "verify": True,
    }


@dataclass
class _Delivery:
    """One alert on its way; a retry resumes after what already succeeded."""

    alert: Alert
    message: str
    file_ids: Optional[list[str]] = None  # None until the report is uploaded (or skipped)


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
        try:
            from mattermostdriver import Driver

            from .mattermost_client import DeadlineClient
        except ImportError:
            raise RuntimeError(
                "mattermost_server_url is set but mattermostdriver is not installed: "
                "pip install 'otel-wpm[mattermost]'"
            ) from None
        self.server_url = server_url
        self.channel_id = channel_id
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._token = token
        self._driver = Driver(driver_options(server_url, token), client_cls=DeadlineClient)
        self._login_lock = threading.Lock()
        self._logged_in = False
        self._warned_about_attachments = False

    def __repr__(self) -> str:
        return f"MattermostExporter({self.server_url!r}, channel_id={self.channel_id!r})"

    def after_fork_in_child(self) -> None:
        # The parent's delivery thread may have held the lock at fork time.
        self._login_lock = threading.Lock()

    def export(self, alert: Alert) -> None:
        retries = RetryPolicy(
            max_retries=0 if alert.is_test else self.max_retries,
            backoff_base_seconds=self.backoff_base_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
        )
        delivery = _Delivery(alert, format_markdown(alert))
        retries.run(lambda: self._attempt(delivery), self._sleep)

    def _attempt(self, delivery: _Delivery) -> None:
        with Deadline(self.timeout_seconds):
            self._ensure_logged_in()
            if delivery.file_ids is None:
                delivery.file_ids = self._upload_report(delivery.alert)
            file_ids = delivery.file_ids
            self._call("create the post", lambda: self._create_post(delivery.message, file_ids))

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
        if not alert.report_html:
            return []
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
        """Run one API call; any failure becomes a classified, token-free ExportError."""
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - every failure is classified below
            failure = self._classify(action, error)
        raise ExportError(
            self._masked(failure.message),
            permanent=failure.permanent,
            kind=failure.kind,
            retry_after=failure.retry_after,
        ) from None

    def _classify(self, action: str, error: Exception) -> ExportError:
        if isinstance(error, _UnexpectedAnswer):
            return _permanent("bad_answer", f"unexpected Mattermost answer: {error}")
        if isinstance(error, requests.HTTPError) and error.response is not None:
            refused = self._refusal(action, error.response)
            if refused is not None:
                return refused
        if isinstance(error, requests.JSONDecodeError):  # e.g. a proxy's error page
            return _permanent(
                "bad_answer",
                f"Mattermost answered with something not JSON to {action}: "
                "check mattermost_server_url",
            )
        if isinstance(error, requests.Timeout):
            return ExportError(
                f"Mattermost did not answer within {self.timeout_seconds:g} s "
                f"(mattermost_timeout_seconds) to {action}",
                kind="timeout",
            )
        return http_failure(error, "Mattermost", action)

    def _refusal(self, action: str, response: requests.Response) -> Optional[ExportError]:
        """What Mattermost's own error statuses mean; None for the generic ones (429, 5xx...)."""
        status = response.status_code
        detail = _server_message(response)
        if status == 401:
            return _permanent("auth", "Mattermost rejected the token (401): check mattermost_token")
        if status in (403, 404) and action == "log in":
            return _permanent(
                "not_found",
                f"no Mattermost API at {self._driver.client.url} ({status}): "
                "check mattermost_server_url",
            )
        if status in (403, 404):
            return _permanent(
                "channel",
                f"channel {self.channel_id} not found or no permission to post "
                f"({status}) while trying to {action}: {detail}",
            )
        if status == 400:
            return _permanent(
                "invalid", f"Mattermost rejected the request to {action} (400): {detail}"
            )
        if status == 405:
            return _permanent("invalid", f"Mattermost refused the method (405) to {action}")
        if status == 413:
            return _permanent("too_large", "Mattermost refused the report as too large (413)")
        if status == 501:
            return _permanent(
                "feature_disabled",
                f"the Mattermost server has this feature disabled (501): {detail}",
            )
        return None

    def _masked(self, text: str) -> str:
        return SecretMasker.mask_text(text, [self._token])


class _UnexpectedAnswer(Exception):
    pass


def _permanent(kind: str, message: str) -> ExportError:
    return ExportError(message, permanent=True, kind=kind)


def _server_message(response: requests.Response) -> str:
    """The ``message`` of a Mattermost error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    message = body.get("message") if isinstance(body, dict) else None
    return str(message) if message else response.text[:200]
