"""gunicorn's gevent worker under ``opentelemetry-instrument``: requests are profiled per
greenlet, and alerts still reach their exporters once gevent patched the worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from apps.asgi_servers import Served, served
from apps.helpers import has_path, profile_functions, seconds_in, wait_until

APP_FILE = "gevent_app.py"
# Under gevent, opentelemetry-instrument's own imports make gevent warn that ssl was
# imported before patching, and logging complains at interpreter exit; neither is ours.
_OURS = re.compile(r"^.*otel[_-]wpm.*$", re.MULTILINE)


@pytest.fixture(scope="module")
def gevent_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    command = ["gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:{port}", "gevent_app:app"]
    yield from served(tmp_path_factory, command, "gevent")


def test_greenlets_waiting_side_by_side_each_get_their_own_profile(gevent_worker: Served) -> None:
    with ThreadPoolExecutor(2) as pool:
        for answer in [pool.submit(gevent_worker.get, "/wait") for _ in range(2)]:
            answer.result()
    gevent_worker.get("/spin")
    reports = gevent_worker.reports_for("/wait", "/spin")
    wait_report, spin_report = reports["/wait"], reports["/spin"]

    assert profile_functions(wait_report, APP_FILE) == {"wait", "gevent_wait"}
    assert has_path(wait_report, "wait", "gevent_wait", "sleep")
    # The sampler, a greenlet itself, could not run while /spin held the hub: that time
    # is said to be unseen rather than charged to whatever came next.
    assert seconds_in(spin_report, "[gevent hub busy]") > 0
    assert not profile_functions(spin_report, APP_FILE) & {"wait", "gevent_wait"}


def test_alerts_are_delivered_and_only_our_start_up_lines_are_logged(
    gevent_worker: Served,
) -> None:
    gevent_worker.get("/wait")
    alerts = gevent_worker.reports_dir / "alerts.jsonl"
    wait_until(lambda: alerts.exists() and alerts.read_text().count("\n") >= 1, "an alert")
    ours = _OURS.findall(gevent_worker.server.stderr())
    assert all(line.startswith("INFO:otel_wpm") for line in ours), ours
    assert any("gevent patched this process" in line for line in ours), ours
