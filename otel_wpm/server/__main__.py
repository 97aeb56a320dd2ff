"""``python -m otel_wpm.server --dir performance_reports``: runs ``otel-wpm serve``."""

import sys

from ..cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
