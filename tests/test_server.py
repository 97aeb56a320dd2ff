"""The report server over real HTTP on 127.0.0.1, with reports rendered by otel_wpm.reporting."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
from apps.helpers import clean_env, free_port, running_server, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyinstrument import Profiler
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from wsgi_servers import serve_reports, serve_threaded

from otel_wpm.capture.request import RawRequest
from otel_wpm.capture.semconv import HttpFacts
from otel_wpm.masking import SecretMasker
from otel_wpm.reporting.profile import Profile, hot_frames
from otel_wpm.reporting.render import render_report
from otel_wpm.reporting.report_format import report_file_name
from otel_wpm.reporting.slow_request import SlowRequest
from otel_wpm.reporting.store import ReportStore
from otel_wpm.server import SECURITY_HEADERS, ReportDirectoryError, app, is_loopback, make_server

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_C = "a3ce929d0e0e47364bf92f3577b34da6"
UNKNOWN_TRACE = "f" * 32
SPAN = "b7ad6b7169203331"
EVIL = "<img src=x onerror=alert(1)>"


def busy() -> int:
    return sum(i * i for i in range(200_000))


@pytest.fixture(scope="module")
def session() -> Any:
    profiler = Profiler()
    profiler.start()
    busy()
    profiler.stop()
    return profiler.last_session


def write_report(
    directory: Path,
    trace_id: str,
    route: str,
    duration: float,
    started: datetime,
    status: Optional[int] = 200,
    in_flight: bool = False,
    session: Any = None,
    span_id: str = SPAN,
) -> str:
    name = report_file_name(started, "GET", route, trace_id, span_id, in_flight)
    slow = SlowRequest(
        service="shop",
        facts=HttpFacts("GET", route, "", f"http://shop{route}", route, status),
        trace_id=trace_id,
        span_id=span_id,
        start_time=started.timestamp(),
        duration_seconds=duration,
        threshold_seconds=0.5,
        raw_request=RawRequest(),
        profile=Profile(session, "pyinstrument" if session else "sampling", duration, duration),
        report_file=name,
        report_link=None,
        trace_url=f"http://jaeger.local/trace/{trace_id}",
        in_flight=in_flight,
    )
    ReportStore(directory).write(
        name, render_report(slow, SecretMasker(), hot_frames(session)).encode()
    )
    return name


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    directory = tmp_path / "reports"
    directory.mkdir()
    return directory


@pytest.fixture
def base_url(reports: Path) -> Iterator[str]:
    with serve_reports(reports) as url:
        yield url


def when(minute: int) -> datetime:
    return datetime(2024, 5, 1, 12, minute, 0, tzinfo=timezone.utc)


def raw_get(base_url: str, path: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """Send ``path`` exactly as given (no client-side normalising); status and whole response."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    return int(response.split(b" ", 2)[1]), response


# --- index ---------------------------------------------------------------------------


def test_index_lists_reports_newest_first_with_their_metadata(
    reports: Path, base_url: str, session: Any
) -> None:
    write_report(reports, TRACE_A, "/users/<id>", 1.25, when(1), session=session)
    write_report(reports, TRACE_B, "/orders", 3.5, when(3), status=503)

    page = requests.get(base_url + "/", timeout=10).text

    assert page.index(TRACE_B) < page.index(TRACE_A)
    assert "/users/&lt;id&gt;" in page and "/orders" in page
    assert "1.250 s" in page and "3.500 s" in page and "503" in page
    assert "2024-05-01T12:03:00+00:00" in page
    assert f'href="/trace/{TRACE_A}"' in page
    assert f'href="http://jaeger.local/trace/{TRACE_A}"' in page
    assert "2 of 2 reports" in page


def test_index_escapes_everything_from_the_reports(reports: Path, base_url: str) -> None:
    write_report(reports, TRACE_A, f"/p{EVIL}", 1.0, when(1))

    page = requests.get(base_url + "/", params={"route": EVIL}, timeout=10).text

    assert EVIL not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_index_filters_by_route_duration_and_trace_id(reports: Path, base_url: str) -> None:
    write_report(reports, TRACE_A, "/users/<id>", 1.0, when(1))
    write_report(reports, TRACE_B, "/orders", 3.0, when(2))
    write_report(reports, TRACE_C, "/users/search", 5.0, when(3))

    def traces(**params: str) -> set[str]:
        response = requests.get(base_url + "/", params=params, timeout=10)
        assert response.status_code == 200
        return {t for t in (TRACE_A, TRACE_B, TRACE_C) if t in response.text}

    assert traces(route="USERS") == {TRACE_A, TRACE_C}
    assert traces(min_duration="2.5") == {TRACE_B, TRACE_C}
    assert traces(route="users", min_duration="2") == {TRACE_C}
    assert traces(trace_id=TRACE_B[:6].upper()) == {TRACE_B}
    assert traces(trace_id=TRACE_A) == {TRACE_A}


@pytest.mark.parametrize(
    "params", [{"min_duration": "fast"}, {"min_duration": "-1"}, {"trace_id": "xyz"}]
)
def test_bad_filters_get_400(reports: Path, base_url: str, params: dict[str, str]) -> None:
    response = requests.get(base_url + "/", params=params, timeout=10)

    assert response.status_code == 400


def test_unreadable_metadata_falls_back_to_the_file_name(reports: Path, base_url: str) -> None:
    name = report_file_name(when(1), "POST", "/upload", TRACE_A, SPAN, in_flight=False)
    (reports / name).write_text("<html>" + "x" * 20000 + "</html>")

    page = requests.get(base_url + "/", timeout=10).text

    assert TRACE_A in page and "POST" in page and "upload" in page


def test_index_metadata_is_cached_by_name_mtime_and_size(reports: Path, base_url: str) -> None:
    name = write_report(reports, TRACE_A, "/first", 1.0, when(1))
    path = reports / name
    assert "/first" in requests.get(base_url + "/", timeout=10).text
    stat = path.stat()

    # same size and mtime: the cached metadata stands
    path.write_bytes(path.read_bytes().replace(b"/first", b"/other"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "/first" in requests.get(base_url + "/", timeout=10).text

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    page = requests.get(base_url + "/", timeout=10).text
    assert "/other" in page and "/first" not in page


def test_index_of_a_thousand_reports(reports: Path, base_url: str) -> None:
    content = (reports / write_report(reports, TRACE_A, "/r", 1.0, when(1))).read_bytes()
    for i in range(999):
        name = report_file_name(when(2), "GET", "/r", f"{i:032x}", SPAN, in_flight=False)
        (reports / name).write_bytes(content)

    page = requests.get(base_url + "/", timeout=30).text

    assert "1000 of 1000 reports" in page


def test_a_directory_that_does_not_exist_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ReportDirectoryError, match=re.escape(str(tmp_path / "later"))):
        make_server(tmp_path / "later", "127.0.0.1", 0)
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportDirectoryError, match="is not a directory"):
        make_server(tmp_path / "file", "127.0.0.1", 0)


def test_index_of_a_directory_removed_while_serving(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    with serve_reports(tmp_path / "gone") as url:
        (tmp_path / "gone").rmdir()
        response = requests.get(url + "/", timeout=10)
    assert response.status_code == 200 and "0 of 0 reports" in response.text


# --- bad report files ----------------------------------------------------------------

METADATA_START = '<script type="application/json" id="otel-wpm-report">'


def with_metadata(payload: str) -> bytes:
    return f"<html><head>{METADATA_START}{payload}</script></head></html>".encode()


def write_truncated(path: Path) -> None:
    # a real report, cut in the middle of its metadata
    good = path.parent / write_report(path.parent, TRACE_C, "/cut", 1.0, when(9))
    content = good.read_bytes()
    good.unlink()
    path.write_bytes(content[: content.index(b'"duration_seconds"') + 5])


def write_huge(path: Path) -> None:
    # metadata that never ends within what the index reads, in a 64 MiB (sparse) file
    path.write_bytes(METADATA_START.encode() + b'{"route": "' + b"x" * 20_000)
    os.truncate(path, 64 * 2**20)


HOSTILE_FILES = {
    "400-digit duration": lambda path: path.write_bytes(
        with_metadata('{"route": "/evil", "duration_seconds": ' + "9" * 400 + "}")
    ),
    "lone surrogate in the route": lambda path: path.write_bytes(
        with_metadata('{"route": "/evil\\ud800", "duration_seconds": 1.0}')
    ),
    "non-JSON metadata": lambda path: path.write_bytes(with_metadata("{route: /evil}")),
    "truncated": write_truncated,
    "huge": write_huge,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
def test_a_bad_report_file_is_listed_by_name_counted_logged_once_and_breaks_nothing(
    reports: Path, base_url: str, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    write_report(reports, TRACE_A, "/good", 1.25, when(1))
    bad = report_file_name(when(2), "GET", "/evil", TRACE_B, SPAN, in_flight=False)
    HOSTILE_FILES[kind](reports / bad)

    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        pages = [requests.get(base_url + "/", timeout=10) for _ in range(2)]

    for page in pages:
        assert page.status_code == 200
        assert "/good" in page.text and "1.250 s" in page.text
        assert TRACE_B in page.text and "evil" in page.text
        assert "2 of 2 reports; 1 listed by file name only" in page.text
    assert [r.levelno for r in caplog.records if bad in r.getMessage()] == [logging.WARNING]
    trace = requests.get(f"{base_url}/trace/{TRACE_B}", allow_redirects=False, timeout=10)
    assert trace.headers["Location"] == f"/reports/{bad}"


def wsgi_get(application: Any, path: str) -> tuple[str, bytes]:
    """``application``'s answer to GET ``path``, called in this process."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": ""}
    answer: list[str] = []
    body = b"".join(application(environ, lambda status, headers: answer.append(status)))
    return answer[0], body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(blacklist_categories=())),  # surrogates too
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
metadata_fields = st.sampled_from(["route", "duration_seconds", "status", "in_flight", "service"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=2000).map(lambda raw: METADATA_START.encode() + raw)
    | st.dictionaries(metadata_fields, json_values).map(
        lambda meta: with_metadata(json.dumps(meta))
    )
)
def test_the_index_renders_whatever_a_report_file_holds(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        name = report_file_name(when(1), "GET", "/fuzz", TRACE_A, SPAN, in_flight=False)
        Path(directory, name).write_bytes(content)

        status, page = wsgi_get(app(directory), "/")

    assert status == "200 OK"
    assert TRACE_A in page.decode("utf-8")


# --- /trace/<trace_id> ---------------------------------------------------------------


def test_trace_with_one_report_redirects_to_it(reports: Path, base_url: str, session: Any) -> None:
    name = write_report(reports, TRACE_A, "/users/<id>", 1.0, when(1), session=session)

    first = requests.get(f"{base_url}/trace/{TRACE_A.upper()}", allow_redirects=False, timeout=10)
    assert first.status_code == 302
    assert first.headers["Location"] == f"/reports/{name}"

    report = requests.get(f"{base_url}/trace/{TRACE_A}", timeout=10)
    assert report.status_code == 200
    assert report.text == (reports / name).read_text()
    assert "pyinstrumentHTMLRenderer" in report.text


def test_trace_with_several_reports_lists_them(reports: Path, base_url: str) -> None:
    running = write_report(reports, TRACE_A, "/slow", 6.0, when(1), status=None, in_flight=True)
    final = write_report(reports, TRACE_A, "/slow", 9.0, when(1))
    write_report(reports, TRACE_B, "/other", 2.0, when(2))

    response = requests.get(f"{base_url}/trace/{TRACE_A}", timeout=10)

    assert response.status_code == 200
    assert f'href="/reports/{running}"' in response.text
    assert f'href="/reports/{final}"' in response.text
    assert "still running" in response.text
    assert TRACE_B not in response.text


def test_trace_without_report_gets_a_404_page_that_says_why(reports: Path, base_url: str) -> None:
    write_report(reports, TRACE_A, "/x", 1.0, when(1))

    response = requests.get(f"{base_url}/trace/{UNKNOWN_TRACE}", timeout=10)

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"no report for trace <code>{UNKNOWN_TRACE}</code>" in response.text
    assert "retention" in response.text and "fast" in response.text


@pytest.mark.parametrize("trace_id", ["xyz", "0af7651916cd43dd", "g" * 32, TRACE_A + "0"])
def test_trace_ids_must_be_32_hex_digits(base_url: str, trace_id: str) -> None:
    response = requests.get(f"{base_url}/trace/{trace_id}", timeout=10)

    assert response.status_code == 400


# --- /reports/<file> -----------------------------------------------------------------


def test_a_report_is_served_as_html(reports: Path, base_url: str) -> None:
    name = write_report(reports, TRACE_A, "/x", 1.0, when(1))

    response = requests.get(f"{base_url}/reports/{name}", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.content == (reports / name).read_bytes()


@pytest.fixture
def escape_targets(reports: Path) -> str:
    """A secret next to the directory, and a report name to build escapes from."""
    (reports.parent / "secret.html").write_text("SECRET-OUTSIDE")
    (reports / "alerts.jsonl").write_text("SECRET-ALERTS")
    return write_report(reports, TRACE_A, "/x", 1.0, when(1))


def test_the_raw_client_gets_a_plain_report_name(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    status, response = raw_get(base_url, f"/reports/{escape_targets}".encode())

    assert status == 200 and TRACE_A.encode() in response


@pytest.mark.parametrize(
    "path",
    [
        b"/reports/../secret.html",
        b"/reports/..%2fsecret.html",
        b"/reports/..%2Fsecret.html",
        b"/reports/..%252fsecret.html",
        b"/reports/%2e%2e/secret.html",
        b"/reports/..\\secret.html",
        b"/reports/..%5csecret.html",
        b"/reports//etc/passwd",
        b"/reports/%2Fetc%2Fpasswd",
        b"/reports/alerts.jsonl",
        b"/reports/NAME%00",
        b"/reports/NAME\x00.html",
        b"/reports/./NAME",
        b"/reports/NAME/",
        b"/reports/x%2fNAME",
        b"/reports/x%252fNAME",
        b"/reports/%32NAME",
        b"/reports/",
    ],
)
def test_paths_out_of_the_directory_get_404_without_details(
    reports: Path, base_url: str, escape_targets: str, path: bytes
) -> None:
    status, response = raw_get(base_url, path.replace(b"NAME", escape_targets.encode()))

    assert status in (400, 404)
    assert b"SECRET" not in response
    assert str(reports).encode() not in response


def test_symlinks_are_followed_only_to_reports_in_the_directory(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    outside = report_file_name(when(5), "GET", "/out", TRACE_B, SPAN, in_flight=False)
    to_alerts = report_file_name(when(6), "GET", "/alerts", TRACE_C, SPAN, in_flight=False)
    inside = report_file_name(when(7), "GET", "/in", UNKNOWN_TRACE, SPAN, in_flight=False)
    (reports / outside).symlink_to(reports.parent / "secret.html")
    (reports / to_alerts).symlink_to(reports / "alerts.jsonl")
    (reports / inside).symlink_to(reports / escape_targets)

    for name in (outside, to_alerts):
        response = requests.get(f"{base_url}/reports/{name}", timeout=10)
        assert response.status_code == 404
        assert "SECRET" not in response.text
    served = requests.get(f"{base_url}/reports/{inside}", timeout=10)
    assert served.status_code == 200
    assert TRACE_A in served.text


# --- headers and methods -------------------------------------------------------------


def test_every_response_carries_the_security_headers(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    responses = [
        requests.get(base_url + "/", timeout=10),
        requests.get(f"{base_url}/reports/{escape_targets}", timeout=10),
        requests.get(f"{base_url}/trace/{TRACE_A}", allow_redirects=False, timeout=10),
        requests.get(f"{base_url}/trace/{UNKNOWN_TRACE}", timeout=10),
        requests.get(f"{base_url}/trace/nope", timeout=10),
        requests.get(f"{base_url}/nowhere", timeout=10),
        requests.post(base_url + "/", data=b"x", timeout=10),
    ]
    assert {r.status_code for r in responses} == {200, 302, 400, 404, 405}
    for response in responses:
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (response.url, header)
    assert "script-src 'unsafe-inline'" in SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]

    status, malformed = raw_get(base_url, b"/ HTTP/1.1 junk")
    assert status == 400
    assert b"X-Content-Type-Options: nosniff" in malformed


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_other_than_get_and_head_get_405(
    reports: Path, base_url: str, escape_targets: str, method: str
) -> None:
    response = requests.request(method, f"{base_url}/reports/{escape_targets}", timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert (reports / escape_targets).exists()


def test_head_sends_the_headers_of_get_without_the_body(
    reports: Path, base_url: str, escape_targets: str
) -> None:
    url = f"{base_url}/reports/{escape_targets}"
    get = requests.get(url, timeout=10)
    head = requests.head(url, timeout=10)

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))


# --- slow and too many connections --------------------------------------------------


def connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def closed_by_the_server(connection: socket.socket) -> bool:
    """Whether the server closes ``connection`` (sending nothing) within the socket's timeout."""
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True


def trickled_until_closed(connection: socket.socket, deadline_seconds: float = 30.0) -> bool:
    """Send a request head a byte every 0.1 s, as slowloris does, until the server closes."""
    connection.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
    connection.settimeout(0.1)  # the pace of the trickle
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            if connection.recv(1024) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionResetError:
            return True
        try:
            connection.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def answers(base_url: str) -> bool:
    try:
        return requests.get(base_url + "/", timeout=10).status_code == 200
    except requests.ConnectionError:
        return False


def test_slow_and_half_sent_requests_are_closed_after_the_timeout(reports: Path) -> None:
    with serve_reports(reports, timeout=0.5) as url:
        silent, partial, trickle = connect(url), connect(url), connect(url)
        partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")

        assert trickled_until_closed(trickle)
        assert closed_by_the_server(silent)
        assert closed_by_the_server(partial)
        assert answers(url)
        for connection in (silent, partial, trickle):
            connection.close()


def test_connections_beyond_the_bound_get_503_until_some_end(reports: Path) -> None:
    with serve_reports(reports, timeout=60, max_connections=3) as url:
        holders = [connect(url) for _ in range(3)]
        for holder in holders:
            holder.sendall(b"GET / HTTP/1.1\r\n")

        with connect(url) as refused:
            response = refused.makefile("rb").read()
        assert response.startswith(b"HTTP/1.0 503 ")
        for header, value in SECURITY_HEADERS.items():
            assert f"{header}: {value}\r\n".encode() in response

        for holder in holders:
            holder.close()
        wait_until(lambda: answers(url), "a connection slot to be free again")


# --- serve() -------------------------------------------------------------------------


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("example.com")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_module_entry_point_serves_logs_its_url_and_stops_on_interrupt(
    reports: Path, tmp_path: Path, host: str
) -> None:
    name = write_report(reports, TRACE_A, "/x", 1.0, when(1))
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "otel_wpm.server", "--dir", str(reports)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, "--host", host, "--port", "0"], stderr=log)
    try:
        url_line = wait_until(
            lambda: re.search(r"on http://\S+:(\d+)/", log_path.read_text()), "the URL logged"
        )
        port = int(url_line.group(1))
        response = requests.get(f"http://127.0.0.1:{port}/trace/{TRACE_A}", timeout=10)
        assert response.status_code == 200
        assert response.url.endswith(f"/reports/{name}")
    finally:
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=30)
    assert returncode == 0
    # the warning is logged before serving starts, so it is there by now if at all
    warned = "not a loopback address" in log_path.read_text()
    assert warned == (host != "127.0.0.1")


@pytest.mark.parametrize(
    "command", [["otel-wpm", "serve"], [sys.executable, "-m", "otel_wpm.server"]]
)
def test_serving_a_directory_that_does_not_exist_fails_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "no-such-directory"

    result = subprocess.run(
        [*command, "--dir", str(missing), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert f"error: report directory {missing} does not exist" in result.stderr


def test_the_app_factory_runs_under_gunicorn(reports: Path, tmp_path: Path) -> None:
    name = write_report(reports, TRACE_A, "/users/<id>", 1.25, when(1))
    port = free_port()
    command = [
        "gunicorn",
        "-b",
        f"127.0.0.1:{port}",
        f'otel_wpm.server:app(directory="{reports}")',
    ]
    with running_server(command, clean_env(), tmp_path, port, ready_path="/") as server:
        index = requests.get(server.url + "/", timeout=10)
        report = requests.get(f"{server.url}/trace/{TRACE_A}", timeout=10)
        refused = requests.post(server.url + "/", timeout=10)

    assert "1.250 s" in index.text and "/users/&lt;id&gt;" in index.text
    assert report.url.endswith(f"/reports/{name}")
    assert report.content == (reports / name).read_bytes()
    assert refused.status_code == 405
    for response in (index, report, refused):
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value


def test_mounted_under_a_prefix_its_links_stay_under_it(reports: Path) -> None:
    name = write_report(reports, TRACE_A, "/x", 1.0, when(1))

    def host_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the host app"]

    mounted = DispatcherMiddleware(host_app, {"/wpm": app(reports)})
    with serve_threaded(mounted) as url:
        index = requests.get(url + "/wpm/", timeout=10).text
        trace = requests.get(f"{url}/wpm/trace/{TRACE_A}", allow_redirects=False, timeout=10)
        report = requests.get(url + trace.headers["Location"], timeout=10)
        host = requests.get(url + "/", timeout=10).text

    assert f'href="/wpm/trace/{TRACE_A}"' in index
    assert f'href="/wpm/reports/{name}"' in index
    assert 'action="/wpm/"' in index
    assert trace.headers["Location"] == f"/wpm/reports/{name}"
    assert report.content == (reports / name).read_bytes()
    assert host == "the host app"
