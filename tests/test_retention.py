"""Retention of report files: each limit, what is never touched, and several writer processes."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

from otel_wpm.config import Config
from otel_wpm.reporting.local_store import LocalReportStore
from otel_wpm.reporting.report_format import is_report_file, scan, temporary_name
from otel_wpm.reporting.retention import (
    ABANDONED_AFTER_SECONDS,
    LOCK_FILE_NAME,
    Retention,
    RetentionLimits,
    prune,
)
from otel_wpm.reporting.store import store_from_config

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
DAY = 86400.0


def report_name(index: int, running: bool = False) -> str:
    suffix = "_running" if running else ""
    return f"20240501T120000Z_GET_users-id_{index:032x}_{index:016x}{suffix}.html"


def make_report(directory: Path, index: int, mtime: float, size: int = 100) -> str:
    name = report_name(index)
    path = directory / name
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return name


def names_in(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def test_max_files_removes_the_oldest_by_mtime(tmp_path: Path) -> None:
    # index order differs from age order so the test sees mtime, not the name, decide
    ages = {0: 5, 1: 1, 2: 4, 3: 2, 4: 3}
    names = {i: make_report(tmp_path, i, NOW - age * 60) for i, age in ages.items()}

    result = prune(tmp_path, RetentionLimits(max_files=3), now=NOW)

    assert result is not None
    assert sorted(result.removed) == sorted([names[0], names[2]])
    assert {n for n in names_in(tmp_path) if is_report_file(n)} == {names[1], names[3], names[4]}
    assert result.kept_files == 3


def test_equal_mtimes_are_ordered_by_name(tmp_path: Path) -> None:
    names = [make_report(tmp_path, i, NOW - 60) for i in range(4)]

    prune(tmp_path, RetentionLimits(max_files=2), now=NOW)

    assert {n for n in names_in(tmp_path) if is_report_file(n)} == set(names[2:])


def test_max_bytes_removes_oldest_until_the_rest_fit(tmp_path: Path) -> None:
    names = [make_report(tmp_path, i, NOW - (10 - i) * 60, size=400) for i in range(5)]

    result = prune(tmp_path, RetentionLimits(max_bytes=1000), now=NOW)

    assert result is not None
    assert set(result.removed) == set(names[:3])
    assert result.kept_bytes == 800
    assert sum(r.size for r in scan(tmp_path)) <= 1000


def test_max_age_days_removes_reports_older_than_the_limit(tmp_path: Path) -> None:
    old = make_report(tmp_path, 1, NOW - 3 * DAY)
    recent = make_report(tmp_path, 2, NOW - 1 * DAY)

    result = prune(tmp_path, RetentionLimits(max_age_days=2), now=NOW)

    assert result is not None
    assert result.removed == [old]
    assert recent in names_in(tmp_path)


def test_zero_limits_keep_everything(tmp_path: Path) -> None:
    names = {make_report(tmp_path, i, NOW - 400 * DAY, size=10_000) for i in range(5)}

    result = prune(tmp_path, RetentionLimits(0, 0, 0), now=NOW)

    assert result is not None and result.removed == []
    assert names <= names_in(tmp_path)


def test_files_that_are_not_reports_are_never_deleted(tmp_path: Path) -> None:
    bystanders = [
        "alerts.jsonl",
        ".otel-wpm-dedup.sqlite3",
        ".otel-wpm-dedup.sqlite3-wal",
        ".otel-wpm-dedup.sqlite3-shm",
        "notes.html",
        ".notes.html.1234.tmp",
        report_name(8).replace(".html", ".htm"),
        report_name(9).upper(),
        "x" + report_name(10),
    ]
    for name in bystanders:
        path = tmp_path / name
        path.write_bytes(b"y" * 5000)
        os.utime(path, (NOW - 400 * DAY, NOW - 400 * DAY))
    report = make_report(tmp_path, 1, NOW - 400 * DAY)

    result = prune(tmp_path, RetentionLimits(max_files=1, max_bytes=1, max_age_days=1), now=NOW)

    assert result is not None and result.removed == [report]
    assert set(bystanders) <= names_in(tmp_path)


def test_a_temporary_file_left_by_a_killed_writer_goes_after_an_hour(tmp_path: Path) -> None:
    abandoned = temporary_name(report_name(1), 1234)
    being_written = temporary_name(report_name(2), 5678)
    for name, age in ((abandoned, ABANDONED_AFTER_SECONDS + 60), (being_written, 5)):
        path = tmp_path / name
        path.write_bytes(b"<html")
        os.utime(path, (NOW - age, NOW - age))
    report = make_report(tmp_path, 3, NOW - 60)

    prune(tmp_path, RetentionLimits(max_files=10), now=NOW)

    assert names_in(tmp_path) >= {being_written, report}
    assert abandoned not in names_in(tmp_path)


def test_a_symlink_named_like_a_report_is_left_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / report_name(1)).symlink_to(outside)

    prune(reports, RetentionLimits(max_files=0, max_age_days=0.0001), now=time.time() + DAY)

    assert (reports / report_name(1)).is_symlink()
    assert outside.read_text() == "keep me"


def test_a_pass_is_skipped_while_another_holds_the_lock(tmp_path: Path) -> None:
    names = [make_report(tmp_path, i, NOW - 60) for i in range(3)]
    descriptor = os.open(tmp_path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        assert prune(tmp_path, RetentionLimits(max_files=1), now=NOW) is None
        assert set(names) <= names_in(tmp_path)
    finally:
        os.close(descriptor)

    assert prune(tmp_path, RetentionLimits(max_files=1), now=NOW) is not None
    assert {n for n in names_in(tmp_path) if is_report_file(n)} == {names[2]}


def test_a_missing_directory_is_not_an_error(tmp_path: Path) -> None:
    result = prune(tmp_path / "absent", RetentionLimits(max_files=1))

    assert result is not None and result.removed == []


def test_store_writes_stay_within_the_file_limit(tmp_path: Path) -> None:
    store = LocalReportStore(tmp_path, limits=RetentionLimits(max_files=10))

    counts = []
    for i in range(40):
        store.write(report_name(i), b"<html></html>")
        counts.append(len(scan(tmp_path)))

    # a pass runs when this process's writes take the count clearly over the limit
    assert max(counts) <= 11
    assert report_name(39) in names_in(tmp_path)
    store.retention.prune()
    assert len(scan(tmp_path)) == 10


def test_store_does_not_scan_on_every_write(tmp_path: Path) -> None:
    store = LocalReportStore(tmp_path)
    store.retention = Retention.for_directory(
        tmp_path, RetentionLimits(max_age_days=1), every_writes=5, every_seconds=3600
    )
    store.write(report_name(0), b"first")  # the first write always runs a pass
    expired = make_report(tmp_path, 99, time.time() - 3 * DAY)

    for i in range(1, 5):
        store.write(report_name(i), b"r")
        assert expired in names_in(tmp_path), f"pruned after write {i}"
    store.write(report_name(5), b"r")

    assert expired not in names_in(tmp_path)


WRITER = textwrap.dedent(
    """
    import os, random, sys, time
    from pathlib import Path
    from otel_wpm.reporting.local_store import LocalReportStore
    from otel_wpm.reporting.retention import RetentionLimits

    directory, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    deadline = time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no start signal")
        time.sleep(0.001)
    store = LocalReportStore(directory, limits=RetentionLimits(max_files=25, max_bytes=40_000))
    store.retention.every_writes = 3
    rng = random.Random(worker)
    for i in range(80):
        index = worker * 1000 + i
        name = f"20240501T120000Z_GET_load_{index:032x}_{index:016x}.html"
        store.write(name, b"r" * rng.randint(100, 3000))
        if i % 10 == 0:
            store.retention.prune()
    store.retention.prune(wait=True)
    """
)


def test_several_processes_writing_and_pruning_end_within_limits(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "alerts.jsonl").write_text("{}\n")
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(reports), str(worker), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(5)
    ]
    go.touch()
    outcomes = [(w.wait(timeout=120), *w.communicate()) for w in workers]

    for returncode, _stdout, stderr in outcomes:
        assert returncode == 0, stderr
        assert stderr == ""
    left = scan(reports)
    assert 0 < len(left) <= 25
    assert sum(r.size for r in left) <= 40_000
    assert (reports / "alerts.jsonl").read_text() == "{}\n"
    assert not [n for n in names_in(reports) if n.endswith(".tmp")]


def test_unlimited_retention_never_prunes_on_write(tmp_path: Path) -> None:
    old = make_report(tmp_path, 1, NOW - 400 * DAY, size=10_000)
    retention = Retention.for_directory(
        tmp_path, RetentionLimits(0, 0, 0), every_writes=1, every_seconds=0
    )

    assert retention.after_write(10**9) is None
    assert old in names_in(tmp_path)


def test_store_from_config_takes_the_config_limits(tmp_path: Path) -> None:
    config = Config(
        local_output_dir=str(tmp_path),
        report_max_files=3,
        report_max_bytes=4096,
        report_max_age_days=7,
    )

    store = store_from_config(config)

    assert isinstance(store, LocalReportStore)
    assert store.directory == tmp_path
    assert store.retention.limits == RetentionLimits(3, 4096, 7)
    for i in range(6):
        store.write(report_name(i), b"r")
    store.retention.prune()
    assert sorted(r.name for r in scan(tmp_path)) == [report_name(i) for i in (3, 4, 5)]


def _unusable_lock_by_directory(directory: Path) -> None:
    (directory / LOCK_FILE_NAME).mkdir()


def _unusable_lock_by_dangling_link(directory: Path) -> None:
    (directory / LOCK_FILE_NAME).symlink_to(directory / "missing-dir" / "lock")


def _unusable_lock_by_permissions(directory: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root opens files whatever their permissions")
    lock = directory / LOCK_FILE_NAME
    lock.touch()
    lock.chmod(0)


@pytest.mark.parametrize(
    "make_unusable",
    [
        _unusable_lock_by_directory,
        _unusable_lock_by_dangling_link,
        _unusable_lock_by_permissions,
    ],
)
def test_an_unusable_lock_file_is_logged_once_and_pruning_goes_on(
    tmp_path: Path, make_unusable: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    make_unusable(tmp_path)
    store = LocalReportStore(tmp_path, limits=RetentionLimits(max_files=3))
    store.retention.every_writes = 1
    with caplog.at_level(logging.WARNING, logger="otel_wpm"):
        for index in range(12):
            store.write(report_name(index), b"x" * 10)
    assert len([n for n in names_in(tmp_path) if is_report_file(n)]) == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert LOCK_FILE_NAME in warnings[0].getMessage()
