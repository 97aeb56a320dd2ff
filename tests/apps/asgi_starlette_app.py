"""A Starlette app behind a ``BaseHTTPMiddleware``, run by tests under ``opentelemetry-instrument``.

The middleware runs the app in a child task of the request's task (an anyio task
group), as FastAPI's ``@app.middleware("http")`` does.

* ``GET /s/{n}``: awaits 0.6 s in ``starlette_wait``;
* ``GET /threadpool``: runs ``blocking_io`` (0.6 s in ``time.sleep``) through
  ``run_in_threadpool``;
* ``GET /fast``: answers at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def starlette_wait() -> None:
    await asyncio.sleep(0.6)


async def slow(request: Request) -> Response:
    await starlette_wait()
    return PlainTextResponse(request.path_params["n"])


def blocking_io() -> str:
    time.sleep(0.6)
    return "done"


async def threadpool(request: Request) -> Response:
    return PlainTextResponse(await run_in_threadpool(blocking_io))


async def fast(request: Request) -> Response:
    return PlainTextResponse("fast")


async def passing(request: Request, call_next: Any) -> Response:
    return await call_next(request)  # type: ignore[no-any-return]


app = Starlette(
    routes=[Route("/s/{n}", slow), Route("/threadpool", threadpool), Route("/fast", fast)],
    middleware=[Middleware(BaseHTTPMiddleware, dispatch=passing)],
)
