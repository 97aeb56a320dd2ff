"""The ``otel-wpm`` command.

Usage::

    otel-wpm --version
    otel-wpm config [--file wpm.toml]     # the effective settings as TOML; problems on stderr
    otel-wpm test-alert [--file wpm.toml] # send a test alert through every enabled exporter
    otel-wpm serve --dir performance_reports [--host 127.0.0.1] [--port 8099]
    otel-wpm serve --store s3://bucket/reports [--endpoint-url http://minio:9000]

Settings come from ``WPM_*`` environment variables over the TOML file named by
``--file`` or ``WPM_CONFIG_FILE``, exactly as the monitor reads them.

``config`` prints TOML that ``Config.from_file`` reads back (secrets masked,
unset settings left out), and lists on stderr every invalid setting and every
problem: unknown ``WPM_*`` variables, invalid black-list regexes, a
``local_output_dir`` that cannot be created or written, missing extras.

Exit status: 0 when all is well; 1 when ``config`` finds problems, a test
alert fails or ``serve`` cannot listen; 2 when a setting is invalid (the
monitor would stay off) or ``serve`` cannot read its store (``--dir`` is not a
directory, the bucket of ``--store`` cannot be listed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from . import __version__
from ._runtime.installed import is_installed
from .capture import url_filter
from .config import (
    CONFIG_FILE_ENV_VAR,
    ENV_PREFIX,
    SETTING_NAMES,
    Config,
    ConfigError,
    Source,
    env_var_name,
    read_env,
)
from .reporting.store import is_s3_url

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INVALID
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-wpm",
        description="Inspect and exercise otel-wpm, the slow-request profiler.",
        epilog="Exit status: 0 ok, 1 problems found or alert failed, 2 invalid settings.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    config = commands.add_parser("config", help="print the effective settings as TOML")
    config.add_argument("--file", help=f"TOML settings file (default: ${CONFIG_FILE_ENV_VAR})")
    config.set_defaults(run=_config_command)

    alert = commands.add_parser("test-alert", help="send a test alert through every exporter")
    alert.add_argument("--file", help=f"TOML settings file (default: ${CONFIG_FILE_ENV_VAR})")
    alert.set_defaults(run=_test_alert_command)

    _add_serve_command(commands)
    return parser


# --- settings ----------------------------------------------------------------------------


def _environment(file: Optional[str]) -> dict[str, str]:
    env = dict(os.environ)
    if file:
        env[CONFIG_FILE_ENV_VAR] = file
    return env


def _load(env: Mapping[str, str]) -> Config:
    _quiet_pattern_warnings()
    return Config.from_env(env)


def _quiet_pattern_warnings() -> None:
    # The invalid patterns are listed by `otel-wpm config`; no need to log them too.
    url_filter.logger.setLevel(logging.ERROR)


def problems(config: Config) -> list[str]:
    """What is wrong in a valid configuration: things ignored or that cannot work."""
    found = []
    for pattern in config.url_blacklist:
        error = url_filter.pattern_error(pattern)
        if error is not None:
            found.append(f"url_blacklist pattern {pattern!r} is not a regex ({error}); ignored")
    if config.enable_local_file:
        output_dir_problem = _output_dir_problem(config.local_output_dir)
        if output_dir_problem:
            found.append(output_dir_problem)
    if config.enable_mattermost and not is_installed("mattermostdriver"):
        found.append(
            "enable_mattermost is true but mattermostdriver is not installed "
            "(pip install 'otel-wpm[mattermost]')"
        )
    if config.dedup_redis_url and not is_installed("redis"):
        found.append(
            "dedup_redis_url is set but redis is not installed (pip install 'otel-wpm[redis]')"
        )
    if not config.enable_local_file and not config.enable_mattermost:
        found.append("enable_local_file and enable_mattermost are both false: no report is kept")
    if config.report_store and is_s3_url(config.report_store):
        if not is_installed("obstore"):
            found.append(
                "report_store is an s3:// URL but obstore is not installed "
                "(pip install 'otel-wpm[s3]')"
            )
        if not config.dedup_redis_url:
            found.append(
                "report_store is a bucket shared by hosts but dedup_redis_url is unset: "
                "each host de-duplicates its own alerts"
            )
    return found


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    known = {env_var_name(name) for name in SETTING_NAMES} | {CONFIG_FILE_ENV_VAR}
    return [
        f"{var} is not an otel-wpm setting; ignored"
        for var in sorted(env)
        if var.startswith(ENV_PREFIX) and var not in known
    ]


def _output_dir_problem(directory: str) -> Optional[str]:
    """Why reports cannot be written in ``directory``, found by trying, leaving nothing behind."""
    path = Path(directory)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if existing == path:
            with tempfile.TemporaryFile(dir=path):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as err:
        verb = "written" if existing == path else "created"
        return f"local_output_dir {directory!r} cannot be {verb}: {err.strerror or err}"
    return None


def config_toml(config: Config, sources: Mapping[str, Source]) -> str:
    """The settings as an ``[otel_wpm]`` TOML table that ``Config.from_file`` reads back.

    Unset settings are left out and secrets masked; a comment says where each value came from.
    """
    lines = ["[otel_wpm]"]
    for name, value in config.as_dict(masked=True).items():
        if value is not None:
            lines.append(f"{name} = {_toml_value(value)}  # {_printable(sources[name].where)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # finite: Config refuses NaN and infinities
    if isinstance(value, str):
        # A JSON string is a TOML basic string, except that TOML wants DEL escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text)


def _config_command(args: argparse.Namespace) -> int:
    env = _environment(args.file)
    _quiet_pattern_warnings()
    found = unknown_variables(env)
    try:
        settings = read_env(env)
        config = settings.build()
    except ConfigError as err:
        for error in err.errors:
            print(f"error: {error}", file=sys.stderr)
        _print_problems(found)
        return EXIT_INVALID
    print(config_toml(config, settings.sources), end="")
    found = problems(config) + found
    _print_problems(found)
    return EXIT_FAILED if found else EXIT_OK


def _print_problems(found: list[str]) -> None:
    for problem in found:
        print(f"problem: {problem}", file=sys.stderr)


# --- test alert --------------------------------------------------------------------------


def _test_alert_command(args: argparse.Namespace) -> int:
    # Imported here: building a processor is more than `config` needs.
    from .processor import ProfilingSpanProcessor

    try:
        config = _load(_environment(args.file))
    except ConfigError as err:
        print(f"error: {err}")
        return EXIT_INVALID
    processor = ProfilingSpanProcessor(config)
    try:
        result = processor.test_alert_system()
    finally:
        processor.shutdown()
    for name, delivered in result["notifier_results"].items():
        print(f"{name}: {'ok' if delivered else 'FAILED'}")
    if result["error"]:
        print(f"error: {result['error']}")
    return EXIT_OK if result["success"] else EXIT_FAILED


# --- report server -----------------------------------------------------------------------


def _add_serve_command(commands: Any) -> None:
    # also ``python -m otel_wpm.server``
    from .server import DEFAULT_HOST, DEFAULT_PORT

    serve = commands.add_parser(
        "serve", help="serve the reports of a directory or a bucket over HTTP"
    )
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", help="the reports' directory (must exist)")
    where.add_argument(
        "--store", help="a directory, or s3://bucket/prefix: every host's reports in a bucket"
    )
    serve.add_argument(
        "--endpoint-url",
        default=os.environ.get(env_var_name("report_store_endpoint_url")),
        help="the S3-compatible endpoint of --store (default: "
        f"${env_var_name('report_store_endpoint_url')}, then $AWS_ENDPOINT_URL)",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    serve.set_defaults(run=_serve_command)


def _serve_command(args: argparse.Namespace) -> int:
    from .server import ReportDirectoryError, serve

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(args.store or args.dir, args.host, args.port, args.endpoint_url or None)
    except KeyboardInterrupt:
        pass
    except ReportDirectoryError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as err:
        print(
            f"error: cannot serve on {args.host}:{args.port}: {err.strerror or err}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
