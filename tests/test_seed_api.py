"""The examples of web-performance-monitor's documentation, with only the import changed.

otel-wpm keeps the API of web-performance-monitor 1.1.5, whose users paste their
set-up unchanged. Each test here follows one example of that package's README (or
of its example programs), in the shape its users write it: the decorator on a slow
function, ``get_stats()`` and its ``overhead_stats``, ``update_config(**kw)`` at run
time, and ``test_alert_system()`` against a Mattermost that is unreachable, failing or
working. (``Config`` built from ``os.getenv`` values, the middleware one-liner and the
black-list at run time are in ``test_config.py`` and ``test_monitor.py``.)

Real Flask apps on werkzeug's threaded server, real HTTP, the loopback Mattermost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from apps.helpers import free_port, report_files, report_metadata, wait_until
from apps.watched import served
from flask import Flask, request
from mattermost_server import FakeMattermostServer

from otel_wpm import PerformanceMonitor
from otel_wpm.reporting.report_format import is_report_file, parse_metadata

pytestmark = pytest.mark.usefixtures("fresh_globals")

MakeMonitor = Callable[..., PerformanceMonitor]  # the make_monitor fixture (conftest.py)


def users_app() -> Flask:
    # The README's quick start app.
    app = Flask(__name__)

    @app.route("/api/users")
    def get_users() -> dict[str, Any]:
        return {"users": []}

    @app.route("/api/slow")
    def slow() -> dict[str, Any]:
        time.sleep(float(request.args.get("seconds", "0.3")))
        return {"done": True}

    return app


def finished(monitor: PerformanceMonitor, count: int) -> dict[str, Any]:
    """``get_stats()`` once ``count`` requests have ended and their reports are written."""
    wait_until(lambda: monitor.get_stats()["total_requests"] >= count, f"{count} requests")
    assert monitor.flush(10)
    return monitor.get_stats()


def slow_database_query(user_id: int) -> dict[str, Any]:
    time.sleep(0.3)
    return {"user_id": user_id}


# --- the decorator ----------------------------------------------------------------------


def test_the_decorator_reports_a_slow_function_under_its_name(
    make_monitor: MakeMonitor, tmp_path: Path
) -> None:
    monitor = make_monitor(threshold_seconds=0.2)
    query = monitor.create_decorator()(slow_database_query)

    assert query(42) == {"user_id": 42}
    stats = finished(monitor, 1)

    assert stats["slow_requests"] == 1
    (report,) = report_files(tmp_path)
    assert "_slow-database-query_" in report.name
    assert report_metadata(report)["route"] == "slow_database_query"
    (alert,) = (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(alert)["report_file"] == report.name


# --- get_stats ------------------------------------------------------------------------


def test_get_stats_has_the_documented_keys(make_monitor: MakeMonitor) -> None:
    monitor = make_monitor()
    stats = monitor.get_stats()
    # As the README prints them ("监控统计信息"); the example programs gate the
    # average on sample_count.
    lines = [
        f"总请求数: {stats['total_requests']}",
        f"慢请求数: {stats['slow_requests']}",
        f"慢请求率: {stats['slow_request_rate']:.1f}%",
        f"告警发送数: {stats['alerts_sent']}",
    ]
    overhead_stats = stats.get("overhead_stats", {})
    lines.append(f"平均开销: {overhead_stats.get('average_overhead', 0):.2%}")
    assert lines[-1] == "平均开销: 0.00%"
    assert overhead_stats["sample_count"] == 0
    assert isinstance(stats["slow_request_rate"], float)


def test_overhead_reads_near_zero_in_a_lightly_loaded_process(make_monitor: MakeMonitor) -> None:
    monitor = make_monitor()
    idle = monitor.get_stats()["overhead_stats"]
    assert (idle["average_overhead"], idle["sample_count"]) == (0.0, 0)

    with served(users_app(), monitor=monitor) as watched, requests.Session() as session:
        for _ in range(50):
            session.get(watched.url + "/api/users", timeout=10).raise_for_status()
        stats = finished(monitor, 50)

    overhead = stats["overhead_stats"]
    assert overhead["sample_count"] == 50
    # The README's troubleshooting: "above 5 %, raise the threshold". Nothing to raise here.
    assert 0 < overhead["average_overhead"] < 0.05, overhead


# --- update_config ----------------------------------------------------------------------


def test_update_config_with_keywords_applies_to_the_next_requests(
    make_monitor: MakeMonitor, tmp_path: Path
) -> None:
    monitor = make_monitor(threshold_seconds=0.2)
    with served(users_app(), monitor=monitor) as watched:
        requests.get(watched.url + "/api/slow", timeout=10).raise_for_status()
        finished(monitor, 1)
        # The README's "动态配置更新"
        monitor.update_config(threshold_seconds=3.0, enable_mattermost=False)
        requests.get(watched.url + "/api/slow", timeout=10).raise_for_status()
        stats = finished(monitor, 2)

    assert monitor.config.threshold_seconds == 3.0
    assert (stats["total_requests"], stats["slow_requests"]) == (2, 1)
    assert len(report_files(tmp_path)) == 1


# --- test_alert_system ------------------------------------------------------------------


def mattermost_settings(url: str, **more: Any) -> dict[str, Any]:
    return {
        "enable_mattermost": True,
        "mattermost_server_url": url,
        "mattermost_token": "test-token-0123456789",
        "mattermost_channel_id": "channel0123456789abcdefghij",
        **more,
    }


def test_test_alert_system_with_an_unreachable_mattermost_says_why(
    make_monitor: MakeMonitor,
) -> None:
    # The README's troubleshooting, "Mattermost连接失败"
    monitor = make_monitor(**mattermost_settings(f"http://127.0.0.1:{free_port()}"))
    test_results = monitor.test_alert_system()

    assert test_results["success"] is False
    assert test_results["notifier_results"] == {"local_file": True, "mattermost": False}
    assert test_results["error"].startswith("mattermost: cannot connect")
    assert "test-token" not in test_results["error"]


def test_test_alert_system_tries_a_failing_mattermost_once(
    make_monitor: MakeMonitor, mattermost_server: FakeMattermostServer
) -> None:
    mattermost_server.fail_next(5, status=503)
    monitor = make_monitor(enable_local_file=False, **mattermost_settings(mattermost_server.url))
    test_results = monitor.test_alert_system()

    assert test_results["success"] is False
    assert "503" in test_results["error"]
    assert len(mattermost_server.requests) == 1  # no retry schedule while someone waits


def test_test_alert_system_posts_a_real_report(
    make_monitor: MakeMonitor, mattermost_server: FakeMattermostServer, tmp_path: Path
) -> None:
    monitor = make_monitor(**mattermost_settings(mattermost_server.url))
    test_results = monitor.test_alert_system()

    assert test_results == {
        "success": True,
        "notifier_results": {"local_file": True, "mattermost": True},
        "error": None,
    }
    (post,) = mattermost_server.posts
    (upload,) = mattermost_server.files
    assert post["file_ids"] == [upload.id]
    assert (upload.mime_type, is_report_file(upload.name)) == ("text/html", True)
    meta = parse_metadata(upload.data)
    assert meta["route"] == "/otel-wpm/test-alert"
    assert b'<div id="otel-wpm-profile">' in upload.data  # the profile viewer, as in any report
    # The alerts.jsonl line names the same report, written beside it.
    (line,) = (tmp_path / "alerts.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert (record["is_test"], record["report_file"]) == (True, upload.name)
    assert (tmp_path / upload.name).read_bytes() == upload.data
