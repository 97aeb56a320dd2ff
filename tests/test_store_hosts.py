"""Many hosts, one bucket, one report browser: real gunicorn apps and ``otel-wpm serve``.

Two gunicorn instances of ``apps.hardening_app:gunicorn_app``, told apart by their
``host.name`` resource attribute (``OTEL_RESOURCE_ATTRIBUTES``), write their reports to
one bucket of moto's S3 server on 127.0.0.1; ``python -m otel_wpm.server --store`` serves
the bucket. Then the bucket goes down: the apps keep answering, their reports wait in
each host's spool, and are uploaded once the bucket is back on the same port.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apps.helpers import ServerProcess, clean_env, free_port, wait_until
from s3_server import AWS_ENV, S3Server

from otel_wpm.reporting.store import SPOOL_DIRECTORY_NAME

TESTS_DIR = Path(__file__).resolve().parent
DEADLINE = 60.0
HOSTS = ("web-a", "web-b")


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def start_app(s3: S3Server, bucket: str, host: str, output: Path, workdir: Path) -> ServerProcess:
    port = free_port()
    env = clean_env(
        OTEL_RESOURCE_ATTRIBUTES=f"host.name={host}",
        OTEL_SERVICE_NAME="shop",
        WPM_THRESHOLD_SECONDS="0.1",
        WPM_HUNG_REQUEST_FACTOR="0",
        WPM_ALERT_WINDOW_DAYS="0",
        WPM_LOCAL_OUTPUT_DIR=str(output),
        WPM_REPORT_STORE=f"s3://{bucket}/shop",
        WPM_REPORT_STORE_ENDPOINT_URL=s3.endpoint,
        **AWS_ENV,
    )
    command = [
        sys.executable, "-m", "gunicorn", "--chdir", str(TESTS_DIR),
        "-w", "1", "-k", "gthread", "--threads", "4", "-b", f"127.0.0.1:{port}",
        "--no-control-socket", "apps.hardening_app:gunicorn_app",
    ]  # fmt: skip
    workdir.mkdir()
    server = ServerProcess(command, env, workdir, port)
    server.wait_ready("/pid")
    return server


def start_browser(s3: S3Server, bucket: str, workdir: Path) -> ServerProcess:
    port = free_port()
    command = [
        sys.executable, "-m", "otel_wpm.server", "--store", f"s3://{bucket}/shop",
        "--endpoint-url", s3.endpoint, "--port", str(port),
    ]  # fmt: skip
    workdir.mkdir()
    server = ServerProcess(command, clean_env(**AWS_ENV), workdir, port)
    server.wait_ready("/")
    return server


def slow_request(app: ServerProcess) -> str:
    """A slow request answered by ``app``; its trace id."""
    answer = requests.get(app.url + "/orders", headers={"X-Slow": "0.2"}, timeout=DEADLINE)
    assert answer.status_code == 200
    return answer.headers["X-Trace-Id"]


def reports_in(s3: S3Server, bucket: str) -> list[str]:
    return [key for key in s3.keys(bucket, "shop/") if key.endswith(".html")]


def spooled(output: Path) -> list[Path]:
    return sorted((output / SPOOL_DIRECTORY_NAME).glob("*.html"))


def test_two_hosts_write_to_one_bucket_and_one_browser_serves_both(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.create_bucket()
    apps = {
        host: start_app(s3, bucket, host, tmp_path / host / "out", tmp_path / host)
        for host in HOSTS
    }
    browser = start_browser(s3, bucket, tmp_path / "browser")
    try:
        traces = {host: slow_request(app) for host, app in apps.items()}
        wait_until(lambda: len(reports_in(s3, bucket)) == 2, "both reports", DEADLINE)

        def overview(query: str = "") -> str:
            return requests.get(f"{browser.url}/{query}", timeout=DEADLINE).text

        # the browser lists the bucket at most every few seconds
        wait_until(lambda: "2 slow requests" in overview(), "the browser to list both", DEADLINE)
        page = overview()
        assert all(f">{host}</option>" in page for host in HOSTS)
        for host, trace_id in traces.items():
            assert "1 slow request" in overview(f"?host={host}")
            found = requests.get(f"{browser.url}/trace/{trace_id}", timeout=DEADLINE)
            assert found.status_code == 200, host  # redirected to the report itself
            assert trace_id in found.text and f'"host": "{host}"' in found.text
            assert not list((tmp_path / host / "out").glob("*.html"))  # nothing kept locally
    finally:
        browser.stop()
        for app in apps.values():
            app.stop()


def test_reports_written_while_the_bucket_is_down_are_uploaded_when_it_returns(
    s3: S3Server, tmp_path: Path
) -> None:
    bucket = s3.create_bucket()
    outputs = {host: tmp_path / host / "out" for host in HOSTS}
    apps = {host: start_app(s3, bucket, host, outputs[host], tmp_path / host) for host in HOSTS}
    try:
        before = {host: slow_request(app) for host, app in apps.items()}
        wait_until(lambda: len(reports_in(s3, bucket)) == 2, "the first reports", DEADLINE)

        s3.stop()
        during = [slow_request(app) for app in apps.values() for _ in range(3)]  # all answered
        for host in HOSTS:
            wait_until(lambda: len(spooled(outputs[host])) == 3, f"{host}'s spool", DEADLINE)
        s3.start()

        wait_until(lambda: len(reports_in(s3, bucket)) == 8, "the spooled reports", DEADLINE)
        uploaded = {key.split("/")[1] for key in reports_in(s3, bucket)}
        assert uploaded == {*before.values(), *during}
        wait_until(lambda: not any(spooled(o) for o in outputs.values()), "empty spools", DEADLINE)
        for host in HOSTS:
            log = (tmp_path / host / "stderr.txt").read_text()
            assert log.count("cannot upload to") == 1, log  # logged once per process
    finally:
        for app in apps.values():
            app.stop()


def test_serve_exits_2_naming_a_bucket_it_cannot_list(s3: S3Server, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "otel_wpm.server", "--store", "s3://no-such-bucket/shop",
        "--endpoint-url", s3.endpoint, "--port", str(free_port()),
    ]  # fmt: skip
    ran = subprocess.run(
        command, env=clean_env(**AWS_ENV), capture_output=True, text=True, timeout=DEADLINE
    )

    assert ran.returncode == 2
    assert "error: cannot list s3://no-such-bucket/shop" in ran.stderr
