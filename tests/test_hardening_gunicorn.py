"""Under gunicorn, a worker that exits still delivers what it owes.

Real gunicorn (gthread) runs ``apps.hardening_app:gunicorn_app``, monitored with
settings from ``WPM_*`` variables and the SDK's default ``TracerProvider`` (which
shuts its processors down at interpreter exit). Reports are rendered and alerts
delivered on background daemon threads, so an exiting worker would lose them
unless the processor is shut down (flushed) on the way out:

* ``--max-requests 3``: the worker exits right after answering its third slow
  request; all three reports and alerts must be there.
* SIGTERM while a slow request runs: the request finishes, and its report, its
  ``alerts.jsonl`` line and its Mattermost post exist once gunicorn has exited.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest
import requests
from apps.hardening_app import alert_lines, reports_of
from apps.helpers import clean_env, free_port, wait_until
from mattermost_server import FakeMattermostServer

TESTS_DIR = Path(__file__).resolve().parent
DEADLINE = 30


class Gunicorn:
    def __init__(self, workdir: Path, output: Path, extra_args: list[str], **wpm: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = output
        env = clean_env(
            WPM_THRESHOLD_SECONDS="0.1",
            WPM_LOCAL_OUTPUT_DIR=str(output),
            WPM_ALERT_WINDOW_DAYS="0",
            WPM_HUNG_REQUEST_FACTOR="0",
            **wpm,
        )
        command = [
            sys.executable, "-m", "gunicorn",
            "--chdir", str(TESTS_DIR),
            "-w", "1", "-k", "gthread", "--threads", "4",
            "-b", f"127.0.0.1:{self.port}",
            "--graceful-timeout", "20", "--no-control-socket",
            *extra_args,
            "apps.hardening_app:gunicorn_app",
        ]  # fmt: skip
        self.log = workdir / "gunicorn.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self._answers, "gunicorn to answer")

    def _answers(self) -> bool:
        """The port accepts connections; no HTTP request is made, so none is counted."""
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{self.log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except OSError:
            return False
        return True

    def wait_for_worker_exiting(self) -> None:
        """Until gunicorn logs that the worker is exiting (before interpreter shutdown)."""
        wait_until(lambda: "Worker exiting" in self.log.read_text(), "the worker to exit")

    def pid(self) -> int:
        return int(requests.get(self.url + "/pid", timeout=DEADLINE).text)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def start_gunicorn(
    tmp_path: Path, mattermost_server: FakeMattermostServer
) -> Iterator[Callable[[list[str]], Gunicorn]]:
    """Starts gunicorn with ``extra_args``, reports in ``tmp_path / "reports"`` and alerts
    posted to ``mattermost_server``; stops every server it started."""
    started: list[Gunicorn] = []

    def start(extra_args: list[str]) -> Gunicorn:
        server = Gunicorn(
            tmp_path,
            tmp_path / "reports",
            extra_args,
            WPM_ENABLE_MATTERMOST="true",
            WPM_MATTERMOST_SERVER_URL=mattermost_server.url,
            WPM_MATTERMOST_TOKEN=mattermost_server.token,
            WPM_MATTERMOST_CHANNEL_ID=mattermost_server.channel_id,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_worker_restarted_by_max_requests_flushes_its_reports_and_alerts(
    start_gunicorn: Callable[[list[str]], Gunicorn], mattermost_server: FakeMattermostServer
) -> None:
    server = start_gunicorn(["--max-requests", "3"])
    output, fake = server.output, mattermost_server
    # Mattermost hangs until the worker has logged that it exits, so the alerts are
    # still queued then: only a shutdown at exit that flushes can deliver them.
    fake.hang()
    trace_ids, pids = [], set()
    try:
        for _ in range(3):
            response = requests.get(
                server.url + "/slow", headers={"X-Slow": "0.3"}, timeout=DEADLINE
            )
            assert response.status_code == 200
            trace_ids.append(response.headers["X-Trace-Id"])
            pids.add(response.headers["X-Pid"])
        server.wait_for_worker_exiting()
    finally:
        fake.release()
    # One worker served all three and exits right after answering the third; with one
    # worker, gunicorn starts the next only once that one has exited.
    [first_pid] = pids
    wait_until(lambda: server.pid() != int(first_pid), "a new worker")
    log = server.log.read_text()
    for trace_id in trace_ids:
        assert reports_of(output, trace_id), f"report of {trace_id} lost:\n{log}"
    assert sorted(a["trace_id"] for a in alert_lines(output)) == sorted(trace_ids), log
    posted = [
        trace_id for trace_id in trace_ids if any(trace_id in p["message"] for p in fake.posts)
    ]
    assert posted == trace_ids, f"alerts lost at exit:\n{log}"
    assert "Traceback" not in log


def test_sigterm_with_a_slow_request_in_flight_still_delivers_it(
    tmp_path: Path,
    start_gunicorn: Callable[[list[str]], Gunicorn],
    mattermost_server: FakeMattermostServer,
) -> None:
    output = tmp_path / "reports"
    fake = mattermost_server
    server = start_gunicorn([])
    started = tmp_path / "started"
    fake.hang()  # released once the worker is exiting: the alert is still queued then
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                requests.get,
                server.url + "/in-flight",
                headers={"X-Slow": "1.0", "X-Started-File": str(started)},
                timeout=DEADLINE,
            )
            wait_until(started.exists, "the slow request to start")
            os.killpg(server.process.pid, signal.SIGTERM)
            response = pending.result(DEADLINE)
        server.wait_for_worker_exiting()
    finally:
        fake.release()
    assert response.status_code == 200
    server.process.wait(DEADLINE)
    trace_id = response.headers["X-Trace-Id"]
    log = server.log.read_text()
    assert reports_of(output, trace_id), f"report lost at SIGTERM:\n{log}"
    assert [a["trace_id"] for a in alert_lines(output)] == [trace_id], log
    assert len(fake.posts) == 1 and trace_id in fake.posts[0]["message"]
    assert "Traceback" not in log
