"""ASGI apps on real servers on 127.0.0.1: on uvicorn in this process, or on uvicorn,
hypercorn or daphne in a subprocess under ``opentelemetry-instrument`` with its reports
read back."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import uvicorn
from apps.helpers import (
    APPS_DIR,
    ServerProcess,
    clean_env,
    free_port,
    instrumented,
    report_files,
    report_metadata,
    running_server,
    wait_until,
)

_SUSPICIOUS = re.compile(r"WARNING|Traceback|ERROR")


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on its own thread (and event loop); yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class Served:
    """An app served in a subprocess, and the directory its reports go to."""

    server: ServerProcess
    reports_dir: Path

    def get(self, path: str) -> requests.Response:
        response = requests.get(self.server.url + path, timeout=30)
        assert response.status_code == 200, response.text
        return response

    def report_paths(self) -> set[str]:
        """The URL path of every report written so far."""
        return {_path_of(report) for report in report_files(self.reports_dir)}

    def reports_for(self, *paths: str) -> dict[str, Path]:
        """The report of each of ``paths`` (waited for), by path."""

        def found() -> dict[str, Path]:
            by_path = {_path_of(report): report for report in report_files(self.reports_dir)}
            return by_path if all(path in by_path for path in paths) else {}

        by_path = wait_until(found, f"the reports of {paths}")
        return {path: by_path[path] for path in paths}

    def assert_quiet(self) -> None:
        """Nothing but INFO lines in the server's log."""
        stderr = self.server.stderr()
        assert not _SUSPICIOUS.findall(stderr), stderr


def _path_of(report: Path) -> str:
    return urlsplit(report_metadata(report)["url"]).path


def served(
    tmp_path_factory: pytest.TempPathFactory, command: list[str], name: str, **settings: str
) -> Iterator[Served]:
    """``command`` (taking ``{port}``) under opentelemetry-instrument with a 0.4 s threshold;
    the modules of tests/apps are importable."""
    workdir = tmp_path_factory.mktemp(name)
    reports_dir = workdir / "reports"
    env = clean_env(
        WPM_THRESHOLD_SECONDS="0.4",
        WPM_LOCAL_OUTPUT_DIR=str(reports_dir),
        OTEL_SERVICE_NAME="async-shop",
        PYTHONPATH=os.pathsep.join(filter(None, [str(APPS_DIR), os.environ.get("PYTHONPATH")])),
        **settings,
    )
    port = free_port()
    command = instrumented(*[part.format(port=port) for part in command], exporter="none")
    with running_server(command, env, workdir, port) as server:
        yield Served(server, reports_dir)


# Each server's command line for ``{app}`` (``module:variable`` in tests/apps) on
# 127.0.0.1:``{port}``; hypercorn's worker is its default, asyncio.
ASGI_SERVERS = {
    "uvicorn": ["uvicorn", "{app}", "--host", "127.0.0.1", "--port", "{port}"],
    "hypercorn": ["hypercorn", "--bind", "127.0.0.1:{port}", "{app}"],
    "daphne": ["daphne", "--bind", "127.0.0.1", "--port", "{port}", "{app}"],
}


def served_by(
    server: str, tmp_path_factory: pytest.TempPathFactory, app: str, **settings: str
) -> Iterator[Served]:
    """``app`` (``module:variable`` in tests/apps) on ``server`` (a key of
    :data:`ASGI_SERVERS`), as :func:`served`."""
    command = [part.replace("{app}", app) for part in ASGI_SERVERS[server]]
    yield from served(tmp_path_factory, command, f"{server}-{app.partition(':')[0]}", **settings)
