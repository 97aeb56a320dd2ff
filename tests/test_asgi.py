"""FastAPI on uvicorn, hypercorn and daphne under ``opentelemetry-instrument``: every slow
request of one event loop gets its own report, with its own stacks, and names what held the
loop meanwhile."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from apps.asgi_servers import Served, served_by
from apps.helpers import (
    has_path,
    profile_functions,
    report_metadata,
    seconds_in,
    wait_until,
)

APP_FILE = "asgi_fastapi_app.py"


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn", "daphne"])
def fastapi(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    yield from served_by(request.param, tmp_path_factory, "asgi_fastapi_app:app")


def held_loop_section(report: Path) -> str:
    """The text of the report's "Waiting for the loop" section."""
    page = report.read_text(encoding="utf-8")
    match = re.search(r"<h2>Waiting for the loop</h2>(.*?)</section>", page, re.DOTALL)
    assert match, f"no 'Waiting for the loop' section in {report}"
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def test_three_requests_on_one_loop_each_get_their_own_report(fastapi: Served) -> None:
    started = fastapi.get("/started").json()["a"]
    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(fastapi.get, f"/a/{item}") for item in (1, 2)]
        wait_until(lambda: fastapi.get("/started").json()["a"] >= started + 2, "/a to start")
        answers.append(pool.submit(fastapi.get, "/b"))
        for answer in answers:
            answer.result()
    reports = fastapi.reports_for("/a/1", "/a/2", "/b")

    b_meta = report_metadata(reports["/b"])
    assert b_meta["route"] == "/b"
    assert {"get_b", "cpu_b", "wait_b"} <= profile_functions(reports["/b"], APP_FILE)
    assert not {"get_a", "slow_db_a"} & profile_functions(reports["/b"], APP_FILE)
    assert has_path(reports["/b"], "wait_b", "sleep", "[await]")
    for path in ("/a/1", "/a/2"):
        report = reports[path]
        assert report_metadata(report)["route"] == "/a/{item}"
        assert profile_functions(report, APP_FILE) == {"get_a", "slow_db_a"}
        assert has_path(report, "get_a", "slow_db_a", "sleep", "[await]")
        held = held_loop_section(report)
        assert f"request GET /b (trace {b_meta['trace_id']})" in held
        assert "cpu_b" in held
    fastapi.assert_quiet()


def test_fifty_concurrent_slow_requests_get_fifty_reports_of_their_own_code(
    fastapi: Served,
) -> None:
    paths = [f"/c/{n}" for n in range(50)]
    with ThreadPoolExecutor(len(paths)) as pool:
        for answer in [pool.submit(fastapi.get, path) for path in paths]:
            answer.result()
    reports = fastapi.reports_for(*paths)

    for n, path in enumerate(paths):
        functions = profile_functions(reports[path], APP_FILE)
        assert functions == {"get_c", f"slow_call_{n % 5}"}, (path, functions)
        assert report_metadata(reports[path])["route"] == "/c/{n}"
    fastapi.assert_quiet()


def test_a_sync_endpoint_is_profiled_on_its_worker_thread(fastapi: Served) -> None:
    fastapi.get("/sync")
    report = fastapi.reports_for("/sync")["/sync"]

    assert profile_functions(report, APP_FILE) == {"get_sync", "sync_work", "busy"}
    assert has_path(report, "get_sync", "sync_work", "busy")
    # The request's task only awaits the worker; the time is the worker's.
    assert seconds_in(report, "busy") > seconds_in(report, "[await]")
    fastapi.assert_quiet()


def test_a_report_carries_the_headers_and_query_of_its_request(fastapi: Served) -> None:
    response = requests.get(
        fastapi.server.url + "/a/headers",
        params={"q": "shoes", "api_key": "hunter2"},
        headers={"X-Shop": "north", "Authorization": "Bearer hunter2"},
        timeout=30,
    )
    assert response.status_code == 200
    page = fastapi.reports_for("/a/headers")["/a/headers"].read_text(encoding="utf-8")

    request_part = page[page.index('id="otel-wpm-details"') : page.index("<h3>System</h3>")]
    assert "shoes" in request_part and "north" in request_part
    assert "hunter2" not in page
    fastapi.assert_quiet()


def test_a_websocket_longer_than_the_threshold_is_not_a_slow_request(fastapi: Served) -> None:
    from websockets.sync.client import connect

    with connect(fastapi.server.url.replace("http://", "ws://") + "/ws") as websocket:
        assert websocket.recv(timeout=30) == "bye"
    fastapi.get("/a/after-ws")
    fastapi.reports_for("/a/after-ws")  # reports are written in order: /ws's would be there

    assert "/ws" not in fastapi.report_paths()
    fastapi.assert_quiet()
