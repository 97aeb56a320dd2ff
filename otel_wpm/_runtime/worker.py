"""A background thread with a bounded queue, safe across ``fork()``.

Used for everything that must stay off the request thread (rendering reports,
delivering alerts). ``submit`` never blocks: when the queue is full the
oldest job is dropped and ``on_drop`` is told. Threads do not survive
``fork()``, so each process (each gunicorn worker) starts its own thread the
first time it submits. The CPU time each job takes is told to ``on_cpu``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Generic, Optional, TypeVar

from . import forksafe

Job = TypeVar("Job")
logger = logging.getLogger(__name__)


class BackgroundWorker(Generic[Job]):
    """Runs ``handle(job)`` for each submitted job on one daemon thread.

    ``queue_size`` may be changed at any time; it bounds the next submissions.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[Job], None],
        queue_size: int,
        on_drop: Callable[[Job], None] = lambda job: None,
        on_cpu: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._name = name
        self._handle = handle
        self.queue_size = queue_size
        self._on_drop = on_drop
        self._on_cpu = on_cpu
        self.after_fork_in_child()
        forksafe.register(self)

    def after_fork_in_child(self) -> None:
        # the parent's queued jobs are the parent's to handle
        self._condition = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._busy = False
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def submit(self, job: Job) -> None:
        dropped: list[Job] = []
        with self._condition:
            if self._stopping:
                dropped.append(job)
            else:
                while len(self._jobs) >= self.queue_size:
                    dropped.append(self._jobs.popleft())
                self._jobs.append(job)
                self._ensure_thread()
                self._condition.notify_all()
        for job_dropped in dropped:
            self._on_drop(job_dropped)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._jobs and not self._stopping:
                    self._condition.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._busy = True
            started_cpu = time.thread_time()
            try:
                self._handle(job)
            except Exception:  # the handler logs its own failures; this is the last guard
                logger.exception("otel-wpm background job failed in %s", self._name)
            finally:
                self._on_cpu(time.thread_time() - started_cpu)
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every submitted job is handled; False if the deadline passed first."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def shutdown(self, timeout: float) -> bool:
        """Handle what is queued within ``timeout``, drop the rest, then stop the thread."""
        deadline = time.monotonic() + timeout
        drained = self.flush(timeout)
        with self._condition:
            self._stopping = True
            left = list(self._jobs)
            self._jobs.clear()
            self._condition.notify_all()
            thread = self._thread
        for job in left:
            self._on_drop(job)
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        return drained
