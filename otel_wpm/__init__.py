"""otel-wpm: find out why a web request was slow, inside OpenTelemetry.

Quick use with an SDK ``TracerProvider``::

    from otel_wpm import Config, ProfilingSpanProcessor

    provider.add_span_processor(ProfilingSpanProcessor(Config(threshold_seconds=1.0)))
"""

from .config import Config, ConfigError
from .monitor import PerformanceMonitor
from .processor import ProfilingSpanProcessor

__all__ = ["Config", "ConfigError", "ProfilingSpanProcessor"]
__all__ += ["PerformanceMonitor"]
__version__ = "0.1.0"
