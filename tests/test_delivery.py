"""The dispatcher: background delivery, de-duplication, bounded queue, fork safety."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable

import pytest
from apps.helpers import wait_until
from mattermost_server import FakeMattermostServer

from otel_wpm._runtime.stats import Stats
from otel_wpm.alerting.alert import Alert
from otel_wpm.alerting.dedup import MemoryDedupStore, SQLiteDedupStore
from otel_wpm.alerting.dispatch import AlertDispatcher
from otel_wpm.exporters import AlertExporter, ExportError, LocalFileExporter, MattermostExporter

MakeAlert = Callable[..., Alert]
WINDOW = 60.0


class RecordingExporter(AlertExporter):
    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.alerts: list[Alert] = []
        self.closed = False

    def export(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def close(self) -> None:
        self.closed = True


class BlockingExporter(RecordingExporter):
    """Blocks every export until released; tells when the first export started."""

    def __init__(self) -> None:
        super().__init__("blocking")
        self.started = threading.Event()
        self.released = threading.Event()

    def export(self, alert: Alert) -> None:
        self.started.set()
        self.released.wait()
        super().export(alert)


class FailingExporter(RecordingExporter):
    """Raises ``error`` on every export, until ``error`` is set to None."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__("failing")
        self.error = error

    def export(self, alert: Alert) -> None:
        super().export(alert)
        if self.error is not None:
            raise self.error


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stats() -> Stats:
    return Stats()


def dispatcher_with(
    stats: Stats,
    *exporters: AlertExporter,
    window: float = 0.0,
    queue_size: int = 1000,
    clock: Callable[[], float] | None = None,
) -> AlertDispatcher:
    store = MemoryDedupStore(clock=clock) if clock else MemoryDedupStore()
    return AlertDispatcher(list(exporters), store, window, stats, queue_size=queue_size)


def mattermost_exporter(server: FakeMattermostServer, **options: float) -> MattermostExporter:
    """A Mattermost exporter of ``server`` with backoffs short enough for a test."""
    return MattermostExporter(
        server.url,
        server.token,
        server.channel_id,
        backoff_base_seconds=0.01,
        max_backoff_seconds=0.05,
        **options,  # type: ignore[arg-type]
    )


def alert_file_routes(directory: Path) -> list[str]:
    path = directory / "alerts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["route"] for line in path.read_text().splitlines()]


def test_delivers_submitted_alerts_to_every_exporter(stats: Stats, make_alert: MakeAlert) -> None:
    first, second = RecordingExporter("a"), RecordingExporter("b")
    dispatcher = dispatcher_with(stats, first, second)

    dispatcher.submit(make_alert(route="/one"))
    dispatcher.submit(make_alert(route="/two"))

    assert dispatcher.flush(timeout=10)
    assert [a.route for a in first.alerts] == ["/one", "/two"] == [a.route for a in second.alerts]
    assert stats.snapshot()["alerts_sent"] == 4  # counted per delivery: each alert in each lane


def test_submit_never_blocks_and_drops_the_oldest(stats: Stats, make_alert: MakeAlert) -> None:
    exporter = BlockingExporter()
    dispatcher = dispatcher_with(stats, exporter, queue_size=10)
    dispatcher.submit(make_alert(route="/in-flight"))
    assert exporter.started.wait(10)

    for number in range(3000):
        dispatcher.submit(make_alert(route=f"/{number}"))

    assert stats.snapshot()["alerts_dropped"] == 2990
    exporter.released.set()
    assert dispatcher.flush(timeout=10)
    assert [a.route for a in exporter.alerts] == ["/in-flight"] + [
        f"/{n}" for n in range(2990, 3000)
    ]


def test_duplicates_are_suppressed_then_counted_on_the_next_alert(
    stats: Stats, make_alert: MakeAlert
) -> None:
    clock = FakeClock()
    exporter = RecordingExporter()
    dispatcher = dispatcher_with(stats, exporter, window=WINDOW, clock=clock)

    for _ in range(3):
        dispatcher.submit(make_alert())
    dispatcher.submit(make_alert(route="/other"))
    assert dispatcher.flush(timeout=10)
    clock.now += WINDOW
    dispatcher.submit(make_alert())
    assert dispatcher.flush(timeout=10)

    assert [(a.route, a.suppressed_since_last) for a in exporter.alerts] == [
        ("/users/<id>", 0),
        ("/other", 0),
        ("/users/<id>", 2),
    ]
    counts = stats.snapshot()
    assert (counts["alerts_sent"], counts["alerts_suppressed"]) == (3, 2)


def test_test_alerts_bypass_deduplication(stats: Stats, make_alert: MakeAlert) -> None:
    exporter = RecordingExporter()
    dispatcher = dispatcher_with(stats, exporter, window=WINDOW, clock=FakeClock())

    for _ in range(3):
        dispatcher.submit(make_alert(is_test=True))

    assert dispatcher.flush(timeout=10)
    assert len(exporter.alerts) == 3


def test_failures_are_counted_and_logged_once(
    stats: Stats, make_alert: MakeAlert, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingExporter(ExportError("Mattermost did not answer in time", kind="timeout"))
    working = RecordingExporter()
    dispatcher = dispatcher_with(stats, failing, working)

    for number in range(5):
        dispatcher.submit(make_alert(route=f"/{number}"))
    assert dispatcher.flush(timeout=10)

    failures = [r for r in caplog.records if r.name == "otel_wpm.alerting.lane"]
    assert len(failures) == 1
    assert "failing" in failures[0].getMessage() and "did not answer" in failures[0].getMessage()
    counts = stats.snapshot()
    assert (counts["alerts_sent"], counts["alerts_failed"]) == (5, 5)


def test_a_new_kind_of_failure_and_recovery_are_logged(
    stats: Stats, make_alert: MakeAlert, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_wpm.alerting.lane")
    exporter = FailingExporter(ExportError("timed out", kind="timeout"))
    dispatcher = dispatcher_with(stats, exporter)

    def send(count: int) -> None:
        for _ in range(count):
            dispatcher.submit(make_alert())
        assert dispatcher.flush(timeout=10)

    send(2)
    exporter.error = ExportError("Mattermost rejected the token (401)", permanent=True, kind="auth")
    send(2)
    exporter.error = None
    send(1)

    messages = [r.getMessage() for r in caplog.records if r.name == "otel_wpm.alerting.lane"]
    assert len(messages) == 3
    assert "timed out" in messages[0]
    assert "rejected the token" in messages[1] and "configuration" in messages[1]
    assert "works again" in messages[2]
    assert stats.snapshot()["alerts_sent"] == 1


def test_an_unexpected_exporter_exception_does_not_stop_delivery(
    stats: Stats, make_alert: MakeAlert
) -> None:
    broken = FailingExporter(RuntimeError("bug"))
    working = RecordingExporter()
    dispatcher = dispatcher_with(stats, broken, working)

    dispatcher.submit(make_alert())
    dispatcher.submit(make_alert())

    assert dispatcher.flush(timeout=10)
    assert len(working.alerts) == 2
    assert stats.snapshot()["alerts_failed"] == 2


def test_flush_with_nothing_submitted_is_immediate(stats: Stats) -> None:
    assert dispatcher_with(stats, RecordingExporter()).flush(timeout=0)


def test_flush_reports_a_timeout(stats: Stats, make_alert: MakeAlert) -> None:
    exporter = BlockingExporter()
    dispatcher = dispatcher_with(stats, exporter)
    dispatcher.submit(make_alert())
    assert exporter.started.wait(10)

    assert not dispatcher.flush(timeout=0.01)
    exporter.released.set()
    assert dispatcher.flush(timeout=10)


def test_shutdown_delivers_what_is_queued_then_closes(stats: Stats, make_alert: MakeAlert) -> None:
    exporter = RecordingExporter()
    dispatcher = dispatcher_with(stats, exporter)
    for number in range(20):
        dispatcher.submit(make_alert(route=f"/{number}"))

    dispatcher.shutdown(timeout=10)

    assert len(exporter.alerts) == 20 and exporter.closed
    dispatcher.submit(make_alert())
    assert stats.snapshot()["alerts_dropped"] == 1


def test_shutdown_gives_up_on_a_hung_exporter(stats: Stats, make_alert: MakeAlert) -> None:
    exporter = BlockingExporter()
    dispatcher = dispatcher_with(stats, exporter)
    for _ in range(3):
        dispatcher.submit(make_alert())
    assert exporter.started.wait(10)

    dispatcher.shutdown(timeout=0.05)
    exporter.released.set()

    assert exporter.closed
    assert stats.snapshot()["alerts_dropped"] == 2


def test_send_test_alert_reports_each_exporter(
    stats: Stats, make_alert: MakeAlert, mattermost_server: FakeMattermostServer, tmp_path: Path
) -> None:
    mattermost = MattermostExporter(
        mattermost_server.url, mattermost_server.token, mattermost_server.channel_id
    )
    dispatcher = dispatcher_with(stats, LocalFileExporter(tmp_path), mattermost)

    result = dispatcher.send_test_alert(make_alert(is_test=True))

    assert result == {
        "success": True,
        "notifier_results": {"local_file": True, "mattermost": True},
        "error": None,
    }
    assert "otel-wpm test alert" in mattermost_server.posts[0]["message"]
    assert (tmp_path / "alerts.jsonl").exists()


def test_send_test_alert_error_is_safe_to_show(
    stats: Stats,
    make_alert: MakeAlert,
    mattermost_server: FakeMattermostServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    mattermost_server.reject_token()
    mattermost = MattermostExporter(
        mattermost_server.url, mattermost_server.token, mattermost_server.channel_id
    )
    dispatcher = dispatcher_with(stats, LocalFileExporter(tmp_path), mattermost)

    result = dispatcher.send_test_alert(make_alert(is_test=True))

    assert result["success"] is False
    assert result["notifier_results"] == {"local_file": True, "mattermost": False}
    assert "mattermost: Mattermost rejected the token (401)" in result["error"]
    assert mattermost_server.token not in result["error"] + caplog.text


def test_send_test_alert_without_exporters(stats: Stats, make_alert: MakeAlert) -> None:
    result = dispatcher_with(stats).send_test_alert(make_alert(is_test=True))

    assert result == {
        "success": False,
        "notifier_results": {},
        "error": "no alert exporters are configured",
    }


def test_a_forked_child_delivers_its_own_alerts(
    stats: Stats, make_alert: MakeAlert, tmp_path: Path
) -> None:
    recording = RecordingExporter()
    dispatcher = dispatcher_with(stats, LocalFileExporter(tmp_path), recording, window=WINDOW)
    dispatcher.submit(make_alert(route="/parent"))
    assert dispatcher.flush(timeout=10)  # the parent's lane threads are running
    store = dispatcher.dedup
    assert isinstance(store, MemoryDedupStore)

    # Fork while the parent holds the locks, as its lane threads could at any moment.
    with contextlib.ExitStack() as held:
        for lane in dispatcher.lanes:
            held.enter_context(lane._worker._condition)
        held.enter_context(store._lock)
        pid = os.fork()
    if pid == 0:
        ok = False
        try:
            dispatcher.submit(make_alert(route="/child"))
            ok = (
                dispatcher.flush(timeout=10)
                and alert_file_routes(tmp_path) == ["/parent", "/child"]
                and [a.route for a in recording.alerts] == ["/parent", "/child"]
            )
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert alert_file_routes(tmp_path) == ["/parent", "/child"]
    dispatcher.submit(make_alert(route="/parent-again"))
    assert dispatcher.flush(timeout=10)
    assert [a.route for a in recording.alerts] == ["/parent", "/parent-again"]


def test_the_dedup_key_is_per_service_and_route_and_no_route_ignores_the_method(
    make_alert: MakeAlert,
) -> None:
    """Two services sharing a Redis store keep their own windows; scanners share one."""
    assert make_alert(service="shop").dedup_key != make_alert(service="billing").dedup_key
    assert make_alert(method="GET").dedup_key != make_alert(method="POST").dedup_key
    get_404 = make_alert(method="GET", route="(no route: 404)", status=404)
    post_404 = make_alert(method="POST", route="(no route: 404)", status=404)
    assert get_404.dedup_key == post_404.dedup_key


# -- the window: claimed by a delivery, per exporter ---------------------------------------


def test_a_failed_delivery_does_not_use_up_the_window(
    stats: Stats, make_alert: MakeAlert, mattermost_server: FakeMattermostServer, tmp_path: Path
) -> None:
    fake = mattermost_server
    dispatcher = AlertDispatcher(
        [LocalFileExporter(tmp_path), mattermost_exporter(fake, max_retries=2)],
        SQLiteDedupStore(tmp_path / "dedup.sqlite3"),
        WINDOW,
        stats,
    )
    fake.fail_next(3, status=503)  # the first attempt and both retries, then it recovers
    dispatcher.submit(make_alert(route="/a", trace_id="1" * 32))
    assert dispatcher.flush(timeout=30)
    assert fake.posts == []

    dispatcher.submit(make_alert(route="/a", trace_id="2" * 32))
    assert dispatcher.flush(timeout=30)

    # Mattermost's window was given back: the next slow GET /a is posted, and says
    # that one alert before it did not reach the channel.
    [post] = fake.posts
    assert "2" * 32 in post["message"]
    assert "1 similar alert suppressed since the last one" in post["message"]
    # The file had the first alert: its window holds the second back.
    assert alert_file_routes(tmp_path) == ["/a"]
    counts = stats.snapshot()
    assert (counts["alerts_sent"], counts["alerts_failed"], counts["alerts_suppressed"]) == (
        2,
        1,
        1,
    )


def test_each_exporter_keeps_its_own_window(stats: Stats, make_alert: MakeAlert) -> None:
    clock = FakeClock()
    steady = RecordingExporter("file")
    flaky = FailingExporter(ExportError("Mattermost failed (503)", kind="server_error"))
    dispatcher = dispatcher_with(stats, steady, flaky, window=WINDOW, clock=clock)

    def send(*routes: str) -> None:
        for route in routes:
            dispatcher.submit(make_alert(route=route))
        assert dispatcher.flush(timeout=10)

    send("/a", "/a")  # both fail in the flaky exporter: neither uses its window
    flaky.error = None
    send("/a", "/a", "/b")
    clock.now += WINDOW
    send("/a")

    assert [(a.route, a.suppressed_since_last) for a in steady.alerts] == [
        ("/a", 0),
        ("/b", 0),
        ("/a", 3),
    ]
    delivered = [(a.route, a.suppressed_since_last) for a in flaky.alerts[2:]]
    assert delivered == [("/a", 2), ("/b", 0), ("/a", 1)]
    # Counted per delivery: each alert once in each exporter's lane.
    counts = stats.snapshot()
    assert counts["alerts_sent"] + counts["alerts_failed"] + counts["alerts_suppressed"] == 2 * 6
    assert (counts["alerts_sent"], counts["alerts_failed"], counts["alerts_suppressed"]) == (
        6,
        2,
        4,
    )


def test_exporters_of_the_same_name_keep_windows_of_their_own(
    stats: Stats, make_alert: MakeAlert
) -> None:
    first, second = RecordingExporter("same"), RecordingExporter("same")
    dispatcher = dispatcher_with(stats, first, second, window=WINDOW, clock=FakeClock())

    dispatcher.submit(make_alert())
    assert dispatcher.flush(timeout=10)

    assert len(first.alerts) == len(second.alerts) == 1


# -- lanes: a slow exporter holds back no other --------------------------------------------


@pytest.mark.parametrize("fault", ["hang", "trickle"])
def test_the_file_never_waits_for_mattermost(
    stats: Stats,
    make_alert: MakeAlert,
    mattermost_server: FakeMattermostServer,
    tmp_path: Path,
    fault: str,
) -> None:
    fake = mattermost_server
    mattermost = mattermost_exporter(fake, timeout_seconds=60.0, max_retries=0)
    dispatcher = dispatcher_with(stats, LocalFileExporter(tmp_path), mattermost)
    if fault == "hang":
        fake.hang()
    else:
        fake.trickle(1.0)  # a log-in answer of ~250 bytes would take minutes
    try:
        for number in range(3):
            dispatcher.submit(make_alert(route=f"/{number}"))

        wait_until(lambda: len(alert_file_routes(tmp_path)) == 3, "three lines in alerts.jsonl")
        assert fake.posts == []  # Mattermost has not even taken the first
    finally:
        fake.release()
        dispatcher.shutdown(timeout=0)
    assert alert_file_routes(tmp_path) == ["/0", "/1", "/2"]


def test_shutdown_drains_the_file_while_mattermost_hangs(
    stats: Stats, make_alert: MakeAlert, mattermost_server: FakeMattermostServer, tmp_path: Path
) -> None:
    fake = mattermost_server
    mattermost = mattermost_exporter(fake, timeout_seconds=60.0, max_retries=0)
    dispatcher = dispatcher_with(stats, LocalFileExporter(tmp_path), mattermost)
    fake.hang()
    try:
        for number in range(3):
            dispatcher.submit(make_alert(route=f"/{number}"))
        stopping = threading.Thread(target=dispatcher.shutdown, args=(60.0,))
        stopping.start()

        wait_until(lambda: len(alert_file_routes(tmp_path)) == 3, "three lines in alerts.jsonl")
        assert stopping.is_alive() and fake.posts == []
    finally:
        fake.release()
    stopping.join(60)

    assert not stopping.is_alive()
    assert len(fake.posts) == 3
    counts = stats.snapshot()
    assert (counts["alerts_sent"], counts["alerts_dropped"]) == (6, 0)
