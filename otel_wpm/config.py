"""All otel-wpm settings: a frozen, validated value.

Usage::

    from otel_wpm.config import Config, ConfigError

    config = Config(threshold_seconds=0.5, local_output_dir="/var/reports")
    config = Config(threshold_seconds=os.getenv("SLOW_AFTER"))  # "1.5" or None (unset) is fine
    config = Config.from_env()              # WPM_THRESHOLD_SECONDS=0.5, WPM_ENGINE=..., ...
    config = Config.from_file("wpm.toml")   # top-level keys, [otel_wpm] or [tool.otel_wpm]
    stricter = config.replace(threshold_seconds=0.2)

Every setting has a kind in ``SETTING_KINDS``: how its text is read (from an
env var, a file or a keyword) and how its value is checked. Numbers and
booleans are accepted as text in code exactly as in the environment
(``"1.5"``, ``"true"``, ``"0"``); lists are comma-separated in the environment,
or a JSON list (``'["^/a{1,3}$"]'``) when a regex needs a comma. ``None`` means
"not set": the default applies. A setting an enabled feature needs (the
Mattermost URL, token and channel) is asked for only when that feature is on.

``Config.from_env`` reads ``WPM_<SETTING>`` for every setting, on top of the
TOML file named by ``WPM_CONFIG_FILE`` when set; ``read_env`` says where each
setting came from. Every bad value is reported at once in one ``ConfigError``
(``.errors`` lists them), each naming where the value came from (the keyword,
the env var or the file key) and the value. The Mattermost token is never
shown: ``repr``, ``as_dict()`` and error messages mask it.

The URL black-list a monitor uses is a :class:`~otel_wpm.capture.url_filter.UrlFilter`
that goes with the Config (``config.url_filter``, not a setting):
``config.add_blacklist_url(...)`` after ``PerformanceMonitor(config)`` changes
the running monitor's black-list, as in web-performance-monitor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from .capture.url_filter import UrlFilter
from .masking import SecretMasker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = [
    "Config",
    "ConfigError",
    "ENV_PREFIX",
    "CONFIG_FILE_ENV_VAR",
    "SETTING_KINDS",
    "SETTING_NAMES",
    "Settings",
    "Source",
    "env_var_name",
    "read_env",
    "read_file",
]

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


class ConfigError(ValueError):
    """Settings have bad values, or the configuration source cannot be read.

    ``errors`` lists one error per bad setting (just this one when there is
    one). For each, ``setting`` is the setting's name and ``reason`` the
    message without the name, so the caller can name the source instead.
    """

    def __init__(
        self,
        message: str,
        setting: Optional[str] = None,
        reason: str = "",
        errors: Sequence[ConfigError] = (),
    ) -> None:
        super().__init__(message)
        self.setting = setting
        self.reason = reason
        self.errors: list[ConfigError] = list(errors) or [self]

    @classmethod
    def invalid(cls, setting: str, reason: str) -> ConfigError:
        return cls(f"{setting} {reason}", setting=setting, reason=reason)

    @classmethod
    def combined(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One error standing for all of ``errors``."""
        if len(errors) == 1:
            return errors[0]
        return cls("; ".join(str(error) for error in errors), errors=errors)

    def renamed(self, name_of: Callable[[str], str]) -> ConfigError:
        """The same errors, each naming where its value came from (e.g. an env var)."""
        return ConfigError.combined(
            [
                ConfigError(f"{name_of(e.setting)} {e.reason}", e.setting, e.reason)
                if e.setting
                else e
                for e in self.errors
            ]
        )

    def scrubbed(self, secrets: list[str]) -> ConfigError:
        mask = SecretMasker.mask_text
        return ConfigError.combined(
            [
                ConfigError(mask(str(e), secrets), e.setting, mask(e.reason, secrets))
                for e in self.errors
            ]
        )


def env_var_name(setting: str) -> str:
    """``threshold_seconds`` -> ``WPM_THRESHOLD_SECONDS``."""
    return ENV_PREFIX + setting.upper()


@dataclass(frozen=True, repr=False)
class Config:
    """Every otel-wpm setting. Built from keywords, ``from_env`` or ``from_file``.

    Frozen: ``replace`` gives a changed copy. Equal when the settings are equal.
    """

    enabled: bool = True
    threshold_seconds: float = 1.0
    alert_window_days: float = 10.0
    max_performance_overhead: float = 0.05
    enable_local_file: bool = True
    local_output_dir: str = "performance_reports"
    enable_mattermost: bool = False
    mattermost_server_url: Optional[str] = None
    mattermost_token: Optional[str] = None
    mattermost_channel_id: Optional[str] = None
    mattermost_timeout_seconds: float = 10.0
    url_blacklist: tuple[str, ...] = ()
    enable_url_blacklist: bool = True
    log_level: str = "INFO"
    service_name: Optional[str] = None
    engine: str = "sampling"
    sampling_interval_seconds: float = 0.01
    early_sampling_interval_seconds: float = 0.1
    sample_after_fraction: float = 0.25
    report_base_url: Optional[str] = None
    trace_url_template: Optional[str] = None
    capture_body_bytes: int = 65536
    capture_headers: bool = True
    mask_keys: tuple[str, ...] = ()
    mask_value_patterns: tuple[str, ...] = ()
    hung_request_factor: float = 5.0
    report_max_files: int = 1000
    report_max_bytes: int = 512 * 1024 * 1024
    report_max_age_days: float = 30.0
    dedup_redis_url: Optional[str] = None
    report_store: Optional[str] = None
    report_store_endpoint_url: Optional[str] = None
    report_spool_max_bytes: int = 128 * 1024 * 1024
    alert_queue_size: int = 1000
    report_queue_size: int = 1000
    shutdown_timeout_seconds: float = 10.0

    # Not a setting: the live black-list, shared with the processor running with this Config.
    url_filter: UrlFilter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values, errors = _checked_settings(self)
        if errors:
            token = self.mattermost_token
            # "from None": the chained original would print the unscrubbed message.
            raise ConfigError.combined(errors).scrubbed(
                [token] if isinstance(token, str) else []
            ) from None
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(
            self, "url_filter", UrlFilter(self.url_blacklist, self.enable_url_blacklist)
        )

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Config:
        """Settings from ``WPM_*`` variables, over the ``WPM_CONFIG_FILE`` file if set."""
        return read_env(environ).build()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Config:
        """Settings from a TOML file (top-level keys, ``[otel_wpm]`` or ``[tool.otel_wpm]``)."""
        return read_file(path).build()

    def replace(self, **changes: Any) -> Config:
        """A new validated Config with ``changes`` applied; this one is left as is."""
        return dataclasses.replace(self, **changes)

    def as_dict(self, masked: bool = True) -> dict[str, Any]:
        """Settings by name, lists as lists. ``masked`` hides the token and URL credentials."""
        settings = {name: _plain(getattr(self, name)) for name in SETTING_KINDS}
        if masked:
            if self.mattermost_token:
                settings["mattermost_token"] = HIDDEN_VALUE
            for name in _URL_SETTINGS:
                if settings[name]:
                    settings[name] = _url_masker.mask_url(settings[name])
        return settings

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.as_dict(masked=True).items())
        return f"Config({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Settings only: a copy or an unpickled Config gets a black-list of its own.
        return (_config_from, (self.as_dict(masked=False),))

    # --- the black-list of web-performance-monitor's Config ---------------------------

    def add_blacklist_url(self, pattern: str) -> bool:
        """Stop profiling URLs matching the regex ``pattern``; False (and a warning) if no regex.

        Changes ``url_filter``, which a monitor running with this Config uses.
        """
        return self.url_filter.add(pattern)

    def remove_blacklist_url(self, pattern: str) -> bool:
        """Profile URLs matching ``pattern`` again; False if it was not in the black-list."""
        return self.url_filter.remove(pattern)

    def is_url_blacklisted(self, url: str, path: Optional[str] = None) -> bool:
        """Whether a black-list regex is found (``re.search``) in the full URL or its path."""
        return self.url_filter.matches(url, path)

    def use_url_filter(self, url_filter: UrlFilter) -> None:
        """Share ``url_filter`` (a running processor's) after it took this Config's black-list.

        Patterns added to or removed from ``url_filter`` at runtime stay so.
        """
        url_filter.follow(self.url_filter)
        object.__setattr__(self, "url_filter", url_filter)


def _config_from(settings: dict[str, Any]) -> Config:
    return Config(**settings)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- kinds of settings --------------------------------------------------------------


class _Invalid(Exception):
    """A value a kind refuses; the message is the reason, e.g. "must be ..., got 'x'"."""


@dataclass(frozen=True)
class SettingKind:
    """How one kind of setting is read from env text and checked.

    ``check`` takes a value from code, a TOML file or ``parse`` and returns it
    normalised, or raises ``_Invalid``. Numbers and booleans are parsed from
    text by ``check`` itself, so text is accepted in code as in the environment.
    """

    check: Callable[[Any], Any]
    parse: Callable[[str], Any] = str


def _check_bool(value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
    if isinstance(value, bool):
        return value
    raise _Invalid(f"must be a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


def number(accept: Callable[[float], bool], reason: str) -> SettingKind:
    """A finite float (or text of one) that ``accept`` takes."""

    def check(value: Any) -> float:
        parsed = _from_text(value, float)
        # Written so that NaN, which fails every comparison, is refused too.
        if _is_number(parsed) and math.isfinite(parsed) and accept(parsed):
            return float(parsed)
        raise _Invalid(f"{reason}, got {value!r}")

    return SettingKind(check)


def integer(accept: Callable[[int], bool], reason: str) -> SettingKind:
    """An int (or text of one) that ``accept`` takes."""

    def check(value: Any) -> int:
        parsed = _from_text(value, int)
        if isinstance(parsed, int) and not isinstance(parsed, bool) and accept(parsed):
            return parsed
        raise _Invalid(f"{reason}, got {value!r}")

    return SettingKind(check)


def _from_text(value: Any, convert: Callable[[str], Any]) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return convert(value)
    except ValueError:
        return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choice(choices: tuple[str, ...], normalise: Callable[[str], str]) -> SettingKind:
    def check(value: Any) -> str:
        if isinstance(value, str) and normalise(value.strip()) in choices:
            return normalise(value.strip())
        raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")

    return SettingKind(check)


def _check_path(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise _Invalid(f"must be a path, got {value!r}")


def _check_optional_text(value: Any) -> Optional[str]:
    """None, or a non-blank string; blank text means unset, as an empty env var does."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return value.strip()
    raise _Invalid(f"must be a string, got {value!r}")


def url(schemes: tuple[str, ...], needs_host: bool = True) -> SettingKind:
    """Unset, or a URL with one of ``schemes``."""

    def check(value: Any) -> Optional[str]:
        text = _check_optional_text(value)
        if text is not None:
            _check_url(text, schemes, needs_host)
        return text

    return SettingKind(check)


def _check_url(value: str, schemes: tuple[str, ...], needs_host: bool) -> None:
    scheme, has_host = _scheme_and_host(value)
    if scheme not in schemes or (needs_host and not has_host):
        reason = f"must be a {'/'.join(schemes)} URL" + (" with a host" if needs_host else "")
        raise _Invalid(f"{reason}, got {_url_masker.mask_url(value)!r}")


def _scheme_and_host(url: str) -> tuple[str, bool]:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), bool(parts.hostname)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return "", False


def _check_report_base_url(value: Any) -> Optional[str]:
    text = _HTTP_URL.check(value)
    return text.rstrip("/") if text else text


def _check_report_store(value: Any) -> Optional[str]:
    """Unset (``local_output_dir``), a directory, or an ``s3://bucket/prefix`` URL."""
    text = _check_optional_text(value if not isinstance(value, os.PathLike) else os.fspath(value))
    if text is not None and "://" in text:
        from .reporting.store import split_s3_url  # only for a URL: the module costs imports

        try:
            split_s3_url(text)
        except ValueError as err:
            reason = f"must be a directory or an s3://bucket/prefix URL ({err})"
            raise _Invalid(f"{reason}, got {_url_masker.mask_url(text)!r}") from None
    return text


def _check_trace_url_template(value: Any) -> Optional[str]:
    template = _check_optional_text(value)
    if template is None:
        return None
    try:
        usable = "{trace_id}" in template and template.format(trace_id="0" * 32, span_id="0" * 16)
    except (KeyError, IndexError, ValueError):
        usable = False
    if not usable:
        reason = "must be a string containing {trace_id} (and optionally {span_id})"
        raise _Invalid(f"{reason}, got {value!r}")
    return template


def _check_text_list(value: Any) -> tuple[str, ...]:
    # A bare string is iterable too; refuse it rather than split it into characters.
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _Invalid(f"must be a list of strings, got {value!r}")


def _check_regex_list(value: Any) -> tuple[str, ...]:
    patterns = _check_text_list(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            reason = f"must be a list of regular expressions, got {value!r}"
            raise _Invalid(f"{reason} ({pattern!r}: {err})") from None
    return patterns


def _parse_text_list(raw: str) -> Any:
    """``a, b`` or a JSON list; text that is neither is passed on for ``check`` to refuse."""
    if raw.lstrip().startswith("["):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return [item.strip() for item in raw.split(",") if item.strip()]


def _positive(x: float) -> bool:
    return x > 0


def _not_negative(x: float) -> bool:
    return x >= 0


SECONDS = number(_positive, "must be a positive number of seconds")
_HTTP_URL = url(HTTP_SCHEMES)
BOOLEAN = SettingKind(_check_bool)
OPTIONAL_TEXT = SettingKind(_check_optional_text)
TEXT_LIST = SettingKind(_check_text_list, parse=_parse_text_list)
UNLIMITED_IF_ZERO = integer(_not_negative, "must be a non-negative integer (0 = unlimited)")

SETTING_KINDS: dict[str, SettingKind] = {
    "enabled": BOOLEAN,
    "threshold_seconds": SECONDS,
    "alert_window_days": number(_not_negative, "must be a non-negative number of days"),
    "max_performance_overhead": number(
        lambda x: 0 < x <= 100,
        "must be a positive fraction of extra CPU time (0.05 = 5 %), at most 100",
    ),
    "enable_local_file": BOOLEAN,
    "local_output_dir": SettingKind(_check_path),
    "enable_mattermost": BOOLEAN,
    "mattermost_server_url": OPTIONAL_TEXT,  # checked as a URL when enable_mattermost is true
    "mattermost_token": OPTIONAL_TEXT,
    "mattermost_channel_id": OPTIONAL_TEXT,
    "mattermost_timeout_seconds": SECONDS,
    "url_blacklist": TEXT_LIST,
    "enable_url_blacklist": BOOLEAN,
    "log_level": choice(LOG_LEVELS, str.upper),
    "service_name": OPTIONAL_TEXT,
    "engine": choice(ENGINES, str.lower),
    "sampling_interval_seconds": number(
        lambda x: 0.001 <= x <= 1, "must be between 0.001 and 1 seconds"
    ),
    "early_sampling_interval_seconds": number(
        lambda x: x == 0 or 0.001 <= x <= 1, "must be 0 (off) or between 0.001 and 1 seconds"
    ),
    "sample_after_fraction": number(lambda x: 0 <= x <= 1, "must be a fraction between 0 and 1"),
    "report_base_url": SettingKind(_check_report_base_url),
    "trace_url_template": SettingKind(_check_trace_url_template),
    "capture_body_bytes": integer(_not_negative, "must be a non-negative number of bytes"),
    "capture_headers": BOOLEAN,
    "mask_keys": TEXT_LIST,
    "mask_value_patterns": SettingKind(_check_regex_list, parse=_parse_text_list),
    "hung_request_factor": number(lambda x: x == 0 or x >= 1, "must be 0 (disabled) or at least 1"),
    "report_max_files": UNLIMITED_IF_ZERO,
    "report_max_bytes": UNLIMITED_IF_ZERO,
    "report_max_age_days": number(
        _not_negative, "must be a non-negative number of days (0 = unlimited)"
    ),
    "dedup_redis_url": url(REDIS_SCHEMES, needs_host=False),
    "report_store": SettingKind(_check_report_store),
    "report_store_endpoint_url": _HTTP_URL,
    "report_spool_max_bytes": integer(
        _not_negative, "must be a non-negative number of bytes (0 = no spool)"
    ),
    "alert_queue_size": integer(lambda n: n >= 1, "must be an integer of at least 1"),
    "report_queue_size": integer(lambda n: n >= 1, "must be an integer of at least 1"),
    "shutdown_timeout_seconds": SECONDS,
}

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config) if f.init}
if set(SETTING_KINDS) != set(_DEFAULTS):  # a setting added without its kind, or the reverse
    raise TypeError(f"settings and kinds differ: {set(SETTING_KINDS) ^ set(_DEFAULTS)}")
SETTING_NAMES: tuple[str, ...] = tuple(_DEFAULTS)

# Settings shown with URL credentials and secret query values masked.
_URL_SETTINGS = (
    "mattermost_server_url",
    "report_base_url",
    "dedup_redis_url",
    "trace_url_template",
    "report_store",
    "report_store_endpoint_url",
)


def _checked_settings(config: Config) -> tuple[dict[str, Any], list[ConfigError]]:
    """Every setting normalised, and an error for each one that is bad."""
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name, kind in SETTING_KINDS.items():
        value = getattr(config, name)
        try:
            values[name] = kind.check(_DEFAULTS[name] if value is None else value)
        except _Invalid as err:
            errors.append(ConfigError.invalid(name, str(err)))
    return values, errors + _unmet_needs(values)


def _unmet_needs(values: dict[str, Any]) -> list[ConfigError]:
    """What the enabled features need and is missing (features with a bad switch are skipped)."""
    errors = []
    if values.get("enable_local_file") and values.get("local_output_dir") == "":
        errors.append(
            ConfigError.invalid(
                "local_output_dir", "must not be empty when enable_local_file is true"
            )
        )
    if values.get("enable_mattermost"):
        for name in ("mattermost_server_url", "mattermost_token", "mattermost_channel_id"):
            if name in values and values[name] is None:
                errors.append(
                    ConfigError.invalid(name, "must be set when enable_mattermost is true")
                )
        server_url = values.get("mattermost_server_url")
        if server_url is not None:
            try:
                _check_url(server_url, HTTP_SCHEMES, needs_host=True)
            except _Invalid as err:
                errors.append(ConfigError.invalid("mattermost_server_url", str(err)))
    return errors


# --- where settings come from ---------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from.

    ``where`` is shown to people (``WPM_THRESHOLD_SECONDS``, ``file wpm.toml``,
    ``default``); ``name`` is how an error names the setting there
    (``WPM_THRESHOLD_SECONDS``, ``threshold_seconds in wpm.toml``).
    """

    where: str
    name: str


DEFAULT = "default"


@dataclass(frozen=True)
class Settings:
    """Setting values as read (not yet checked), and where every setting comes from."""

    values: dict[str, Any]
    sources: dict[str, Source]
    problems: list[ConfigError] = field(default_factory=list)  # e.g. unknown keys in a file

    def build(self) -> Config:
        """The Config, or one ConfigError listing every problem, each naming its source."""
        errors = list(self.problems)
        try:
            config = Config(**self.values)
        except ConfigError as err:
            errors += err.renamed(lambda setting: self.sources[setting].name).errors
        if errors:
            raise ConfigError.combined(errors)
        return config


def read_env(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """What ``WPM_*`` variables say, over the ``WPM_CONFIG_FILE`` file if set.

    A setting left at its default is named by the variable that would set it.
    """
    env = os.environ if environ is None else environ
    config_file = env.get(CONFIG_FILE_ENV_VAR)
    if config_file:
        base = read_file(config_file)
    else:
        base = Settings({}, {name: Source(DEFAULT, name) for name in SETTING_KINDS})
    values = dict(base.values)
    sources = dict(base.sources)
    for name, kind in SETTING_KINDS.items():
        var = env_var_name(name)
        if var in env:
            values[name] = kind.parse(env[var])
            sources[name] = Source(var, var)
        elif sources[name].where == DEFAULT:
            sources[name] = Source(DEFAULT, var)
    return Settings(values, sources, base.problems)


def read_file(path: str | os.PathLike[str]) -> Settings:
    """What a TOML file says: top-level keys, an ``[otel_wpm]`` or a ``[tool.otel_wpm]`` table."""
    shown_path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as err:
        raise ConfigError(f"cannot read config file {shown_path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {shown_path} is not valid TOML: {err}") from None
    table = _settings_table(document)
    values = {name: value for name, value in table.items() if name in SETTING_KINDS}
    sources = {
        name: Source(f"file {shown_path}", f"{name} in {shown_path}")
        if name in values
        else Source(DEFAULT, name)
        for name in SETTING_KINDS
    }
    problems = [
        ConfigError(f"unknown setting {name!r} in config file {shown_path}")
        for name in sorted(set(table) - set(SETTING_KINDS))
    ]
    return Settings(values, sources, problems)


def _settings_table(document: dict[str, Any]) -> dict[str, Any]:
    table = document.get("otel_wpm")
    if isinstance(table, dict):
        return table
    tool = document.get("tool")
    if isinstance(tool, dict) and isinstance(tool.get("otel_wpm"), dict):
        return tool["otel_wpm"]
    return document
