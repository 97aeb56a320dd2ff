"""The background worker: bounded, never blocking, drained on flush."""

from __future__ import annotations

import os
import threading

from otel_wpm._runtime.worker import BackgroundWorker


def test_full_queue_drops_the_oldest_and_submit_never_blocks() -> None:
    gate = threading.Event()
    handled: list[int] = []
    dropped: list[int] = []

    def handle(job: int) -> None:
        gate.wait(30)
        handled.append(job)

    worker = BackgroundWorker("test", handle, queue_size=3, on_drop=dropped.append)
    for job in range(100):
        worker.submit(job)
    gate.set()
    assert worker.flush(30)
    assert sorted(handled + dropped) == list(range(100))
    assert handled[-3:] == [97, 98, 99]
    assert len(handled) <= 4  # the queue's 3, plus one the thread may have taken before
    assert dropped == sorted(dropped)  # always the oldest


def test_a_failing_job_does_not_stop_the_worker(caplog) -> None:
    handled: list[int] = []

    def handle(job: int) -> None:
        if job == 0:
            raise RuntimeError("boom")
        handled.append(job)

    worker = BackgroundWorker("test", handle, queue_size=10)
    worker.submit(0)
    worker.submit(1)
    assert worker.shutdown(30)
    assert handled == [1]
    assert "boom" in caplog.text


def test_after_fork_the_child_runs_its_own_thread(tmp_path) -> None:
    marker = tmp_path / "child-ran"
    worker = BackgroundWorker("test", lambda job: marker.write_text(job), queue_size=10)
    worker.submit("parent")
    assert worker.flush(30)
    pid = os.fork()
    if pid == 0:  # child: the parent's thread does not exist here
        worker.submit("child")
        os._exit(0 if worker.flush(30) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert marker.read_text() == "child"
