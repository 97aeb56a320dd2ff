"""Names of the span attributes otel-wpm adds to the traces it watches.

Collector, Jaeger and Grafana configuration in ``collector-config/`` refer to
these names; tests import them from here so the two never drift apart.
"""

#: Set to ``True`` on a server span once it has run longer than the threshold.
SLOW = "wpm.slow"
#: Where the HTML report of that span can be opened (report server URL or file path).
REPORT_URL = "wpm.report.url"
#: File name of the report inside the output directory.
REPORT_FILE = "wpm.report.file"
#: The slow-request threshold in force, in seconds.
THRESHOLD_SECONDS = "wpm.threshold_seconds"

ALL = (SLOW, REPORT_URL, REPORT_FILE, THRESHOLD_SECONDS)

#: Set by ``PerformanceMonitor.create_decorator()`` on the span of a decorated
#: function, so that the processor profiles it like a request.
PROFILE = "wpm.profile"
#: The instrumentation scope of those spans; the processor looks at the attribute
#: only on spans of this scope (reading a missing attribute is slow in the SDK).
TRACER_NAME = "otel_wpm"
