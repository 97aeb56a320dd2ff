"""End to end with a real tracing backend: Arize Phoenix receives the app's spans over OTLP.

A Flask app with no OpenTelemetry code runs under ``opentelemetry-instrument``
(otel-wpm comes in through its post-instrument entry point) and exports to
Phoenix. Its reports are served by otel-wpm's report server, and
``WPM_REPORT_BASE_URL`` points there, so a slow span read back from Phoenix
carries a ``wpm.report.url`` that opens the report.

Phoenix is big (~850 MB), so it lives in its own virtual environment: set
``PHOENIX_BIN`` to its ``phoenix`` executable, or have ``phoenix`` on PATH.
"""

from __future__ import annotations

import html
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
from apps.helpers import (
    APPS_DIR,
    clean_env,
    flask_command,
    free_port,
    running_server,
    wait_until,
)
from wsgi_servers import serve_reports

from otel_wpm.capture import attributes

pytestmark = pytest.mark.e2e

PHOENIX_START_SECONDS = 60.0
SPANS_SECONDS = 30.0


def phoenix_executable() -> Optional[str]:
    return os.environ.get("PHOENIX_BIN") or shutil.which("phoenix")


@dataclass
class Phoenix:
    url: str

    def spans(self) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.url}/v1/projects/default/spans", params={"limit": 1000}, timeout=10
        )
        if response.status_code == 404:  # the project appears with its first span
            return []
        response.raise_for_status()
        return list(response.json()["data"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    executable = phoenix_executable()
    if executable is None:
        pytest.skip(
            "Arize Phoenix not found: set PHOENIX_BIN to the phoenix executable of a venv "
            "with `pip install arize-phoenix` (see .ci/run), or put phoenix on PATH"
        )
    workdir = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = clean_env(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(free_port()),
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    log_path = workdir / "phoenix.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [executable, "serve"],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"phoenix exited with {process.returncode}:\n{log_path.read_text()}"
            )
        try:
            return requests.get(f"{url}/healthz", timeout=5).ok
        except requests.ConnectionError:
            return False

    try:
        wait_until(healthy, "Phoenix /healthz", timeout=PHOENIX_START_SECONDS)
        yield Phoenix(url)
    finally:
        _stop(process)


@pytest.fixture
def report_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The report server over the app's output directory: (base URL, directory)."""
    directory = tmp_path / "reports"
    directory.mkdir()
    with serve_reports(directory) as url:
        yield url, directory


def server_span(spans: list[dict[str, Any]], path: str) -> Optional[dict[str, Any]]:
    """The request span for ``path`` (Phoenix does not keep the span kind: the root span)."""
    for span in spans:
        attrs = span["attributes"]
        target = attrs.get("url.path") or str(attrs.get("http.target", "")).split("?")[0]
        if span["parent_id"] is None and target == path:
            return span
    return None


def test_slow_trace_in_phoenix_links_to_its_report(
    phoenix: Phoenix, report_server: tuple[str, Path], tmp_path: Path
) -> None:
    reports_base, reports_dir = report_server
    trace_template = phoenix.url + "/otel-wpm-trace/{trace_id}"
    env = clean_env(
        WPM_THRESHOLD_SECONDS="0.2",
        WPM_LOCAL_OUTPUT_DIR=str(reports_dir),
        WPM_REPORT_BASE_URL=reports_base,
        WPM_TRACE_URL_TEMPLATE=trace_template,
        OTEL_SERVICE_NAME="phoenix-shop",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{phoenix.url}/v1/traces",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    port = free_port()
    command = ["opentelemetry-instrument", *flask_command(port, APPS_DIR / "flask_app.py")]
    with running_server(command, env, tmp_path, port) as app:
        assert requests.get(app.url + "/fast", timeout=10).ok
        assert requests.get(app.url + "/slow", params={"seconds": "0.6"}, timeout=10).ok

        def both_spans() -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
            spans = phoenix.spans()
            slow, fast = server_span(spans, "/slow"), server_span(spans, "/fast")
            return (slow, fast) if slow and fast else None

        slow, fast = wait_until(both_spans, "both request spans in Phoenix", SPANS_SECONDS)

    slow_trace = slow["context"]["trace_id"]
    assert slow["attributes"][attributes.SLOW] is True
    report_url = slow["attributes"][attributes.REPORT_URL]
    assert report_url == f"{reports_base}/trace/{slow_trace}"

    def report_page() -> Optional[requests.Response]:
        # written on the report thread: the URL answers 404 until the file is there
        response = requests.get(report_url, timeout=10)
        return response if response.ok else None

    report = wait_until(report_page, "the report", SPANS_SECONDS)
    assert report.headers["Content-Type"].startswith("text/html")
    assert "/reports/" in report.url
    assert slow_trace in report.text
    assert "slow_work" in report.text
    trace_link = trace_template.format(trace_id=slow_trace)
    assert f'href="{html.escape(trace_link)}"' in report.text

    fast_trace = fast["context"]["trace_id"]
    assert attributes.REPORT_URL not in fast["attributes"]
    assert attributes.SLOW not in fast["attributes"]
    missing = requests.get(f"{reports_base}/trace/{fast_trace}", timeout=10)
    assert missing.status_code == 404
    assert "no report for trace" in missing.text

    index = requests.get(reports_base + "/reports", timeout=10).text
    assert slow_trace in index and fast_trace not in index
