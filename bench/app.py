"""Reference Flask app for the overhead benchmark, and the watching stacks of every app.

Endpoints: ``/fast`` (tiny JSON), ``/cpu`` (recursive fib, call-dense, ~20 ms),
``/cpu_mix`` (comprehensions, json, sorting, formatting, ~20 ms), ``/io``
(sleeps 20 ms), ``/slow`` (sleeps 1.2 s, for soak tests), ``/phases`` and
``/busy`` (for ``bench/fidelity.py``: 0.6 s of CPU then 0.4 s of sleep, and 1 s
of CPU), and, on every benchmark app (:func:`add_bench_routes`),
``/_bench/config`` (which configuration is installed; used by ``bench/run.py``
to wait for readiness) and ``/_bench/stats`` (the processor's ``get_stats()``,
``{}`` without one).

The watching stack is chosen by the ``BENCH_CONFIG`` environment variable:

* ``bare``: plain Flask.
* ``otel``: OTel WSGI middleware + SDK ``TracerProvider`` whose only span
  processor drops every span (so the SDK span path is paid, export is not).
* ``wpm``: ``otel`` + ``ProfilingSpanProcessor`` with the default engine.
* ``wpm_precise``: ``otel`` + ``ProfilingSpanProcessor(engine="pyinstrument")``.
* ``wpm_late``: ``wpm`` without early sampling (``early_sampling_interval_seconds=0``):
  requests are sampled only from ``sample_after_fraction`` x threshold on.
* ``wpm_after_half``: ``wpm`` sampling at full rate from half the threshold on
  (``sample_after_fraction=0.5``), early rounds before.
* ``otel_noop``: ``otel`` + a span processor that does nothing: what the SDK
  charges for one more processor.
* ``otel_minimal``: ``otel`` + the least a processor that watches requests can
  do (recognise a request span, keep it under its thread, count it, check its
  duration): the floor under any design like otel-wpm's.
* ``otel_floor``: ``otel`` + the work otel-wpm's request path must do, written
  inline with no call of its own (``bench/request_floor.py``'s top rung: the
  settings kept per request, the trace mark, the thread-or-task key, the body
  decision): the least that work costs, short of anything a slow request needs.

The ``wpm*`` configurations use :data:`WPM_OPTIONS` (threshold 1 s, ...), over
which an app module's own ``WPM_OPTIONS`` and then the JSON object in
``BENCH_WPM_OPTIONS`` (any ``Config`` keywords) are applied.

The stack must be installed in each worker after fork; ``bench/gunicorn_conf.py``
does that from its ``post_fork`` hook, in the app module named by ``BENCH_APP``
(default ``bench.app``)::

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

CONFIGS = (
    "bare", "otel", "wpm", "wpm_precise", "wpm_late", "otel_noop", "otel_minimal",
    "wpm_after_half", "otel_floor",
)  # fmt: skip

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
#: The ``Config`` of the ``wpm*`` configurations, before an app's and the environment's.
WPM_OPTIONS: dict[str, Any] = {
    "threshold_seconds": 1.0,
    "enable_local_file": True,
    "enable_url_blacklist": True,
    "url_blacklist": list(URL_BLACKLIST),
    "capture_headers": True,
    "mask_keys": list(MASK_KEYS),
}
#: The engines and settings of the ``wpm*`` configurations.
_WPM_CONFIGS: dict[str, dict[str, Any]] = {
    "wpm": {},
    "wpm_precise": {"engine": "pyinstrument"},
    "wpm_late": {"early_sampling_interval_seconds": 0},
    "wpm_after_half": {"sample_after_fraction": 0.5},
}
#: The phases of ``/phases`` (seconds of CPU, then of sleep) and the CPU of ``/busy``.
PHASE_CPU_SECONDS = 0.6
PHASE_IO_SECONDS = 0.4
BUSY_SECONDS = 1.0

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


def burn(seconds: float) -> int:
    """Python work for ``seconds`` of wall-clock time."""
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        count += sum(i * i for i in range(200))
    return count


def phase_cpu() -> float:
    started = time.perf_counter()
    burn(PHASE_CPU_SECONDS)
    return time.perf_counter() - started


def phase_io() -> float:
    started = time.perf_counter()
    time.sleep(PHASE_IO_SECONDS)
    return time.perf_counter() - started


@app.route("/phases")
def phases() -> Any:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    cpu_at_start = time.thread_time()
    cpu_seconds, io_seconds = phase_cpu(), phase_io()
    return jsonify(
        phase_cpu=cpu_seconds,
        phase_io=io_seconds,
        cpu=time.thread_time() - cpu_at_start,
        trace_id=f"{context.trace_id:032x}",
    )


@app.route("/busy")
def busy() -> Any:
    return jsonify(count=burn(BUSY_SECONDS))


def bench_config() -> Any:
    return jsonify(installed(_state))


def bench_stats() -> Any:
    return jsonify(processor_stats(_state))


def installed(state: dict[str, Any]) -> dict[str, Any]:
    """What ``/_bench/config`` answers: the stack installed, and where otel_wpm came from."""
    provider = state["provider"]
    processors = _processor_names(provider) if provider is not None else []
    package = sys.modules.get("otel_wpm")
    return {
        "config": state["config"],
        "pid": os.getpid(),
        "processors": processors,
        "otel_wpm": getattr(package, "__file__", None),
    }


def processor_stats(state: dict[str, Any]) -> dict[str, Any]:
    """What ``/_bench/stats`` answers: the processor's ``get_stats()``, ``{}`` without one."""
    processor = state["processor"]
    return dict(processor.get_stats()) if processor is not None else {}


def add_bench_routes(flask_app: Flask) -> None:
    """``/_bench/config`` and ``/_bench/stats``, which ``bench/run.py`` reads."""
    flask_app.add_url_rule("/_bench/config", view_func=bench_config)
    flask_app.add_url_rule("/_bench/stats", view_func=bench_stats)


add_bench_routes(app)


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

    if config == "otel_floor":
        from bench.request_floor import processor

        provider.add_span_processor(processor("+body"))
        return
    provider.add_span_processor(
        MinimalRequestWatcher() if config == "otel_minimal" else SpanProcessor()
    )


def _add_profiler(provider: Any, options: dict[str, Any]) -> Any:
    from otel_wpm import Config, ProfilingSpanProcessor

    processor = ProfilingSpanProcessor(Config(**options))
    provider.add_span_processor(processor)
    return processor


def watched(
    config: str,
    wsgi_app: Any,
    output_dir: Optional[str] = None,
    set_global: bool = True,
    wpm_options: Optional[dict[str, Any]] = None,
    middleware: Optional[Any] = None,
) -> tuple[Any, Any, Any]:
    """``wsgi_app`` wrapped in the watching stack named by ``config``.

    ``wpm_options`` apply over :data:`WPM_OPTIONS` in the ``wpm*`` configurations.
    ``middleware`` is OpenTelemetry's middleware class for the app (default: WSGI's;
    ``bench/asgi_app.py`` passes the ASGI one). Returns (the app, its tracer provider
    or None, its processor or None).
    """
    if config not in CONFIGS:
        raise ValueError(f"unknown BENCH_CONFIG {config!r}; expected one of {CONFIGS}")
    if config == "bare":
        return wsgi_app, None, None
    if middleware is None:
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as middleware

    provider = _make_provider(set_global)
    processor = None
    if config in ("otel_noop", "otel_minimal", "otel_floor"):
        _add_reference_processor(provider, config)
    if config in _WPM_CONFIGS:
        out = output_dir or tempfile.mkdtemp(prefix="otel-wpm-bench-")
        options = {**WPM_OPTIONS, "local_output_dir": out, **_WPM_CONFIGS[config]}
        processor = _add_profiler(provider, {**options, **(wpm_options or {})})
    return middleware(wsgi_app, tracer_provider=provider), provider, processor


def install(
    config: str,
    output_dir: Optional[str] = None,
    flask_app: Flask = app,
    wpm_options: Optional[dict[str, Any]] = None,
) -> None:
    """Wrap ``flask_app.wsgi_app`` with the watching stack named by ``config`` (once per
    process)."""
    if _state["config"] is not None:
        raise RuntimeError(f"already installed: {_state['config']}")
    wrapped, _state["provider"], _state["processor"] = watched(
        config, flask_app.wsgi_app, output_dir, wpm_options=wpm_options
    )
    _state["config"] = config
    flask_app.wsgi_app = wrapped  # type: ignore[method-assign]


def install_from_env(flask_app: Flask = app, wpm_options: Optional[dict[str, Any]] = None) -> None:
    """``install()`` with ``BENCH_CONFIG`` (default ``bare``), ``BENCH_OUTPUT_DIR``, and
    ``BENCH_WPM_OPTIONS`` over ``wpm_options`` (an app's own)."""
    from_env = json.loads(os.environ.get("BENCH_WPM_OPTIONS") or "{}")
    install(
        os.environ.get("BENCH_CONFIG", "bare"),
        os.environ.get("BENCH_OUTPUT_DIR") or None,
        flask_app,
        {**(wpm_options or {}), **from_env},
    )


def shutdown() -> None:
    """Shut the tracer provider down (stops any processor threads)."""
    provider = _state["provider"]
    if provider is not None:
        provider.shutdown()
