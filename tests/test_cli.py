"""The installed ``otel-wpm`` console script, run as a subprocess."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from apps.helpers import clean_env, free_port, running_server

TOKEN = "tok-SECRET-4f9a"


def otel_wpm(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["otel-wpm", *args],
        env=clean_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def setting_lines(output: str) -> dict[str, str]:
    """``name = value  (source)`` lines as {name: "value  (source)"}."""
    lines = {}
    for line in output.splitlines():
        name, separator, rest = line.partition(" = ")
        if separator and " " not in name:
            lines[name] = rest
    return lines


def test_config_shows_values_and_their_source(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path, "config", WPM_THRESHOLD_SECONDS="0.3", WPM_URL_BLACKLIST="^/health,^/static"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = setting_lines(result.stdout)
    assert lines["threshold_seconds"] == "0.3  (WPM_THRESHOLD_SECONDS)"
    assert lines["url_blacklist"] == '["^/health", "^/static"]  (WPM_URL_BLACKLIST)'
    assert lines["engine"] == '"sampling"  (default)'
    assert "problems" not in result.stdout


def test_config_file_under_env_vars(tmp_path: Path) -> None:
    settings = tmp_path / "wpm.toml"
    settings.write_text('[otel_wpm]\nthreshold_seconds = 0.4\nlocal_output_dir = "from-file"\n')
    result = otel_wpm(tmp_path, "config", "--file", str(settings), WPM_LOCAL_OUTPUT_DIR="env-dir")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = setting_lines(result.stdout)
    assert lines["threshold_seconds"] == f"0.4  (file {settings})"
    assert lines["local_output_dir"] == '"env-dir"  (WPM_LOCAL_OUTPUT_DIR)'


def test_config_bad_value_names_the_variable_and_value(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "config", WPM_THRESHOLD_SECONDS="soon")
    assert result.returncode == 2
    assert result.stdout.startswith("error: WPM_THRESHOLD_SECONDS ")
    assert "'soon'" in result.stdout


def test_config_never_prints_the_token(tmp_path: Path) -> None:
    mattermost = {
        "WPM_ENABLE_MATTERMOST": "true",
        "WPM_MATTERMOST_TOKEN": TOKEN,
        "WPM_MATTERMOST_CHANNEL_ID": "town-square",
    }
    valid = otel_wpm(
        tmp_path, "config", WPM_MATTERMOST_SERVER_URL="https://chat.example.com", **mattermost
    )
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert setting_lines(valid.stdout)["mattermost_token"] == '"***"  (WPM_MATTERMOST_TOKEN)'
    invalid = otel_wpm(
        tmp_path, "config", WPM_MATTERMOST_SERVER_URL=f"ftp://{TOKEN}@chat", **mattermost
    )
    assert invalid.returncode == 2
    assert "WPM_MATTERMOST_SERVER_URL" in invalid.stdout
    for result in (valid, invalid):
        assert TOKEN not in result.stdout + result.stderr


def test_config_lists_problems(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path, "config", WPM_URL_BLACKLIST='["^/ok", "(["]', WPM_TRESHOLD_SECONDS="1"
    )
    assert result.returncode == 1
    problems = result.stdout.split("problems:", 1)[1]
    assert "'([' is not a regex" in problems
    assert "WPM_TRESHOLD_SECONDS is not an otel-wpm setting" in problems
    assert "ignoring invalid url_blacklist pattern" not in result.stderr


def test_test_alert_to_the_local_file(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "test-alert", WPM_LOCAL_OUTPUT_DIR="out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["local_file: ok"]
    (line,) = (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["service"] == "otel-wpm"


def test_test_alert_fails_on_an_unreachable_mattermost(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path,
        "test-alert",
        WPM_ENABLE_LOCAL_FILE="false",
        WPM_ENABLE_MATTERMOST="true",
        WPM_MATTERMOST_SERVER_URL=f"http://127.0.0.1:{free_port()}",
        WPM_MATTERMOST_TOKEN=TOKEN,
        WPM_MATTERMOST_CHANNEL_ID="town-square",
        WPM_MATTERMOST_TIMEOUT_SECONDS="0.5",
    )
    assert result.returncode == 1
    assert "mattermost: FAILED" in result.stdout
    assert "error: mattermost" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_test_alert_with_invalid_settings(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "test-alert", WPM_ENGINE="turbo")
    assert result.returncode == 2
    assert "WPM_ENGINE" in result.stdout and "'turbo'" in result.stdout


def test_no_command_prints_usage(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path)
    assert result.returncode == 2
    assert "config" in result.stdout and "test-alert" in result.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("otel_wpm.server") is None, reason="otel_wpm.server not present"
)
def test_serve_answers_on_loopback(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    port = free_port()
    command = ["otel-wpm", "serve", "--dir", "reports", "--port", str(port)]
    with running_server(command, clean_env(), tmp_path, port, ready_path="/") as server:
        response = requests.get(server.url + "/", timeout=10)
        assert response.status_code == 200
        assert "text/html" in response.headers["Content-Type"]


def test_config_names_missing_optional_packages(tmp_path: Path) -> None:
    # As if neither extra were installed: an import of a None entry in sys.modules fails.
    code = (
        "import sys; sys.modules['mattermostdriver'] = None; sys.modules['redis'] = None; "
        "from otel_wpm.cli import main; sys.exit(main(['config']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(
            WPM_ENABLE_MATTERMOST="true",
            WPM_MATTERMOST_SERVER_URL="https://chat.example.com",
            WPM_MATTERMOST_TOKEN=TOKEN,
            WPM_MATTERMOST_CHANNEL_ID="town-square",
            WPM_DEDUP_REDIS_URL="redis://127.0.0.1:6379/0",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    problems = result.stdout.split("problems:", 1)[1]
    assert "mattermostdriver is not installed (pip install 'otel-wpm[mattermost]')" in problems
    assert "redis is not installed (pip install 'otel-wpm[redis]')" in problems
