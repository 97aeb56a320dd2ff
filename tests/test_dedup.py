"""De-duplication stores: one alert per key per window, across processes, failing open."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from apps.helpers import free_port

from otel_wpm.alerting.dedup import (
    PRUNE_INTERVAL_SECONDS,
    DedupStore,
    MemoryDedupStore,
    RedisDedupStore,
    SQLiteDedupStore,
    count_ttl_seconds,
)

WINDOW = 60.0
KEY = "GET /users/<id>"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[[FakeClock], DedupStore]


def decide(store: DedupStore, key: str = KEY, window: float = WINDOW) -> tuple[bool, int]:
    """A claim's answer: ``(send now?, alerts held back since the last one sent)``."""
    claim = store.claim(key, window)
    return claim.send, claim.suppressed


@pytest.fixture(params=["memory", "sqlite"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "memory":
        return lambda clock: MemoryDedupStore(clock=clock)
    return lambda clock: SQLiteDedupStore(tmp_path / "dedup.sqlite3", clock=clock)


def test_one_alert_per_window_then_the_suppressed_count(store_factory: StoreFactory) -> None:
    clock = FakeClock()
    store = store_factory(clock)

    first = decide(store)
    held_back = [decide(store) for _ in range(3)]
    clock.now += WINDOW
    after_window = decide(store)
    next_one = decide(store)
    clock.now += WINDOW
    quiet_window = decide(store)

    assert first == (True, 0)
    assert held_back == [(False, 0)] * 3
    assert after_window == (True, 3)
    assert next_one == (False, 0)
    assert quiet_window == (True, 1)


def test_keys_are_independent(store_factory: StoreFactory) -> None:
    store = store_factory(FakeClock())

    assert decide(store, "GET /a", WINDOW) == (True, 0)
    assert decide(store, "POST /a", WINDOW) == (True, 0)
    assert decide(store, "GET /a", WINDOW) == (False, 0)


def test_window_zero_always_sends(store_factory: StoreFactory) -> None:
    store = store_factory(FakeClock())

    assert [decide(store, KEY, 0) for _ in range(3)] == [(True, 0)] * 3


def test_a_released_claim_ends_the_window_and_its_alerts_count_again(
    store_factory: StoreFactory,
) -> None:
    clock = FakeClock()
    store = store_factory(clock)
    assert [decide(store) for _ in range(3)] == [(True, 0), (False, 0), (False, 0)]
    clock.now += WINDOW

    claim = store.claim(KEY, WINDOW)
    meanwhile = decide(store)  # held back while the claimed alert is on its way
    store.release(claim)  # ... which never arrived

    assert (claim.send, claim.suppressed, meanwhile) == (True, 2, (False, 0))
    # The two it told of, itself, and the one held back meanwhile.
    assert decide(store) == (True, 4)
    assert decide(store) == (False, 0)


def test_a_release_never_ends_a_window_opened_since(store_factory: StoreFactory) -> None:
    clock = FakeClock()
    store = store_factory(clock)
    slow = store.claim(KEY, WINDOW)  # its delivery outlasts the window
    clock.now += WINDOW
    assert decide(store) == (True, 0)  # e.g. another process alerts

    store.release(slow)

    assert decide(store) == (False, 0)
    clock.now += WINDOW
    assert decide(store) == (True, 2)  # the undelivered alert and the one held back


def test_releasing_a_claim_that_opened_no_window_changes_nothing(
    store_factory: StoreFactory,
) -> None:
    clock = FakeClock()
    store = store_factory(clock)
    store.claim(KEY, WINDOW)
    held_back = store.claim(KEY, WINDOW)
    store.release(held_back)
    store.release(store.claim(KEY, 0))

    assert decide(store) == (False, 0)
    clock.now += WINDOW
    assert decide(store) == (True, 2)


def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state" / "dedup.sqlite3"
    first = SQLiteDedupStore(path, clock=clock)
    assert decide(first) == (True, 0)
    assert decide(first) == (False, 0)
    first.close()

    reopened = SQLiteDedupStore(path, clock=clock)
    assert decide(reopened) == (False, 0)
    clock.now += WINDOW
    assert decide(reopened) == (True, 2)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_sqlite_failure_fails_open_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SQLiteDedupStore(blocker / "dedup.sqlite3")

    results = [decide(store) for _ in range(5)]

    assert results == [(True, 0)] * 5
    warnings = [r for r in caplog.records if r.name == "otel_wpm.alerting.dedup"]
    assert len(warnings) == 1 and "sending every alert" in warnings[0].getMessage()


def stored_keys(store: DedupStore) -> set[str]:
    if isinstance(store, MemoryDedupStore):
        return set(store._entries)
    assert isinstance(store, SQLiteDedupStore)
    with sqlite3.connect(store.path) as connection:
        return {key for (key,) in connection.execute("SELECT key FROM dedup")}


def test_entries_expire_after_their_window(store_factory: StoreFactory) -> None:
    clock = FakeClock()
    store = store_factory(clock)
    store.claim("GET /old", WINDOW)
    store.claim("GET /counting", WINDOW)
    store.claim("GET /counting", WINDOW)  # held back: its count must survive the window

    clock.now += WINDOW + PRUNE_INTERVAL_SECONDS
    store.claim("GET /new", WINDOW)
    after_the_window = stored_keys(store)
    clock.now += count_ttl_seconds(WINDOW)
    store.claim("GET /newer", WINDOW)

    assert after_the_window == {"GET /counting", "GET /new"}
    assert stored_keys(store) == {"GET /newer"}


def test_expired_entries_are_looked_for_at_most_once_a_minute(
    store_factory: StoreFactory,
) -> None:
    clock = FakeClock()
    store = store_factory(clock)
    store.claim("GET /a", 1.0)
    clock.now += 2.0
    store.claim("GET /b", 1.0)  # /a has expired, but the last look was 2 s ago

    assert stored_keys(store) == {"GET /a", "GET /b"}


_HOLD_THE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
"""


def test_sqlite_locked_by_another_process_fails_open_without_stalling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_wpm.alerting.dedup")
    path = tmp_path / "dedup.sqlite3"
    store = SQLiteDedupStore(path)
    assert decide(store) == (True, 0)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        results: list[tuple[bool, int]] = []
        claims = threading.Thread(target=lambda: results.extend(decide(store) for _ in range(4)))
        claims.start()
        # Four claims against a held lock end long before the holder lets go (not 4 x 5 s).
        claims.join(10)
        assert not claims.is_alive(), "claims waited for the lock"
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(30)
    claims.join()

    assert results == [(True, 0)] * 4
    assert decide(store) == (False, 0)  # the store works again once unlocked
    messages = [r.getMessage() for r in caplog.records if r.name == "otel_wpm.alerting.dedup"]
    assert len(messages) == 2
    assert "locked" in messages[0] and "sending every alert" in messages[0]
    assert "works again" in messages[1]


_HOLD_THE_LOCK_A_MOMENT = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(0.5)  # another worker setting up the same file, slowly
connection.execute("ROLLBACK")
"""


def test_sqlite_set_up_by_another_process_at_the_same_time_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers alerting on their first slow request at once all set the file up at once;
    one that found it locked used to fail open and send a second alert."""
    caplog.set_level(logging.INFO, logger="otel_wpm.alerting.dedup")
    path = tmp_path / "dedup.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_LOCK_A_MOMENT, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        store = SQLiteDedupStore(path)
        assert decide(store) == (True, 0)
        assert decide(store) == (False, 0)
    finally:
        holder.wait(30)
    assert [r.getMessage() for r in caplog.records if r.name == "otel_wpm.alerting.dedup"] == []


# -- several processes ---------------------------------------------------------------------


RELEASES_PER_PROCESS = 25


def _ready_store(
    kind: str, target: str, barrier: multiprocessing.synchronize.Barrier
) -> DedupStore:
    store: DedupStore = SQLiteDedupStore(target) if kind == "sqlite" else RedisDedupStore(target)
    store.claim("warm up " + str(os.getpid()), WINDOW)  # connect before racing
    barrier.wait()
    return store


def _claim_in_process(
    kind: str,
    target: str,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[bool],
) -> None:
    results.put(_ready_store(kind, target, barrier).claim(KEY, WINDOW).send)


def _claim_and_release_in_process(
    kind: str,
    target: str,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[int],
) -> None:
    """Claims again and again, each alert sent failing to be delivered; puts how many were sent."""
    # What is tested is that no count is lost, not the bound on lock waits: a loaded
    # machine must not make a claim fail open (this process only).
    SQLiteDedupStore.BUSY_TIMEOUT_SECONDS = 30.0
    store = _ready_store(kind, target, barrier)
    sent = 0
    for _ in range(RELEASES_PER_PROCESS):
        claim = store.claim(KEY, WINDOW)
        if claim.send:
            sent += 1
            store.release(claim)
    results.put(sent)


def from_processes(
    work: Callable[..., None], kind: str, target: str, processes: int = 4
) -> list[Any]:
    """What ``work(kind, target, barrier, results)`` put, run in ``processes`` at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=work, args=(kind, target, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    return answers


def test_sqlite_exactly_one_of_four_processes_sends(tmp_path: Path) -> None:
    answers = from_processes(_claim_in_process, "sqlite", str(tmp_path / "dedup.sqlite3"))

    assert sorted(answers) == [False, False, False, True]
    clock = FakeClock()
    clock.now = time.time() + WINDOW  # the processes claimed on the real clock
    assert decide(SQLiteDedupStore(tmp_path / "dedup.sqlite3", clock=clock)) == (True, 3)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_concurrent_releases_lose_no_count(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        target = str(tmp_path / "dedup.sqlite3")
        store: DedupStore = SQLiteDedupStore(target)
    else:
        target = request.getfixturevalue("redis_url")
        store = request.getfixturevalue("redis_store")

    sent = from_processes(_claim_and_release_in_process, kind, target)

    # Every alert was either held back or sent and given back: the next one tells of all.
    assert sum(sent) >= 1
    assert decide(store) == (True, 4 * RELEASES_PER_PROCESS)


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_store(redis_url: str) -> RedisDedupStore:
    store = RedisDedupStore(redis_url)
    store._client.flushdb()
    return store


def expire_window(store: RedisDedupStore, key: str) -> None:
    """What Redis does by itself when the window's key expires."""
    store._client.delete(f"{RedisDedupStore.PREFIX}{{{key}}}:claim")


def test_redis_one_alert_per_window_then_the_suppressed_count(redis_store: RedisDedupStore) -> None:
    first = decide(redis_store)
    held_back = [decide(redis_store) for _ in range(3)]
    expire_window(redis_store, KEY)
    after_window = decide(redis_store)
    next_one = decide(redis_store)

    assert first == (True, 0)
    assert held_back == [(False, 0)] * 3
    assert after_window == (True, 3)
    assert next_one == (False, 0)


def test_redis_released_claim_ends_the_window_and_its_alerts_count_again(
    redis_store: RedisDedupStore,
) -> None:
    assert [decide(redis_store) for _ in range(3)] == [(True, 0), (False, 0), (False, 0)]
    expire_window(redis_store, KEY)

    claim = redis_store.claim(KEY, WINDOW)
    meanwhile = decide(redis_store)
    redis_store.release(claim)

    assert (claim.send, claim.suppressed, meanwhile) == (True, 2, (False, 0))
    assert decide(redis_store) == (True, 4)
    assert decide(redis_store) == (False, 0)


def test_redis_release_never_ends_a_window_opened_since(redis_store: RedisDedupStore) -> None:
    slow = redis_store.claim(KEY, WINDOW)
    expire_window(redis_store, KEY)
    assert decide(redis_store) == (True, 0)

    redis_store.release(slow)

    assert decide(redis_store) == (False, 0)
    expire_window(redis_store, KEY)
    assert decide(redis_store) == (True, 2)


def test_redis_release_failure_is_logged_once_and_never_raises(
    redis_store: RedisDedupStore, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = RedisDedupStore(f"redis://127.0.0.1:{free_port()}/0")._client
    redis_store._release_script = nowhere.register_script("return 0")
    claims = [redis_store.claim(key, WINDOW) for key in ("GET /a", "GET /b")]

    for claim in claims:
        redis_store.release(claim)

    warnings = [r.getMessage() for r in caplog.records if r.name == "otel_wpm.alerting.dedup"]
    assert len(warnings) == 1 and "give back the window" in warnings[0]


def test_redis_window_is_the_key_expiry(redis_store: RedisDedupStore) -> None:
    redis_store.claim(KEY, 90)

    ttl_ms = redis_store._client.pttl(f"{RedisDedupStore.PREFIX}{{{KEY}}}:claim")

    assert 0 < ttl_ms <= 90_000


def test_redis_count_of_held_back_alerts_expires_too(redis_store: RedisDedupStore) -> None:
    redis_store.claim(KEY, 90)
    redis_store.claim(KEY, 90)

    ttl = redis_store._client.ttl(f"{RedisDedupStore.PREFIX}{{{KEY}}}:suppressed")

    assert 0 < ttl <= count_ttl_seconds(90)


def test_redis_window_zero_always_sends(redis_store: RedisDedupStore) -> None:
    assert [decide(redis_store, KEY, 0) for _ in range(3)] == [(True, 0)] * 3


def test_redis_exactly_one_of_four_processes_sends(
    redis_store: RedisDedupStore, redis_url: str
) -> None:
    answers = from_processes(_claim_in_process, "redis", redis_url)

    assert sorted(answers) == [False, False, False, True]
    expire_window(redis_store, KEY)
    assert decide(redis_store) == (True, 3)


def test_redis_down_fails_open_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisDedupStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0")

    results = [decide(store) for _ in range(5)]

    assert results == [(True, 0)] * 5
    warnings = [r for r in caplog.records if r.name == "otel_wpm.alerting.dedup"]
    assert len(warnings) == 1
    assert "Redis" in warnings[0].getMessage() and "hunter2" not in caplog.text


def test_redis_recovery_is_logged_and_later_outages_reported_again(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_wpm.alerting.dedup")
    store = RedisDedupStore(redis_url)
    broken = RedisDedupStore("redis://127.0.0.1:1/0")._client

    working_script = store._claim_script
    broken_script = broken.register_script("return {1, 0}")

    store._claim_script = broken_script
    store.claim(KEY, 0.001)
    store.claim(KEY, 0.001)
    store._claim_script = working_script
    store.claim("other", 0.001)
    store._claim_script = broken_script
    store.claim(KEY, 0.001)

    messages = [r.getMessage() for r in caplog.records if r.name == "otel_wpm.alerting.dedup"]
    assert [("failed" in m, "works again" in m) for m in messages] == [
        (True, False),
        (False, True),
        (True, False),
    ]


def test_missing_redis_package_names_the_setting_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)

    with pytest.raises(RuntimeError) as raised:
        RedisDedupStore("redis://127.0.0.1:6379/0")

    assert "dedup_redis_url" in str(raised.value) and "otel-wpm[redis]" in str(raised.value)
