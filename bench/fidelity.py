"""Profile fidelity: what each engine's report says about a request whose phases are known.

Usage::

    python bench/fidelity.py                                   # 5 requests per engine
    python bench/fidelity.py --reps 10 --configs wpm,wpm_late,wpm_precise --json out.json

For each configuration of ``bench/app.py`` (``wpm``: the default engine;
``wpm_late``: the same without early sampling; ``wpm_precise``: pyinstrument on
every request), one gunicorn (1 worker, gthread x4, 127.0.0.1) watches with a
0.5 s threshold. Each repetition sends, at the same time, ``/busy`` (1 s of
Python work) and ``/phases``: ``phase_cpu()`` (0.6 s of Python work) then
``phase_io()`` (0.4 s of sleep). ``/phases`` answers with how long each phase
really took and its trace id; the harness then reads that request's report
(file name, embedded metadata and pyinstrument's frame tree) and prints, per
engine, median [min-max] over the repetitions of:

* each phase's share of the request in the report, against its true share
  (the phase's measured time / the request's duration);
* coverage: the time the profile accounts for / the request's duration;
* the request thread's CPU and waiting time the report gives, against the
  CPU time the view measured on its own thread.

It also checks that no report of ``/phases`` holds a frame of the concurrent
``/busy`` view.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import HOST, gunicorn, revision, snapshot_package  # noqa: E402
from otel_wpm.reporting.report_format import read_metadata, trace_id_of  # noqa: E402

CONFIGS = ("wpm", "wpm_late", "wpm_precise")
THRESHOLD_SECONDS = 0.5
#: Settings of every configuration; the precise engine profiles every request.
OPTIONS: dict[str, dict[str, Any]] = {
    "wpm": {"threshold_seconds": THRESHOLD_SECONDS},
    "wpm_late": {"threshold_seconds": THRESHOLD_SECONDS},
    "wpm_precise": {"threshold_seconds": THRESHOLD_SECONDS, "max_performance_overhead": 100},
}
PHASES = ("phase_cpu", "phase_io")
REPORT_TIMEOUT_S = 30.0
_SESSION_DATA = "const sessionData = "


def fetch_json(url: str, timeout: float = 30.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return dict(json.loads(response.read().decode()))


def one_request(port: int) -> dict[str, Any]:
    """/busy and /phases at once; what /phases says about itself."""
    busy = threading.Thread(target=fetch_json, args=(f"http://{HOST}:{port}/busy",))
    busy.start()
    truth = fetch_json(f"http://{HOST}:{port}/phases")
    busy.join(30)
    return truth


def find_report(directory: Path, trace_id: str) -> Path:
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    while time.monotonic() < deadline:
        for path in directory.glob("*.html"):
            if trace_id_of(path.name) == trace_id:
                return path
        time.sleep(0.1)
    raise RuntimeError(f"no report for trace {trace_id} in {directory}")


def frame_tree(page: str) -> dict[str, Any]:
    """The frame tree pyinstrument's viewer is given in the report."""
    start = page.index(_SESSION_DATA) + len(_SESSION_DATA)
    data, _ = json.JSONDecoder().raw_decode(page[start:])
    return dict(data["frame_tree"])


def frames(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pending = [node]
    while pending:
        frame = pending.pop()
        yield frame
        pending.extend(frame["children"])


def function_seconds(tree: dict[str, Any], function: str) -> float:
    """Time in ``function``, counting each outermost call once."""
    total = 0.0
    pending = [tree]
    while pending:
        frame = pending.pop()
        if frame["identifier"].split("\x00")[0] == function:
            total += frame["time"]
        else:
            pending.extend(frame["children"])
    return total


def measure(report: Path, truth: dict[str, Any]) -> dict[str, Any]:
    """The report's view of one ``/phases`` request next to what really happened."""
    meta = read_metadata(report)
    tree = frame_tree(report.read_text(encoding="utf-8"))
    duration = meta["duration_seconds"]
    names = {frame["identifier"].split("\x00")[0] for frame in frames(tree)}
    result: dict[str, Any] = {
        "duration": duration,
        "coverage": tree["time"] / duration,
        "cpu_reported": meta.get("cpu_seconds"),
        "wait_reported": meta.get("wait_seconds"),
        "cpu_truth": truth["cpu"],
        "other_request_in_report": "busy" in names,
    }
    for phase in PHASES:
        result[f"{phase}_share"] = function_seconds(tree, phase) / duration
        result[f"{phase}_truth"] = truth[phase] / duration
    return result


def run(args: argparse.Namespace, workdir: str) -> dict[str, list[dict[str, Any]]]:
    snapshot_package(workdir)
    results: dict[str, list[dict[str, Any]]] = {config: [] for config in args.configs}
    with ExitStack() as servers:
        ports = {}
        for config in args.configs:
            reports = Path(workdir, f"reports-{config}")
            reports.mkdir()
            env = {
                "BENCH_OUTPUT_DIR": str(reports),
                "BENCH_WPM_OPTIONS": json.dumps(OPTIONS.get(config, OPTIONS["wpm"])),
            }
            ports[config] = servers.enter_context(gunicorn(config, workdir, "app", env))
        for rep in range(args.reps):
            for config in args.configs:
                truth = one_request(ports[config])
                report = find_report(Path(workdir, f"reports-{config}"), truth["trace_id"])
                results[config].append(measure(report, truth))
                print(f"  rep {rep} {config:<12} {_line(results[config][-1])}", flush=True)
    return results


def _line(result: dict[str, Any]) -> str:
    shares = "  ".join(
        f"{phase} {result[f'{phase}_share']:.0%} (truth {result[f'{phase}_truth']:.0%})"
        for phase in PHASES
    )
    cpu = result["cpu_reported"]
    cpu_text = "CPU not measured" if cpu is None else f"CPU {cpu:.2f} s"
    return (
        f"{shares}  coverage {result['coverage']:.0%}  {cpu_text} "
        f"(view's own {result['cpu_truth']:.2f} s)"
    )


def _spread(values: Sequence[Optional[float]], percent: bool = True) -> str:
    known = [value for value in values if value is not None]
    if not known:
        return "n/a"
    scale, unit = (100, "%") if percent else (1, " s")
    median, low, high = statistics.median(known), min(known), max(known)
    digits = 0 if percent else 2
    return f"{median * scale:.{digits}f}{unit} [{low * scale:.{digits}f}-{high * scale:.{digits}f}]"


def summary(results: dict[str, list[dict[str, Any]]]) -> None:
    print("\nmedian [min-max] over the repetitions:\n")
    head = ["config", *[f"`{p}` share (truth)" for p in PHASES], "coverage", "CPU reported"]
    print("| " + " | ".join([*head, "CPU measured by the view"]) + " |")
    print("|---" * (len(head) + 1) + "|")
    for config, rows in results.items():
        cells = [config]
        for phase in PHASES:
            share = _spread([row[f"{phase}_share"] for row in rows])
            truth = _spread([row[f"{phase}_truth"] for row in rows])
            cells.append(f"{share} ({truth})")
        cells.append(_spread([row["coverage"] for row in rows]))
        cells.append(_spread([row["cpu_reported"] for row in rows], percent=False))
        cells.append(_spread([row["cpu_truth"] for row in rows], percent=False))
        print("| " + " | ".join(cells) + " |")
    leaked = sum(row["other_request_in_report"] for rows in results.values() for row in rows)
    print(f"\nreports of /phases holding a frame of /busy: {leaked}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", dest="json_out", help="write every measurement here")
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(OPTIONS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {sorted(OPTIONS)}")
    print(
        f"configs={args.configs} reps={args.reps} threshold={THRESHOLD_SECONDS}s; gunicorn -w 1 "
        f"-k gthread --threads 4; cpus={os.cpu_count()}; otel_wpm at {revision()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="otel-wpm-fidelity-") as workdir:
        results = run(args, workdir)
    summary(results)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump({"revision": revision(), "results": results}, out, indent=2)
    leaked = any(row["other_request_in_report"] for rows in results.values() for row in rows)
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
