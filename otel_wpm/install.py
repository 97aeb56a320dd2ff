"""Zero-code set-up under ``opentelemetry-instrument``.

Usage (nothing to change in the application)::

    WPM_THRESHOLD_SECONDS=0.5 OTEL_SERVICE_NAME=shop \\
        opentelemetry-instrument gunicorn -w 2 app:app

``opentelemetry-instrument`` calls every ``opentelemetry_post_instrument``
entry point, without arguments, once the distro, the configurator and the
instrumentors have run. otel-wpm registers :func:`post_instrument` there, so by
the time it runs the SDK ``TracerProvider`` of the configurator (if any) is the
global one and we only have to add a :class:`ProfilingSpanProcessor` to it.

Settings come from ``WPM_*`` variables (see :meth:`Config.from_env`);
``WPM_ENABLED=false`` leaves everything untouched. A bad setting is logged as
an error and the application runs unmonitored: ``otel-wpm config`` shows it.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from .config import Config, ConfigError
from .processor import ProfilingSpanProcessor

logger = logging.getLogger(__name__)

# Set on a TracerProvider once otel-wpm has added its processor to it.
_PROCESSOR_ATTRIBUTE = "_otel_wpm_processor"


def installed_processor(provider: Any) -> Optional[ProfilingSpanProcessor]:
    """The otel-wpm processor already on ``provider``, if any."""
    processor = getattr(provider, _PROCESSOR_ATTRIBUTE, None)
    return processor if isinstance(processor, ProfilingSpanProcessor) else None


def install(provider: TracerProvider, config: Config) -> ProfilingSpanProcessor:
    """Add a processor built from ``config`` to ``provider``, unless one is there already."""
    processor = installed_processor(provider)
    if processor is None:
        processor = ProfilingSpanProcessor(config)
        provider.add_span_processor(processor)
        setattr(provider, _PROCESSOR_ATTRIBUTE, processor)
    return processor


def new_provider() -> TracerProvider:
    """An SDK provider with the resource of ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``."""
    return TracerProvider(resource=Resource.create())


def post_instrument(**kwargs: Any) -> None:
    """The ``opentelemetry_post_instrument`` hook; never raises into the application."""
    try:
        _install_from_env()
    except Exception:
        logger.exception("otel-wpm could not be set up; the application runs without it")


def _install_from_env() -> None:
    try:
        config = Config.from_env()
    except ConfigError as err:
        logger.error("otel-wpm is off: %s (run `otel-wpm config` to check the settings)", err)
        return
    if not config.enabled:
        logger.info("otel-wpm is off (WPM_ENABLED=false)")
        return
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
