"""``python -m otel_wpm.server --dir performance_reports``: the same as ``otel-wpm serve``."""

from . import main

main()
