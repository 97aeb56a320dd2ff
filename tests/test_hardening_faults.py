"""When what the monitor depends on fails, the app keeps serving and the monitor recovers.

Every test runs a real werkzeug server and sends real HTTP requests. Faults:
the output directory missing, unusable (its parent is a regular file), read-only
and full (small tmpfs mounts, when this process may mount; skipped otherwise);
Mattermost down, failing with 500s, rate-limiting, hanging and rejecting the
token; a server span that never ends on a pooled thread; and a request that hangs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
from apps.hardening_app import (
    LogRecords,
    ParsedReport,
    alert_lines,
    make_app,
    recording_logs,
    reports_of,
)
from apps.helpers import Gates, free_port, tmpfs, wait_until
from apps.watched import Watched, served, watch
from mattermost_server import FakeMattermostServer
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from werkzeug.serving import BaseWSGIServer

from otel_wpm import Config
from otel_wpm.alerting.dispatch import DEDUP_FILE_NAME
from otel_wpm.exporters import MattermostExporter

THRESHOLD = 0.1
SLOW = {"X-Slow": "0.15"}


def slow_get(url: str, path: str = "/slow", **headers: str) -> requests.Response:
    response = requests.get(url + path, headers={**SLOW, **headers}, timeout=30)
    assert response.status_code == 200
    return response


def warnings_about(logs: LogRecords, text: str) -> list[str]:
    return [m for m in logs.messages() if text in m]


@contextlib.contextmanager
def serving(config: Config, gates: Optional[Gates] = None) -> Iterator[Watched]:
    """The hardening app, watched under ``config`` and served; its gates opened after."""
    gates = gates or Gates()
    try:
        with served(make_app(gates), config) as watched:
            yield watched
    finally:
        gates.release_all()


# --- the output directory ---------------------------------------------------------------


def test_missing_output_directory_is_created_owner_only(tmp_path: Path) -> None:
    output = tmp_path / "not" / "yet" / "reports"
    config = Config(threshold_seconds=THRESHOLD, local_output_dir=str(output))
    with serving(config) as watched:
        trace_id = slow_get(watched.url).headers["X-Trace-Id"]
        watched.settle(trace_id)
    assert stat.S_IMODE(output.stat().st_mode) == 0o700
    [report] = reports_of(output, trace_id)
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    for name in ("alerts.jsonl", DEDUP_FILE_NAME):
        assert stat.S_IMODE((output / name).stat().st_mode) == 0o600, name


def _assert_failure_then_recovery(
    output: Path, break_it: Callable[[], None], repair: Callable[[], None], reason: str
) -> None:
    """Three slow requests while broken, then one after repair; checks logs and stats."""
    config = Config(threshold_seconds=THRESHOLD, local_output_dir=str(output), alert_window_days=0)
    break_it()
    with recording_logs() as logs, serving(config) as watched:
        for _ in range(3):
            watched.settle(slow_get(watched.url).headers["X-Trace-Id"])
        assert requests.get(watched.url + "/fast", timeout=30).status_code == 200
        stats = watched.processor.get_stats()
        assert stats["reports_failed"] == 3 and stats["reports_written"] == 0
        assert stats["alerts_failed"] == 3  # alerts.jsonl lives there too
        failures = warnings_about(logs, "cannot write reports to")
        assert len(failures) == 1, logs.messages()
        assert str(output) in failures[0] and reason in failures[0]
        assert len(warnings_about(logs, "Alert exporter local_file failed")) == 1

        repair()
        trace_id = slow_get(watched.url).headers["X-Trace-Id"]
        watched.settle(trace_id)
        assert reports_of(output, trace_id)
        assert [a["trace_id"] for a in alert_lines(output)] == [trace_id]
        stats = watched.processor.get_stats()
        assert stats["reports_written"] == 1 and stats["reports_failed"] == 3
        recovered = warnings_about(logs, "writes reports to")
        assert len(recovered) == 1 and str(output) in recovered[0]
        assert len(warnings_about(logs, "Alert exporter local_file works again")) == 1


def test_unusable_output_directory_is_logged_once_and_recovers(tmp_path: Path) -> None:
    # Tests may run as root, where permission bits do not stop writes; a regular
    # file where the parent directory should be stops mkdir for anyone.
    parent = tmp_path / "parent"
    output = parent / "reports"

    def break_it() -> None:
        parent.write_text("a file, not a directory")

    def repair() -> None:
        parent.unlink()

    _assert_failure_then_recovery(output, break_it, repair, "Not a directory")


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def test_read_only_output_directory_is_logged_once_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "4m", read_only=True) as output:
        _assert_failure_then_recovery(
            output,
            break_it=lambda: None,
            repair=lambda: _remount(output, "rw"),
            reason="Read-only file system",
        )


def test_full_output_directory_is_logged_once_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "256k") as output:
        filler = output / "filler"

        def break_it() -> None:
            with contextlib.suppress(OSError), open(filler, "wb") as stream:
                while True:
                    stream.write(b"\0" * 4096)
                    stream.flush()

        _assert_failure_then_recovery(
            output, break_it, repair=filler.unlink, reason="No space left on device"
        )
        assert not [p for p in output.iterdir() if p.name.endswith(".tmp")]


# --- Mattermost -----------------------------------------------------------------------


def _mattermost_config(tmp_path: Path, url: str, token: str, channel: str, **extra: Any) -> Config:
    settings: dict[str, Any] = {
        "threshold_seconds": THRESHOLD,
        "local_output_dir": str(tmp_path / "reports"),
        "enable_mattermost": True,
        "mattermost_server_url": url,
        "mattermost_token": token,
        "mattermost_channel_id": channel,
        "mattermost_timeout_seconds": 5.0,
        "alert_window_days": 0,
        **extra,
    }
    return Config(**settings)


def _fast_retries(watched: Watched) -> MattermostExporter:
    """The processor's Mattermost exporter, with short backoffs so retries fit a test."""
    [exporter] = [
        e for e in watched.processor.reporter.alerts.exporters if isinstance(e, MattermostExporter)
    ]
    exporter.backoff_base_seconds = 0.01
    exporter.max_backoff_seconds = 0.05
    return exporter


def _assert_token_never_logged(logs: LogRecords, token: str) -> None:
    for message in logs.messages():
        assert token not in message


@pytest.fixture
def all_logs() -> Iterator[LogRecords]:
    """Every record of every logger at DEBUG (mattermostdriver, urllib3 included)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    with recording_logs("") as logs:
        yield logs
    root.setLevel(level)


def test_mattermost_500s_are_retried_then_delivered(
    tmp_path: Path, mattermost_server: FakeMattermostServer, all_logs: LogRecords
) -> None:
    fake = mattermost_server
    config = _mattermost_config(tmp_path, fake.url, fake.token, fake.channel_id)
    with serving(config) as watched:
        _fast_retries(watched)
        fake.fail_next(3, status=500)
        watched.settle(slow_get(watched.url).headers["X-Trace-Id"])
        assert len(fake.posts) == 1
        assert [r.status for r in fake.requests][:3] == [500, 500, 500]
        stats = watched.processor.get_stats()
        # Counted per delivery: the line in alerts.jsonl and the post.
        assert stats["alerts_sent"] == 2 and stats["alerts_failed"] == 0
    _assert_token_never_logged(all_logs, fake.token)


def test_mattermost_503_does_not_use_up_the_window_of_the_route(
    tmp_path: Path, mattermost_server: FakeMattermostServer
) -> None:
    fake = mattermost_server
    config = _mattermost_config(
        tmp_path, fake.url, fake.token, fake.channel_id, alert_window_days=1
    )
    with serving(config) as watched:
        exporter = _fast_retries(watched)
        fake.fail_next(exporter.max_retries + 1, status=503)  # every try of the first alert
        watched.settle(slow_get(watched.url, "/a").headers["X-Trace-Id"])
        assert fake.posts == []
        second = slow_get(watched.url, "/a").headers["X-Trace-Id"]
        watched.settle(second)
        third = slow_get(watched.url, "/a").headers["X-Trace-Id"]
        watched.settle(third)
    # Mattermost recovered: the next slow GET /a is posted; the one after waits out the window.
    [post] = fake.posts
    assert second in post["message"] and third not in post["message"]
    # alerts.jsonl got the first: its window holds the others back.
    assert len(alert_lines(tmp_path / "reports")) == 1


@pytest.mark.parametrize("fault", ["500 storm", "429 storm", "token rejected", "down"])
def test_mattermost_failures_are_counted_and_logged_once(
    tmp_path: Path, mattermost_server: FakeMattermostServer, all_logs: LogRecords, fault: str
) -> None:
    fake = mattermost_server
    url_of_mattermost = fake.url
    if fault == "500 storm":
        fake.fail_next(1000, status=500)
    elif fault == "429 storm":
        fake.rate_limit_next(1000, retry_after=0.01)
    elif fault == "token rejected":
        fake.reject_token()
    else:
        url_of_mattermost = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = _mattermost_config(tmp_path, url_of_mattermost, fake.token, fake.channel_id)
    with serving(config) as watched:
        _fast_retries(watched)
        for index in range(3):
            watched.settle(slow_get(watched.url, f"/route{index}").headers["X-Trace-Id"])
        assert requests.get(watched.url + "/fast", timeout=30).status_code == 200
        stats = watched.processor.get_stats()
    assert fake.posts == []
    # The local file exporter still delivers: the alert is sent, Mattermost's part failed.
    assert stats["alerts_failed"] == 3 and stats["alerts_sent"] == 3
    assert len(alert_lines(tmp_path / "reports")) == 3
    failures = [m for m in all_logs.messages() if "Alert exporter mattermost failed" in m]
    assert len(failures) == 1, failures
    if fault == "token rejected":
        assert "401" in failures[0]
        assert fake.request_count("GET", "/users/me") == 3  # no retries of a bad token
    if fault == "down":
        assert "cannot connect" in failures[0]
    _assert_token_never_logged(all_logs, fake.token)


def _slow_requests_reported(watched: Watched, output: Path, count: int) -> list[requests.Response]:
    """``count`` slow requests to routes of their own, each answered and its report written."""
    answers = []
    for index in range(count):
        answers.append(slow_get(watched.url, f"/hung{index}"))
        trace_id = answers[-1].headers["X-Trace-Id"]
        watched.span_of(trace_id)
        wait_until(lambda t=trace_id: reports_of(output, t), "the report")
    return answers


def test_hung_mattermost_never_delays_responses_and_bounds_its_queue(
    tmp_path: Path, mattermost_server: FakeMattermostServer, all_logs: LogRecords
) -> None:
    fake = mattermost_server
    config = _mattermost_config(
        tmp_path,
        fake.url,
        fake.token,
        fake.channel_id,
        alert_queue_size=2,
        mattermost_timeout_seconds=30.0,
    )
    requests_sent = 6
    output = tmp_path / "reports"
    fake.hang()
    try:
        with serving(config) as watched:
            processor = watched.processor
            answers = _slow_requests_reported(watched, output, requests_sent)
            # Every answer came back while Mattermost was still hanging.
            assert not fake._released.is_set()
            assert [a.status_code for a in answers] == [200] * requests_sent
            # The local file has its own lane: every alert is written while Mattermost hangs.
            wait_until(lambda: len(alert_lines(output)) == requests_sent, "every alert line")
            assert not fake._released.is_set()
            # In Mattermost's lane one alert is stuck in delivery, two wait in its queue,
            # the rest were dropped.
            wait_until(
                lambda: processor.get_stats()["alerts_dropped"] == requests_sent - 3,
                "alerts past the queue bound to be dropped",
            )
            fake.release()
            assert processor.force_flush(30_000)
            stats = processor.get_stats()
    finally:
        fake.release()
    assert stats["reports_failed"] == 0
    assert stats["reports_written"] == requests_sent
    assert stats["alerts_dropped"] == requests_sent - 3 and stats["alerts_failed"] == 0
    assert stats["alerts_sent"] == requests_sent + 3
    assert len(fake.posts) == 3
    assert len(alert_lines(output)) == requests_sent
    dropped = [m for m in all_logs.messages() if "Alert queue full" in m]
    assert len(dropped) == 1
    _assert_token_never_logged(all_logs, fake.token)


def test_update_config_while_mattermost_hangs_returns_at_once_and_loses_no_alert(
    tmp_path: Path, mattermost_server: FakeMattermostServer
) -> None:
    fake = mattermost_server
    patient = {"mattermost_timeout_seconds": 60.0, "shutdown_timeout_seconds": 60.0}
    config = _mattermost_config(tmp_path, fake.url, fake.token, fake.channel_id, **patient)
    output = tmp_path / "reports"
    requests_sent = 4
    fake.hang()
    try:
        with serving(config) as watched:
            processor = watched.processor
            _slow_requests_reported(watched, output, requests_sent)
            # One alert is stuck in delivery, the others wait in the queue.
            for change in ({"threshold_seconds": 0.2}, {"mattermost_timeout_seconds": 30.0}):
                updated = threading.Event()

                def update(
                    change: dict[str, Any] = change, done: threading.Event = updated
                ) -> None:
                    processor.update_config(processor.config.replace(**change))
                    done.set()

                threading.Thread(target=update, daemon=True).start()
                assert updated.wait(30), f"update_config({change}) waited for Mattermost"
                assert not fake._released.is_set()
            fake.release()
            assert processor.force_flush(60_000)
            stats = processor.get_stats()
    finally:
        fake.release()
    assert stats["alerts_dropped"] == 0 and stats["alerts_failed"] == 0
    assert stats["alerts_sent"] == 2 * requests_sent  # a line and a post for each
    assert len(fake.posts) == requests_sent
    assert len(alert_lines(output)) == requests_sent


# --- a server span that never ends -------------------------------------------------------


class PooledServer(BaseWSGIServer):
    """A werkzeug server that serves every request on the same single pooled thread."""

    def __init__(self, app: Any) -> None:
        super().__init__("127.0.0.1", 0, app)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pooled")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


def leaky_work() -> int:
    return sum(i * i for i in range(20_000))


@pytest.mark.parametrize("engine", ["sampling", "pyinstrument"])
def test_span_that_never_ends_leaks_nothing_into_the_next_request(
    tmp_path: Path, engine: str
) -> None:
    output = tmp_path / "reports"
    config = Config(
        threshold_seconds=THRESHOLD,
        engine=engine,
        max_performance_overhead=100,  # the precise engine profiles every request
        local_output_dir=str(output),
        hung_request_factor=0,
        alert_window_days=0,
    )
    watched = watch(make_app(), config)
    tracer = watched.provider.get_tracer("leaky-middleware")
    leaked = []
    inner = watched.wsgi

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/leak":
            # A server span started on this pooled thread and never ended.
            leaked.append(tracer.start_span("leaked", kind=SpanKind.SERVER, context=Context()))
            leaky_work()
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        return inner(environ, start_response)

    server = PooledServer(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with recording_logs() as logs:
            for _ in range(2):
                assert requests.get(url + "/leak", timeout=30).status_code == 200
                trace_id = slow_get(url, "/after-leak").headers["X-Trace-Id"]
                watched.settle(trace_id)
                [report] = reports_of(output, trace_id)
                text = report.read_text(encoding="utf-8")
                assert "leaky_work" not in text
                page = ParsedReport(text)
                assert page.metadata()["trace_id"] == trace_id
                if engine == "pyinstrument":
                    assert "profiled by the pyinstrument profiler" in page.text
            stale = warnings_about(logs, "never ended")
            assert len(stale) == 1, logs.messages()
            stats = watched.processor.get_stats()
            assert stats["internal_errors"] == 0
            if engine == "pyinstrument":
                assert stats["profiles_precise"] == 2
            assert not [m for m in logs.messages() if "failed" in m]
    finally:
        server.shutdown()
        server.pool.shutdown(wait=True)
        thread.join(10)
        for span in leaked:
            span.end()
        watched.provider.shutdown()


# --- a request that hangs -----------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sampling", "pyinstrument"])
def test_hung_request_is_reported_while_it_still_runs(tmp_path: Path, engine: str) -> None:
    output = tmp_path / "reports"
    config = Config(
        threshold_seconds=THRESHOLD,
        hung_request_factor=3,
        engine=engine,
        max_performance_overhead=100,  # the precise engine profiles every request
        local_output_dir=str(output),
    )
    gates = Gates()
    with serving(config, gates) as watched, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            requests.get, watched.url + "/stuck?page=1", headers={"X-Block": "stuck"}, timeout=30
        )
        assert gates.started("stuck").wait(30)

        def running_report() -> list[Path]:
            return sorted(output.glob("*_running.html")) if output.is_dir() else []

        [report] = wait_until(running_report, "the in-flight report")
        wait_until(lambda: alert_lines(output), "the in-flight alert")
        # Both exist while the app is still blocked on its gate.
        assert not pending.done()
        assert not gates.release("stuck").is_set()
        page = ParsedReport(report.read_text(encoding="utf-8"))
        meta = page.metadata()
        assert meta["in_flight"] is True and meta["status"] is None
        assert "Request still running" in page.text
        assert "hardening_app.py" in report.read_text(encoding="utf-8"), "no current stack"
        [alert] = alert_lines(output)
        assert alert["in_flight"] is True and alert["trace_id"] == meta["trace_id"]

        gates.release("stuck").set()
        response = pending.result(30)
        assert response.status_code == 200
        assert response.headers["X-Trace-Id"] == meta["trace_id"]
        watched.settle(meta["trace_id"])
        final = [p for p in reports_of(output, meta["trace_id"]) if p != report]
        assert len(final) == 1 and not final[0].name.endswith("_running.html")


def test_dedup_and_report_files_are_not_left_world_readable_by_umask(tmp_path: Path) -> None:
    output = tmp_path / "reports"
    old = os.umask(0)
    try:
        config = Config(threshold_seconds=THRESHOLD, local_output_dir=str(output))
        with serving(config) as watched:
            watched.settle(slow_get(watched.url).headers["X-Trace-Id"])
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in output.iterdir()}
    assert stat.S_IMODE(output.stat().st_mode) == 0o700
    assert modes and all(mode == 0o600 for mode in modes.values()), modes
    shutil.rmtree(output)
