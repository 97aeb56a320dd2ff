"""Exporters: the JSON-lines file and Mattermost through the real driver against a fake server."""

from __future__ import annotations

import json
import logging
import os
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import trustme
from apps.helpers import free_port, tmpfs
from mattermost_server import MAX_MESSAGE_CHARS, FakeMattermostServer

from otel_wpm._runtime.stats import Stats
from otel_wpm.alerting.alert import Alert, HotFrame, SlowSpan
from otel_wpm.alerting.dedup import MemoryDedupStore
from otel_wpm.alerting.dispatch import AlertDispatcher
from otel_wpm.exporters import ExportError, LocalFileExporter, MattermostExporter, format_markdown
from otel_wpm.exporters.mattermost import driver_options

MakeAlert = Callable[..., Alert]
#: Far longer than any call here may take once its deadline works, far shorter than without.
LIVENESS_SECONDS = 15.0


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def exporter_for(
    server: FakeMattermostServer, **options: Any
) -> tuple[MattermostExporter, RecordingSleep]:
    sleep = RecordingSleep()
    options.setdefault("timeout_seconds", 5.0)
    exporter = MattermostExporter(
        server.url, server.token, server.channel_id, sleep=sleep, **options
    )
    return exporter, sleep


@pytest.fixture(params=["http", "https"])
def plain_or_tls_server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeMattermostServer]:
    """The fake Mattermost over plain HTTP, or over TLS with a certificate requests trusts."""
    context = None
    if request.param == "https":
        authority = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        authority.issue_cert("127.0.0.1").configure_cert(context)
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with FakeMattermostServer(tls=context) as server:
        yield server


def raised_within(seconds: float, call: Callable[[], object]) -> Optional[BaseException]:
    """What ``call`` raised (None if nothing), run on a thread that must end within ``seconds``."""
    outcome: list[Optional[BaseException]] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the call was still running after {seconds} s"
    return outcome[0]


def read_alert_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of an alerts file as JSON (fails on a broken line)."""
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


# -- local file ---------------------------------------------------------------------------


def test_local_file_appends_one_json_line_per_alert(tmp_path: Path, make_alert: MakeAlert) -> None:
    output_dir = tmp_path / "out"
    exporter = LocalFileExporter(output_dir)

    exporter.export(make_alert(slowest_span=SlowSpan("GET /prices", "http", 0.5)))
    exporter.export(
        make_alert(route="/orders", suppressed_since_last=3, in_flight=True, status=None)
    )

    lines = (output_dir / "alerts.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["route"] == "/users/<id>"
    assert first["report_file"] == "0af76519.html"
    assert first["time"] == "2024-05-01T12:00:00+00:00"
    assert first["hot_frames"][0] == {
        "function": "load_user",
        "location": "app/users.py:42",
        "seconds": 1.5,
        "share": 0.64,
    }
    assert first["slowest_span"] == {"description": "GET /prices", "kind": "http", "seconds": 0.5}
    assert second["slowest_span"] is None
    assert (
        second["route"],
        second["suppressed_since_last"],
        second["in_flight"],
        second["status"],
    ) == ("/orders", 3, True, None)
    assert stat.S_IMODE(os.stat(output_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(output_dir / "alerts.jsonl").st_mode) == 0o600


def test_local_file_lines_stay_whole_with_concurrent_writers(
    tmp_path: Path, make_alert: MakeAlert
) -> None:
    exporter = LocalFileExporter(tmp_path)
    long_route = "/" + "x" * 20_000

    def write_many() -> None:
        for _ in range(50):
            exporter.export(make_alert(route=long_route))

    threads = [threading.Thread(target=write_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["route"] == long_route for line in lines)


def test_local_file_full_disk_leaves_only_whole_lines(
    tmp_path: Path, make_alert: MakeAlert
) -> None:
    with tmpfs(tmp_path / "small", "1m") as output:
        exporter = LocalFileExporter(output)
        exporter.export(make_alert(route="/before"))
        filler = output / "filler"
        with pytest.raises(OSError), filler.open("wb") as stream:
            while True:
                stream.write(b"\0" * 4096)
                stream.flush()

        # Longer than what is left in the file's last page: the write comes up short.
        with pytest.raises(ExportError) as raised:
            exporter.export(make_alert(route="/" + "x" * 20_000))
        filler.unlink()
        exporter.export(make_alert(route="/after"))

        routes = [alert["route"] for alert in read_alert_lines(output / "alerts.jsonl")]
    assert raised.value.kind == "disk"
    assert routes == ["/before", "/after"]


_EXPORT_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from datetime import datetime, timezone
from otel_wpm.alerting.alert import Alert
from otel_wpm.exporters import ExportError, LocalFileExporter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails instead
exporter = LocalFileExporter(sys.argv[1])

def alert(route):
    return Alert(
        service="s", method="GET", route=route, url=route, status=200, duration_seconds=2.0,
        threshold_seconds=1.0, host="h", trace_id="1" * 32, span_id="2" * 16,
        start_time=datetime.now(timezone.utc), trace_url=None, report_url=None,
        report_path=None, report_filename="r.html",
    )

exporter.export(alert("/before"))
resource.setrlimit(resource.RLIMIT_FSIZE, (exporter.path.stat().st_size + 100,) * 2)
try:
    exporter.export(alert("/" + "x" * 1000))
except ExportError as error:
    print(error.kind)
"""


def test_local_file_size_limit_leaves_only_whole_lines(
    tmp_path: Path, make_alert: MakeAlert
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXPORT_UNDER_A_FILE_SIZE_LIMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["disk"]
    exporter = LocalFileExporter(tmp_path)
    exporter.export(make_alert(route="/after"))
    routes = [alert["route"] for alert in read_alert_lines(exporter.path)]
    assert routes == ["/before", "/after"]


def test_local_file_rotates_past_max_bytes(tmp_path: Path, make_alert: MakeAlert) -> None:
    exporter = LocalFileExporter(tmp_path, max_bytes=4000)

    for index in range(20):
        exporter.export(make_alert(route=f"/r{index}"))

    current = read_alert_lines(tmp_path / "alerts.jsonl")
    rotated = read_alert_lines(tmp_path / "alerts.jsonl.1")
    assert (tmp_path / "alerts.jsonl").stat().st_size <= 4000
    assert (tmp_path / "alerts.jsonl.1").stat().st_size <= 4000
    routes = [alert["route"] for alert in rotated + current]
    assert routes == [f"/r{index}" for index in range(20 - len(routes), 20)]
    assert len(rotated) >= 2 and current
    assert stat.S_IMODE((tmp_path / "alerts.jsonl.1").stat().st_mode) == 0o600


def test_local_file_rotation_by_concurrent_writers_keeps_lines_whole(
    tmp_path: Path, make_alert: MakeAlert
) -> None:
    def write_many(exporter: LocalFileExporter) -> None:
        for index in range(50):
            exporter.export(make_alert(route=f"/{threading.get_ident()}/{index}"))

    threads = [
        threading.Thread(target=write_many, args=(LocalFileExporter(tmp_path, max_bytes=20_000),))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for name in ("alerts.jsonl", "alerts.jsonl.1"):
        assert (tmp_path / name).stat().st_size <= 20_000
        assert read_alert_lines(tmp_path / name)


def test_local_file_disk_error_is_export_error(tmp_path: Path, make_alert: MakeAlert) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")

    with pytest.raises(ExportError) as raised:
        LocalFileExporter(blocker / "sub").export(make_alert())

    assert raised.value.kind == "disk"
    assert "not-a-dir" in str(raised.value)


# -- markdown ------------------------------------------------------------------------------


def test_markdown_has_the_facts_and_links(make_alert: MakeAlert) -> None:
    text = format_markdown(make_alert(suppressed_since_last=4))

    assert text.startswith("#### :warning: Slow request")
    assert "`GET /users/<id>`" in text
    assert "2.35 s (threshold 1.00 s)" in text
    assert "0af7651916cd43dd8448eb211c80319c" in text
    assert "[trace](https://traces.example.com/trace/0af7651916cd43dd8448eb211c80319c)" in text
    assert "[report](https://reports.example.com/r/0af76519.html)" in text
    assert "4 similar alerts suppressed since the last one" in text
    assert "`load_user` — `app/users.py:42` — 1.50 s — 64 %" in text


def test_markdown_names_the_slowest_span_before_the_top_frames(make_alert: MakeAlert) -> None:
    span = SlowSpan("select * from `orders` where id = ?\n# @channel", "db", 0.812)
    text = format_markdown(make_alert(slowest_span=span))

    line = "**Slowest span:** `select * from 'orders' where id = ? # @channel` — db — 0.81 s"
    assert line in text.splitlines()
    assert text.index(line) < text.index("**Where the time went:**")
    assert "Slowest span" not in format_markdown(make_alert())


def test_markdown_titles_and_missing_parts(make_alert: MakeAlert) -> None:
    in_flight = format_markdown(
        make_alert(in_flight=True, status=None, trace_url=None, report_url=None)
    )
    test = format_markdown(make_alert(is_test=True))

    assert in_flight.startswith("#### :rotating_light: Request still running")
    assert "**Status:** still running" in in_flight
    assert "[trace]" not in in_flight and "suppressed" not in in_flight
    assert test.startswith("#### :white_check_mark: otel-wpm test alert")


def test_markdown_keeps_request_text_inert(make_alert: MakeAlert) -> None:
    text = format_markdown(make_alert(url="https://x/@channel`\n# boom", route="/@all"))

    assert "`https://x/@channel' # boom`" in text
    assert "`GET /@all`" in text


def test_markdown_fits_the_post_limit_however_long_the_fields(make_alert: MakeAlert) -> None:
    huge = "/@channel" + "a" * 30_000
    text = format_markdown(
        make_alert(
            service=huge,
            route=huge,
            url=f"https://shop.example.com/search?q={huge}",
            host=huge,
            trace_url="https://traces.example.com/" + "t" * 20_000,
            hot_frames=tuple(HotFrame(huge, huge, 1.0, 0.2) for _ in range(5)),
        )
    )

    assert len(text) <= MAX_MESSAGE_CHARS
    assert text.startswith("#### :warning: Slow request\n**Service:** `/@channel")
    assert text.endswith("the attached report has them in full._")
    # Only whole lines were dropped: every code span that opens also closes.
    assert all(line.count("`") % 2 == 0 for line in text.splitlines())


def test_markdown_of_short_fields_is_not_shortened(make_alert: MakeAlert) -> None:
    assert "shortened" not in format_markdown(make_alert(url="https://x/" + "a" * 500))


# -- Mattermost: URL handling -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mm.example.com", ("https", "mm.example.com", 443, "/api/v4")),
        ("http://127.0.0.1:8065", ("http", "127.0.0.1", 8065, "/api/v4")),
        ("https://example.com/mattermost/", ("https", "example.com", 443, "/mattermost/api/v4")),
        ("http://[::1]:9000", ("http", "[::1]", 9000, "/api/v4")),
    ],
)
def test_driver_options_split_the_url(url: str, expected: tuple[str, str, int, str]) -> None:
    options = driver_options(url, "tok")

    assert (options["scheme"], options["url"], options["port"], options["basepath"]) == expected
    assert (options["token"], options["verify"]) == ("tok", True)


def test_repr_hides_the_token(mattermost_server: FakeMattermostServer) -> None:
    exporter, _ = exporter_for(mattermost_server)

    assert mattermost_server.token not in repr(exporter)


# -- Mattermost: delivery ----------------------------------------------------------------------


def test_posts_the_alert_with_the_report_attached(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    alert = make_alert()
    exporter, _ = exporter_for(mattermost_server)

    exporter.export(alert)

    [post] = mattermost_server.posts
    [stored] = mattermost_server.files
    assert post["channel_id"] == mattermost_server.channel_id
    assert post["file_ids"] == [stored.id]
    assert (stored.name, stored.mime_type, stored.data) == (
        "0af76519.html",
        "text/html",
        alert.report_html,
    )
    assert alert.trace_id in post["message"] and "/users/<id>" in post["message"]
    assert f"[trace]({alert.trace_url})" in post["message"]
    assert f"[report]({alert.report_url})" in post["message"]


def test_logs_in_once_for_many_alerts(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    exporter, _ = exporter_for(mattermost_server)

    for _ in range(3):
        exporter.export(make_alert())

    assert mattermost_server.request_count("GET", "/users/me") == 1
    assert len(mattermost_server.posts) == 3


def test_posts_without_attachment_when_there_is_no_report(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    exporter, _ = exporter_for(mattermost_server)

    exporter.export(make_alert(report_html=b""))

    assert mattermost_server.files == []
    assert mattermost_server.posts[0]["file_ids"] == []


def test_server_under_a_path_prefix(make_alert: MakeAlert) -> None:
    with FakeMattermostServer(path_prefix="/mattermost") as server:
        exporter, _ = exporter_for(server)
        exporter.export(make_alert())

        assert len(server.posts) == 1
        assert all(r.path.startswith("/mattermost/api/v4/") for r in server.requests)


def test_retries_server_errors_with_backoff(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    mattermost_server.fail_next(2, status=500)
    exporter, sleep = exporter_for(mattermost_server, backoff_base_seconds=0.5)

    exporter.export(make_alert())

    assert [r.status for r in mattermost_server.requests] == [500, 500, 200, 201, 201]
    assert len(sleep.delays) == 2
    assert 0.5 <= sleep.delays[0] <= 0.55 and 1.0 <= sleep.delays[1] <= 1.1
    assert len(mattermost_server.posts) == 1


def test_gives_up_after_max_retries(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    mattermost_server.fail_next(10, status=503)
    exporter, sleep = exporter_for(mattermost_server, max_retries=2)

    with pytest.raises(ExportError) as raised:
        exporter.export(make_alert())

    assert not raised.value.permanent
    assert raised.value.kind == "server_error"
    assert len(mattermost_server.requests) == 3 and len(sleep.delays) == 2


@pytest.mark.parametrize(
    ("retry_after", "settings", "delay"),
    [(7, {}, 7.0), (3600, {"max_backoff_seconds": 30.0}, 30.0)],
    ids=["honoured", "capped"],
)
def test_retry_after_on_429_is_honoured_up_to_the_backoff_cap(
    mattermost_server: FakeMattermostServer,
    make_alert: MakeAlert,
    retry_after: int,
    settings: dict[str, float],
    delay: float,
) -> None:
    mattermost_server.rate_limit_next(1, retry_after=retry_after)
    exporter, sleep = exporter_for(mattermost_server, **settings)

    exporter.export(make_alert())

    assert sleep.delays == [delay]
    assert len(mattermost_server.posts) == 1


def test_rejected_token_is_permanent_and_never_leaks(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mattermost_server.reject_token()
    exporter, sleep = exporter_for(mattermost_server)

    with pytest.raises(ExportError) as raised:
        exporter.export(make_alert())

    assert raised.value.permanent
    assert "token" in str(raised.value) and "401" in str(raised.value)
    assert len(mattermost_server.requests) == 1 and sleep.delays == []
    assert mattermost_server.token not in str(raised.value) + repr(raised.value)
    assert mattermost_server.token not in caplog.text


def test_unknown_channel_is_permanent(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    exporter = MattermostExporter(mattermost_server.url, mattermost_server.token, "elsewhere")

    with pytest.raises(ExportError) as raised:
        exporter.export(make_alert())

    assert raised.value.permanent and raised.value.kind == "channel"
    assert "channel elsewhere not found or no permission" in str(raised.value)
    assert mattermost_server.posts == []


def test_wrong_path_is_reported_as_no_api(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    exporter = MattermostExporter(mattermost_server.url + "/wrong", mattermost_server.token, "c")

    with pytest.raises(ExportError) as raised:
        exporter.export(make_alert())

    assert raised.value.permanent and "check mattermost_server_url" in str(raised.value)


def test_hanging_server_times_out(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exporter, _ = exporter_for(mattermost_server, timeout_seconds=0.5, max_retries=0)
    mattermost_server.hang()
    try:
        with pytest.raises(ExportError) as raised:
            exporter.export(make_alert())
    finally:
        mattermost_server.release()

    assert raised.value.kind == "timeout" and not raised.value.permanent
    assert mattermost_server.token not in str(raised.value) + caplog.text


def test_unreachable_server_is_a_connection_error(make_alert: MakeAlert) -> None:
    with FakeMattermostServer() as server:
        url, token, channel = server.url, server.token, server.channel_id
    exporter = MattermostExporter(url, token, channel, max_retries=1, sleep=RecordingSleep())

    with pytest.raises(ExportError) as raised:
        exporter.export(make_alert())

    assert raised.value.kind == "connection" and not raised.value.permanent
    assert token not in str(raised.value)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mattermostdriver", None)

    with pytest.raises(RuntimeError) as raised:
        MattermostExporter("https://mm.example.com", "secret-token", "chan")

    assert "otel-wpm[mattermost]" in str(raised.value) and "secret-token" not in str(raised.value)


def test_report_refused_as_too_large_still_posts_the_alert(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    exporter, _ = exporter_for(mattermost_server)
    exporter.export(make_alert())
    mattermost_server.fail_next(1, status=413)  # the next upload

    exporter.export(make_alert(route="/big"))

    last = mattermost_server.posts[-1]
    assert "/big" in last["message"] and last["file_ids"] == []
    assert "[report](" in last["message"]


def test_long_query_still_posts_and_the_report_keeps_it(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    query = "q=" + "x" * 20_000
    report = f"<html>{query}</html>".encode()
    exporter, _ = exporter_for(mattermost_server)

    exporter.export(make_alert(url=f"https://shop.example.com/search?{query}", report_html=report))

    [post] = mattermost_server.posts
    assert len(post["message"]) <= MAX_MESSAGE_CHARS
    assert "https://shop.example.com/search?q=xxx" in post["message"]
    assert mattermost_server.files[0].data == report


# -- Mattermost: the deadline and test alerts ----------------------------------------------


def test_posts_over_tls(plain_or_tls_server: FakeMattermostServer, make_alert: MakeAlert) -> None:
    exporter, _ = exporter_for(plain_or_tls_server)

    exporter.export(make_alert())

    assert len(plain_or_tls_server.posts) == 1


def test_timeout_is_a_deadline_for_a_server_that_trickles(
    plain_or_tls_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    server = plain_or_tls_server
    # Each byte comes well within the timeout, the whole answer far after it.
    server.trickle(0.2)
    exporter, _ = exporter_for(server, timeout_seconds=1.0, max_retries=0)

    error = raised_within(LIVENESS_SECONDS, lambda: exporter.export(make_alert()))

    assert isinstance(error, ExportError), error
    assert error.kind == "timeout" and not error.permanent
    assert "within 1 s (mattermost_timeout_seconds) to log in" in error.message
    assert server.posts == []


def test_deadline_spans_log_in_upload_and_post_together(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    # Each answer alone comes well within the timeout; log in, upload and post together don't.
    mattermost_server.delay_answers(0.8)
    exporter, _ = exporter_for(mattermost_server, timeout_seconds=1.5, max_retries=0)

    error = raised_within(LIVENESS_SECONDS, lambda: exporter.export(make_alert()))

    assert isinstance(error, ExportError) and error.kind == "timeout", error
    assert mattermost_server.posts == []


@pytest.mark.parametrize("fault", ["503", "connection refused", "hang"])
def test_test_alert_tries_once_and_says_why(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert, fault: str
) -> None:
    url = mattermost_server.url
    if fault == "503":
        mattermost_server.fail_next(10, status=503)
    elif fault == "connection refused":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        mattermost_server.hang()
    sleep = RecordingSleep()
    exporter = MattermostExporter(
        url, mattermost_server.token, mattermost_server.channel_id, timeout_seconds=1.0, sleep=sleep
    )

    try:
        error = raised_within(LIVENESS_SECONDS, lambda: exporter.export(make_alert(is_test=True)))
    finally:
        mattermost_server.release()

    assert isinstance(error, ExportError), error
    assert sleep.delays == []
    expected = {
        "503": "Mattermost failed to log in (503)",
        "connection refused": "cannot connect to Mattermost to log in: Connection refused",
        "hang": "Mattermost did not answer within 1 s (mattermost_timeout_seconds) to log in",
    }[fault]
    assert error.message == expected
    if fault == "503":
        assert [r.status for r in mattermost_server.requests] == [503]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_is_not_held_by_a_log_in_under_way_at_fork(
    mattermost_server: FakeMattermostServer, make_alert: MakeAlert
) -> None:
    exporter, _ = exporter_for(mattermost_server)
    dispatcher = AlertDispatcher([exporter], MemoryDedupStore(), window_seconds=0, stats=Stats())
    exporter._login_lock.acquire()  # as the delivery thread holds it while it logs in
    pid = os.fork()
    if pid == 0:  # the child: forksafe has renewed the dispatcher, which renews its exporters
        code = 1
        try:
            result = dispatcher.send_test_alert(make_alert(is_test=True))
            code = 0 if result["success"] else 2
        finally:
            os._exit(code)
    exporter._login_lock.release()

    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert len(mattermost_server.posts) == 1
