"""Reference ASGI app (Starlette) for ``bench/asgi.py``: the async twin of ``bench/app.py``.

Endpoints: ``/fast`` (tiny JSON), ``/io`` (``await asyncio.sleep(0.02)``),
``/cpu_mix`` (``bench/app.py``'s app-like CPU work, ~20 ms, inside an
``async def``: it holds the event loop), ``/_bench/config`` and ``/_bench/stats``.

The watching stack is the one ``BENCH_CONFIG`` names in ``bench/app.py``
(``bare``, ``otel``, ``wpm``, ``otel_noop``, ...), around the app with
OpenTelemetry's ASGI middleware. uvicorn builds it in its one process::

    BENCH_CONFIG=wpm uvicorn --factory bench.asgi_app:create_app --port 8000
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_state: dict[str, Any] = {"config": None, "provider": None, "processor": None}


async def fast(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def io(request: Request) -> JSONResponse:
    from bench.app import IO_SLEEP_SECONDS

    await asyncio.sleep(IO_SLEEP_SECONDS)
    return JSONResponse({"slept": IO_SLEEP_SECONDS})


async def cpu_mix(request: Request) -> JSONResponse:
    from bench.app import MIX_ROUNDS, mix_round

    return JSONResponse({"checksum": sum(mix_round(seed) for seed in range(MIX_ROUNDS))})


async def bench_config(request: Request) -> JSONResponse:
    from bench.app import installed

    return JSONResponse(installed(_state))


async def bench_stats(request: Request) -> JSONResponse:
    from bench.app import processor_stats

    return JSONResponse(processor_stats(_state))


app = Starlette(
    routes=[
        Route("/fast", fast),
        Route("/io", io),
        Route("/cpu_mix", cpu_mix),
        Route("/_bench/config", bench_config),
        Route("/_bench/stats", bench_stats),
    ]
)


def create_app() -> Any:
    """The app wrapped in the stack ``BENCH_CONFIG`` names (uvicorn's ``--factory``).

    A frozen copy of the package under test (``BENCH_SRC``, set by ``bench/run.py``)
    wins over the working tree.
    """
    src = os.environ.get("BENCH_SRC")
    if src:
        sys.path.insert(0, src)
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from bench.app import watched

    config = os.environ.get("BENCH_CONFIG", "bare")
    wrapped, _state["provider"], _state["processor"] = watched(
        config, app, os.environ.get("BENCH_OUTPUT_DIR") or None, middleware=OpenTelemetryMiddleware
    )
    _state["config"] = config
    return wrapped
