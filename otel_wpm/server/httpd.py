"""The report browser's own HTTP server: stdlib ``wsgiref``, a thread a connection, bounded.

Usage::

    from otel_wpm.server.httpd import make_server, serve

    server = make_server("performance_reports", "127.0.0.1", 0)   # 0: any free port
    server = make_server("s3://my-bucket/reports", "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port)
    server.shutdown(); server.server_close()

    serve("performance_reports")   # until SIGINT or SIGTERM, as ``otel-wpm serve`` does

A connection must send its whole request head within ``timeout`` seconds and
each write of the answer must progress within it, so slow or half-sent requests
cannot hold threads. At most ``max_connections`` are served at once; while that
many are open, a new one gets a short 503 and is closed.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import IO, Any, Optional, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from .._runtime.logs import LogOnce
from .wsgi import SECURITY_HEADERS, ReportApp, app

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 64
SERVER_SOFTWARE = "otel-wpm"

_MAX_REQUEST_LINE = 65536
_BUSY_RESPONSE = (
    "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    + "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS.items())
    + "Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
).encode()


class _HeadReader(io.RawIOBase):
    """Reads a connection until a deadline: a request head sent too slowly is dropped.

    A plain socket timeout bounds each read only, so a client sending a byte now
    and then could keep a thread forever.
    """

    def __init__(self, connection: socket.socket, seconds: float) -> None:
        self._connection = connection
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request head not received in time")
        self._connection.settimeout(remaining)
        return self._connection.recv_into(buffer)


class _ResponseWriter(ServerHandler):
    server_software = SERVER_SOFTWARE

    def log_exception(self, exc_info: Any) -> None:
        # e.g. a client that stopped reading: its answer is dropped, the server goes on
        logger.debug("report server: answer not sent", exc_info=exc_info)


class _RequestHandler(WSGIRequestHandler):
    """One request a connection, as ``wsgiref`` does, read within the server's timeout."""

    server: ReportServer
    server_version = SERVER_SOFTWARE
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_HeadReader(self.connection, self.server.timeout_seconds))

    def handle(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE + 1)
            if len(self.raw_requestline) > _MAX_REQUEST_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():  # it has sent the error
                return
        except (TimeoutError, socket.timeout):  # the same since Python 3.10
            logger.debug("report server: %s sent no request in time", self.client_address[0])
            return
        self.connection.settimeout(self.server.timeout_seconds)
        wfile = cast("IO[bytes]", self.wfile)
        writer = _ResponseWriter(
            self.rfile, wfile, sys.stderr, self.get_environ(), multithread=True
        )
        writer.request_handler = self  # type: ignore[attr-defined]  # wsgiref logs through it
        writer.run(self.server.app)

    def end_headers(self) -> None:
        # reached by send_error (malformed requests), so no answer lacks these
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("report server: %s - %s", self.address_string(), format % args)


class ReportServer(ThreadingMixIn, WSGIServer):
    """``serve_forever()``, ``shutdown()``, ``server_close()``, ``server_port``; ``app``."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        application: ReportApp,
        host: str,
        port: int,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.timeout_seconds = timeout  # not ``timeout``: socketserver's handle_request() uses it
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._busy = LogOnce(logger)
        self.app = application
        super().__init__((host, port), _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        self._busy.warning(
            "busy",
            "report server: all %d connection slots in use; refusing more until some end",
            self.max_connections,
        )
        try:
            request.setblocking(False)
            request.send(_BUSY_RESPONSE)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("report server: connection from %s failed", client_address, exc_info=True)


def make_server(
    location: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    endpoint_url: Optional[str] = None,
) -> ReportServer:
    """A bound server for ``location`` (a directory or an ``s3://`` URL), not yet serving;
    port 0 picks a free one.

    Raises ``ReportDirectoryError`` if the store cannot be read.
    """
    application = app(store=os.fspath(location), endpoint_url=endpoint_url)
    return ReportServer(application, host, port, timeout, max_connections)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    location: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    endpoint_url: Optional[str] = None,
) -> None:
    """Serve the reports in ``location`` (a directory or an ``s3://`` URL) until interrupted."""
    server = make_server(location, host, port, endpoint_url=endpoint_url)
    shown_host = f"[{host}]" if ":" in host else host
    logger.info(
        "otel-wpm report server for %s on http://%s:%d/",
        server.app.index.store.location,
        shown_host,
        server.server_port,
    )
    if not is_loopback(host):
        logger.warning(
            "otel-wpm report server listens on %s, not a loopback address: reports show "
            "request details, so put authentication in front of it",
            host,
        )
    try:
        _serve_until_stopped(server)
    finally:
        server.server_close()


#: What stops ``serve()``: Ctrl-C, and what a service manager (systemd, Kubernetes) sends.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _serve_until_stopped(server: ReportServer) -> None:
    """``server.serve_forever()`` until a stop signal, then ``server.shutdown()``.

    On POSIX the main thread blocks the stop signals and waits for one with
    ``sigwait`` while a thread serves, rather than let Python's handler raise
    ``KeyboardInterrupt``: on CPython 3.11, under load, a Ctrl-C that arrived while
    a connection's thread ran was now and then never handled (the main thread,
    looping in ``serve_forever``, never raised it), and the server did not stop.
    """
    if not hasattr(signal, "sigwait") or threading.current_thread() is not threading.main_thread():
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        return
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        waiting = threading.get_ident()

        def serve_forever() -> None:
            try:
                server.serve_forever()
            except BaseException:  # the main thread would wait for a signal forever
                signal.pthread_kill(waiting, signal.SIGTERM)
                raise

        threading.Thread(target=serve_forever, name="otel-wpm-serve", daemon=True).start()
        stop = signal.sigwait(STOP_SIGNALS)
        logger.info("otel-wpm report server stopping (%s)", signal.Signals(stop).name)
        server.shutdown()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
