"""Test helpers: subprocess servers, polling, gates, reading reports and console-exported spans."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
from opentelemetry import trace
from opentelemetry.util._once import Once

from otel_wpm.reporting.report_format import read_metadata

APPS_DIR = Path(__file__).resolve().parent
REPO_DIR = APPS_DIR.parent.parent
DEADLINE_SECONDS = 30.0

_PROCESS_ROW = re.compile(r"<tr><th>Process</th><td>(\d+)</td></tr>")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (a full disk on demand); skips the test if it can't."""
    path.mkdir()
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


class Gates:
    """Named events for a test app: it sets ``started(name)``, then waits for ``release(name)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], threading.Event] = {}

    def _event(self, kind: str, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((kind, name), threading.Event())

    def started(self, name: str) -> threading.Event:
        return self._event("started", name)

    def release(self, name: str) -> threading.Event:
        return self._event("release", name)

    def release_all(self) -> None:
        with self._lock:
            events = [e for (kind, _), e in self._events.items() if kind == "release"]
        for event in events:
            event.set()


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without OTEL_*/WPM_* variables, plus ``settings``."""
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("OTEL_", "WPM_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def instrumented(*command: str, exporter: str = "console") -> list[str]:
    """``command`` under ``opentelemetry-instrument``, exporting traces only (to ``exporter``)."""
    return [
        "opentelemetry-instrument",
        "--traces_exporter",
        exporter,
        "--metrics_exporter",
        "none",
        "--logs_exporter",
        "none",
        *command,
    ]


def flask_command(port: int, app_file: Path) -> list[str]:
    """``flask run`` of ``app_file`` on 127.0.0.1:``port``."""
    return ["flask", "--app", str(app_file), "run", "--host", "127.0.0.1", "--port", str(port)]


def gunicorn_command(port: int, chdir: Path, app: str) -> list[str]:
    """Two gunicorn workers serving ``app`` (``module:variable`` in ``chdir``) on ``port``."""
    return ["gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(chdir), app]


class ServerProcess:
    """A server started as a subprocess; stdout and stderr go to files in ``workdir``."""

    def __init__(self, command: list[str], env: dict[str, str], workdir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.stdout_path = workdir / "stdout.txt"
        self.stderr_path = workdir / "stderr.txt"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=out, stderr=err, start_new_session=True
            )

    def wait_ready(self, path: str = "/fast") -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}:\n{self.stderr()}"
                )
            try:
                return requests.get(self.url + path, timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_until(answers, f"{self.url} to answer")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            # The whole process group: gunicorn's workers go with their master.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def running_server(
    command: list[str], env: dict[str, str], workdir: Path, port: int, ready_path: str = "/fast"
) -> Iterator[ServerProcess]:
    server = ServerProcess(command, env, workdir, port)
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


def report_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.html") if not p.name.startswith("."))


def report_metadata(path: Path) -> dict[str, Any]:
    """The report's embedded metadata; ``UnreadableMetadata`` says what is wrong with it."""
    return read_metadata(path)


def report_pid(path: Path) -> int:
    match = _PROCESS_ROW.search(path.read_text(encoding="utf-8"))
    assert match, f"no Process row in {path}"
    return int(match.group(1))


_SESSION_DATA = re.compile(r"const sessionData = (\{.*?\});\n", re.DOTALL)


def profile_frames(path: Path) -> list[tuple[str, str, float]]:
    """(function, file name, seconds) of every node of the report's pyinstrument profile."""
    match = _SESSION_DATA.search(path.read_text(encoding="utf-8"))
    assert match, f"no profile in {path}"
    pending = [json.loads(match.group(1))["frame_tree"]]
    frames = []
    while pending:
        node = pending.pop()
        if node is None:
            continue
        function, _, rest = node["identifier"].partition("\x00")
        file_name = os.path.basename(rest.partition("\x00")[0])
        frames.append((function, file_name, float(node["time"])))
        pending += node["children"]
    return frames


def profile_paths(path: Path) -> list[tuple[tuple[str, ...], float]]:
    """Every root-to-leaf path of function names in the report's profile, with the leaf's time."""
    match = _SESSION_DATA.search(path.read_text(encoding="utf-8"))
    assert match, f"no profile in {path}"
    pending: list[tuple[tuple[str, ...], Any]] = [((), json.loads(match.group(1))["frame_tree"])]
    paths = []
    while pending:
        above, node = pending.pop()
        if node is None:
            continue
        names = (*above, node["identifier"].partition("\x00")[0])
        if node["children"]:
            pending += [(names, child) for child in node["children"]]
        else:
            paths.append((names, float(node["time"])))
    return paths


def has_path(report: Path, *functions: str) -> bool:
    """Whether a root-to-leaf path of the report's profile calls ``functions`` in this order
    (each one below the one before, not necessarily its direct callee)."""
    for names, _ in profile_paths(report):
        below = iter(names)
        if all(function in below for function in functions):
            return True
    return False


def seconds_in(report: Path, function: str) -> float:
    """The time of the profile's leaves at or below ``function``."""
    return sum(seconds for names, seconds in profile_paths(report) if function in names)


def profile_functions(path: Path, file_name: str) -> set[str]:
    """The functions of ``file_name`` (e.g. the app's module) in the report's profile."""
    return {function for function, in_file, _ in profile_frames(path) if in_file == file_name}


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (pretty JSON objects) among other output."""
    decoder = json.JSONDecoder()
    spans = []
    end = 0
    for match in re.finditer(r"^\{", text, re.MULTILINE):
        if match.start() < end:
            continue
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and "context" in value and "attributes" in value:
            spans.append(value)
    return spans


def server_span_for(spans: list[dict[str, Any]], path: str) -> Optional[dict[str, Any]]:
    """The exported SERVER span of the request for ``path`` (old or stable semconv)."""
    for span in spans:
        attributes = span["attributes"]
        target = attributes.get("url.path") or str(attributes.get("http.target", "")).split("?")[0]
        if span["kind"] == "SpanKind.SERVER" and target == path:
            return span
    return None


def trace_id_of(span: dict[str, Any]) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def reset_global_tracer_provider() -> None:
    """Let a test set the global TracerProvider again (the API allows it once per process)."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
