"""In-process cost of watching a request: the reference app called directly, no server.

Usage::

    python bench/inprocess.py                                  # otel vs wpm on /fast
    python bench/inprocess.py --configs otel,wpm,wpm_precise --rounds 21

Each configuration of ``bench/app.py`` wraps the same Flask app in this one
process. Rounds of ``--calls`` requests alternate between the configurations, so
a drift of the machine hits all of them alike. It prints the median time per
request and the difference to ``otel``: the fixed CPU cost of watching a request,
free of the server, the load generator and the network, which make ``run.py``
too noisy to resolve a 1 % difference. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.app import CONFIGS, app, watched  # noqa: E402


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


def microseconds_per_request(wsgi_app: Any, template: dict[str, Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = wsgi_app(environ, _start_response)
        for _chunk in body:
            pass
        if hasattr(body, "close"):
            body.close()
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="otel,wpm", help="comma-separated; otel is added")
    parser.add_argument("--path", default="/fast")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000, help="requests per round")
    args = parser.parse_args(argv)
    configs = ["otel", *[c for c in args.configs.split(",") if c and c != "otel"]]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; expected some of {CONFIGS}")

    stacks = {name: watched(name, app.wsgi_app, set_global=False) for name in configs}
    template = EnvironBuilder(path=args.path, headers={"User-Agent": "bench"}).get_environ()
    for wsgi_app, _, _ in stacks.values():  # warm-up
        microseconds_per_request(wsgi_app, template, args.calls // 5)
    timings: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (wsgi_app, _, _) in stacks.items():
            timings[name].append(microseconds_per_request(wsgi_app, template, args.calls))
    for _, provider, _ in stacks.values():
        if provider is not None:
            provider.shutdown()

    baseline = statistics.median(timings["otel"])
    print(f"{args.path}: median of {args.rounds} rounds x {args.calls} requests, in-process")
    for name in configs:
        median = statistics.median(timings[name])
        spread = f"[{min(timings[name]):.1f}-{max(timings[name]):.1f}]"
        print(f"  {name:12s} {median:7.2f} us/request {spread:16s} {median - baseline:+6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
