from __future__ import annotations

import copy
import dataclasses
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from otel_wpm.config import SETTING_NAMES, Config, ConfigError, env_var_name, read_env

TOKEN = "s3cr3t-token-value"

EXPECTED_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "threshold_seconds": 1.0,
    "alert_window_days": 10,
    "max_performance_overhead": 0.05,
    "enable_local_file": True,
    "local_output_dir": "performance_reports",
    "enable_mattermost": False,
    "mattermost_server_url": None,
    "mattermost_token": None,
    "mattermost_channel_id": None,
    "mattermost_timeout_seconds": 10.0,
    "url_blacklist": [],
    "enable_url_blacklist": True,
    "log_level": "INFO",
    "service_name": None,
    "engine": "sampling",
    "sampling_interval_seconds": 0.01,
    "early_sampling_interval_seconds": 0.1,
    "sample_after_fraction": 0.25,
    "report_base_url": None,
    "trace_url_template": None,
    "capture_body_bytes": 65536,
    "capture_headers": True,
    "mask_keys": [],
    "mask_value_patterns": [],
    "hung_request_factor": 5.0,
    "report_max_files": 1000,
    "report_max_bytes": 512 * 1024 * 1024,
    "report_max_age_days": 30,
    "dedup_redis_url": None,
    "report_store": None,
    "report_store_endpoint_url": None,
    "report_spool_max_bytes": 128 * 1024 * 1024,
    "alert_queue_size": 1000,
    "report_queue_size": 1000,
    "shutdown_timeout_seconds": 10.0,
}

MATTERMOST_OK = {
    "enable_mattermost": True,
    "mattermost_server_url": "https://mm.example.com",
    "mattermost_token": TOKEN,
    "mattermost_channel_id": "channel-1",
}


def test_defaults() -> None:
    config = Config()
    assert config.as_dict(masked=False) == EXPECTED_DEFAULTS
    assert set(SETTING_NAMES) == set(EXPECTED_DEFAULTS)


def test_code_arguments() -> None:
    config = Config(threshold_seconds=1.0, enable_local_file=True, local_output_dir="/tmp/reports")
    assert config.threshold_seconds == 1.0
    assert config.local_output_dir == "/tmp/reports"


def test_values_are_normalised() -> None:
    config = Config(
        threshold_seconds=2,
        log_level="debug",
        engine="PyInstrument",
        report_base_url="http://reports.internal:8099/",
        url_blacklist=("^/health",),
    )
    assert isinstance(config.threshold_seconds, float)
    assert config.log_level == "DEBUG"
    assert config.engine == "pyinstrument"
    assert config.report_base_url == "http://reports.internal:8099"
    assert config.url_blacklist == ("^/health",)


def test_valid_optional_settings() -> None:
    config = Config(
        **MATTERMOST_OK,
        trace_url_template="http://localhost:16686/trace/{trace_id}?span={span_id}",
        dedup_redis_url="rediss://cache:6380/0",
        hung_request_factor=0,
        service_name="shop",
    )
    assert config.enable_mattermost
    assert Config(mattermost_server_url="", enable_mattermost=False).mattermost_server_url is None
    assert Config(dedup_redis_url="unix:///run/redis.sock").dedup_redis_url


@pytest.mark.parametrize(
    ("setting", "bad_value"),
    [
        ("enabled", "maybe"),
        ("enabled", 1),
        ("threshold_seconds", -1),
        ("threshold_seconds", 0),
        ("threshold_seconds", "soon"),
        ("threshold_seconds", "-1"),
        ("threshold_seconds", float("nan")),
        ("threshold_seconds", True),
        ("alert_window_days", -0.5),
        ("max_performance_overhead", 0),
        ("max_performance_overhead", 101),
        ("mattermost_timeout_seconds", 0),
        ("url_blacklist", "^/health"),
        ("url_blacklist", [1]),
        ("log_level", "VERBOSE"),
        ("service_name", 42),
        ("engine", "cprofile"),
        ("sampling_interval_seconds", 0.0001),
        ("sampling_interval_seconds", 2),
        ("early_sampling_interval_seconds", 0.0001),
        ("early_sampling_interval_seconds", -1),
        ("sample_after_fraction", 1.1),
        ("report_base_url", "ftp://reports"),
        ("report_base_url", "reports.internal:8099"),
        ("trace_url_template", "http://jaeger/trace"),
        ("trace_url_template", "http://jaeger/{trace_id}/{other}"),
        ("capture_body_bytes", -1),
        ("capture_body_bytes", 1.5),
        ("capture_body_bytes", "1.5"),
        ("capture_headers", 1),
        ("mask_keys", "ssn"),
        ("mask_value_patterns", ["ok", "(unclosed"]),
        ("hung_request_factor", 0.5),
        ("report_max_files", -1),
        ("report_max_bytes", -1),
        ("report_max_age_days", -1),
        ("dedup_redis_url", "http://cache:6379"),
        ("report_store", "gs://reports/prefix"),
        ("report_store", "s3://Reports/prefix"),
        ("report_store", "s3:///prefix"),
        ("report_store", "s3://reports/a//b"),
        ("report_store_endpoint_url", "minio:9000"),
        ("report_spool_max_bytes", -1),
        ("alert_queue_size", 0),
        ("report_queue_size", 0),
        ("shutdown_timeout_seconds", -3),
        ("local_output_dir", ""),
    ],
)
def test_bad_value_names_setting_and_value(setting: str, bad_value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(**{setting: bad_value})
    message = str(caught.value)
    assert message.startswith(setting)
    if bad_value != "":
        assert repr(bad_value) in message
    assert caught.value.setting == setting


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://reports", "s3://reports"),
        ("s3://my-reports/shop/prod/", "s3://my-reports/shop/prod/"),
        ("/var/lib/shop/reports", "/var/lib/shop/reports"),
        ("  ", None),
    ],
)
def test_report_store_is_a_directory_or_a_bucket_url(value: str, expected: Any) -> None:
    assert Config(report_store=value).report_store == expected


def test_threshold_message_wording() -> None:
    with pytest.raises(
        ConfigError, match="threshold_seconds must be a positive number of seconds, got -1"
    ):
        Config(threshold_seconds=-1)


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ({"mattermost_server_url": "mm.example.com"}, "mattermost_server_url"),
        ({"mattermost_server_url": "https://"}, "mattermost_server_url"),
        ({"mattermost_token": ""}, "mattermost_token"),
        ({"mattermost_token": None}, "mattermost_token"),
        ({"mattermost_channel_id": ""}, "mattermost_channel_id"),
        ({"mattermost_server_url": None}, "mattermost_server_url"),
    ],
)
def test_enabled_mattermost_needs_url_token_and_channel(
    override: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError, match=setting) as caught:
        Config(**{**MATTERMOST_OK, **override})
    assert TOKEN not in str(caught.value)


def test_mattermost_url_with_path_and_port() -> None:
    config = Config(**{**MATTERMOST_OK, "mattermost_server_url": "http://127.0.0.1:8065/prefix"})
    assert config.mattermost_server_url == "http://127.0.0.1:8065/prefix"


def test_unknown_keyword_is_type_error() -> None:
    with pytest.raises(TypeError):
        Config(threshold=1)  # type: ignore[call-arg]


# --- None means unset, text as in the environment ------------------------------------


def test_mattermost_from_unset_variables_with_mattermost_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As web-performance-monitor's documentation builds it.
    for var in ("MATTERMOST_URL", "MATTERMOST_TOKEN", "MATTERMOST_CHANNEL"):
        monkeypatch.delenv(var, raising=False)
    config = Config(
        threshold_seconds=2.0,
        enable_mattermost=False,
        mattermost_server_url=os.getenv("MATTERMOST_URL"),
        mattermost_token=os.getenv("MATTERMOST_TOKEN"),
        mattermost_channel_id=os.getenv("MATTERMOST_CHANNEL"),
    )
    assert config.mattermost_server_url is None
    assert config == Config(threshold_seconds=2.0)


def test_mattermost_on_with_unset_variables_names_each_missing_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MATTERMOST_URL", raising=False)
    monkeypatch.delenv("MATTERMOST_TOKEN", raising=False)
    with pytest.raises(ConfigError) as caught:
        Config(
            enable_mattermost=True,
            mattermost_server_url=os.getenv("MATTERMOST_URL"),
            mattermost_token=os.getenv("MATTERMOST_TOKEN"),
            mattermost_channel_id="town-square",
        )
    assert [error.setting for error in caught.value.errors] == [
        "mattermost_server_url",
        "mattermost_token",
    ]
    assert "mattermost_server_url must be set when enable_mattermost is true" in str(caught.value)


@pytest.mark.parametrize("setting", SETTING_NAMES)
def test_none_means_the_default(setting: str) -> None:
    assert Config(**{setting: None}) == Config()


@pytest.mark.parametrize(
    ("setting", "text"),
    [
        ("threshold_seconds", "1.5"),
        ("threshold_seconds", " 2 "),
        ("alert_window_days", "7"),
        ("max_performance_overhead", "0.03"),
        ("capture_body_bytes", "1024"),
        ("alert_queue_size", "10"),
        ("enabled", "false"),
        ("enable_mattermost", "0"),
        ("capture_headers", "No"),
        ("enable_local_file", "TRUE"),
        ("enable_url_blacklist", "on"),
        ("log_level", "warning"),
        ("service_name", "  "),
    ],
)
def test_text_in_code_reads_as_the_environment_reads_it(
    monkeypatch: pytest.MonkeyPatch, setting: str, text: str
) -> None:
    monkeypatch.setenv("APP_SETTING", text)
    from_code = Config(**{setting: os.getenv("APP_SETTING")})
    assert from_code == Config.from_env({env_var_name(setting): text})
    assert type(getattr(from_code, setting)) is type(getattr(Config(), setting)) or (
        getattr(from_code, setting) is None
    )


@pytest.mark.parametrize(
    ("setting", "text"),
    [
        ("threshold_seconds", "1,5"),
        ("threshold_seconds", "nan"),
        ("capture_body_bytes", "64k"),
        ("enabled", "maybe"),
        ("alert_queue_size", "0"),
    ],
)
def test_bad_text_in_code_gets_the_environment_message(setting: str, text: str) -> None:
    with pytest.raises(ConfigError) as in_code:
        Config(**{setting: text})
    with pytest.raises(ConfigError) as in_env:
        Config.from_env({env_var_name(setting): text})
    assert str(in_code.value) == str(in_env.value).replace(env_var_name(setting), setting)
    assert repr(text) in str(in_code.value)


@pytest.mark.parametrize("setting", [n for n in SETTING_NAMES if EXPECTED_DEFAULTS[n] is not None])
def test_each_kind_reads_its_default_written_as_env_text(setting: str) -> None:
    default = EXPECTED_DEFAULTS[setting]
    if isinstance(default, bool):
        text = str(default).lower()
    elif isinstance(default, list):
        text = ",".join(default)
    else:
        text = str(default)
    assert Config.from_env({env_var_name(setting): text}) == Config()


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Config(threshold_seconds="soon", engine="turbo", capture_body_bytes=-1)
    assert [error.setting for error in caught.value.errors] == [
        "threshold_seconds",
        "engine",
        "capture_body_bytes",
    ]
    for error in caught.value.errors:
        assert str(error) in str(caught.value)


def test_every_bad_variable_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text("alert_queue_size = 0\ntreshold = 2\n")
    environ = {
        "WPM_CONFIG_FILE": str(path),
        "WPM_THRESHOLD_SECONDS": "soon",
        "WPM_ENGINE": "turbo",
    }
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    messages = [str(error) for error in caught.value.errors]
    assert messages == [
        f"unknown setting 'treshold' in config file {path}",
        "WPM_THRESHOLD_SECONDS must be a positive number of seconds, got 'soon'",
        "WPM_ENGINE must be one of sampling, pyinstrument, got 'turbo'",
        f"alert_queue_size in {path} must be an integer of at least 1, got 0",
    ]


def test_read_env_says_where_each_setting_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text("threshold_seconds = 3\nengine = 'pyinstrument'\n")
    settings = read_env({"WPM_CONFIG_FILE": str(path), "WPM_ENGINE": "sampling"})
    assert settings.sources["threshold_seconds"].where == f"file {path}"
    assert settings.sources["threshold_seconds"].name == f"threshold_seconds in {path}"
    assert settings.sources["engine"].where == "WPM_ENGINE"
    assert settings.sources["log_level"].where == "default"
    assert settings.sources["log_level"].name == "WPM_LOG_LEVEL"
    assert settings.build() == Config(threshold_seconds=3)


# --- frozen data ----------------------------------------------------------------------


def test_settings_cannot_be_assigned() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold_seconds = 0.1  # type: ignore[misc]
    assert config.threshold_seconds == 1.0


def test_equal_configs_hash_alike_whatever_their_black_lists() -> None:
    first, second = Config(url_blacklist=["^/a"]), Config(url_blacklist=["^/a"])
    first.add_blacklist_url("^/b")
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


# --- the token never shows --------------------------------------------------


def test_token_hidden_in_repr_str_and_masked_dict() -> None:
    config = Config(**MATTERMOST_OK)
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert "mattermost_token='***'" in repr(config)
    assert config.as_dict()["mattermost_token"] == "***"
    assert TOKEN not in str(config.as_dict())
    assert config.as_dict(masked=False)["mattermost_token"] == TOKEN


def test_token_absent_from_error_about_bad_url() -> None:
    with pytest.raises(ConfigError) as caught:
        Config(**{**MATTERMOST_OK, "mattermost_server_url": "not a url"})
    assert "mattermost_server_url" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_token_scrubbed_even_if_pasted_into_another_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        Config(**{**MATTERMOST_OK, "mattermost_server_url": TOKEN})
    assert TOKEN not in str(caught.value)


def test_token_absent_from_env_errors() -> None:
    environ = {
        "WPM_ENABLE_MATTERMOST": "true",
        "WPM_MATTERMOST_SERVER_URL": "ftp://mm",
        "WPM_MATTERMOST_TOKEN": TOKEN,
        "WPM_MATTERMOST_CHANNEL_ID": "c",
    }
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    assert "WPM_MATTERMOST_SERVER_URL" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_url_credentials_hidden_in_display_and_errors() -> None:
    config = Config(dedup_redis_url="redis://:hunter22@cache:6379/0")
    assert "hunter22" not in repr(config)
    with pytest.raises(ConfigError) as caught:
        Config(report_base_url="ftp://bob:hunter22@reports")
    assert "hunter22" not in str(caught.value)


# --- from_env -----------------------------------------------------------------


def test_from_env_unset_keeps_defaults() -> None:
    assert Config.from_env({}) == Config()


def test_from_env_reads_every_setting_type() -> None:
    environ = {
        "WPM_ENABLED": "Off",
        "WPM_THRESHOLD_SECONDS": "0.5",
        "WPM_CAPTURE_BODY_BYTES": "1024",
        "WPM_ENGINE": "pyinstrument",
        "WPM_URL_BLACKLIST": "^/health, ^/metrics,,",
        "WPM_MASK_KEYS": "ssn,pin",
        "WPM_SERVICE_NAME": "shop",
        "WPM_REPORT_BASE_URL": "",
        "WPM_LOG_LEVEL": "warning",
        "UNRELATED": "x",
    }
    config = Config.from_env(environ)
    assert config.enabled is False
    assert config.threshold_seconds == 0.5
    assert config.capture_body_bytes == 1024
    assert config.engine == "pyinstrument"
    assert config.url_blacklist == ("^/health", "^/metrics")
    assert config.mask_keys == ("ssn", "pin")
    assert config.service_name == "shop"
    assert config.report_base_url is None
    assert config.log_level == "WARNING"


def test_from_env_list_as_json_allows_commas() -> None:
    config = Config.from_env({"WPM_URL_BLACKLIST": '["^/a{1,3}$", "^/b"]'})
    assert config.url_blacklist == ("^/a{1,3}$", "^/b")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_from_env_booleans(raw: str, expected: bool) -> None:
    assert Config.from_env({"WPM_CAPTURE_HEADERS": raw}).capture_headers is expected


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("WPM_THRESHOLD_SECONDS", "abc"),
        ("WPM_THRESHOLD_SECONDS", "-1"),
        ("WPM_ENABLED", "maybe"),
        ("WPM_CAPTURE_BODY_BYTES", "1.5"),
        ("WPM_ENGINE", "cprofile"),
        ("WPM_URL_BLACKLIST", "[not json"),
        ("WPM_TRACE_URL_TEMPLATE", "http://jaeger/trace"),
    ],
)
def test_from_env_error_names_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({var: raw})
    assert str(caught.value).startswith(var)
    assert var.removeprefix("WPM_").lower() + " " not in str(caught.value)


def test_from_env_error_wording() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"WPM_THRESHOLD_SECONDS": "abc"})
    assert (
        str(caught.value) == "WPM_THRESHOLD_SECONDS must be a positive number of seconds, got 'abc'"
    )


def test_from_env_missing_requirement_names_the_variable_to_set() -> None:
    with pytest.raises(ConfigError, match="WPM_MATTERMOST_TOKEN"):
        Config.from_env(
            {
                "WPM_ENABLE_MATTERMOST": "1",
                "WPM_MATTERMOST_SERVER_URL": "https://mm",
                "WPM_MATTERMOST_CHANNEL_ID": "c",
            }
        )


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WPM_ALERT_QUEUE_SIZE", "7")
    monkeypatch.setenv("WPM_REPORT_QUEUE_SIZE", "9")
    config = Config.from_env()
    assert (config.alert_queue_size, config.report_queue_size) == (7, 9)


def test_env_var_name() -> None:
    assert env_var_name("threshold_seconds") == "WPM_THRESHOLD_SECONDS"


def test_from_env_config_file_then_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text('threshold_seconds = 3\nengine = "pyinstrument"\nmask_keys = ["ssn"]\n')
    config = Config.from_env({"WPM_CONFIG_FILE": str(path), "WPM_THRESHOLD_SECONDS": "0.2"})
    assert config.threshold_seconds == 0.2
    assert config.engine == "pyinstrument"
    assert config.mask_keys == ("ssn",)


def test_from_env_error_from_config_file_names_file_key(tmp_path: Path) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text("alert_queue_size = 0\n")
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"WPM_CONFIG_FILE": str(path)})
    assert f"alert_queue_size in {path}" in str(caught.value)


# --- from_file ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        'threshold_seconds = 2.5\nurl_blacklist = ["^/health"]\n',
        '[otel_wpm]\nthreshold_seconds = 2.5\nurl_blacklist = ["^/health"]\n',
        '[project]\nname = "app"\n[tool.otel_wpm]\nthreshold_seconds = 2.5\n'
        'url_blacklist = ["^/health"]\n',
    ],
    ids=["top-level", "table", "pyproject"],
)
def test_from_file_layouts(tmp_path: Path, content: str) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text(content)
    config = Config.from_file(path)
    assert config.threshold_seconds == 2.5
    assert config.is_url_blacklisted("http://app/health")


def test_from_file_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text("threshold = 2\n")
    with pytest.raises(ConfigError) as caught:
        Config.from_file(path)
    assert "'threshold'" in str(caught.value)
    assert str(path) in str(caught.value)


def test_from_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="absent.toml"):
        Config.from_file(path)


def test_from_file_unparsable(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("threshold_seconds = = 1\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        Config.from_file(str(path))


def test_from_file_bad_value_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "wpm.toml"
    path.write_text('threshold_seconds = "fast"\n')
    with pytest.raises(ConfigError) as caught:
        Config.from_file(path)
    assert f"threshold_seconds in {path}" in str(caught.value)
    assert "'fast'" in str(caught.value)


# --- replace and copies ---------------------------------------------------------


def test_replace_returns_new_validated_config() -> None:
    original = Config(url_blacklist=["^/a"])
    changed = original.replace(threshold_seconds=0.3)
    assert changed.threshold_seconds == 0.3
    assert original.threshold_seconds == 1.0
    assert changed.is_url_blacklisted("/a")
    changed.add_blacklist_url("^/b")
    assert not original.is_url_blacklisted("/b")
    with pytest.raises(ConfigError, match="threshold_seconds"):
        original.replace(threshold_seconds=0)


def test_pickle_and_deepcopy_keep_the_blacklist() -> None:
    config = Config(url_blacklist=["^/health"])
    for clone in (pickle.loads(pickle.dumps(config)), copy.deepcopy(config)):
        assert clone == config
        assert clone.is_url_blacklisted("/health")


# --- blacklist ------------------------------------------------------------------


def test_blacklist_matches_full_url_or_path() -> None:
    config = Config(url_blacklist=[r"^/health$", r"static\.example\.com"])
    assert config.is_url_blacklisted("http://app/health")
    assert config.is_url_blacklisted("http://static.example.com/logo.png")
    assert not config.is_url_blacklisted("http://app/healthy")
    assert not config.is_url_blacklisted("http://app/orders?next=/health")


def test_blacklist_uses_given_path() -> None:
    config = Config(url_blacklist=["^/internal/"])
    assert config.is_url_blacklisted("http://app/x", path="/internal/ping")
    assert not config.is_url_blacklisted("http://app/internal/ping", path="/public")


def test_blacklist_disabled() -> None:
    config = Config(url_blacklist=["health"], enable_url_blacklist=False)
    assert not config.is_url_blacklisted("http://app/health")


def test_add_and_remove_blacklist_url() -> None:
    config = Config()
    assert not config.is_url_blacklisted("http://app/metrics")
    assert config.add_blacklist_url("^/metrics")
    assert config.add_blacklist_url("^/metrics")
    assert config.url_filter.patterns == ("^/metrics",)
    assert config.url_blacklist == ()  # the setting: what the black-list started from
    assert config.is_url_blacklisted("http://app/metrics")
    assert config.remove_blacklist_url("^/metrics")
    assert not config.remove_blacklist_url("^/metrics")
    assert not config.is_url_blacklisted("http://app/metrics")


def test_invalid_blacklist_regex_is_logged_once_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        config = Config(url_blacklist=["(unclosed-one", "^/ok"])
        config.replace(threshold_seconds=2)
    warnings = [r for r in caplog.records if "(unclosed-one" in r.getMessage()]
    assert len(warnings) == 1
    assert "missing )" in warnings[0].getMessage()
    assert config.is_url_blacklisted("/ok")
    assert not config.is_url_blacklisted("/(unclosed-one")


def test_add_invalid_blacklist_regex(caplog: pytest.LogCaptureFixture) -> None:
    config = Config()
    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        assert not config.add_blacklist_url("[bad")
    assert "[bad" in caplog.text
    assert config.url_filter.patterns == ()


def test_remove_invalid_pattern_from_list() -> None:
    config = Config(url_blacklist=["*nope"])
    assert config.remove_blacklist_url("*nope")
    assert config.url_filter.patterns == ()
