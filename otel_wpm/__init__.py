"""otel-wpm: find out why a web request was slow, inside OpenTelemetry.

Quick use with an SDK ``TracerProvider``::

    from otel_wpm import Config, ProfilingSpanProcessor

    provider.add_span_processor(ProfilingSpanProcessor(Config(threshold_seconds=1.0)))

The names below are imported on first use, so each way in pays only for what it
uses: ``opentelemetry-instrument`` loads ``otel_wpm.install`` without the
``PerformanceMonitor`` facade and its WSGI middleware, and without the processor
when otel-wpm is turned off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, ConfigError
    from .monitor import PerformanceMonitor
    from .processor import ProfilingSpanProcessor

__all__ = ["Config", "ConfigError", "PerformanceMonitor", "ProfilingSpanProcessor"]
__version__ = "0.1.0"

_HOMES = {
    "Config": "config",
    "ConfigError": "config",
    "PerformanceMonitor": "monitor",
    "ProfilingSpanProcessor": "processor",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # What ``from .<home> import <name>`` runs; importlib.import_module would hide the
    # module from ``python -X importtime``.
    value = getattr(__import__(home, globals(), None, [name], 1), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
