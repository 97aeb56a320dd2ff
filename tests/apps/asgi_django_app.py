"""A Django app served over ASGI, run by tests under ``opentelemetry-instrument`` and uvicorn.

Settings: :mod:`asgi_django_settings`. ``/orders/<id>/async`` awaits 0.6 s in
``django_wait``; ``/orders/<id>/sync`` (a sync view, run by asgiref in a worker
thread) is busy 0.6 s in ``django_work``; ``/fast`` answers at once.
"""

from __future__ import annotations

import asyncio
import os
import time

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_django_settings")


async def django_wait() -> None:
    await asyncio.sleep(0.6)


async def async_order(request: HttpRequest, order_id: int) -> HttpResponse:
    await django_wait()
    return HttpResponse(f"order {order_id}")


def django_work() -> int:
    deadline = time.perf_counter() + 0.6
    count = 0
    while time.perf_counter() < deadline:
        count += 1
    return count


def sync_order(request: HttpRequest, order_id: int) -> HttpResponse:
    return HttpResponse(f"order {order_id}: {django_work()}")


def fast(request: HttpRequest) -> HttpResponse:
    return HttpResponse("fast")


urlpatterns = [
    path("orders/<int:order_id>/async", async_order),
    path("orders/<int:order_id>/sync", sync_order),
    path("fast", fast),
]

application = get_asgi_application()
