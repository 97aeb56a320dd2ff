"""Reference Flask app for the overhead benchmark.

Endpoints: ``/fast`` (tiny JSON), ``/cpu`` (recursive fib, call-dense, ~20 ms),
``/cpu_mix`` (comprehensions, json, sorting, formatting, ~20 ms), ``/io``
(sleeps 20 ms), ``/slow`` (sleeps 1.2 s, for soak tests) and ``/_bench/config``
(which configuration is installed; used by ``bench/run.py`` to wait for readiness)
and ``/_bench/stats`` (the processor's ``get_stats()``, ``{}`` without one).

The watching stack is chosen by the ``BENCH_CONFIG`` environment variable:

* ``bare``: plain Flask.
* ``otel``: OTel WSGI middleware + SDK ``TracerProvider`` whose only span
  processor drops every span (so the SDK span path is paid, export is not).
* ``wpm``: ``otel`` + ``ProfilingSpanProcessor`` with the default engine.
* ``wpm_precise``: ``otel`` + ``ProfilingSpanProcessor(engine="pyinstrument")``.
* ``otel_noop``: ``otel`` + a span processor that does nothing: what the SDK
  charges for one more processor.
* ``otel_minimal``: ``otel`` + the least a processor that watches requests can
  do (recognise a request span, keep it under its thread, count it, check its
  duration): the floor under any design like otel-wpm's.

The stack must be installed in each worker after fork; ``bench/gunicorn_conf.py``
does that from its ``post_fork`` hook::

    BENCH_CONFIG=wpm gunicorn -c bench/gunicorn_conf.py -w 1 -k gthread \\
        --threads 4 -b 127.0.0.1:8000 bench.app:app

Outside gunicorn, call ``install()`` yourself::

    from bench.app import app, install
    install("otel")
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Optional

from flask import Flask, jsonify

CONFIGS = ("bare", "otel", "wpm", "wpm_precise", "otel_noop", "otel_minimal")

#: fib(27) takes ~17-20 ms on the 2-core benchmark machine (Python 3.11).
FIB_N = 27
#: One mix round takes ~0.4 ms there (a little more under gthread), so ~20 ms.
MIX_ROUNDS = 48
IO_SLEEP_SECONDS = 0.02
SLOW_SLEEP_SECONDS = 1.2
#: URL patterns the profiler is told to ignore in the ``wpm*`` configurations.
URL_BLACKLIST = (r"^/_bench/", r"^/static/")
#: Extra keys masked in captured request data in the ``wpm*`` configurations.
MASK_KEYS = ("password", "api_key")

app = Flask(__name__)
_state: dict[str, Any] = {"config": None, "provider": None, "processor": None}


def fib(n: int) -> int:
    """Naive recursive Fibonacci: one Python call per node."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def _mix_rows(seed: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": f"user-{(i * 7919 + seed) % 1000:04d}",
            "score": (i * 31 + seed) % 97,
            "tags": [t for t in ("a", "bb", "ccc", "dddd") if (i + len(t)) % 2],
        }
        for i in range(200)
    ]


def _format_row(row: dict[str, Any]) -> str:
    return "{id:>5} {name:<10} {score:3d} {tags}".format(
        id=row["id"], name=row["name"], score=row["score"], tags=",".join(row["tags"])
    )


def mix_round(seed: int) -> int:
    """One round of app-like work; returns a checksum so nothing is optimised away."""
    text = json.dumps(_mix_rows(seed))
    rows = json.loads(text)
    rows.sort(key=lambda r: (r["score"], r["name"]))
    groups: dict[int, list[int]] = {}
    for row in rows:
        groups.setdefault(row["score"] % 10, []).append(row["id"])
    report = "\n".join(_format_row(r) for r in rows[:50])
    return len(text) + sum(len(ids) for ids in groups.values()) + len(report)


@app.route("/fast")
def fast() -> Any:
    return jsonify(ok=True)


@app.route("/cpu")
def cpu() -> Any:
    return jsonify(fib=fib(FIB_N))


@app.route("/cpu_mix")
def cpu_mix() -> Any:
    return jsonify(checksum=sum(mix_round(seed) for seed in range(MIX_ROUNDS)))


@app.route("/io")
def io() -> Any:
    time.sleep(IO_SLEEP_SECONDS)
    return jsonify(slept=IO_SLEEP_SECONDS)


@app.route("/slow")
def slow() -> Any:
    time.sleep(SLOW_SLEEP_SECONDS)
    return jsonify(slept=SLOW_SLEEP_SECONDS)


@app.route("/_bench/config")
def bench_config() -> Any:
    provider = _state["provider"]
    processors = _processor_names(provider) if provider is not None else []
    package = sys.modules.get("otel_wpm")
    return jsonify(
        config=_state["config"],
        pid=os.getpid(),
        processors=processors,
        otel_wpm=getattr(package, "__file__", None),
    )


@app.route("/_bench/stats")
def bench_stats() -> Any:
    processor = _state["processor"]
    return jsonify(processor.get_stats() if processor is not None else {})


def _processor_names(provider: Any) -> list[str]:
    multi = getattr(provider, "_active_span_processor", None)
    inner = getattr(multi, "_span_processors", ())
    return [type(p).__name__ for p in inner]


def _make_provider(set_global: bool = True) -> Any:
    """An SDK provider whose only processor drops every span."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class DropExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def _add_reference_processor(provider: Any, config: str) -> None:
    import threading

    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import SpanKind

    class MinimalRequestWatcher(SpanProcessor):
        def __init__(self) -> None:
            self.running: dict[int, Any] = {}
            self.counts: dict[int, int] = {}

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
                self.running[threading.get_ident()] = span

        def on_end(self, span: Any) -> None:
            if span.kind is SpanKind.SERVER and (span.parent is None or span.parent.is_remote):
                thread_id = threading.get_ident()
                self.counts[thread_id] = self.counts.get(thread_id, 0) + 1
                if span.end_time - span.start_time < 1_000_000_000:
                    self.running.pop(thread_id, None)

    provider.add_span_processor(
        MinimalRequestWatcher() if config == "otel_minimal" else SpanProcessor()
    )


def _add_profiler(provider: Any, engine: Optional[str], output_dir: str) -> Any:
    from otel_wpm import Config, ProfilingSpanProcessor

    options: dict[str, Any] = {
        "threshold_seconds": 1.0,
        "enable_local_file": True,
        "local_output_dir": output_dir,
        "enable_url_blacklist": True,
        "url_blacklist": list(URL_BLACKLIST),
        "capture_headers": True,
        "mask_keys": list(MASK_KEYS),
    }
    if engine is not None:
        options["engine"] = engine
    processor = ProfilingSpanProcessor(Config(**options))
    provider.add_span_processor(processor)
    return processor


def watched(
    config: str, wsgi_app: Any, output_dir: Optional[str] = None, set_global: bool = True
) -> tuple[Any, Any, Any]:
    """``wsgi_app`` wrapped in the watching stack named by ``config``.

    Returns (the WSGI app, its tracer provider or None, its processor or None).
    """
    if config not in CONFIGS:
        raise ValueError(f"unknown BENCH_CONFIG {config!r}; expected one of {CONFIGS}")
    if config == "bare":
        return wsgi_app, None, None
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    provider = _make_provider(set_global)
    processor = None
    if config in ("otel_noop", "otel_minimal"):
        _add_reference_processor(provider, config)
    if config.startswith("wpm"):
        out = output_dir or tempfile.mkdtemp(prefix="otel-wpm-bench-")
        engine = "pyinstrument" if config == "wpm_precise" else None
        processor = _add_profiler(provider, engine, out)
    return OpenTelemetryMiddleware(wsgi_app, tracer_provider=provider), provider, processor


def install(config: str, output_dir: Optional[str] = None) -> None:
    """Wrap ``app.wsgi_app`` with the watching stack named by ``config`` (once per process)."""
    if _state["config"] is not None:
        raise RuntimeError(f"already installed: {_state['config']}")
    wrapped, _state["provider"], _state["processor"] = watched(config, app.wsgi_app, output_dir)
    _state["config"] = config
    app.wsgi_app = wrapped  # type: ignore[method-assign]


def install_from_env() -> None:
    """``install()`` with ``BENCH_CONFIG`` (default ``bare``) and ``BENCH_OUTPUT_DIR``."""
    install(os.environ.get("BENCH_CONFIG", "bare"), os.environ.get("BENCH_OUTPUT_DIR") or None)


def shutdown() -> None:
    """Shut the tracer provider down (stops any processor threads)."""
    provider = _state["provider"]
    if provider is not None:
        provider.shutdown()
