"""Zero-code set-up under ``opentelemetry-instrument``.

Usage (nothing to change in the application)::

    WPM_THRESHOLD_SECONDS=0.5 OTEL_SERVICE_NAME=shop \\
        opentelemetry-instrument gunicorn -w 2 app:app

``opentelemetry-instrument`` calls every ``opentelemetry_post_instrument``
entry point, without arguments, once the distro, the configurator and the
instrumentors have run. otel-wpm registers :func:`post_instrument` there, so by
the time it runs the SDK ``TracerProvider`` of the configurator (if any) is the
global one and we only have to add a :class:`ProfilingSpanProcessor` to it.

Settings come from ``WPM_*`` variables (see :meth:`Config.from_env`). Three
switches leave everything untouched, and say nothing: ``WPM_ENABLED=false``,
``OTEL_SDK_DISABLED=true`` (OpenTelemetry is off), and ``otel_wpm`` or ``*`` in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. A bad setting is logged as an error
and the application runs unmonitored: ``otel-wpm config`` shows it.

:func:`install` logs one INFO line when a processor starts watching: the
threshold, the engine, where reports go and where alerts go.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from .config import Config, ConfigError

if TYPE_CHECKING:
    from .processor import ProfilingSpanProcessor

logger = logging.getLogger(__name__)

# Set on a TracerProvider once otel-wpm has added its processor to it.
_PROCESSOR_ATTRIBUTE = "_otel_wpm_processor"

# As opentelemetry-instrument reads it for instrumentors: names of entry points, or "*".
OTEL_PYTHON_DISABLED_INSTRUMENTATIONS = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
ENTRY_POINT_NAME = "otel_wpm"  # our opentelemetry_post_instrument entry point
_ALL_INSTRUMENTATIONS = "*"


def installed_processor(provider: Any) -> Optional[ProfilingSpanProcessor]:
    """The otel-wpm processor already on ``provider``, if any."""
    from .processor import ProfilingSpanProcessor

    processor = getattr(provider, _PROCESSOR_ATTRIBUTE, None)
    return processor if isinstance(processor, ProfilingSpanProcessor) else None


def install(provider: TracerProvider, config: Config) -> ProfilingSpanProcessor:
    """Add a processor built from ``config`` to ``provider``, unless one is there already."""
    from .processor import ProfilingSpanProcessor

    processor = installed_processor(provider)
    if processor is None:
        processor = ProfilingSpanProcessor(config)
        provider.add_span_processor(processor)
        setattr(provider, _PROCESSOR_ATTRIBUTE, processor)
        if processor.config.enabled:
            logger.info("%s", watching_message(processor.config))
    return processor


def watching_message(config: Config) -> str:
    """One line that says what a processor with ``config`` watches, and where results go."""
    from .reporting.store import report_location

    reports = report_location(config) or "none kept"
    alerts = []
    if config.enable_local_file:
        alerts.append("alerts.jsonl")
    if config.enable_mattermost:
        alerts.append(f"Mattermost at {urlsplit(config.mattermost_server_url or '').hostname}")
    return (
        f"otel-wpm is watching requests slower than {config.threshold_seconds:g} s "
        f"(engine {config.engine}); reports: {reports}; alerts: {', '.join(alerts) or 'none'}"
    )


def new_provider() -> TracerProvider:
    """An SDK provider with the resource of ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``."""
    return TracerProvider(resource=Resource.create())


def turned_off_by_opentelemetry(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The OpenTelemetry variable that turns otel-wpm off, read as OpenTelemetry reads it."""
    if environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return OTEL_SDK_DISABLED
    disabled = {
        name.strip() for name in environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")
    }
    if disabled & {ENTRY_POINT_NAME, _ALL_INSTRUMENTATIONS}:
        return OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    return None


def post_instrument(**kwargs: Any) -> None:
    """The ``opentelemetry_post_instrument`` hook; never raises into the application."""
    try:
        _install_from_env()
    except Exception:
        logger.exception("otel-wpm could not be set up; the application runs without it")


def _install_from_env() -> None:
    switch = turned_off_by_opentelemetry()
    if switch is not None:
        logger.debug("otel-wpm is off (%s)", switch)
        return
    try:
        config = Config.from_env()
    except ConfigError as err:
        logger.error("otel-wpm is off: %s (run `otel-wpm config` to check the settings)", err)
        return
    if not config.enabled:
        logger.debug("otel-wpm is off (WPM_ENABLED=false)")
        return
    _show_logs_until_the_app_configures_logging()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        install(provider, config)
        return
    provider = new_provider()
    install(provider, config)
    trace.set_tracer_provider(provider)
    logger.info(
        "otel-wpm created the TracerProvider: spans are profiled but not exported "
        "unless an OpenTelemetry configurator (e.g. opentelemetry-distro) is installed"
    )


class _StderrUntilLoggingIsConfigured(logging.StreamHandler):
    """Writes otel-wpm's records to stderr as long as the root logger has no handler.

    The hook runs before the application can configure logging, and Python's
    last-resort handler drops INFO records. Once the application gives the root
    logger a handler, records reach it alone, so nothing is shown twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def _show_logs_until_the_app_configures_logging() -> None:
    package_logger = logging.getLogger("otel_wpm")
    if any(isinstance(h, _StderrUntilLoggingIsConfigured) for h in package_logger.handlers):
        return
    handler = _StderrUntilLoggingIsConfigured()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    package_logger.addHandler(handler)
