"""A loopback Mattermost (API v4) that is just real enough for mattermostdriver.

Usage::

    with FakeMattermostServer(token="secret", channel_id="town-square") as server:
        exporter = MattermostExporter(server.url, "secret", "town-square")
        exporter.export(alert)
        assert server.posts[0]["file_ids"] == [server.files[0].id]

    server.fail_next(2, status=503)      # the next two requests fail
    server.rate_limit_next(1, retry_after=7)
    server.reject_token()                # every request answers 401
    server.hang(); ...; server.release() # requests wait until released
    FakeMattermostServer(tls=server_context) # https:// with that context's certificate
    server.trickle(0.2)                  # answers come one byte every 0.2 s (until stopped)
    server.delay_answers(0.8)            # each answer starts 0.8 s late (until stopped)

It serves ``users/me``, ``files`` (multipart upload) and ``posts``, answers
errors in Mattermost's format (a post longer than 16,383 characters is a 400,
as on a real server), and records every request.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Optional
from urllib.parse import parse_qs, urlsplit

#: A real server refuses longer messages (PostMessageMaxRunesV2).
MAX_MESSAGE_CHARS = 16_383


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int


@dataclass(frozen=True)
class StoredFile:
    id: str
    name: str
    channel_id: str
    mime_type: str
    data: bytes


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_id: str = "api.error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_id = error_id
        self.headers: dict[str, str] = {}


class FakeMattermostServer:
    """Serves on 127.0.0.1 at a free port; thread-safe; start/stop or use as a context."""

    def __init__(
        self,
        token: str = "test-token-0123456789",
        channel_id: str = "channel0123456789abcdefghij",
        path_prefix: str = "",
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.token = token
        self.channel_id = channel_id
        self.user_id = "user0123456789abcdefghijkl"
        self.path_prefix = path_prefix.rstrip("/")
        self.tls = tls
        self.posts: list[dict[str, Any]] = []
        self.files: list[StoredFile] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self._stopping = threading.Event()
        self._seconds_per_byte = 0.0
        self._answer_delay = 0.0
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._token_rejected = False
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FakeMattermostServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeMattermostServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        port = self._httpd.server_address[1]
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{port}{self.path_prefix}"

    # -- failure injection -----------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([(status, {})] * n)

    def rate_limit_next(self, n: int, retry_after: float = 1) -> None:
        with self._lock:
            self._failures.extend([(429, {"Retry-After": _number(retry_after)})] * n)

    def reject_token(self) -> None:
        with self._lock:
            self._token_rejected = True

    def hang(self) -> None:
        self._released.clear()

    def trickle(self, seconds_per_byte: float) -> None:
        """Send each answer one byte at a time; the rest goes at once when the server stops."""
        with self._lock:
            self._seconds_per_byte = seconds_per_byte

    def delay_answers(self, seconds: float) -> None:
        with self._lock:
            self._answer_delay = seconds

    def release(self) -> None:
        self._released.set()

    def request_count(self, method: str, path_suffix: str) -> int:
        with self._lock:
            return sum(
                1 for r in self.requests if r.method == method and r.path.endswith(path_suffix)
            )

    # -- request handling (called from handler threads) ------------------------

    def _handle(
        self, method: str, target: str, headers: Message, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        self._released.wait()
        path = urlsplit(target).path
        try:
            self._check_injected_failures()
            self._check_token(headers)
            return self._route(method, path, target, headers, body)
        except ApiError as error:
            return error.status, _error_body(error), error.headers

    def _check_injected_failures(self) -> None:
        with self._lock:
            if not self._failures:
                return
            status, headers = self._failures.pop(0)
        error = ApiError(status, "Injected failure.", "test.injected")
        error.headers = headers
        raise error

    def _check_token(self, headers: Message) -> None:
        with self._lock:
            rejected = self._token_rejected
        if rejected or headers.get("Authorization", "") != f"Bearer {self.token}":
            raise ApiError(
                401,
                "Invalid or expired session, please login again.",
                "api.context.session_expired.app_error",
            )

    def _route(
        self, method: str, path: str, target: str, headers: Message, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        api = f"{self.path_prefix}/api/v4"
        routes = {
            f"{api}/users/me": ("GET", self._get_me),
            f"{api}/files": ("POST", self._upload_file),
            f"{api}/posts": ("POST", self._create_post),
        }
        if path not in routes:
            raise ApiError(404, "Sorry, we could not find the page.", "api.context.404.app_error")
        expected_method, action = routes[path]
        if method != expected_method:
            raise ApiError(405, "Method not allowed.", "api.context.405.app_error")
        status, answer = action(target, headers, body)
        return status, answer, {}

    def _get_me(self, target: str, headers: Message, body: bytes) -> tuple[int, Any]:
        return 200, {"id": self.user_id, "username": "otel-wpm-bot", "roles": "system_user"}

    def _upload_file(self, target: str, headers: Message, body: bytes) -> tuple[int, Any]:
        fields, uploads = _parse_multipart(headers.get("Content-Type", ""), body)
        query = parse_qs(urlsplit(target).query)
        channel_id = fields.get("channel_id") or (query.get("channel_id") or [""])[0]
        if not channel_id:
            raise ApiError(400, "Invalid or missing channel_id.", "api.context.invalid_param")
        self._check_channel(channel_id)
        if not uploads:
            raise ApiError(400, "Unable to upload file(s). No files.", "api.file.upload_file")
        infos = []
        for name, mime_type, data in uploads:
            stored = StoredFile(_new_id(), name, channel_id, mime_type, data)
            with self._lock:
                self.files.append(stored)
            infos.append({"id": stored.id, "name": name, "size": len(data), "mime_type": mime_type})
        return 201, {"file_infos": infos, "client_ids": []}

    def _create_post(self, target: str, headers: Message, body: bytes) -> tuple[int, Any]:
        try:
            post = json.loads(body or b"null")
        except ValueError:
            post = None
        if not isinstance(post, dict):
            raise ApiError(
                400, "Invalid or missing post in request body.", "api.context.invalid_body_param"
            )
        channel_id = post.get("channel_id")
        if not channel_id:
            raise ApiError(400, "Invalid or missing channel_id.", "api.context.invalid_param")
        self._check_channel(channel_id)
        message = post.get("message", "")
        if len(message) > MAX_MESSAGE_CHARS:
            raise ApiError(
                400,
                f"Invalid message: it is longer than {MAX_MESSAGE_CHARS} characters.",
                "model.post.is_valid.msg.app_error",
            )
        file_ids = post.get("file_ids") or []
        with self._lock:
            known = {f.id for f in self.files}
        if any(file_id not in known for file_id in file_ids):
            raise ApiError(400, "Invalid file_ids.", "api.post.create_post.file_ids")
        created = {
            "id": _new_id(),
            "channel_id": channel_id,
            "user_id": self.user_id,
            "message": message,
            "file_ids": list(file_ids),
            "create_at": int(time.time() * 1000),
        }
        with self._lock:
            self.posts.append(created)
        return 201, created

    def _check_channel(self, channel_id: str) -> None:
        if channel_id != self.channel_id:
            raise ApiError(
                403,
                "You do not have the appropriate permissions.",
                "api.context.permissions.app_error",
            )

    def _record(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, urlsplit(target).path, status))

    def _send(self, stream: BinaryIO, data: bytes) -> None:
        with self._lock:
            interval, delay = self._seconds_per_byte, self._answer_delay
        self._stopping.wait(delay)
        sent = 0
        while interval and sent < len(data) and not self._stopping.is_set():
            stream.write(data[sent : sent + 1])
            stream.flush()
            sent += 1
            self._stopping.wait(interval)
        stream.write(data[sent:])
        stream.flush()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeMattermostServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, answer, extra_headers = self.fake._handle(method, self.path, self.headers, body)
        self.fake._record(method, self.path, status)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self.fake._send(self.wfile, _http_response(status, answer, extra_headers))

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    """Form fields and ``(filename, mime type, bytes)`` uploads of a multipart body."""
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Expected a multipart/form-data body.", "api.file.upload_file")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + body)
    fields: dict[str, str] = {}
    uploads: list[tuple[str, str, bytes]] = []
    for part in message.get_payload():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        filename = part.get_filename()
        if filename is not None and name == "files":
            uploads.append((filename, part.get_content_type(), data))
        elif name:
            fields[str(name)] = data.decode("utf-8", "replace")
    return fields, uploads


def _http_response(status: int, answer: Any, headers: dict[str, str]) -> bytes:
    payload = json.dumps(answer).encode()
    lines = [
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _error_body(error: ApiError) -> dict[str, Any]:
    return {
        "id": error.error_id,
        "message": error.message,
        "detailed_error": "",
        "request_id": _new_id(),
        "status_code": error.status,
    }


def _new_id() -> str:
    return secrets.token_hex(13)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
