"""All otel-wpm settings, validated when built.

Usage::

    from otel_wpm.config import Config, ConfigError

    config = Config(threshold_seconds=0.5, local_output_dir="/var/reports")
    config = Config.from_env()              # WPM_THRESHOLD_SECONDS=0.5, WPM_ENGINE=..., ...
    config = Config.from_file("wpm.toml")   # top-level keys, [otel_wpm] or [tool.otel_wpm]
    stricter = config.replace(threshold_seconds=0.2)

    config.add_blacklist_url(r"^/health")
    config.is_url_blacklisted("http://app/health?x=1")   # True

``Config.from_env`` reads ``WPM_<SETTING>`` for every setting, on top of the
TOML file named by ``WPM_CONFIG_FILE`` when set. List settings are
comma-separated, or a JSON list (``'["^/a{1,3}$"]'``) when a regex needs a comma.

A bad value raises ``ConfigError`` naming where it came from (the keyword, the
env var or the file key) and the value. The Mattermost token is never shown:
``repr``, ``as_dict()`` and error messages mask it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from .masking import SecretMasker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "ENV_PREFIX", "CONFIG_FILE_ENV_VAR", "env_var_name"]

_log = logging.getLogger(__name__)

ENV_PREFIX = "WPM_"
CONFIG_FILE_ENV_VAR = "WPM_CONFIG_FILE"
HIDDEN_VALUE = "***"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENGINES = ("sampling", "pyinstrument")
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
HTTP_SCHEMES = ("http", "https")
REDIS_SCHEMES = ("redis", "rediss", "unix")

_url_masker = SecretMasker()
_invalid_patterns_reported: set[str] = set()


class ConfigError(ValueError):
    """A setting has a bad value, or the configuration source cannot be read.

    ``setting`` is the setting's name when one setting is at fault; ``reason`` is
    the message without the name, so the caller can name the source instead.
    """

    def __init__(self, message: str, setting: Optional[str] = None, reason: str = "") -> None:
        super().__init__(message)
        self.setting = setting
        self.reason = reason

    @classmethod
    def invalid(cls, setting: str, reason: str) -> ConfigError:
        return cls(f"{setting} {reason}", setting=setting, reason=reason)

    def renamed(self, source_name: str) -> ConfigError:
        """The same error, naming where the value came from (e.g. an env var)."""
        return ConfigError(f"{source_name} {self.reason}", setting=self.setting, reason=self.reason)

    def scrubbed(self, secrets: list[str]) -> ConfigError:
        mask = SecretMasker.mask_text
        return ConfigError(mask(str(self), secrets), self.setting, mask(self.reason, secrets))


def env_var_name(setting: str) -> str:
    """``threshold_seconds`` -> ``WPM_THRESHOLD_SECONDS``."""
    return ENV_PREFIX + setting.upper()


@dataclass(repr=False)
class Config:
    """Every otel-wpm setting. Built from keywords, ``from_env`` or ``from_file``."""

    enabled: bool = True
    threshold_seconds: float = 1.0
    alert_window_days: float = 10
    max_performance_overhead: float = 0.05
    enable_local_file: bool = True
    local_output_dir: str = "performance_reports"
    enable_mattermost: bool = False
    mattermost_server_url: str = ""
    mattermost_token: str = ""
    mattermost_channel_id: str = ""
    mattermost_timeout_seconds: float = 10.0
    url_blacklist: list[str] = field(default_factory=list)
    enable_url_blacklist: bool = True
    log_level: str = "INFO"
    service_name: Optional[str] = None
    engine: str = "sampling"
    sampling_interval_seconds: float = 0.01
    sample_after_fraction: float = 0.25
    report_base_url: Optional[str] = None
    trace_url_template: Optional[str] = None
    capture_body_bytes: int = 65536
    capture_headers: bool = True
    mask_keys: list[str] = field(default_factory=list)
    hung_request_factor: float = 5.0
    report_max_files: int = 1000
    report_max_bytes: int = 512 * 1024 * 1024
    report_max_age_days: float = 30
    dedup_redis_url: Optional[str] = None
    alert_queue_size: int = 1000
    shutdown_timeout_seconds: float = 10.0

    # The blacklist can change at runtime while request threads match against it.
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _blacklist: tuple[re.Pattern[str], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        try:
            _validate(self)
        except ConfigError as err:
            # "from None": the chained original would print the unscrubbed message.
            raise err.scrubbed([self.mattermost_token]) from None
        self._blacklist = _compile_blacklist(self.url_blacklist, warn=True)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Config:
        """Settings from ``WPM_*`` variables, over the ``WPM_CONFIG_FILE`` file if set."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        # Settings left at their default are named by the variable that would set them.
        sources = {name: env_var_name(name) for name in _SETTING_KINDS}
        config_file = env.get(CONFIG_FILE_ENV_VAR)
        if config_file:
            values = _read_settings_file(config_file)
            sources.update({name: f"{name} in {config_file}" for name in values})
        for name, kind in _SETTING_KINDS.items():
            var = env_var_name(name)
            if var in env:
                values[name] = _parse_env_value(kind, env[var])
                sources[name] = var
        return _build(values, sources)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        """Settings from a TOML file (top-level keys, ``[otel_wpm]`` or ``[tool.otel_wpm]``)."""
        values = _read_settings_file(path)
        return _build(values, {name: f"{name} in {os.fspath(path)}" for name in values})

    def replace(self, **changes: Any) -> Config:
        """A new validated Config with ``changes`` applied; this one is left as is."""
        with self._lock:
            return dataclasses.replace(self, **changes)

    def as_dict(self, masked: bool = True) -> dict[str, Any]:
        """Settings by name, lists copied. ``masked`` hides the token and URL credentials."""
        with self._lock:
            settings = {name: _copied(getattr(self, name)) for name in _SETTING_KINDS}
        if masked:
            settings["mattermost_token"] = HIDDEN_VALUE if self.mattermost_token else ""
            for name in _URL_SETTINGS:
                if settings[name]:
                    settings[name] = _url_masker.mask_url(settings[name])
        return settings

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.as_dict(masked=True).items())
        return f"Config({shown})"

    def add_blacklist_url(self, pattern: str) -> bool:
        """Start ignoring URLs matching ``pattern``; False (and a warning) if it is no regex."""
        compiled = _compile_pattern(pattern)
        if compiled is None:
            return False
        with self._lock:
            if pattern not in self.url_blacklist:
                self.url_blacklist = [*self.url_blacklist, pattern]
                self._blacklist = (*self._blacklist, compiled)
        return True

    def remove_blacklist_url(self, pattern: str) -> bool:
        """Stop ignoring ``pattern``; False if it was not in the blacklist."""
        with self._lock:
            if pattern not in self.url_blacklist:
                return False
            self.url_blacklist = [p for p in self.url_blacklist if p != pattern]
            self._blacklist = tuple(c for c in self._blacklist if c.pattern != pattern)
        return True

    def is_url_blacklisted(self, url: str, path: Optional[str] = None) -> bool:
        """Whether a blacklist regex is found (``re.search``) in the full URL or its path."""
        if not self.enable_url_blacklist:
            return False
        with self._lock:
            patterns = self._blacklist
        if not patterns:
            return False
        if path is None:
            path = _path_of(url)
        return any(p.search(url) or p.search(path) for p in patterns)

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SETTING_KINDS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._blacklist = _compile_blacklist(self.url_blacklist, warn=False)


_SETTING_KINDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Config) if f.init}
SETTING_NAMES: tuple[str, ...] = tuple(_SETTING_KINDS)
# Settings shown with URL credentials and secret query values masked.
_URL_SETTINGS = (
    "mattermost_server_url",
    "report_base_url",
    "dedup_redis_url",
    "trace_url_template",
)


# --- building from sources -------------------------------------------------


def _build(values: dict[str, Any], sources: Mapping[str, str]) -> Config:
    try:
        return Config(**values)
    except ConfigError as err:
        source_name = sources.get(err.setting or "")
        if source_name is None:
            raise
        raise err.renamed(source_name) from None


def setting_sources(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Where ``Config.from_env(environ)`` takes each setting from.

    The ``WPM_*`` variable's name, ``file <path>`` for the ``WPM_CONFIG_FILE``
    file, or ``default``.
    """
    env = os.environ if environ is None else environ
    config_file = env.get(CONFIG_FILE_ENV_VAR)
    in_file = set(_read_settings_file(config_file)) if config_file else set()
    sources = {}
    for name in SETTING_NAMES:
        if env_var_name(name) in env:
            sources[name] = env_var_name(name)
        elif name in in_file:
            sources[name] = f"file {config_file}"
        else:
            sources[name] = "default"
    return sources


def _read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    shown_path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as err:
        raise ConfigError(f"cannot read config file {shown_path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {shown_path} is not valid TOML: {err}") from None
    settings = _settings_table(document)
    unknown = sorted(set(settings) - set(_SETTING_KINDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in config file {shown_path}")
    return dict(settings)


def _settings_table(document: dict[str, Any]) -> dict[str, Any]:
    table = document.get("otel_wpm")
    if isinstance(table, dict):
        return table
    tool = document.get("tool")
    if isinstance(tool, dict) and isinstance(tool.get("otel_wpm"), dict):
        return tool["otel_wpm"]
    return document


def _parse_env_value(kind: str, raw: str) -> Any:
    """Convert an env string to the setting's type.

    Strings that do not convert are passed on unchanged, so validation reports
    them with the same message as any other bad value.
    """
    if kind == "bool":
        word = raw.strip().lower()
        return True if word in TRUE_WORDS else False if word in FALSE_WORDS else raw
    if kind in ("float", "int"):
        try:
            return float(raw) if kind == "float" else int(raw)
        except ValueError:
            return raw
    if kind == "Optional[str]":
        return raw.strip() or None
    if kind == "list[str]":
        return _parse_env_list(raw)
    return raw


def _parse_env_list(raw: str) -> Any:
    if raw.lstrip().startswith("["):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return [item.strip() for item in raw.split(",") if item.strip()]


# --- validation -----------------------------------------------------------

_NUMBER_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "threshold_seconds": (lambda x: x > 0, "must be a positive number of seconds"),
    "alert_window_days": (lambda x: x >= 0, "must be a non-negative number of days"),
    "max_performance_overhead": (
        lambda x: 0 < x <= 100,
        "must be a positive fraction of extra CPU time (0.05 = 5 %), at most 100",
    ),
    "mattermost_timeout_seconds": (lambda x: x > 0, "must be a positive number of seconds"),
    "sampling_interval_seconds": (
        lambda x: 0.001 <= x <= 1,
        "must be between 0.001 and 1 seconds",
    ),
    "sample_after_fraction": (lambda x: 0 <= x <= 1, "must be a fraction between 0 and 1"),
    "hung_request_factor": (lambda x: x == 0 or x >= 1, "must be 0 (disabled) or at least 1"),
    "report_max_age_days": (
        lambda x: x >= 0,
        "must be a non-negative number of days (0 = unlimited)",
    ),
    "shutdown_timeout_seconds": (lambda x: x > 0, "must be a positive number of seconds"),
}

_INT_RULES: dict[str, tuple[Callable[[int], bool], str]] = {
    "capture_body_bytes": (lambda n: n >= 0, "must be a non-negative number of bytes"),
    "report_max_files": (lambda n: n >= 0, "must be a non-negative integer (0 = unlimited)"),
    "report_max_bytes": (lambda n: n >= 0, "must be a non-negative integer (0 = unlimited)"),
    "alert_queue_size": (lambda n: n >= 1, "must be an integer of at least 1"),
}


def _validate(config: Config) -> None:
    for name, kind in _SETTING_KINDS.items():
        if kind == "bool":
            _check_bool(name, getattr(config, name))
        elif kind == "list[str]":
            setattr(config, name, _checked_str_list(name, getattr(config, name)))
    for name, (accept, reason) in _NUMBER_RULES.items():
        setattr(config, name, _checked_number(name, getattr(config, name), accept, reason))
    for name, (accept_int, reason) in _INT_RULES.items():
        _check_int(name, getattr(config, name), accept_int, reason)
    config.log_level = _checked_choice("log_level", config.log_level, LOG_LEVELS, str.upper)
    config.engine = _checked_choice("engine", config.engine, ENGINES, str.lower)
    _validate_strings(config)
    _validate_optional_urls(config)
    if config.enable_mattermost:
        _validate_mattermost(config)


def _validate_strings(config: Config) -> None:
    for name in ("local_output_dir", "mattermost_server_url", "mattermost_channel_id"):
        if not isinstance(getattr(config, name), str):
            raise ConfigError.invalid(name, f"must be a string, got {getattr(config, name)!r}")
    if not isinstance(config.mattermost_token, str):
        raise ConfigError.invalid("mattermost_token", "must be a string")
    if config.enable_local_file and not config.local_output_dir:
        raise ConfigError.invalid(
            "local_output_dir", "must not be empty when enable_local_file is true"
        )
    service_name = config.service_name
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise ConfigError.invalid(
            "service_name", f"must be a non-empty string or None, got {service_name!r}"
        )


def _validate_optional_urls(config: Config) -> None:
    if config.report_base_url is not None:
        _check_url("report_base_url", config.report_base_url, HTTP_SCHEMES)
        config.report_base_url = config.report_base_url.rstrip("/")
    if config.dedup_redis_url is not None:
        _check_url("dedup_redis_url", config.dedup_redis_url, REDIS_SCHEMES, needs_host=False)
    if config.trace_url_template is not None:
        _check_trace_url_template(config.trace_url_template)


def _validate_mattermost(config: Config) -> None:
    _check_url("mattermost_server_url", config.mattermost_server_url, HTTP_SCHEMES)
    if not config.mattermost_token:
        raise ConfigError.invalid(
            "mattermost_token", "must be set when enable_mattermost is true (it is empty)"
        )
    if not config.mattermost_channel_id:
        raise ConfigError.invalid(
            "mattermost_channel_id", "must be set when enable_mattermost is true (it is empty)"
        )


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError.invalid(
            name, f"must be a boolean (true/false, 1/0, yes/no, on/off), got {value!r}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_number(name: str, value: Any, accept: Callable[[float], bool], reason: str) -> float:
    # Written so that NaN, which fails every comparison, is rejected too.
    if not (_is_number(value) and math.isfinite(value) and accept(value)):
        raise ConfigError.invalid(name, f"{reason}, got {value!r}")
    return float(value)


def _check_int(name: str, value: Any, accept: Callable[[int], bool], reason: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and accept(value)):
        raise ConfigError.invalid(name, f"{reason}, got {value!r}")


def _checked_choice(
    name: str, value: Any, choices: tuple[str, ...], normalise: Callable[[str], str]
) -> str:
    if isinstance(value, str) and normalise(value) in choices:
        return normalise(value)
    raise ConfigError.invalid(name, f"must be one of {', '.join(choices)}, got {value!r}")


def _checked_str_list(name: str, value: Any) -> list[str]:
    # A bare string is iterable too; refuse it rather than split it into characters.
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError.invalid(name, f"must be a list of strings, got {value!r}")


def _check_url(name: str, value: Any, schemes: tuple[str, ...], needs_host: bool = True) -> None:
    reason = f"must be a {'/'.join(schemes)} URL" + (" with a host" if needs_host else "")
    if not isinstance(value, str):
        raise ConfigError.invalid(name, f"{reason}, got {value!r}")
    scheme, has_host = _scheme_and_host(value)
    if scheme not in schemes or (needs_host and not has_host):
        raise ConfigError.invalid(name, f"{reason}, got {_url_masker.mask_url(value)!r}")


def _scheme_and_host(url: str) -> tuple[str, bool]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), bool(parts.hostname)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return "", False


def _check_trace_url_template(template: Any) -> None:
    reason = "must be a string containing {trace_id} (and optionally {span_id})"
    try:
        usable = "{trace_id}" in template and template.format(trace_id="0" * 32, span_id="0" * 16)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        usable = False
    if not usable:
        raise ConfigError.invalid("trace_url_template", f"{reason}, got {template!r}")


# --- blacklist --------------------------------------------------------------


def _compile_blacklist(patterns: list[str], warn: bool) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        already_reported = pattern in _invalid_patterns_reported
        regex = _compile_pattern(pattern, warn=warn and not already_reported)
        if regex is None:
            _invalid_patterns_reported.add(pattern)
        else:
            compiled.append(regex)
    return tuple(compiled)


def _compile_pattern(pattern: str, warn: bool = True) -> Optional[re.Pattern[str]]:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        if warn:
            _log.warning("ignoring invalid url_blacklist pattern %r: %s", pattern, err)
        return None


def _path_of(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return url


def _copied(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
