"""Reports in an S3-compatible bucket (moto's server on 127.0.0.1): writing, spooling, pruning,
serving.

The bucket store writes each report as one object keyed by its trace id, keeps reports in a
bounded local spool while the bucket is down and uploads them when it returns, prunes by
count under a lease one process holds, and the report server serves the bucket.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
import requests
from apps.hardening_app import make_app
from apps.helpers import wait_until
from apps.watched import served
from mattermost_server import FakeMattermostServer
from s3_server import AWS_ENV, S3Server
from wsgi_servers import serve_reports

from otel_wpm import Config
from otel_wpm.cli import problems
from otel_wpm.reporting.lease import BucketLease
from otel_wpm.reporting.report_format import metadata_element, parse_metadata, report_file_name
from otel_wpm.reporting.retention import RetentionLimits
from otel_wpm.reporting.s3_store import LEASE_KEY, S3ReportStore, key_of
from otel_wpm.reporting.store import SPOOL_DIRECTORY_NAME, store_from_config
from otel_wpm.server import ReportDirectoryError, app

START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.create_bucket()


def report(index: int, host: str = "web-1", size: int = 2000) -> tuple[str, bytes]:
    """A report's file name and page: metadata first, as the report thread writes them."""
    trace_id = f"{index:032x}"
    started = START + timedelta(minutes=index)
    meta = {
        "service": "shop",
        "host": host,
        "method": "GET",
        "route": f"/items/{index % 3}",
        "duration_seconds": 1.5,
        "trace_id": trace_id,
        "span_id": f"{index:016x}",
        "start_time": started.isoformat(),
    }
    name = report_file_name(started, "GET", meta["route"], trace_id, meta["span_id"], False)
    page = f"<html><head>{metadata_element(meta)}</head><body>{'x' * size}</body></html>"
    return name, page.encode()


def make_store(s3: S3Server, bucket: str, tmp_path: Path, **options: Any) -> S3ReportStore:
    options.setdefault("spool_directory", tmp_path / "spool")
    options.setdefault("spool_max_bytes", 10 * 2**20)
    return S3ReportStore(f"s3://{bucket}/shop", endpoint_url=s3.endpoint, **options)


def spooled(tmp_path: Path) -> list[str]:
    spool = tmp_path / "spool"
    return sorted(p.name for p in spool.glob("*.html")) if spool.is_dir() else []


# --- writing and reading --------------------------------------------------------------


def test_a_report_is_one_object_under_its_trace_id_with_the_metadata_in_its_first_bytes(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = make_store(s3, bucket, tmp_path)
    name, page = report(7, size=200_000)

    assert store.write(name, page) is None  # not a local file

    trace_id = f"{7:032x}"
    assert s3.keys(bucket) == [f"shop/{trace_id}/{name}"]
    assert s3.get(bucket, f"shop/{trace_id}/{name}") == page
    assert store.link(name) == f"s3://{bucket}/shop/{trace_id}/{name}"
    [listed] = store.reports()
    assert (listed.name, listed.size) == (name, len(page))
    assert [r.name for r in store.reports_of_trace(trace_id)] == [name]
    assert store.reports_of_trace(f"{8:032x}") == []
    head = store.read_head(name)
    assert len(head) < len(page) // 10  # a ranged GET, not the whole report
    assert parse_metadata(head)["host"] == "web-1"
    opened = store.open_report(name)
    assert opened is not None and opened.size == len(page)
    assert opened.stream.read() == page
    assert store.open_report("../../etc/passwd") is None
    assert store.open_report(report(8)[0]) is None


def test_only_report_objects_are_listed(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = make_store(s3, bucket, tmp_path)
    name, page = report(1)
    store.write(name, page)
    s3.put(bucket, f"shop/{LEASE_KEY}", b"{}")
    s3.put(bucket, f"shop/{'f' * 32}/{name}", page)  # under another trace id than its name's
    s3.put(bucket, "shop/notes.txt", b"hello")

    assert [r.name for r in store.reports()] == [name]


def test_store_from_config_takes_the_bucket_and_spools_in_local_output_dir(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    config = Config(
        local_output_dir=str(tmp_path),
        report_store=f"s3://{bucket}/shop/",
        report_store_endpoint_url=s3.endpoint,
        report_max_files=5,
        enable_local_file=False,  # alerts.jsonl off; reports still go to the bucket
    )

    store = store_from_config(config)

    assert isinstance(store, S3ReportStore)
    assert store.location == f"s3://{bucket}/shop"
    assert store.limits.max_files == 5
    s3.stop()
    try:
        store.write(*report(1))
    finally:
        s3.start()
    assert [p.parent for p in tmp_path.rglob("*.html")] == [tmp_path / SPOOL_DIRECTORY_NAME]


# --- the bucket down --------------------------------------------------------------------


def test_reports_are_spooled_while_the_bucket_is_down_and_uploaded_when_it_returns(
    bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_wpm")
    with S3Server() as s3:
        s3.create_bucket(bucket)
        store = make_store(s3, bucket, tmp_path)
        store.write(*report(0))
        s3.stop()
        names = [store.write(*report(i)) or report(i)[0] for i in range(1, 6)]
        assert spooled(tmp_path) == sorted(names)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert f"s3://{bucket}/shop" in warnings[0].getMessage()
        assert store.retry_delay() is not None

        s3.start()  # the same port, the same bucket
        wait_until(lambda: store.retry_pending() or not spooled(tmp_path), "the spool to upload")

        assert [key.rsplit("/", 1)[1] for key in s3.keys(bucket)] == sorted([report(0)[0], *names])
        assert store.retry_delay() is None
        assert "uploads reports to" in caplog.text


def test_a_full_spool_keeps_the_newest_reports_within_its_bound_and_says_so_once(
    bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with S3Server() as s3:
        s3.create_bucket(bucket)
        size = len(report(0)[1])
        store = make_store(s3, bucket, tmp_path, spool_max_bytes=3 * size)
        s3.stop()
        for i in range(8):  # the oldest first: names and mtimes agree
            store.write(*report(i))

        kept = spooled(tmp_path)
        assert kept == sorted(report(i)[0] for i in (5, 6, 7))
        full = [r for r in caplog.records if "is full" in r.getMessage()]
        assert len(full) == 1

        s3.start()
        wait_until(lambda: store.retry_pending() or not spooled(tmp_path), "the spool to upload")
        assert [key.rsplit("/", 1)[1] for key in s3.keys(bucket)] == kept


def test_without_a_spool_a_report_the_bucket_refuses_is_an_error_naming_the_bucket(
    s3: S3Server, tmp_path: Path
) -> None:
    store = make_store(s3, "no-such-bucket", tmp_path, spool_max_bytes=0)

    with pytest.raises(OSError, match="s3://no-such-bucket/shop.*report_spool_max_bytes"):
        store.write(*report(1))


def test_a_missing_bucket_is_a_failure_like_any_other(s3: S3Server, tmp_path: Path) -> None:
    store = make_store(s3, "no-such-bucket", tmp_path)

    store.write(*report(1))

    assert spooled(tmp_path) == [report(1)[0]]


# --- the app: reports in the bucket, alerts local, links to the shared browser ---------


def test_a_slow_request_goes_to_the_bucket_and_its_alert_links_to_the_shared_browser(
    s3: S3Server, bucket: str, tmp_path: Path, mattermost_server: FakeMattermostServer
) -> None:
    config = Config(
        threshold_seconds=0.05,
        hung_request_factor=0,
        local_output_dir=str(tmp_path),
        report_store=f"s3://{bucket}/shop",
        report_store_endpoint_url=s3.endpoint,
        report_base_url="https://reports.example.com",
        enable_mattermost=True,
        mattermost_server_url=mattermost_server.url,
        mattermost_token=mattermost_server.token,
        mattermost_channel_id=mattermost_server.channel_id,
    )
    with served(make_app(), config) as watched:
        answer = requests.get(watched.url + "/orders", headers={"X-Slow": "0.1"}, timeout=10)
        trace_id = answer.headers["X-Trace-Id"]
        span = watched.settle(trace_id)

    link = f"https://reports.example.com/trace/{trace_id}"
    assert span.attributes is not None and span.attributes["wpm.report.url"] == link
    [key] = [key for key in s3.keys(bucket) if key.endswith(".html")]
    assert key.startswith(f"shop/{trace_id}/")
    assert not list(tmp_path.glob("*.html"))  # no local copy
    [line] = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["report_url"] == link
    [post] = mattermost_server.posts
    assert link in post["message"]
    [attached] = mattermost_server.files
    assert attached.data == s3.get(bucket, key)


# --- pruning -------------------------------------------------------------------------


def _prune_in_a_process(
    endpoint: str, bucket: str, redis_url: Optional[str], limit: int, start: Any
) -> Optional[list[str]]:
    store = S3ReportStore(
        f"s3://{bucket}/shop",
        endpoint_url=endpoint,
        limits=RetentionLimits(max_files=limit),
        redis_url=redis_url,
    )
    start.wait(30)
    result = store.prune_pass()
    return None if result is None else result.removed


@pytest.mark.parametrize("lease", ["bucket", "redis"])
def test_two_processes_racing_to_prune_by_count_one_prunes_and_nothing_is_over_deleted(
    s3: S3Server, bucket: str, tmp_path: Path, lease: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if lease == "redis" else None
    if redis_url:
        # one Redis for every test: a lease per bucket
        assert bucket in f"otel_wpm:retention:s3://{bucket}/shop"
    writer = make_store(s3, bucket, tmp_path)
    for i in range(30):
        writer.write(*report(i))
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Barrier(2)
    with context.Pool(2) as pool:
        racing = [
            pool.apply_async(_prune_in_a_process, (s3.endpoint, bucket, redis_url, 10, start))
            for _ in range(2)
        ]
        results = [result.get(60) for result in racing]

    passes = [removed for removed in results if removed is not None]
    assert len(passes) == 1, results
    assert sorted(passes[0]) == sorted(report(i)[0] for i in range(20))
    left = [key.rsplit("/", 1)[1] for key in s3.keys(bucket) if key.endswith(".html")]
    assert sorted(left) == sorted(report(i)[0] for i in range(20, 30))


def test_the_bucket_lease_is_held_until_it_runs_out_then_taken_over(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = make_store(s3, bucket, tmp_path)
    first = BucketLease(store._client, LEASE_KEY, seconds=60)
    second = BucketLease(store._client, LEASE_KEY, seconds=60)

    assert first.acquire() is not None
    assert second.acquire() is None
    assert first.acquire() is None  # a lease also spaces the passes: not again before its end

    lease = json.loads(s3.get(bucket, f"shop/{LEASE_KEY}"))
    s3.put(bucket, f"shop/{LEASE_KEY}", json.dumps({**lease, "until": 0}).encode())
    late = BucketLease(store._client, LEASE_KEY, seconds=60)
    assert late.acquire() is not None


def test_writes_prune_and_the_next_pass_of_any_process_waits_for_the_lease(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    limits = RetentionLimits(max_files=5)
    writer = make_store(s3, bucket, tmp_path, limits=limits)
    for i in range(8):
        writer.write(*report(i))
    # the first write ran a pass (nothing to remove) and took the lease: the bucket
    # may go over its limit until the lease ends
    assert len(s3.keys(bucket, "shop/0")) == 8
    other = make_store(s3, bucket, tmp_path, limits=limits)
    assert other.prune_pass() is None

    lease = json.loads(s3.get(bucket, f"shop/{LEASE_KEY}"))
    s3.put(bucket, f"shop/{LEASE_KEY}", json.dumps({**lease, "until": 0}).encode())
    assert other.prune_pass() is None  # it knows the lease runs another minute: it does not ask
    result = make_store(s3, bucket, tmp_path, limits=limits).prune_pass()

    assert result is not None and sorted(result.removed) == [report(i)[0] for i in range(3)]
    assert [key.removeprefix("shop/") for key in s3.keys(bucket, "shop/0")] == sorted(
        key_of(report(i)[0]) for i in range(3, 8)
    )


# --- the report server on a bucket -----------------------------------------------------


def test_the_report_server_serves_every_host_of_a_bucket(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = make_store(s3, bucket, tmp_path)
    for i in range(6):
        store.write(*report(i, host="web-a" if i % 2 else "web-b"))

    with serve_reports(f"s3://{bucket}/shop", endpoint_url=s3.endpoint) as base:
        overview = requests.get(base + "/", timeout=10).text
        only_a = requests.get(base + "/?host=web-a", timeout=10).text
        listed = requests.get(base + "/reports?host=web-b", timeout=10).text
        trace = requests.get(f"{base}/trace/{3:032x}", allow_redirects=False, timeout=10)
        page = requests.get(base + trace.headers["Location"], timeout=10)

    assert "6 slow requests" in overview and "web-a" in overview and "web-b" in overview
    assert "3 slow requests" in only_a
    assert "3 of 6 reports" in listed
    assert trace.status_code == 302
    assert page.status_code == 200 and page.content == report(3, host="web-a")[1]


def test_a_bucket_that_cannot_be_listed_stops_the_server_at_start_up(s3: S3Server) -> None:
    with pytest.raises(ReportDirectoryError, match="s3://no-such-bucket"):
        app(store="s3://no-such-bucket/shop", endpoint_url=s3.endpoint)


def test_otel_wpm_config_says_when_hosts_sharing_a_bucket_de_duplicate_alone() -> None:
    shared = Config(report_store="s3://reports/shop")

    assert any("dedup_redis_url is unset" in problem for problem in problems(shared))
    with_redis = shared.replace(dedup_redis_url="redis://redis:6379/0")
    assert not any("dedup_redis_url" in problem for problem in problems(with_redis))
