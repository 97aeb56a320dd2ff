"""The ``otel-wpm`` command.

Usage::

    otel-wpm config [--file wpm.toml]     # the effective settings, and what is wrong with them
    otel-wpm test-alert [--file wpm.toml] # send a test alert through every enabled exporter
    otel-wpm serve --dir performance_reports [--host 127.0.0.1] [--port 8099]

Settings come from ``WPM_*`` environment variables over the TOML file named by
``--file`` or ``WPM_CONFIG_FILE``, exactly as the monitor reads them.

Exit status: 0 when all is well; 1 when ``config`` finds problems, a test
alert fails or ``serve`` cannot listen; 2 when a setting is invalid (the
monitor would stay off) or ``serve --dir`` is not a directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Optional

from .config import (
    CONFIG_FILE_ENV_VAR,
    ENV_PREFIX,
    SETTING_NAMES,
    Config,
    ConfigError,
    env_var_name,
    setting_sources,
)

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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    config = commands.add_parser("config", help="print the effective settings from the env")
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
    # The problems this finds are listed by `otel-wpm config`; no need to log them too.
    logging.getLogger("otel_wpm.config").setLevel(logging.ERROR)
    return Config.from_env(env)


def _shown(value: Any) -> str:
    return json.dumps(value)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module without a spec in sys.modules
        return False


def problems(config: Config, env: Mapping[str, str]) -> list[str]:
    """What is wrong in a valid configuration: things ignored or that cannot work."""
    found = []
    for pattern in config.url_blacklist:
        try:
            re.compile(pattern)
        except re.error as err:
            found.append(f"url_blacklist pattern {pattern!r} is not a regex ({err}); ignored")
    if config.enable_mattermost and not _installed("mattermostdriver"):
        found.append(
            "enable_mattermost is true but mattermostdriver is not installed "
            "(pip install 'otel-wpm[mattermost]')"
        )
    if config.dedup_redis_url and not _installed("redis"):
        found.append(
            "dedup_redis_url is set but redis is not installed (pip install 'otel-wpm[redis]')"
        )
    if not config.enable_local_file and not config.enable_mattermost:
        found.append("enable_local_file and enable_mattermost are both false: no report is kept")
    known = {env_var_name(name) for name in SETTING_NAMES} | {CONFIG_FILE_ENV_VAR}
    for var in sorted(env):
        if var.startswith(ENV_PREFIX) and var not in known:
            found.append(f"{var} is not an otel-wpm setting; ignored")
    return found


def _config_command(args: argparse.Namespace) -> int:
    env = _environment(args.file)
    try:
        config = _load(env)
    except ConfigError as err:
        print(f"error: {err}")
        return EXIT_INVALID
    sources = setting_sources(env)
    for name, value in config.as_dict(masked=True).items():
        print(f"{name} = {_shown(value)}  ({sources[name]})")
    found = problems(config, env)
    if found:
        print("\nproblems:")
        for problem in found:
            print(f"  - {problem}")
        return EXIT_FAILED
    return EXIT_OK


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

    serve = commands.add_parser("serve", help="serve the reports of a directory over HTTP")
    serve.add_argument("--dir", required=True, help="the reports' directory (must exist)")
    serve.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    serve.set_defaults(run=_serve_command)


def _serve_command(args: argparse.Namespace) -> int:
    from .server import ReportDirectoryError, serve

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(args.dir, args.host, args.port)
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
