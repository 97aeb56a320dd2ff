"""Every example runs as documented, exits by itself, and does what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests
from apps.helpers import (
    REPO_DIR,
    clean_env,
    free_port,
    gunicorn_command,
    instrumented,
    report_files,
    report_metadata,
    running_server,
    wait_until,
)

EXAMPLES_DIR = REPO_DIR / "examples"


def run_example(name: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / name)],
        env=clean_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def routes(directory: Path) -> list[str]:
    return sorted(report_metadata(path)["route"] for path in report_files(directory))


def test_quick_start_writes_to_performance_reports_by_default(tmp_path: Path) -> None:
    result = run_example("quick_start.py", tmp_path)
    assert "requests: 2, slow: 1" in result.stdout
    (report,) = report_files(tmp_path / "performance_reports")
    assert f"report: {report}" in result.stdout
    assert report_metadata(report)["route"] == "/orders"
    assert "load_orders" in report.read_text(encoding="utf-8")


def test_quick_start_honours_wpm_local_output_dir(tmp_path: Path) -> None:
    run_example("quick_start.py", tmp_path, WPM_LOCAL_OUTPUT_DIR=str(tmp_path / "elsewhere"))
    assert len(report_files(tmp_path / "elsewhere")) == 1
    assert not (tmp_path / "performance_reports").exists()


def test_flask_middleware_example_masks_secrets(tmp_path: Path) -> None:
    result = run_example("flask_middleware_example.py", tmp_path, WPM_LOCAL_OUTPUT_DIR="out")
    assert routes(tmp_path / "out") == ["/signup"]
    assert "shows hash_password: True" in result.stdout
    for secret in ("password", "cookie", "bearer token"):
        assert f"shows the {secret}: False" in result.stdout


def test_decorator_example_reports_functions_and_the_request(tmp_path: Path) -> None:
    result = run_example("decorator_example.py", tmp_path, WPM_LOCAL_OUTPUT_DIR="out")
    assert "invoice for order 7" in result.stdout
    assert routes(tmp_path / "out") == [
        "/orders/<int:order_id>/invoice",  # the route template, under the facade too
        "rebuild_search_index",
        "render-invoice",
    ]


def test_advanced_usage_example(tmp_path: Path) -> None:
    result = run_example("advanced_usage.py", tmp_path, WPM_LOCAL_OUTPUT_DIR="out")
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "GET /search: slow requests so far = 0",
        "threshold is now 0.2 s",
        "GET /search: slow requests so far = 1",
    ]
    assert lines[3].startswith("refused: sampling_interval_seconds")
    assert "GET /export: slow requests so far = 1" in lines  # blacklisted
    assert "GET /export: slow requests so far = 2" in lines  # no longer
    assert "test alert: sent" in lines
    assert "after reset_stats: total requests = 0" in lines
    assert routes(tmp_path / "out") == ["/export", "/otel-wpm/test-alert", "/search"]


def test_production_example_prints_usage_when_run_directly(tmp_path: Path) -> None:
    result = run_example("production_example.py", tmp_path)
    assert "opentelemetry-instrument gunicorn -w 2" in result.stdout
    assert "WPM_THRESHOLD_SECONDS" in result.stdout
    assert not (tmp_path / "performance_reports").exists()


def test_production_example_under_opentelemetry_instrument_gunicorn(tmp_path: Path) -> None:
    port = free_port()
    command = instrumented(
        *gunicorn_command(port, EXAMPLES_DIR, "production_example:app"), exporter="none"
    )
    env = clean_env(
        OTEL_SERVICE_NAME="shop",
        WPM_THRESHOLD_SECONDS="0.2",
        WPM_LOCAL_OUTPUT_DIR=str(tmp_path / "reports"),
        WPM_URL_BLACKLIST="^/healthz$",
    )
    with running_server(command, env, tmp_path, port, ready_path="/healthz") as server:
        assert requests.get(f"{server.url}/basket/4", timeout=10).json()["total"] > 0
        (report,) = wait_until(lambda: report_files(tmp_path / "reports"), "the report")
    meta = report_metadata(report)
    assert (meta["service"], meta["route"]) == ("shop", "/basket/<int:items>")
