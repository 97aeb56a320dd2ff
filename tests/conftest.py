"""Shared pytest fixtures, and the ``slow`` marker on the suites that run subprocesses."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from apps.helpers import free_port, reset_global_tracer_provider
from mattermost_server import FakeMattermostServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_wpm import Config, PerformanceMonitor
from otel_wpm.alerting.alert import Alert, HotFrame

# Every test of these starts interpreters or servers in subprocesses (opentelemetry-instrument,
# gunicorn, the otel-wpm CLI, the examples, wrk, Phoenix). `python -m pytest -m "not slow"`
# leaves them out; a plain `python -m pytest` (CI) runs them.
SLOW_SUITES = frozenset(
    {
        "test_asgi.py",
        "test_asgi_frameworks.py",
        "test_auto_instrument.py",
        "test_bench.py",
        "test_browser.py",
        "test_cli.py",
        "test_examples.py",
        "test_gevent.py",
        "test_hardening_gunicorn.py",
        "test_store_hosts.py",
        "test_phoenix_e2e.py",
        "test_request_spans.py",
    }
)
_missing = sorted(name for name in SLOW_SUITES if not (Path(__file__).parent / name).exists())
if _missing:
    raise RuntimeError(f"SLOW_SUITES names files that do not exist: {_missing}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fresh_globals() -> Iterator[None]:
    """The global TracerProvider unset before the test; shut down and unset after it."""
    reset_global_tracer_provider()
    yield
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    reset_global_tracer_provider()


# --- Alert delivery fixtures: a fake Mattermost server and a real redis-server ---------


@pytest.fixture
def make_alert() -> Callable[..., Alert]:
    """Builds an :class:`Alert` for ``GET /users/<id>``; keyword arguments override fields."""

    def build(**overrides: Any) -> Alert:
        fields: dict[str, Any] = {
            "service": "shop",
            "method": "GET",
            "route": "/users/<id>",
            "url": "https://shop.example.com/users/42?token=***",
            "status": 200,
            "duration_seconds": 2.345,
            "threshold_seconds": 1.0,
            "host": "web-1",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "start_time": datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc),
            "trace_url": "https://traces.example.com/trace/0af7651916cd43dd8448eb211c80319c",
            "report_url": "https://reports.example.com/r/0af76519.html",
            "report_path": Path("/tmp/0af76519.html"),
            "report_filename": "0af76519.html",
            "report_html": b"<html><body>r\xc3\xa9port\r\n\x00end</body></html>",
            "hot_frames": (
                HotFrame("load_user", "app/users.py:42", 1.5, 0.64),
                HotFrame("render", "app/views.py:7", 0.5, 0.21),
            ),
        }
        fields.update(overrides)
        return Alert(**fields)

    return build


@pytest.fixture
def make_monitor(tmp_path: Path) -> Iterator[Callable[..., PerformanceMonitor]]:
    """Builds ``PerformanceMonitor(Config(**settings))``, by default with a 0.2 s threshold
    and reports in ``tmp_path``; shuts each one down after the test."""
    monitors: list[PerformanceMonitor] = []

    def make(**settings: Any) -> PerformanceMonitor:
        settings = {"threshold_seconds": 0.2, "local_output_dir": str(tmp_path), **settings}
        monitor = PerformanceMonitor(Config(**settings))
        monitors.append(monitor)
        return monitor

    yield make
    for monitor in monitors:
        monitor.shutdown()


@pytest.fixture
def mattermost_server() -> Iterator[FakeMattermostServer]:
    """A started loopback Mattermost; ``.url``, ``.token`` and ``.channel_id`` to configure."""
    with FakeMattermostServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, as a ``redis://`` URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_redis_ready(process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


def _wait_for_redis_ready(process: subprocess.Popen[str]) -> None:
    # redis-server logs this line once it accepts connections; EOF means it exited.
    assert process.stdout is not None
    for line in process.stdout:
        if "Ready to accept connections" in line:
            threading.Thread(
                target=process.stdout.read, daemon=True
            ).start()  # keep the pipe drained
            return
    raise RuntimeError(f"redis-server exited with status {process.wait()}")
