"""otel-wpm under the real ``opentelemetry-instrument`` launcher, configured by env vars only."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from apps.helpers import (
    APPS_DIR,
    clean_env,
    console_spans,
    flask_command,
    free_port,
    gunicorn_command,
    instrumented,
    report_files,
    report_metadata,
    report_pid,
    running_server,
    server_span_for,
    trace_id_of,
    wait_until,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_wpm import Config, PerformanceMonitor
from otel_wpm.capture import attributes
from otel_wpm.install import (
    install,
    installed_processor,
    post_instrument,
    turned_off_by_opentelemetry,
)

APP_FILE = APPS_DIR / "flask_app.py"
# A record of an otel_wpm logger on stderr: "INFO:otel_wpm.install:..." from the hook's
# handler, or the bare message of Python's last-resort handler.
_OUR_LOG_LINE = re.compile(r"^(?:[A-Z]+:otel_wpm[.:].*|otel-wpm .*)$", re.MULTILINE)


def our_log_lines(stderr: str) -> list[str]:
    return _OUR_LOG_LINE.findall(stderr)


@pytest.fixture(autouse=True)
def otel_wpm_handlers_restored() -> Iterator[None]:
    """post_instrument() gives the otel_wpm logger a handler; later tests must not inherit it."""
    package_logger = logging.getLogger("otel_wpm")
    handlers = list(package_logger.handlers)
    yield
    package_logger.handlers[:] = handlers


def _wpm_env(workdir: Path, **settings: str) -> dict[str, str]:
    defaults = {
        "WPM_THRESHOLD_SECONDS": "0.2",
        "WPM_LOCAL_OUTPUT_DIR": str(workdir / "reports"),
        "OTEL_SERVICE_NAME": "auto-shop",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    return clean_env(**{**defaults, **settings})


def _flask_run(port: int, app_file: Path = APP_FILE) -> list[str]:
    return instrumented(*flask_command(port, app_file))


@dataclass
class Run:
    """What one instrumented server produced for a fixed sequence of requests."""

    reports: list[Path]
    spans: list[dict[str, Any]]
    stderr: str
    statuses: dict[str, int]


def _serve_and_request(workdir: Path, env: dict[str, str], paths: list[str]) -> Run:
    """Request ``paths`` in order (the last one slow), wait for its report and spans."""
    port = free_port()
    reports_dir = workdir / "reports"
    with running_server(_flask_run(port), env, workdir, port) as server:
        statuses = {path: requests.get(server.url + path, timeout=10).status_code for path in paths}
        wait_until(lambda: report_files(reports_dir), "the report of the slow request")
        if env.get("OTEL_PYTHON_CONFIGURATOR") != "none":
            wait_until(
                lambda: server_span_for(console_spans(server.stdout()), paths[-1]),
                "the exported span of the slow request",
            )
        # The report thread handles slow spans in order, so anything earlier is written by now.
        return Run(
            report_files(reports_dir), console_spans(server.stdout()), server.stderr(), statuses
        )


@pytest.fixture(scope="module")
def flask_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp("flask-run")
    env = _wpm_env(workdir, OTEL_PYTHON_FLASK_EXCLUDED_URLS="health", WPM_URL_BLACKLIST="^/ignored")
    return _serve_and_request(workdir, env, ["/fast", "/health", "/ignored", "/slow"])


def test_slow_request_report_has_the_exported_trace_id(flask_run: Run) -> None:
    assert len(flask_run.reports) == 1
    meta = report_metadata(flask_run.reports[0])
    slow_span = server_span_for(flask_run.spans, "/slow")
    assert slow_span is not None
    assert meta["trace_id"] == trace_id_of(slow_span)
    assert meta["route"] == "/slow"
    assert meta["service"] == "auto-shop"


def test_one_info_line_says_it_is_watching_and_where_results_go(flask_run: Run) -> None:
    reports_dir = flask_run.reports[0].parent
    assert our_log_lines(flask_run.stderr) == [
        "INFO:otel_wpm.install:otel-wpm is watching requests slower than 0.2 s "
        f"(engine sampling); reports: {reports_dir}; alerts: alerts.jsonl"
    ]


def test_profile_shows_the_slow_function(flask_run: Run) -> None:
    assert "slow_work" in flask_run.reports[0].read_text(encoding="utf-8")


def test_only_the_slow_span_links_to_its_report(flask_run: Run) -> None:
    slow_attributes = server_span_for(flask_run.spans, "/slow")["attributes"]  # type: ignore[index]
    assert slow_attributes[attributes.SLOW] is True
    assert slow_attributes[attributes.REPORT_URL] == str(flask_run.reports[0])
    for path in ("/fast", "/ignored"):
        span = server_span_for(flask_run.spans, path)
        assert span is not None, f"no span exported for {path}"
        assert attributes.SLOW not in span["attributes"]
        assert attributes.REPORT_URL not in span["attributes"]


def test_excluded_url_has_no_span_and_no_report(flask_run: Run) -> None:
    assert flask_run.statuses["/health"] == 200
    assert server_span_for(flask_run.spans, "/health") is None
    assert not any("health" in path.name for path in flask_run.reports)


def test_blacklisted_url_keeps_its_span_but_gets_no_report(flask_run: Run) -> None:
    assert flask_run.statuses["/ignored"] == 200
    assert server_span_for(flask_run.spans, "/ignored") is not None
    assert not any("ignored" in path.name for path in flask_run.reports)


def test_stable_http_semantic_conventions(tmp_path: Path) -> None:
    env = _wpm_env(tmp_path, OTEL_SEMCONV_STABILITY_OPT_IN="http")
    run = _serve_and_request(tmp_path, env, ["/fast", "/slow"])
    assert len(run.reports) == 1
    meta = report_metadata(run.reports[0])
    slow_span = server_span_for(run.spans, "/slow")
    assert slow_span is not None
    assert "http.request.method" in slow_span["attributes"]
    assert "http.method" not in slow_span["attributes"]
    assert slow_span["attributes"][attributes.SLOW] is True
    assert meta["trace_id"] == trace_id_of(slow_span)
    assert (meta["method"], meta["route"]) == ("GET", "/slow")


def test_without_a_distro_otel_wpm_creates_the_provider(tmp_path: Path) -> None:
    # No distro, no configurator: opentelemetry-instrument as without opentelemetry-distro.
    env = _wpm_env(tmp_path, OTEL_PYTHON_DISTRO="none", OTEL_PYTHON_CONFIGURATOR="none")
    run = _serve_and_request(tmp_path, env, ["/fast", "/slow"])
    assert len(run.reports) == 1
    meta = report_metadata(run.reports[0])
    assert (meta["route"], meta["service"]) == ("/slow", "auto-shop")
    assert run.spans == []  # nothing exports them
    assert any("spans are profiled but not exported" in line for line in our_log_lines(run.stderr))


@pytest.mark.parametrize(
    "switch",
    [
        {"WPM_ENABLED": "false"},
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlite3, otel_wpm"},
        {"OTEL_SDK_DISABLED": "true"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_PYTHON_DISTRO": "none"},
    ],
    ids=["WPM_ENABLED", "disabled-instrumentations", "sdk-disabled", "sdk-disabled-no-distro"],
)
def test_turned_off_by_choice_it_does_nothing_and_says_nothing(
    tmp_path: Path, switch: dict[str, str]
) -> None:
    env = _wpm_env(tmp_path, **switch)
    if env.get("OTEL_PYTHON_DISTRO") == "none":
        env["OTEL_PYTHON_CONFIGURATOR"] = "none"
    port = free_port()
    with running_server(_flask_run(port), env, tmp_path, port) as server:
        assert requests.get(server.url + "/slow", timeout=10).ok
        if "OTEL_SDK_DISABLED" not in switch:
            # The exported span proves the request was over before we look for reports.
            span = wait_until(
                lambda: server_span_for(console_spans(server.stdout()), "/slow"), "the span"
            )
            assert attributes.SLOW not in span["attributes"]
        stderr = server.stderr()
    assert report_files(tmp_path / "reports") == []
    assert our_log_lines(stderr) == []


@pytest.mark.parametrize(
    "environ, switch",
    [
        ({"OTEL_SDK_DISABLED": "true"}, "OTEL_SDK_DISABLED"),
        ({"OTEL_SDK_DISABLED": " TRUE "}, "OTEL_SDK_DISABLED"),
        ({"OTEL_SDK_DISABLED": "false"}, None),
        ({"OTEL_SDK_DISABLED": "1"}, None),  # the SDK accepts only "true"
        (
            {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "otel_wpm"},
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        ),
        (
            {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask , otel_wpm"},
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        ),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"),
        ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask,requests"}, None),
        ({}, None),
    ],
)
def test_opentelemetry_switches_are_read_as_opentelemetry_reads_them(
    environ: dict[str, str], switch: str | None
) -> None:
    assert turned_off_by_opentelemetry(environ) == switch


def test_turned_off_the_hook_loads_neither_processor_nor_facade(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from otel_wpm.install import post_instrument\n"
        "post_instrument()\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('otel_wpm'))))\n"
    )
    env = _wpm_env(tmp_path, OTEL_SDK_DISABLED="true")
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "otel_wpm.install" in loaded
    assert "otel_wpm.processor" not in loaded
    assert "otel_wpm.monitor" not in loaded


def test_sdk_disabled_without_a_distro_leaves_the_global_provider_alone(
    fresh_globals: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("WPM_LOCAL_OUTPUT_DIR", str(tmp_path))
    post_instrument()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    # so the application can still set its own
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider


def test_install_logs_what_it_watches_once(
    fresh_globals: None, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = Config(
        threshold_seconds=1.5,
        engine="pyinstrument",
        local_output_dir=str(tmp_path / "reports"),
        enable_mattermost=True,
        mattermost_server_url="https://chat.example.com:8065",
        mattermost_token="tok-0123456789",
        mattermost_channel_id="town-square",
    )
    provider = TracerProvider()
    with caplog.at_level("INFO", logger="otel_wpm"):
        install(provider, config)
        install(provider, config)
        monitor = PerformanceMonitor(config)  # no global provider: its own, so its own line
    provider.shutdown()
    monitor.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "otel_wpm.install"]
    expected = (
        "otel-wpm is watching requests slower than 1.5 s (engine pyinstrument); "
        f"reports: {tmp_path / 'reports'}; alerts: alerts.jsonl, Mattermost at chat.example.com"
    )
    assert lines == [expected, expected]
    assert "tok-0123456789" not in caplog.text


def test_install_says_nothing_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider()
    with caplog.at_level("DEBUG", logger="otel_wpm"):
        install(provider, Config(enabled=False))
    provider.shutdown()
    assert caplog.records == []


def test_hook_logs_reach_stderr_until_the_app_configures_logging(tmp_path: Path) -> None:
    script = (
        "import logging\n"
        "from otel_wpm.install import post_instrument\n"
        "post_instrument()\n"
        "logging.getLogger('otel_wpm.probe').warning('before the app set up logging')\n"
        "logging.basicConfig(format='app:%(name)s:%(message)s')\n"
        "logging.getLogger('otel_wpm.probe').warning('after the app set up logging')\n"
    )
    env = _wpm_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if "is watching" in line] == [
        "INFO:otel_wpm.install:otel-wpm is watching requests slower than 0.2 s "
        f"(engine sampling); reports: {tmp_path / 'reports'}; alerts: alerts.jsonl"
    ]
    assert [line for line in lines if "probe" in line] == [
        "WARNING:otel_wpm.probe:before the app set up logging",
        "app:otel_wpm.probe:after the app set up logging",
    ]


def test_bad_setting_is_logged_and_the_app_still_serves(tmp_path: Path) -> None:
    env = _wpm_env(tmp_path, WPM_THRESHOLD_SECONDS="soon")
    port = free_port()
    with running_server(_flask_run(port), env, tmp_path, port) as server:
        assert requests.get(server.url + "/slow", timeout=10).ok
        wait_until(lambda: server_span_for(console_spans(server.stdout()), "/slow"), "the span")
        stderr = server.stderr()
    assert "WPM_THRESHOLD_SECONDS" in stderr
    assert "'soon'" in stderr
    assert report_files(tmp_path / "reports") == []


def test_gunicorn_workers_both_profile(tmp_path: Path) -> None:
    port = free_port()
    command = instrumented(*gunicorn_command(port, APPS_DIR, "flask_app:app"), exporter="none")
    reports_dir = tmp_path / "reports"
    served_by: set[int] = set()

    def slow_request(_: int) -> int:
        return int(requests.get(f"http://127.0.0.1:{port}/slow?seconds=0.4", timeout=10).text)

    with (
        running_server(command, _wpm_env(tmp_path), tmp_path, port) as server,
        ThreadPoolExecutor(4) as pool,
    ):

        def two_workers_served() -> bool:
            served_by.update(pool.map(slow_request, range(4)))
            return len(served_by) >= 2

        wait_until(two_workers_served, "both gunicorn workers to serve a slow request")
        expected = len(served_by)
        wait_until(
            lambda: len({report_pid(p) for p in report_files(reports_dir)}) >= expected,
            "a report from each worker",
        )
        assert server.process.poll() is None
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).ok
    pids = {report_pid(path) for path in report_files(reports_dir)}
    assert pids == served_by
    assert server.process.pid not in pids  # the master serves nothing
    # stopping the server flushed every worker's alerts; the workers share the
    # de-dup store, so each route alerted once however many workers saw it slow
    alerts = [json.loads(line) for line in (reports_dir / "alerts.jsonl").read_text().splitlines()]
    assert sorted(alert["route"] for alert in alerts) == ["/health", "/slow"]


def test_post_instrument_adds_the_processor_once(
    fresh_globals: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WPM_LOCAL_OUTPUT_DIR", str(tmp_path))
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    post_instrument()
    processor = installed_processor(provider)
    post_instrument()
    assert processor is not None
    assert installed_processor(provider) is processor
    ours = [p for p in provider._active_span_processor._span_processors if p is processor]
    assert len(ours) == 1
    assert processor.config.local_output_dir == str(tmp_path)


def test_post_instrument_without_provider_sets_one(
    fresh_globals: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WPM_LOCAL_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("OTEL_SERVICE_NAME", "no-distro")
    post_instrument()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert installed_processor(provider) is not None
    assert provider.resource.attributes["service.name"] == "no-distro"


def test_post_instrument_bad_setting_leaves_provider_alone(
    fresh_globals: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WPM_ENGINE", "turbo")
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    with caplog.at_level("ERROR", logger="otel_wpm"):
        post_instrument()
    assert installed_processor(provider) is None
    assert any("WPM_ENGINE" in r.getMessage() and "turbo" in r.getMessage() for r in caplog.records)


def test_monitor_one_liner_under_opentelemetry_instrument(tmp_path: Path) -> None:
    # The hook installs a processor from WPM_* (threshold 5 s, another directory); the
    # monitor in the app reuses it with its own Config and adds no second server span.
    env = _wpm_env(
        tmp_path,
        WPM_THRESHOLD_SECONDS="5",
        WPM_LOCAL_OUTPUT_DIR=str(tmp_path / "from-env"),
        REPORTS_DIR=str(tmp_path / "reports"),
    )
    port = free_port()
    command = _flask_run(port, APPS_DIR / "flask_monitored_app.py")
    with running_server(command, env, tmp_path, port) as server:
        assert requests.get(server.url + "/slow", timeout=10).text == "slow"
        (report,) = wait_until(lambda: report_files(tmp_path / "reports"), "the report")
        wait_until(lambda: server_span_for(console_spans(server.stdout()), "/slow"), "the span")
        spans = console_spans(server.stdout())
    slow_spans = [s for s in spans if s["attributes"].get("http.target") == "/slow"]
    assert [s["kind"] for s in slow_spans] == ["SpanKind.SERVER"]
    assert slow_spans[0]["attributes"][attributes.SLOW] is True
    assert report_metadata(report)["trace_id"] == trace_id_of(slow_spans[0])
    assert not (tmp_path / "from-env").exists()
