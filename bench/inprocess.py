"""In-process cost of watching a request: the reference app called directly, no server.

Usage::

    python bench/inprocess.py                                  # otel vs wpm on /fast
    python bench/inprocess.py --configs otel,wpm,wpm_precise --rounds 21
    python bench/inprocess.py --child-spans 20   # each request makes 20 database spans
    python bench/inprocess.py --outside          # spans made outside any request
    python bench/inprocess.py --clock cpu        # CPU time of this thread: on a busy machine
    python bench/inprocess.py --asgi             # bench/asgi_app.py, a task per request

Each configuration of ``bench/app.py`` wraps the same Flask app in this one
process. Rounds of ``--calls`` requests alternate between the configurations, so
a drift of the machine hits all of them alike. It prints the median time per
request and the difference to ``otel``: the fixed CPU cost of watching a request,
free of the server, the load generator and the network, which make ``run.py``
too noisy to resolve a 1 % difference. Run it on a quiet machine.

``--child-spans N`` has each request make N client spans with database
attributes inside it, as a query-heavy view does: what a watched request pays
per span its trace keeps. ``--outside`` times spans started and ended outside
any request instead (a background job's): what the processor charges a span
that belongs to no watched request.

``--clock cpu`` times with this thread's CPU clock instead of the wall clock:
other processes competing for the CPU then do not count, which makes a
difference of a fraction of a microsecond readable on a shared machine.

``--asgi`` times ``bench/asgi_app.py`` behind OpenTelemetry's ASGI middleware
instead, each request in a task of its own on one event loop, as uvicorn runs
them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.trace import SpanKind  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.app import CONFIGS, app, watched  # noqa: E402


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


QUERY_ATTRIBUTES = {"db.system.name": "sqlite", "db.query.text": "SELECT * FROM t WHERE id = ?"}


class ChildSpans:
    """A WSGI app that makes ``count`` database spans, then calls ``wsgi_app``.

    Its tracer is set once the stack around it has a provider.
    """

    def __init__(self, wsgi_app: Any, count: int) -> None:
        self.wsgi_app = wsgi_app
        self.count = count
        self.tracer: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        for _ in range(self.count):
            with self.tracer.start_as_current_span(
                "SELECT t", kind=SpanKind.CLIENT, attributes=QUERY_ATTRIBUTES
            ):
                pass
        return self.wsgi_app(environ, start_response)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def microseconds_per_outside_span(
    tracer: Any, calls: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    started = clock()
    for _ in range(calls):
        with tracer.start_as_current_span(
            "SELECT t", kind=SpanKind.CLIENT, attributes=QUERY_ATTRIBUTES
        ):
            pass
    return (clock() - started) / calls * 1e6


def microseconds_per_request(
    wsgi_app: Any,
    template: dict[str, Any],
    calls: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    started = clock()
    for _ in range(calls):
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = wsgi_app(environ, _start_response)
        for _chunk in body:
            pass
        if hasattr(body, "close"):
            body.close()
    return (clock() - started) / calls * 1e6


def asgi_microseconds_per_request(
    asgi_app: Any, path: str, calls: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """``calls`` requests for ``path``, each in a task of its own, as a server runs them."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def serve() -> float:
        started = clock()
        for _ in range(calls):
            await asyncio.create_task(asgi_app(dict(scope), receive, send))
        return (clock() - started) / calls * 1e6

    return asyncio.run(serve())


def _wsgi_stacks(configs: list[str], child_spans: int) -> dict[str, tuple[Any, Any, Any]]:
    stacks = {}
    for name in configs:
        inner = ChildSpans(app.wsgi_app, child_spans)
        stacks[name] = watched(name, inner, set_global=False)
        if stacks[name][1] is not None:
            inner.tracer = stacks[name][1].get_tracer("bench.child")
    return stacks


def _asgi_stacks(configs: list[str]) -> dict[str, tuple[Any, Any, Any]]:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from bench.asgi_app import app as asgi_app

    return {
        name: watched(name, asgi_app, set_global=False, middleware=OpenTelemetryMiddleware)
        for name in configs
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="otel,wpm", help="comma-separated; otel is added")
    parser.add_argument("--path", default="/fast")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000, help="requests per round")
    parser.add_argument("--child-spans", type=int, default=0, help="spans made in each request")
    parser.add_argument("--outside", action="store_true", help="time spans outside requests")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--asgi", action="store_true", help="the ASGI app (bench/asgi_app.py)")
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]
    configs = ["otel", *[c for c in args.configs.split(",") if c and c != "otel"]]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; expected some of {CONFIGS}")
    if "bare" in configs and (args.child_spans or args.outside):
        parser.error("bare has no tracer to make spans with")
    if args.asgi and (args.child_spans or args.outside):
        parser.error("--asgi times whole requests of the ASGI app only")

    stacks = _asgi_stacks(configs) if args.asgi else _wsgi_stacks(configs, args.child_spans)
    template = EnvironBuilder(path=args.path, headers={"User-Agent": "bench"}).get_environ()

    def measure(name: str, calls: int) -> float:
        wsgi_app, provider, _ = stacks[name]
        if args.asgi:
            return asgi_microseconds_per_request(wsgi_app, args.path, calls, clock)
        if args.outside:
            return microseconds_per_outside_span(provider.get_tracer("bench.job"), calls, clock)
        return microseconds_per_request(wsgi_app, template, calls, clock)

    for name in configs:  # warm-up
        measure(name, args.calls // 5)
    timings: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name in configs:
            timings[name].append(measure(name, args.calls))
    for _, provider, _ in stacks.values():
        if provider is not None:
            provider.shutdown()

    baseline = statistics.median(timings["otel"])
    if args.outside:
        unit = "span"
        print(f"spans outside any request: median of {args.rounds} rounds x {args.calls} spans")
    else:
        unit = "request"
        spans = f", {args.child_spans} child spans each" if args.child_spans else ""
        kind = " (ASGI)" if args.asgi else ""
        print(
            f"{args.path}{kind}: median of {args.rounds} rounds x {args.calls} requests{spans}, "
            "in-process"
        )
    for name in configs:
        median = statistics.median(timings[name])
        spread = f"[{min(timings[name]):.1f}-{max(timings[name]):.1f}]"
        print(f"  {name:12s} {median:7.2f} us/{unit} {spread:16s} {median - baseline:+6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
