"""What a bucket report store costs: the request path (nothing, it is the report thread's
work) and how many reports a second the report thread uploads.

Usage::

    python bench/store.py                         # ~1 min
    python bench/store.py --rounds 3 --per-round 20 --uploads 100    # a quick look

Needs moto (``pip install -e '.[test]'``): its S3 server runs on 127.0.0.1 in a
subprocess, so it does not share this process's GIL.

1. **Request path.** A WSGI app that sleeps ``--work-ms`` (5 ms) is watched by
   otel-wpm with a threshold of 2 ms, so every request is slow and gets a report
   (rendered and written on the report thread). It is watched four times, each
   with its own provider and processor: reports in a local directory, in a
   bucket, in a bucket that is down (connections refused), and in a bucket that
   hangs (it accepts connections and never answers). The four are called in
   turn, ``--per-round`` requests each, for ``--rounds`` rounds, in this one
   thread, with no HTTP server in between. Printed: the time each request took
   beyond the app's own sleep (median, p95, p99), and what became of the
   reports (uploaded, spooled).
2. **Upload rate.** ``S3ReportStore.write`` of ``--uploads`` reports of about
   100 KB, one after the other as the report thread does, against
   ``LocalReportStore.write`` of the same: reports a second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from otel_wpm import Config, ProfilingSpanProcessor  # noqa: E402
from otel_wpm.reporting.local_store import LocalReportStore  # noqa: E402
from otel_wpm.reporting.report_format import metadata_element, report_file_name  # noqa: E402
from otel_wpm.reporting.s3_store import S3ReportStore  # noqa: E402
from otel_wpm.reporting.store import SPOOL_DIRECTORY_NAME  # noqa: E402

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
}
BUCKET = "bench-reports"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in a subprocess, with the bench bucket; yields its endpoint."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.put(f"{endpoint}/{BUCKET}", timeout=5).raise_for_status()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait()


@contextlib.contextmanager
def hanging_endpoint() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _app(work_seconds: float) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        time.sleep(work_seconds)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


def _watched(config: Config, work_seconds: float) -> tuple[Any, ProfilingSpanProcessor, Any]:
    provider = TracerProvider(shutdown_on_exit=False)
    processor = ProfilingSpanProcessor(config)
    provider.add_span_processor(processor)
    return (
        OpenTelemetryMiddleware(_app(work_seconds), tracer_provider=provider),
        processor,
        provider,
    )


def _call(wsgi: Any, template: dict[str, Any]) -> float:
    environ = dict(template)
    started = time.perf_counter()
    body = wsgi(environ, lambda status, headers, exc_info=None: None)
    for _chunk in body:
        pass
    if hasattr(body, "close"):
        body.close()
    return time.perf_counter() - started


def request_path(args: argparse.Namespace, endpoint: str, workdir: Path) -> None:
    refused = f"http://127.0.0.1:{_free_port()}"
    work = args.work_ms / 1000
    with hanging_endpoint() as hanging:
        stores = {
            "local directory": None,
            "bucket": endpoint,
            "bucket down": refused,
            "bucket hanging": hanging,
        }
        watched = {}
        for index, (name, store_endpoint) in enumerate(stores.items()):
            settings: dict[str, Any] = {
                "threshold_seconds": 0.002,
                "hung_request_factor": 0,
                "local_output_dir": str(workdir / f"out-{index}"),
                "report_max_files": 0,
                "report_max_bytes": 0,
                "report_max_age_days": 0,
            }
            if store_endpoint is not None:
                settings["report_store"] = f"s3://{BUCKET}/path-{index}"
                settings["report_store_endpoint_url"] = store_endpoint
            watched[name] = _watched(Config(**settings), work)
        template = EnvironBuilder(path="/orders").get_environ()
        extra: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(args.rounds):
            for name, (wsgi, _processor, _provider) in watched.items():
                for _ in range(args.per_round):
                    extra[name].append(_call(wsgi, template) - work)
        print(f"Request path: {args.rounds} x {args.per_round} slow requests of {args.work_ms} ms")
        print(f"{'reports in':<18}{'median':>10}{'p95':>10}{'p99':>10}   reports")
        for index, (name, (_wsgi, processor, provider)) in enumerate(watched.items()):
            processor.force_flush(5000 if name != "bucket hanging" else 100)
            times = sorted(extra[name])
            where = _outcome(index, workdir, processor, name)
            print(
                f"{name:<18}{_ms(statistics.median(times)):>10}"
                f"{_ms(times[int(len(times) * 0.95)]):>10}{_ms(times[int(len(times) * 0.99)]):>10}"
                f"   {where}"
            )
            provider.shutdown()


def _outcome(index: int, workdir: Path, processor: ProfilingSpanProcessor, name: str) -> str:
    output = workdir / f"out-{index}"
    spooled = len(list((output / SPOOL_DIRECTORY_NAME).glob("*.html")))
    local = len(list(output.glob("*.html")))
    written = processor.get_stats()["reports_written"]
    if name == "local directory":
        return f"{local} written locally"
    return f"{written} written, {spooled} in the spool"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _report_page(index: int, size: int) -> tuple[str, bytes]:
    trace_id = f"{index:032x}"
    started = datetime(2026, 3, 1, tzinfo=timezone.utc)
    meta = {"service": "bench", "route": "/orders", "trace_id": trace_id}
    name = report_file_name(started, "GET", "/orders", trace_id, f"{index:016x}", False)
    filler = os.urandom(size // 2).hex()  # incompressible, like pyinstrument's embedded script
    return name, f"<html><head>{metadata_element(meta)}</head>{filler}</html>".encode()


def upload_rate(args: argparse.Namespace, endpoint: str, workdir: Path) -> None:
    reports = [_report_page(i, 100_000) for i in range(args.uploads)]
    bucket = S3ReportStore(f"s3://{BUCKET}/rate", endpoint_url=endpoint)
    local = LocalReportStore(workdir / "rate")
    print(f"\nUpload rate: {args.uploads} reports of {len(reports[0][1]) // 1000} KB, one thread")
    for name, store in (("bucket", bucket), ("local directory", local)):
        started = time.perf_counter()
        for file_name, content in reports:
            store.write(file_name, content)
        elapsed = time.perf_counter() - started
        each = elapsed / args.uploads * 1000
        print(f"{name:<18}{args.uploads / elapsed:>8.0f} reports/s ({each:.1f} ms each)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=30)
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--uploads", type=int, default=300)
    args = parser.parse_args(argv)
    os.environ.update(AWS_ENV)
    with tempfile.TemporaryDirectory() as scratch, moto_server() as endpoint:
        request_path(args, endpoint, Path(scratch))
        upload_rate(args, endpoint, Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
