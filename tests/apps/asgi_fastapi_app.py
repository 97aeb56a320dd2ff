"""A FastAPI app with no OpenTelemetry code, run by tests under ``opentelemetry-instrument``.

* ``GET /a/{item}``: awaits ``asyncio.sleep(0.8)`` in ``slow_db_a``;
* ``GET /b``: blocks the event loop 0.3 s in ``cpu_b``, then awaits 0.5 s in ``wait_b``;
* ``GET /started``: how many ``/a`` requests have started (a test waits on it);
* ``GET /c/{n}``: ``n``-th of many concurrent slow requests; awaits 0.6 s in
  ``slow_call_<n % 5>`` (five distinct functions, so a report holding another
  request's function is seen);
* ``GET /sync``: a ``def`` endpoint (run in the thread pool) that is busy 0.6 s in
  ``sync_work``;
* ``/ws``: a WebSocket that says "bye" after 0.6 s;
* ``GET /fast``: answers at once.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, WebSocket

app = FastAPI()
_started = {"a": 0}


def busy(seconds: float) -> int:
    """Spin on the CPU for ``seconds``, holding the event loop when called from it."""
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        count += 1
    return count


async def slow_db_a() -> None:
    await asyncio.sleep(0.8)


def cpu_b() -> int:
    return busy(0.3)


async def wait_b() -> None:
    await asyncio.sleep(0.5)


@app.get("/a/{item}")
async def get_a(item: str) -> dict[str, str]:
    _started["a"] += 1
    await slow_db_a()
    return {"item": item}


@app.get("/started")
async def started() -> dict[str, int]:
    return _started


@app.get("/b")
async def get_b() -> dict[str, int]:
    spins = cpu_b()
    await wait_b()
    return {"spins": spins}


async def slow_call_0() -> None:
    await asyncio.sleep(0.6)


async def slow_call_1() -> None:
    await asyncio.sleep(0.6)


async def slow_call_2() -> None:
    await asyncio.sleep(0.6)


async def slow_call_3() -> None:
    await asyncio.sleep(0.6)


async def slow_call_4() -> None:
    await asyncio.sleep(0.6)


SLOW_CALLS = (slow_call_0, slow_call_1, slow_call_2, slow_call_3, slow_call_4)


@app.get("/c/{n}")
async def get_c(n: int) -> dict[str, int]:
    await SLOW_CALLS[n % len(SLOW_CALLS)]()
    return {"n": n}


def sync_work() -> int:
    return busy(0.6)


@app.get("/sync")
def get_sync() -> dict[str, int]:
    return {"spins": sync_work()}


@app.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await asyncio.sleep(0.6)
    await websocket.send_text("bye")
    await websocket.close()


@app.get("/fast")
async def fast() -> dict[str, bool]:
    return {"ok": True}
