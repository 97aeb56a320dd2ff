"""One alert per key (``"GET /users/<id>"``) per time window, across processes and restarts.

Usage::

    store = SQLiteDedupStore("/var/lib/otel-wpm/dedup.sqlite3")   # or RedisDedupStore(url)
    claim = store.claim(alert.dedup_key, window_seconds=3600)
    if claim.send:
        try:
            deliver(replace(alert, suppressed_since_last=claim.suppressed))
        except DeliveryFailed:
            store.release(claim)   # the window is not used up: the next alert is sent

``claim`` answers whether to send now and how many alerts were held back for that
key since the last one sent, and opens the key's window when it says send. An
alert that could not be delivered gives its claim back with ``release``: the
window ends at once, and the count of held-back alerts grows by the ones the
claim had reported plus the undelivered alert, so the next alert sent tells of
them all. A release never ends a window someone else opened since. Both are
atomic (one transaction in SQLite, one script in Redis).

A window of 0 turns de-duplication off. A store that fails (Redis down, a locked
or broken SQLite file) lets every alert through and logs that once; it never
makes an alert wait more than a moment (a SQLite lock is waited for
``SQLiteDedupStore.BUSY_TIMEOUT_SECONDS``; only while a process sets the file up,
once, for up to :data:`SETUP_TIMEOUT_SECONDS`, as other workers may be doing the
same).

Entries expire: a key's entry goes once its window has passed, or, while it
counts held-back alerts, after :func:`count_ttl_seconds` (SQLite and memory
stores prune at most once a minute, during a claim; Redis expires its keys).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._runtime.logs import LogOnce
from .._runtime.redis_client import redis_client
from ..masking import SecretMasker

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

#: How often the SQLite and memory stores look for expired entries.
PRUNE_INTERVAL_SECONDS = 60.0
#: A count of held-back alerts outlives its window, so it survives a quiet period, but not forever.
COUNT_MIN_TTL_SECONDS = 7 * 24 * 3600


def count_ttl_seconds(window_seconds: float) -> float:
    """How long after the last alert sent a count of held-back alerts is kept."""
    return max(COUNT_MIN_TTL_SECONDS, 2 * window_seconds)


@dataclass(frozen=True)
class Claim:
    """A store's answer for one alert of ``key``."""

    key: str
    window_seconds: float
    send: bool
    suppressed: int = 0  # alerts held back for the key since the last one sent
    #: Names the window this claim opened, so a release ends only that one;
    #: None when it opened none (held back, de-duplication off, or the store failed).
    window: Optional[str] = None


class DedupStore(ABC):
    """Decides which alerts to send; subclasses implement :meth:`_claim` and :meth:`_release`.

    Both must be atomic against other threads, processes and hosts sharing the store.
    """

    def __init__(self) -> None:
        self._failures = LogOnce(logger)

    def claim(self, key: str, window_seconds: float) -> Claim:
        """Whether to send an alert of ``key`` now; if so, its window is opened."""
        if window_seconds <= 0:
            return Claim(key, window_seconds, send=True)
        try:
            send, suppressed, window = self._claim(key, window_seconds)
        except Exception as error:  # noqa: BLE001 - never let de-duplication stop an alert
            # One warning per outage, not one per alert.
            self._failures.warning(
                ("store", "claim"),
                "%s failed (%s: %s); sending every alert until it recovers",
                self.describe(),
                type(error).__name__,
                error,
            )
            return Claim(key, window_seconds, send=True)
        self._recovered()
        return Claim(key, window_seconds, send, suppressed, window if send else None)

    def release(self, claim: Claim) -> None:
        """Give back the window ``claim`` opened: its alert was not delivered.

        The key's window ends now (unless another window was opened since), and
        the alerts ``claim`` reported as held back, plus its own, count as held
        back again. Never raises; a failure is logged once.
        """
        if claim.window is None:
            return
        try:
            self._release(claim)
        except Exception as error:  # noqa: BLE001 - a failed release must not stop delivery
            self._failures.warning(
                ("store", "release"),
                "%s failed (%s: %s) to give back the window of an undelivered alert; "
                "the next alert of that route may wait for the window to pass",
                self.describe(),
                type(error).__name__,
                error,
            )
            return
        self._recovered()

    def _recovered(self) -> None:
        self._failures.recovered(
            "store", "%s works again; alerts are de-duplicated again", self.describe()
        )

    @abstractmethod
    def _claim(self, key: str, window_seconds: float) -> tuple[bool, int, Optional[str]]:
        """``(send now?, held back since the last one sent, the window opened or None)``."""

    @abstractmethod
    def _release(self, claim: Claim) -> None: ...

    def describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def after_fork_in_child(self) -> None:  # noqa: B027 - optional hook
        """In a forked child: drop locks and connections inherited from the parent."""


class MemoryDedupStore(DedupStore):
    """De-duplication within this process only, for when nothing persistent is configured."""

    def __init__(self, clock: Clock = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, int]] = {}
        self._next_prune = 0.0

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def _claim(self, key: str, window_seconds: float) -> tuple[bool, int, Optional[str]]:
        now = self._clock()
        with self._lock:
            if now >= self._next_prune:
                self._prune(now, window_seconds)
                self._next_prune = now + PRUNE_INTERVAL_SECONDS
            last_sent, suppressed = self._entries.get(key, (None, 0))
            if last_sent is not None and _within(now - last_sent, window_seconds):
                self._entries[key] = (last_sent, suppressed + 1)
                return False, 0, None
            self._entries[key] = (now, 0)
            return True, suppressed, repr(now)

    def _release(self, claim: Claim) -> None:
        ended = self._clock() - claim.window_seconds
        with self._lock:
            last_sent, suppressed = self._entries.get(claim.key, (ended, 0))
            if repr(last_sent) == claim.window:
                last_sent = ended
            self._entries[claim.key] = (last_sent, suppressed + _undelivered(claim))

    def _prune(self, now: float, window_seconds: float) -> None:
        count_ttl = count_ttl_seconds(window_seconds)
        self._entries = {
            key: (last_sent, suppressed)
            for key, (last_sent, suppressed) in self._entries.items()
            if now - last_sent < (count_ttl if suppressed else window_seconds)
        }


class SQLiteDedupStore(DedupStore):
    """De-duplication shared by the processes of a host through a SQLite file (WAL mode).

    Each claim is one ``BEGIN IMMEDIATE`` transaction, so concurrent processes
    see each other's claims. The connection is reopened after a fork.
    """

    #: A claim takes well under a millisecond; a lock held longer is someone else's
    #: (a backup, a sqlite3 shell): fail open rather than hold up every alert.
    BUSY_TIMEOUT_SECONDS = 0.25

    def __init__(self, path: str | os.PathLike[str], clock: Clock = time.time) -> None:
        super().__init__()
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._next_prune = 0.0

    def describe(self) -> str:
        return f"SQLite de-duplication store {self.path}"

    def after_fork_in_child(self) -> None:
        # The inherited connection belongs to the parent: neither use nor close it here.
        self._lock = threading.Lock()
        self._connection = None

    def _claim(self, key: str, window_seconds: float) -> tuple[bool, int, Optional[str]]:
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = self._claim_in_transaction(connection, key, window_seconds)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

    def _release(self, claim: Claim) -> None:
        assert claim.window is not None
        ended = self._clock() - claim.window_seconds
        with self._lock:
            # One statement, so one transaction: the window ends only if it is still
            # the one this claim opened, and the count grows whatever happened since.
            self._connect().execute(
                "INSERT INTO dedup (key, last_sent, suppressed) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET "
                "suppressed = suppressed + excluded.suppressed, "
                "last_sent = CASE WHEN last_sent = ? THEN excluded.last_sent ELSE last_sent END",
                (claim.key, ended, _undelivered(claim), float(claim.window)),
            )

    def _claim_in_transaction(
        self, connection: sqlite3.Connection, key: str, window_seconds: float
    ) -> tuple[bool, int, Optional[str]]:
        now = self._clock()
        if now >= self._next_prune:
            _prune_sqlite(connection, now, window_seconds)
            self._next_prune = now + PRUNE_INTERVAL_SECONDS
        row = connection.execute(
            "SELECT last_sent, suppressed FROM dedup WHERE key = ?", (key,)
        ).fetchone()
        if row is not None and _within(now - row[0], window_seconds):
            connection.execute("UPDATE dedup SET suppressed = suppressed + 1 WHERE key = ?", (key,))
            return False, 0, None
        connection.execute(
            "INSERT INTO dedup (key, last_sent, suppressed) VALUES (?, ?, 0) "
            "ON CONFLICT(key) DO UPDATE SET last_sent = excluded.last_sent, suppressed = 0",
            (key, now),
        )
        return True, row[1] if row is not None else 0, repr(now)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        import sqlite3  # on the alert thread, with the first alert

        # A connection inherited through fork must not be used (nor closed) in the child.
        self._connection = None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        connection = sqlite3.connect(
            str(self.path),
            timeout=self.BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # transactions are explicit
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.BUSY_TIMEOUT_SECONDS * 1000)}")
            _set_up_sqlite(connection, sqlite3.OperationalError)
        except BaseException:
            connection.close()
            raise
        self._connection, self._pid = connection, os.getpid()
        return connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


#: How long a process waits for others setting up the same SQLite file at the same time.
SETUP_TIMEOUT_SECONDS = 2.0


def _set_up_sqlite(connection: sqlite3.Connection, busy: type[Exception]) -> None:
    """Put the file in WAL mode and make the table, waiting for other processes doing
    the same: workers that alert at once on their first slow request all set it up
    at once, and switching to WAL can fail at once with "database is locked" rather
    than wait the busy timeout. Once per process, on the alert thread."""
    deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS dedup ("
                "key TEXT PRIMARY KEY, last_sent REAL NOT NULL, "
                "suppressed INTEGER NOT NULL DEFAULT 0)"
            )
            return
        except busy as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class RedisDedupStore(DedupStore):
    """De-duplication shared by every host using the same Redis.

    The claim is ``SET key <random window id> NX PX window`` (the key expiring
    ends the window); suppressed alerts ``INCR`` a counter that the next sender
    reads and deletes. A release deletes the key if it still holds its window id
    and adds to the counter. Each runs as one Lua script, so no suppressed alert
    is counted for the wrong send and no release ends another's window.
    """

    PREFIX = "otel_wpm:dedup:"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._client: Any = redis_client(url)
        self._claim_script = self._client.register_script(_REDIS_CLAIM)
        self._release_script = self._client.register_script(_REDIS_RELEASE)

    def describe(self) -> str:
        return f"Redis de-duplication store {SecretMasker().mask_url(self.url)}"

    def _keys(self, key: str) -> list[str]:
        # The braces are a hash tag: both keys land on the same Redis Cluster slot.
        return [f"{self.PREFIX}{{{key}}}:claim", f"{self.PREFIX}{{{key}}}:suppressed"]

    def _claim(self, key: str, window_seconds: float) -> tuple[bool, int, Optional[str]]:
        import secrets  # on the alert thread, with Redis only (hmac, hashlib: ~4 ms at start-up)

        window = secrets.token_hex(8)
        window_ms = max(1, int(window_seconds * 1000))
        counter_ttl = int(count_ttl_seconds(window_seconds))
        sent, suppressed = self._claim_script(
            keys=self._keys(key), args=[window_ms, counter_ttl, window]
        )
        return bool(sent), int(suppressed), window

    def _release(self, claim: Claim) -> None:
        assert claim.window is not None
        counter_ttl = int(count_ttl_seconds(claim.window_seconds))
        self._release_script(
            keys=self._keys(claim.key), args=[claim.window, _undelivered(claim), counter_ttl]
        )

    def close(self) -> None:
        self._client.close()


_REDIS_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[1]) then
    local suppressed = redis.call('GET', KEYS[2])
    redis.call('DEL', KEYS[2])
    return {1, tonumber(suppressed) or 0}
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {0, 0}
"""

_REDIS_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
"""


def _undelivered(claim: Claim) -> int:
    """Alerts a release counts as held back again: those the claim reported, and its own."""
    return claim.suppressed + 1


def _within(elapsed: float, window_seconds: float) -> bool:
    # A clock stepped backwards gives a negative elapsed time: send rather than go quiet.
    return 0 <= elapsed < window_seconds


def _prune_sqlite(connection: sqlite3.Connection, now: float, window_seconds: float) -> None:
    connection.execute(
        "DELETE FROM dedup WHERE last_sent <= ? - CASE WHEN suppressed = 0 THEN ? ELSE ? END",
        (now, window_seconds, count_ttl_seconds(window_seconds)),
    )
