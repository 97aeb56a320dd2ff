"""The installed ``otel-wpm`` console script, run as a subprocess."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from apps.helpers import clean_env, free_port, running_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mattermost_server import FakeMattermostServer

import otel_wpm as otel_wpm_package
from otel_wpm.cli import config_toml
from otel_wpm.config import Config, read_env
from otel_wpm.reporting.report_format import parse_metadata, read_metadata
from otel_wpm.reporting.reporter import TEST_ALERT_ROUTE, TEST_ALERT_TRACE_ID

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TOKEN = "tok-SECRET-4f9a"
MATTERMOST_ON = {
    "WPM_ENABLE_MATTERMOST": "true",
    "WPM_MATTERMOST_TOKEN": TOKEN,
    "WPM_MATTERMOST_CHANNEL_ID": "town-square",
}

# Valid values of the settings whose text is free; the others keep their default.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(str.strip)
SETTING_STRATEGIES = {
    "threshold_seconds": st.floats(min_value=1e-6, max_value=1e6),
    "alert_queue_size": st.integers(min_value=1, max_value=2**40),
    "enable_mattermost": st.booleans(),
    "mattermost_server_url": st.just("https://chat.example.com:8065/prefix"),
    "mattermost_token": st.just(TOKEN),
    "mattermost_channel_id": TEXT,
    "local_output_dir": TEXT,
    "url_blacklist": st.lists(st.text(st.characters(blacklist_categories=("Cs",)))),
    "mask_keys": st.lists(st.text(string.printable)),
    "service_name": st.none() | TEXT,
    "log_level": st.sampled_from(["debug", "INFO", "Warning"]),
}


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
    """``name = value  # source`` lines as {name: "value  # source"}."""
    lines = {}
    for line in output.splitlines():
        name, separator, rest = line.partition(" = ")
        if separator and " " not in name:
            lines[name] = rest
    return lines


def printed_settings(output: str) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(output)["otel_wpm"]
    return table


def test_version(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"otel-wpm {otel_wpm_package.__version__}"


def test_config_shows_values_and_their_source(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path, "config", WPM_THRESHOLD_SECONDS="0.3", WPM_URL_BLACKLIST="^/health,^/static"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = setting_lines(result.stdout)
    assert lines["threshold_seconds"] == "0.3  # WPM_THRESHOLD_SECONDS"
    assert lines["url_blacklist"] == '["^/health", "^/static"]  # WPM_URL_BLACKLIST'
    assert lines["engine"] == '"sampling"  # default'
    assert result.stderr == ""


def test_config_is_toml_without_unset_settings(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "config", WPM_SERVICE_NAME="")
    assert result.returncode == 0, result.stdout + result.stderr
    printed = printed_settings(result.stdout)
    assert printed["threshold_seconds"] == 1.0
    for unset in ("service_name", "mattermost_token", "mattermost_server_url", "report_base_url"):
        assert unset not in printed
    assert "null" not in result.stdout and '""' not in result.stdout


def test_config_output_reads_back_to_the_same_settings(tmp_path: Path) -> None:
    settings = tmp_path / "wpm.toml"
    settings.write_text(
        "[otel_wpm]\n"
        'url_blacklist = ["^/a{1,3}$", "\\\\.png\\"?$", "caf\u00e9/\\t"]\n'
        "capture_body_bytes = 0\n"
        'trace_url_template = "http://127.0.0.1:16686/trace/{trace_id}?span={span_id}"\n'
    )
    env = {
        "WPM_CONFIG_FILE": str(settings),
        "WPM_THRESHOLD_SECONDS": "0.25",
        "WPM_ENABLED": "off",
        "WPM_MASK_KEYS": "ssn, pin",
        "WPM_SERVICE_NAME": "shop # eu",
        "WPM_LOCAL_OUTPUT_DIR": str(tmp_path / "reports"),
        "WPM_DEDUP_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    result = otel_wpm(tmp_path, "config", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    assert Config.from_file(printed) == Config.from_env(env)
    assert Config.from_file(printed).url_blacklist == ("^/a{1,3}$", '\\.png"?$', "caf\u00e9/\t")
    assert not (tmp_path / "reports").exists()  # checked without being created


def test_config_with_mattermost_masks_the_token_and_reads_back(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path, "config", WPM_MATTERMOST_SERVER_URL="https://chat.example.com", **MATTERMOST_ON
    )
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    config = Config.from_file(printed)
    assert config.mattermost_token == "***"
    assert config.replace(mattermost_token=TOKEN) == Config(
        enable_mattermost=True,
        mattermost_server_url="https://chat.example.com",
        mattermost_token=TOKEN,
        mattermost_channel_id="town-square",
    )


@given(config=st.builds(Config, **SETTING_STRATEGIES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_config_toml_reads_back_to_the_same_config(config: Config) -> None:
    printed = Config(**printed_settings(config_toml(config, read_env({}).sources)))
    assert printed.mattermost_token == ("***" if config.mattermost_token else None)
    assert printed.replace(mattermost_token=config.mattermost_token) == config


def test_config_bad_value_names_the_variable_and_value(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "config", WPM_THRESHOLD_SECONDS="soon")
    assert result.returncode == 2
    assert result.stderr.startswith("error: WPM_THRESHOLD_SECONDS ")
    assert "'soon'" in result.stderr
    assert result.stdout == ""


def test_config_reports_every_invalid_setting(tmp_path: Path) -> None:
    settings = tmp_path / "wpm.toml"
    settings.write_text("alert_queue_size = 0\nthreshold = 1\n")
    result = otel_wpm(
        tmp_path,
        "config",
        "--file",
        str(settings),
        WPM_THRESHOLD_SECONDS="soon",
        WPM_ENGINE="turbo",
        WPM_TRESHOLD_SECONDS="1",
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: unknown setting 'threshold' in config file {settings}",
        "error: WPM_THRESHOLD_SECONDS must be a positive number of seconds, got 'soon'",
        "error: WPM_ENGINE must be one of sampling, pyinstrument, got 'turbo'",
        f"error: alert_queue_size in {settings} must be an integer of at least 1, got 0",
        "problem: WPM_TRESHOLD_SECONDS is not an otel-wpm setting; ignored",
    ]


def test_config_file_under_env_vars(tmp_path: Path) -> None:
    settings = tmp_path / "wpm.toml"
    settings.write_text('[otel_wpm]\nthreshold_seconds = 0.4\nlocal_output_dir = "from-file"\n')
    result = otel_wpm(tmp_path, "config", "--file", str(settings), WPM_LOCAL_OUTPUT_DIR="env-dir")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = setting_lines(result.stdout)
    assert lines["threshold_seconds"] == f"0.4  # file {settings}"
    assert lines["local_output_dir"] == '"env-dir"  # WPM_LOCAL_OUTPUT_DIR'


def test_config_never_prints_the_token(tmp_path: Path) -> None:
    valid = otel_wpm(
        tmp_path, "config", WPM_MATTERMOST_SERVER_URL="https://chat.example.com", **MATTERMOST_ON
    )
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert setting_lines(valid.stdout)["mattermost_token"] == '"***"  # WPM_MATTERMOST_TOKEN'
    invalid = otel_wpm(
        tmp_path, "config", WPM_MATTERMOST_SERVER_URL=f"ftp://{TOKEN}@chat", **MATTERMOST_ON
    )
    assert invalid.returncode == 2
    assert "WPM_MATTERMOST_SERVER_URL" in invalid.stderr
    for result in (valid, invalid):
        assert TOKEN not in result.stdout + result.stderr


def test_config_lists_problems(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path, "config", WPM_URL_BLACKLIST='["^/ok", "(["]', WPM_TRESHOLD_SECONDS="1"
    )
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert any("'([' is not a regex" in problem for problem in problems)
    assert "problem: WPM_TRESHOLD_SECONDS is not an otel-wpm setting; ignored" in problems
    assert "ignoring invalid url_blacklist pattern" not in result.stderr
    assert printed_settings(result.stdout)["url_blacklist"] == ["^/ok", "(["]


def test_config_flags_an_output_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = otel_wpm(tmp_path, "config", WPM_LOCAL_OUTPUT_DIR="a-file/reports")
    assert result.returncode == 1
    assert result.stderr == (
        "problem: local_output_dir 'a-file/reports' cannot be created: Not a directory\n"
    )


def test_config_flags_an_output_dir_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = otel_wpm(tmp_path, "config", WPM_LOCAL_OUTPUT_DIR="a-file")
    assert result.returncode == 1
    assert "problem: local_output_dir 'a-file' cannot be written" in result.stderr
    off = otel_wpm(tmp_path, "config", WPM_LOCAL_OUTPUT_DIR="a-file", WPM_ENABLE_LOCAL_FILE="0")
    assert "local_output_dir" not in off.stderr  # not needed when local files are off


def test_config_accepts_an_output_dir_it_can_create(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "config", WPM_LOCAL_OUTPUT_DIR="new/reports")
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_test_alert_to_the_local_file(tmp_path: Path) -> None:
    result = otel_wpm(tmp_path, "test-alert", WPM_LOCAL_OUTPUT_DIR="out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["local_file: ok"]
    (line,) = (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["service"] == "otel-wpm"
    # the report it names was written, beside it
    assert read_metadata(tmp_path / "out" / record["report_file"])["route"] == TEST_ALERT_ROUTE


def test_test_alert_posts_a_real_report_to_mattermost(
    tmp_path: Path, mattermost_server: FakeMattermostServer
) -> None:
    result = otel_wpm(
        tmp_path,
        "test-alert",
        WPM_LOCAL_OUTPUT_DIR="out",
        WPM_ENABLE_MATTERMOST="true",
        WPM_MATTERMOST_SERVER_URL=mattermost_server.url,
        WPM_MATTERMOST_TOKEN=mattermost_server.token,
        WPM_MATTERMOST_CHANNEL_ID=mattermost_server.channel_id,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["local_file: ok", "mattermost: ok"]
    (post,) = mattermost_server.posts
    (upload,) = mattermost_server.files
    assert post["file_ids"] == [upload.id]
    assert upload.mime_type == "text/html"
    meta = parse_metadata(upload.data)
    assert (meta["route"], meta["trace_id"]) == (TEST_ALERT_ROUTE, TEST_ALERT_TRACE_ID)
    assert (tmp_path / "out" / upload.name).read_bytes() == upload.data


def test_test_alert_fails_on_an_unreachable_mattermost(tmp_path: Path) -> None:
    result = otel_wpm(
        tmp_path,
        "test-alert",
        WPM_ENABLE_LOCAL_FILE="false",
        WPM_MATTERMOST_SERVER_URL=f"http://127.0.0.1:{free_port()}",
        **MATTERMOST_ON,
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
            WPM_MATTERMOST_SERVER_URL="https://chat.example.com",
            WPM_DEDUP_REDIS_URL="redis://127.0.0.1:6379/0",
            **MATTERMOST_ON,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    problems = result.stderr
    assert "mattermostdriver is not installed (pip install 'otel-wpm[mattermost]')" in problems
    assert "redis is not installed (pip install 'otel-wpm[redis]')" in problems
