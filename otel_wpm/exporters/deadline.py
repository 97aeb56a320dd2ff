"""HTTP requests that end by a deadline, however slowly the server answers.

Usage::

    with Deadline(10.0):                       # 10 s for both requests together
        me = deadline_request("GET", f"{api}/users/me", headers=auth)
        post = deadline_request("POST", f"{api}/posts", headers=auth, json=body)
    # requests.Timeout once the 10 s are spent

A socket timeout bounds each read or write, not a whole request: a server that
sends one byte a second never trips it. So every connection opened under a
:class:`Deadline` is shut down when the deadline passes, which ends a blocked
read or write at once (TLS handshake included), and each request is given the
time left as its timeout.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time
from types import TracebackType
from typing import Any, Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current: contextvars.ContextVar[Optional[Deadline]] = contextvars.ContextVar(
    "otel_wpm_deadline", default=None
)


class Deadline:
    """A point in time after which the requests made under it are cut off."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._timer: Optional[threading.Timer] = None
        self._token: Optional[contextvars.Token[Optional[Deadline]]] = None

    @staticmethod
    def current() -> Optional[Deadline]:
        """The deadline of the ``with`` block this code runs in, if any."""
        return _current.get()

    @property
    def expired(self) -> bool:
        with self._lock:
            return self._expired

    def remaining(self) -> float:
        return max(0.0, self._ends_at - time.monotonic())

    def __enter__(self) -> Deadline:
        self._timer = threading.Timer(self.remaining(), self._expire)
        self._timer.daemon = True
        self._timer.start()
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            watched, self._sockets = self._sockets, []
        for sock in watched:
            sock.close()

    def watch(self, sock: socket.socket) -> None:
        """Shut the connection of ``sock`` down when the deadline passes (at once if it has)."""
        # A duplicate: wrapping a socket in TLS detaches the original object,
        # while shutting down any descriptor of a connection ends it for all.
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            expired = self._expired
        if expired:
            _shut_down(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            watched = list(self._sockets)
        for sock in watched:
            _shut_down(sock)


def deadline_request(method: str, url: str, **kwargs: Any) -> requests.Response:
    """``requests.request`` within the current :class:`Deadline` (there must be one).

    Raises ``requests.Timeout`` when the deadline passes before the whole answer
    has arrived.
    """
    deadline = Deadline.current()
    if deadline is None:
        raise RuntimeError("deadline_request() runs only inside a 'with Deadline(...)' block")
    if deadline.expired or deadline.remaining() <= 0:
        raise requests.Timeout(f"no answer within {deadline.seconds:g} s")
    with requests.Session() as session:
        adapter = _DeadlineAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            return session.request(method, url, timeout=deadline.remaining(), **kwargs)
        except requests.RequestException:
            if deadline.expired:
                raise requests.Timeout(
                    f"no complete answer within {deadline.seconds:g} s"
                ) from None
            raise


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile, or never connected
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = Deadline.current()
        if deadline is not None:
            deadline.watch(sock)
        return sock


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """Opens connections whose sockets the current deadline can shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has pool classes of its own
            manager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}
        return manager
