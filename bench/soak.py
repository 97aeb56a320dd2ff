"""Load soak: many requests through gunicorn with otel-wpm, then check nothing leaked or was lost.

Usage::

    python bench/soak.py                          # 20 000 requests, concurrency 16
    python bench/soak.py --requests 2000 --quick  # smoke check

What it does:

1. starts ``gunicorn -w 2 -k gthread --threads 8`` on 127.0.0.1 serving
   ``tests/apps/hardening_app.py:gunicorn_app`` (the app used by the hardening
   tests), monitored with ``WPM_THRESHOLD_SECONDS=0.05``, reports in a temporary
   directory, no retention limit on the number of files, SQLite de-duplication;
2. sends ``--requests`` requests from ``--concurrency`` client threads (keep-alive
   connections): most go to ``/fast``, a small share (``--slow-share``) to one of
   ``--slow-routes`` routes ``/slow/<n>`` with ``X-Slow: 0.06`` (the app sleeps
   60 ms, past the 50 ms threshold);
3. reads RSS and thread count of each worker from ``/proc/<pid>/status`` after
   the warm-up (the first ``--warmup`` requests) and at the end;
4. checks: every response 200; every slow request has its report file (found by
   its trace id); exactly one ``alerts.jsonl`` line per slow route (both workers
   share the de-dup store) and at most one per any route; gunicorn's log has no
   traceback; the processors' counters (``/stats``) show no failures.

It prints a summary and exits 1 if a check failed. Needs gunicorn and the
OpenTelemetry SDK + WSGI instrumentation; everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from otel_wpm._runtime.stats import COUNTERS

#: Each client thread opens a new connection after this many requests, so the
#: kernel spreads connections over both workers' accept loops.
REQUESTS_PER_CONNECTION = 25
ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "tests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def status_of(pid: int) -> dict[str, int]:
    """RSS (kB) and thread count from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "Threads"):
            values[name] = int(rest.split()[0])
    return values


class Client:
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection: Optional[http.client.HTTPConnection] = None

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.connection.request("GET", path, headers=headers)
                response = self.connection.getresponse()
                body = response.read()
                if response.will_close:
                    self.connection.close()
                    self.connection = None
                return response.status, dict(response.getheaders()), body
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def start_gunicorn(port: int, output: Path, workdir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WPM_", "OTEL_"))}
    env.update(
        PYTHONUNBUFFERED="1",
        WPM_THRESHOLD_SECONDS="0.05",
        WPM_LOCAL_OUTPUT_DIR=str(output),
        WPM_REPORT_MAX_FILES="0",
        WPM_REPORT_MAX_BYTES="0",
        WPM_HUNG_REQUEST_FACTOR="0",
    )
    command = [
        sys.executable, "-m", "gunicorn", "--chdir", str(TESTS_DIR),
        "-w", "2", "-k", "gthread", "--threads", "8", "--no-control-socket",
        "-b", f"127.0.0.1:{port}", "apps.hardening_app:gunicorn_app",
    ]  # fmt: skip
    log = open(workdir / "gunicorn.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def wait_ready(port: int, process: subprocess.Popen[bytes], workers: int) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("gunicorn exited at start")
        pids = children_of(process.pid)
        if len(pids) == workers:
            try:
                Client(port).get("/pid", {})
                return pids
            except OSError:
                pass
        time.sleep(0.1)
    raise SystemExit("gunicorn did not answer within 60 s")


def worker_stats(port: int, pids: list[int]) -> dict[int, dict[str, Any]]:
    """``/stats`` of each worker (new connections until each answered)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(200):
        if len(seen) == len(pids):
            break
        _, _, body = Client(port).get("/stats", {"Connection": "close"})
        answer = json.loads(body)
        seen[answer["pid"]] = answer
    return seen


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="otel-wpm-soak-"))
    output = workdir / "reports"
    port = free_port()
    process = start_gunicorn(port, output, workdir)
    failures: list[str] = []
    try:
        pids = wait_ready(port, process, 2)
        slow_routes = [f"/slow/{n}" for n in range(args.slow_routes)]
        plan = random.Random(7)
        jobs = [
            plan.choice(slow_routes) if plan.random() < args.slow_share else "/fast"
            for _ in range(args.requests)
        ]
        counter = iter(range(len(jobs)))
        lock = threading.Lock()
        statuses: collections.Counter[int] = collections.Counter()
        slow_traces: list[tuple[str, str]] = []
        warm = threading.Event()
        done_count = [0]

        def worker() -> None:
            client = Client(port)
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                path = jobs[index]
                headers = {"X-Slow": "0.06"} if path != "/fast" else {}
                if index % REQUESTS_PER_CONNECTION == 0:
                    headers["Connection"] = "close"
                status, response_headers, _ = client.get(path, headers)
                with lock:
                    statuses[status] += 1
                    if path != "/fast":
                        slow_traces.append((path, response_headers.get("X-Trace-Id", "")))
                    done_count[0] += 1
                    if done_count[0] == args.warmup:
                        warm.set()

        started = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        warm.wait()
        after_warmup = {pid: status_of(pid) for pid in pids}
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        at_end = {pid: status_of(pid) for pid in pids}

        # Reports and alerts are written in the background: wait for them (bounded).
        def missing() -> list[str]:
            return [t for _, t in slow_traces if not list(output.glob(f"*_{t}_*.html"))]

        deadline = time.monotonic() + 60
        while missing() and time.monotonic() < deadline:
            time.sleep(0.2)
        lost = missing()
        stats = worker_stats(port, pids)
        # A span ends (and is counted) just after its response is sent: allow a moment.
        deadline = time.monotonic() + 30
        while sum(c["total_requests"] for c in stats.values()) < len(jobs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            stats = worker_stats(port, pids)
        alerts_path = output / "alerts.jsonl"
        alerts = (
            [json.loads(x) for x in alerts_path.read_text().splitlines()]
            if alerts_path.exists()
            else []
        )
        per_route = collections.Counter((a["method"], a["route"]) for a in alerts)
        reports = list(output.glob("*.html"))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
    log = (workdir / "gunicorn.log").read_text(errors="replace")

    if set(statuses) != {200}:
        failures.append(f"non-200 answers: {dict(statuses)}")
    if lost:
        failures.append(f"{len(lost)} slow requests have no report, e.g. {lost[:3]}")
    for route in slow_routes:
        if per_route[("GET", route)] != 1:
            failures.append(f"{per_route[('GET', route)]} alerts for GET {route}, expected 1")
    if any(count > 1 for count in per_route.values()):
        failures.append(f"more than one alert for a route: {dict(per_route)}")
    counted = sum(c["total_requests"] for c in stats.values())
    if counted != len(jobs) or len(stats) != len(pids):
        failures.append(f"the workers counted {counted} requests of {len(jobs)}")
    if "Traceback" in log:
        failures.append("traceback in the gunicorn log")
    for pid, counters in stats.items():
        for name in ("reports_failed", "alerts_failed", "alerts_dropped", "internal_errors"):
            if counters.get(name):
                failures.append(f"worker {pid}: {name} = {counters[name]}")

    print(f"requests: {len(jobs)} at concurrency {args.concurrency} in {elapsed:.1f} s "
          f"({len(jobs) / elapsed:.0f}/s); statuses {dict(statuses)}")  # fmt: skip
    print(f"slow requests: {len(slow_traces)} on {len(slow_routes)} routes; "
          f"report files: {len(reports)}; slow requests without a report: {len(lost)}")  # fmt: skip
    print(f"alerts.jsonl lines: {len(alerts)}; per route: "
          + ", ".join(f"{m} {r}: {c}" for (m, r), c in sorted(per_route.items())))  # fmt: skip
    for pid in pids:
        before, after = after_warmup[pid], at_end[pid]
        print(f"worker {pid}: RSS {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MiB "
              f"({(after['VmRSS'] - before['VmRSS']) / 1024:+.1f}), threads "
              f"{before['Threads']} -> {after['Threads']}")  # fmt: skip
    for pid, counters in sorted(stats.items()):
        shown = {k: counters[k] for k in COUNTERS}
        print(f"worker {pid} counters: {shown}")
    print("FAILED:\n  " + "\n  ".join(failures) if failures else "all checks passed")
    if failures:
        warnings = [line for line in log.splitlines() if "[INFO]" not in line]
        print("gunicorn log, without INFO lines:\n" + "\n".join(warnings[-40:]))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"kept {workdir}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--slow-share", type=float, default=0.03)
    parser.add_argument("--slow-routes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quick", action="store_true", help="2000 requests, warm-up 200")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup = 2000, 200
    args.warmup = min(args.warmup, args.requests)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
