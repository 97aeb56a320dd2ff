"""ASGI overhead benchmark: ``bench/run.py --app asgi``, the async app on uvicorn.

The method and code of ``bench/run.py``: every repetition starts one fresh
uvicorn process (one event loop, ``--loop asyncio --http h11``, 127.0.0.1 only)
per configuration, all at once, and loads each endpoint of ``bench/asgi_app.py``
with ``wrk -t2 -c8`` in bursts that alternate between the servers; throughput
is the median of a server's bursts, as a ratio against ``otel`` in the same
repetition. Usage (every option of ``run.py`` applies)::

    python bench/asgi.py --reps 5 --duration 10          # ~25 min
    python bench/asgi.py --quick                         # smoke check, 1 rep x 2 s
    python bench/asgi.py --endpoints /io --json out.json
    python bench/asgi.py --report out.json               # tables of a saved run

Configurations (``bench/app.py``): by default ``otel`` (OpenTelemetry's ASGI
middleware and an SDK provider whose only processor drops spans), ``wpm``
(``otel`` + ``ProfilingSpanProcessor``) and ``otel_noop`` (``otel`` + a
processor doing nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import main  # noqa: E402

DEFAULT_CONFIGS = "otel,wpm,otel_noop"


def asgi_arguments(argv: list[str]) -> list[str]:
    """``run.py``'s arguments for the ASGI app: ``argv`` with its default configurations."""
    given = any(arg == "--configs" or arg.startswith("--configs=") for arg in argv)
    return ["--app", "asgi", *([] if given else ["--configs", DEFAULT_CONFIGS]), *argv]


if __name__ == "__main__":
    sys.exit(main(asgi_arguments(sys.argv[1:])))
