"""Starlette and Django over ASGI, on uvicorn (and Django on daphne too) under
``opentelemetry-instrument``: each slow request's report holds its own code, wherever it ran
(child task, worker thread)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from apps.asgi_servers import Served, served_by
from apps.helpers import has_path, profile_functions, report_metadata, seconds_in


@pytest.fixture(scope="module")
def starlette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from served_by("uvicorn", tmp_path_factory, "asgi_starlette_app:app")


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def django(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    yield from served_by(
        request.param,
        tmp_path_factory,
        "asgi_django_app:application",
        DJANGO_SETTINGS_MODULE="asgi_django_settings",
    )


def test_starlette_requests_run_by_a_middleware_in_a_child_task_are_profiled(
    starlette: Served,
) -> None:
    paths = [f"/s/{n}" for n in range(3)]
    with ThreadPoolExecutor(len(paths)) as pool:
        for answer in [pool.submit(starlette.get, path) for path in paths]:
            answer.result()
    reports = starlette.reports_for(*paths)

    for report in reports.values():
        assert report_metadata(report)["route"] == "/s/{n}"
        assert profile_functions(report, "asgi_starlette_app.py") == {
            "passing",
            "slow",
            "starlette_wait",
        }
        assert has_path(report, "slow", "starlette_wait", "sleep", "[await]")
    starlette.assert_quiet()


def test_starlette_run_in_threadpool_is_profiled_on_its_worker_thread(starlette: Served) -> None:
    starlette.get("/threadpool")
    report = starlette.reports_for("/threadpool")["/threadpool"]

    assert profile_functions(report, "asgi_starlette_app.py") == {
        "passing",
        "threadpool",
        "blocking_io",
    }
    assert has_path(report, "threadpool", "blocking_io")
    assert seconds_in(report, "blocking_io") > seconds_in(report, "[await]")
    starlette.assert_quiet()


def test_django_async_and_sync_views_are_profiled(django: Served) -> None:
    django.get("/orders/1/async")
    django.get("/orders/2/sync")
    reports = django.reports_for("/orders/1/async", "/orders/2/sync")

    async_report, sync_report = reports["/orders/1/async"], reports["/orders/2/sync"]
    assert report_metadata(async_report)["route"] == "orders/<int:order_id>/async"
    assert profile_functions(async_report, "asgi_django_app.py") == {"async_order", "django_wait"}
    assert has_path(async_report, "async_order", "django_wait", "sleep", "[await]")
    assert profile_functions(sync_report, "asgi_django_app.py") == {"sync_order", "django_work"}
    assert seconds_in(sync_report, "django_work") > seconds_in(sync_report, "[await]")
    django.assert_quiet()
