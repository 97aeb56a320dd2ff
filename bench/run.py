"""Overhead benchmark: throughput of the reference app under each watching configuration.

Every repetition starts a fresh server (gunicorn, 1 worker, gthread x4; uvicorn for
the ASGI app; 127.0.0.1 only) for each configuration, all of them at once. For each
endpoint, every server is warmed up, then loaded in turn by ``wrk -t2 -c8 --latency``
in ``--bursts`` short runs that together last ``--duration`` seconds per server, the
order rotating between rounds. Servers only wait while another is loaded, so a drift
of the machine within a repetition hits every configuration alike. Throughput is
reported as a ratio against ``otel`` in the same repetition (median and min-max
across repetitions), with median p50/p99 latency alongside. Usage::

    python bench/run.py --reps 5 --duration 10            # full run, ~16 min
    python bench/run.py --quick --configs bare,otel       # smoke check, 1 rep x 2 s
    python bench/run.py --reps 15 --endpoints /fast       # resolve ~1 % on /fast
    python bench/run.py --endpoints /cpu,/io --json out.json
    python bench/run.py --report out.json                 # tables of a saved run
    python bench/run.py --app shop --reps 3 --duration 5  # the second app (bench/shop_app.py)
    python bench/run.py --app asgi --configs otel,wpm,otel_noop   # the ASGI app on uvicorn
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN_CONF = os.path.join(ROOT, "bench", "gunicorn_conf.py")
HOST = "127.0.0.1"
#: As bench/app.py names them (not imported: the driver stays free of Flask and OTel).
CONFIGS = (
    "bare", "otel", "wpm", "wpm_precise", "wpm_late", "otel_noop", "otel_minimal",
    "wpm_after_half", "otel_floor",
)  # fmt: skip
DEFAULT_CONFIGS = CONFIGS[:4]
#: The benchmark apps: their module, the endpoints measured by default, and the server.
APPS = {
    "app": ("bench.app", ("/fast", "/cpu", "/cpu_mix", "/io"), "gunicorn"),
    "shop": ("bench.shop_app", ("/api/health", "/api/report", "/api/wait"), "gunicorn"),
    "asgi": ("bench.asgi_app", ("/fast", "/io", "/cpu_mix"), "uvicorn"),
}
#: How each server runs, for the first line of output.
SERVERS = {
    "gunicorn": "gunicorn -w 1 -k gthread --threads 4",
    "uvicorn": "uvicorn, 1 process (one event loop), --loop asyncio --http h11",
}
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
WRK_THREADS = 2
WRK_CONNECTIONS = 8
SUSPICIOUS_LOG = re.compile(r"Traceback|\[ERROR\]|\[CRITICAL\]|WARNING|Warning|Exception")


@dataclasses.dataclass
class Sample:
    """One wrk measurement of one endpoint under one configuration."""

    rep: int
    config: str
    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: dict[str, int]
    non_2xx: int
    #: Requests/s of each wrk burst; ``rps`` is their median.
    burst_rps: list[float] = dataclasses.field(default_factory=list)
    #: CPU time of the server process per request in each burst (µs), and their median:
    #: what watching costs, whoever else uses the machine's cores meanwhile.
    burst_cpu_us: list[float] = dataclasses.field(default_factory=list)
    cpu_us: float = float("nan")
    #: What the processor says about the measured run (``wpm*`` configs only).
    wpm: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx


@dataclasses.dataclass
class RunIssues:
    """Anything suspicious seen during the run."""

    start_failures: list[str] = dataclasses.field(default_factory=list)
    log_lines: list[str] = dataclasses.field(default_factory=list)
    report_files: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- wrk


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/sec, p50/p99 (ms), request count, socket errors and non-2xx from wrk output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    lat = {
        pct: _to_ms(val, unit)
        for pct, val, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    }
    total = re.search(r"(\d+) requests in", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock else {}
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": lat.get("50", float("nan")),
        "p99_ms": lat.get("99", float("nan")),
        "requests": int(total.group(1)) if total else 0,
        "socket_errors": {k: v for k, v in socket_errors.items() if v},
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def run_wrk(url: str, duration: float, latency: bool = True) -> str:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{duration:g}s"]
    if latency:
        cmd.append("--latency")
    done = subprocess.run(
        cmd + [url], capture_output=True, text=True, timeout=duration + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


# ------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: str, lines: int = 40) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])


def _get_json(url: str) -> Optional[dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return json.loads(resp.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def wait_ready(proc: subprocess.Popen[bytes], port: int, config: str, log: str, src: str) -> None:
    """Poll ``/_bench/config`` until the worker answers with ``config`` (from ``src``)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server ({config}) exited {proc.returncode}:\n{_tail(log)}")
        info = _get_json(f"http://{HOST}:{port}/_bench/config")
        if info is not None:
            if info.get("config") != config:
                raise RuntimeError(f"worker reports config {info.get('config')!r}, not {config}")
            if config.startswith("wpm") and "ProfilingSpanProcessor" not in info["processors"]:
                raise RuntimeError(f"no ProfilingSpanProcessor installed: {info}")
            if config.startswith("wpm") and not str(info["otel_wpm"]).startswith(src):
                raise RuntimeError(f"otel_wpm loaded from {info['otel_wpm']}, not {src}")
            return
        time.sleep(0.1)
    raise RuntimeError(f"server ({config}) not ready in {READY_TIMEOUT_S}s:\n{_tail(log)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the gunicorn master and wait (bounded); SIGKILL its group as a last resort."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def gunicorn(
    config: str, workdir: str, app: str = "app", env: Optional[dict[str, str]] = None
) -> Iterator[int]:
    """Run the bench app ``app`` (a key of :data:`APPS`) under ``config`` on a free
    loopback port, with ``env`` over the defaults; yields the port."""
    port = free_port()
    module, _, server = APPS[app]
    if server == "uvicorn":
        cmd = [
            sys.executable, "-m", "uvicorn", "--factory", f"{module}:create_app",
            "--app-dir", ROOT, "--host", HOST, "--port", str(port),
            "--loop", "asyncio", "--http", "h11", "--lifespan", "off", "--no-access-log",
        ]  # fmt: skip
    else:
        cmd = [
            sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, "--chdir", ROOT,
            "-w", "1", "-k", "gthread", "--threads", "4", "-b", f"{HOST}:{port}",
            f"{module}:app",
        ]  # fmt: skip
    log = os.path.join(workdir, f"{server}-{config}-{port}.log")
    src = os.path.join(workdir, "src")
    server_env = {
        **os.environ,
        "BENCH_APP": module,
        "BENCH_CONFIG": config,
        "BENCH_OUTPUT_DIR": os.path.join(workdir, "reports"),
        "BENCH_SRC": src,
        **(env or {}),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env, start_new_session=True
        )
    try:
        wait_ready(proc, port, config, log, src)
        yield port
    finally:
        stop(proc)


def scan_log(workdir: str) -> list[str]:
    """Suspicious lines (tracebacks, warnings, errors) from all server logs so far."""
    found = []
    for name in sorted(os.listdir(workdir)):
        if name.endswith(".log"):
            with open(os.path.join(workdir, name), encoding="utf-8", errors="replace") as fh:
                found += [f"{name}: {ln.rstrip()}" for ln in fh if SUSPICIOUS_LOG.search(ln)]
    return found


# --------------------------------------------------------------------- measuring


_COUNTED = ("total_requests", "profiles_precise", "slow_requests", "internal_errors")


def processor_view(port: int, before: dict[str, Any]) -> dict[str, Any]:
    """Counters over the measured run plus the processor's own overhead estimate."""
    after = _get_json(f"http://{HOST}:{port}/_bench/stats") or {}
    if not after:
        return {}
    view = {k: after.get(k, 0) - before.get(k, 0) for k in _COUNTED}
    overhead = after.get("overhead_stats", {})
    view["self_estimated_overhead"] = overhead.get("average_overhead")
    if "profiled_share" in overhead:
        view["profiled_share"] = overhead["profiled_share"]
        view["profiled_request_extra_cost"] = overhead.get("profiled_request_extra_cost")
    return view


def _describe(sample: Sample) -> str:
    parts = []
    if sample.errors:
        parts.append(f"ERRORS {sample.socket_errors} non2xx={sample.non_2xx}")
    view = sample.wpm
    if view:
        if view["profiles_precise"]:
            share = view["profiles_precise"] / max(view["total_requests"], 1)
            parts.append(f"profiled {share:.1%}")
        parts.append(f"self-est. overhead {view['self_estimated_overhead'] or 0:.1%}")
        if view["slow_requests"] or view["internal_errors"]:
            parts.append(f"slow={view['slow_requests']} internal_errors={view['internal_errors']}")
    return "  ".join(parts)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def combined(bursts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One measurement from several wrk bursts: median throughput and latencies, sums.

    The median, because what disturbs this machine comes in episodes that slow
    one burst by 10-20 % and leave the next alone; a mean would carry them over.
    """
    socket_errors: dict[str, int] = {}
    for burst in bursts:
        for kind, count in burst["socket_errors"].items():
            socket_errors[kind] = socket_errors.get(kind, 0) + count
    return {
        "rps": statistics.median(b["rps"] for b in bursts),
        "burst_rps": [b["rps"] for b in bursts],
        "burst_cpu_us": [b["cpu_us"] for b in bursts],
        "cpu_us": statistics.median(b["cpu_us"] for b in bursts),
        "p50_ms": statistics.median(b["p50_ms"] for b in bursts),
        "p99_ms": statistics.median(b["p99_ms"] for b in bursts),
        "requests": sum(b["requests"] for b in bursts),
        "socket_errors": socket_errors,
        "non_2xx": sum(b["non_2xx"] for b in bursts),
    }


def measure_endpoint(
    rep: int, endpoint: str, ports: dict[str, int], args: argparse.Namespace
) -> list[Sample]:
    """Every configuration on ``endpoint``, in alternating bursts, so drift hits all alike."""
    urls = {config: f"http://{HOST}:{port}{endpoint}" for config, port in ports.items()}
    if args.warmup > 0:
        for url in urls.values():
            run_wrk(url, args.warmup, latency=False)
    before = {c: _get_json(f"http://{HOST}:{port}/_bench/stats") or {} for c, port in ports.items()}
    pids = {c: _get_json(f"http://{HOST}:{port}/_bench/config")["pid"] for c, port in ports.items()}
    bursts: dict[str, list[dict[str, Any]]] = {config: [] for config in ports}
    for burst in range(args.bursts):
        for config in rotated(list(ports), burst):
            cpu_before = process_cpu_seconds(pids[config])
            result = parse_wrk(run_wrk(urls[config], args.duration / args.bursts))
            cpu = process_cpu_seconds(pids[config]) - cpu_before
            result["cpu_us"] = cpu / max(result["requests"], 1) * 1e6
            bursts[config].append(result)
    samples = []
    for config in args.configs:
        sample = Sample(rep=rep, config=config, endpoint=endpoint, **combined(bursts[config]))
        sample.wpm = processor_view(ports[config], before[config]) if before[config] else {}
        samples.append(sample)
        line = (
            f"  rep {rep} {config:<12} {endpoint:<9} {sample.rps:9.1f} req/s "
            f"p50 {sample.p50_ms:7.2f} ms p99 {sample.p99_ms:7.2f} ms  {_describe(sample)}"
        )
        print(line.rstrip(), flush=True)
    return samples


def measure_rep(rep: int, args: argparse.Namespace, workdir: str) -> list[Sample]:
    """One repetition: a fresh server per configuration, all up at once, every endpoint."""
    samples: list[Sample] = []
    with ExitStack() as servers:
        ports = {
            config: servers.enter_context(gunicorn(config, workdir, args.app))
            for config in rotated(args.configs, rep)
        }
        for endpoint in args.endpoints:
            samples += measure_endpoint(rep, endpoint, ports, args)
    return samples


def rotated(items: Sequence[str], rep: int) -> list[str]:
    shift = rep % len(items)
    return list(items[shift:]) + list(items[:shift])


def run_all(args: argparse.Namespace, workdir: str, issues: RunIssues) -> list[Sample]:
    samples: list[Sample] = []
    for rep in range(args.reps):
        try:
            samples += measure_rep(rep, args, workdir)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            print(f"  rep {rep}: FAILED: {exc}", flush=True)
            issues.start_failures.append(f"rep {rep}: {exc}")
    return samples


# ----------------------------------------------------------------------- summary


def ratios(samples: Sequence[Sample], num: str, den: str, endpoint: str) -> list[float]:
    """Per-repetition throughput ratio ``num / den`` on ``endpoint``."""
    rps = {(s.rep, s.config, s.endpoint): s.rps for s in samples}
    reps = sorted({s.rep for s in samples})
    return [
        rps[(r, num, endpoint)] / rps[(r, den, endpoint)]
        for r in reps
        if (r, num, endpoint) in rps and rps.get((r, den, endpoint))
    ]


def cpu_ratios(samples: Sequence[Sample], num: str, den: str, endpoint: str) -> list[float]:
    """Per-repetition ratio of requests per CPU-second of the server, ``num / den``: like
    throughput, 0.98 means ``num`` spends 2 % more CPU on each request."""
    cpu = {(s.rep, s.config, s.endpoint): s.cpu_us for s in samples}
    reps = sorted({s.rep for s in samples})
    return [
        cpu[(r, den, endpoint)] / cpu[(r, num, endpoint)]
        for r in reps
        if cpu.get((r, num, endpoint)) and (r, den, endpoint) in cpu
    ]


def paired_ratios(samples: Sequence[Sample], num: str, den: str, endpoint: str) -> list[float]:
    """Throughput ratio ``num / den`` of each burst against ``den``'s burst of the same
    round: the configurations' bursts alternate, so a pair shares the machine's drift."""
    bursts = {(s.rep, s.config, s.endpoint): s.burst_rps for s in samples}
    paired = []
    for rep in sorted({s.rep for s in samples}):
        mine, theirs = bursts.get((rep, num, endpoint)), bursts.get((rep, den, endpoint))
        if mine and theirs:
            paired += [a / b for a, b in zip(mine, theirs) if b]
    return paired


def spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _median_of(samples: Sequence[Sample], config: str, endpoint: str, field: str) -> float:
    values = [getattr(s, field) for s in samples if s.config == config and s.endpoint == endpoint]
    return statistics.median(values) if values else float("nan")


def _processor_medians(samples: Sequence[Sample], config: str, endpoint: str) -> dict[str, Any]:
    """Median self-estimated overhead and profiled share, from the processor's counters."""
    views = [s.wpm for s in samples if s.config == config and s.endpoint == endpoint and s.wpm]
    if not views:
        return {}
    estimates = [v["self_estimated_overhead"] or 0.0 for v in views]
    shares = [v["profiles_precise"] / max(v["total_requests"], 1) for v in views]
    return {
        "self_estimated_overhead_median": statistics.median(estimates),
        "profiled_share_median": statistics.median(shares),
    }


def summarise(samples: Sequence[Sample], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for endpoint in args.endpoints:
        rows = {}
        for config in args.configs:
            rows[config] = {
                "ratio_vs_baseline": spread(ratios(samples, config, args.baseline, endpoint)),
                "paired_ratio_vs_baseline": spread(
                    paired_ratios(samples, config, args.baseline, endpoint)
                ),
                "cpu_ratio_vs_baseline": spread(
                    cpu_ratios(samples, config, args.baseline, endpoint)
                ),
                "cpu_us_median": _median_of(samples, config, endpoint, "cpu_us"),
                "rps_median": _median_of(samples, config, endpoint, "rps"),
                "p50_ms_median": _median_of(samples, config, endpoint, "p50_ms"),
                "p99_ms_median": _median_of(samples, config, endpoint, "p99_ms"),
                "errors": sum(
                    s.errors for s in samples if s.config == config and s.endpoint == endpoint
                ),
                **_processor_medians(samples, config, endpoint),
            }
        otel_vs_bare = spread(ratios(samples, "otel", "bare", endpoint))
        out[endpoint] = {"configs": rows, "otel_vs_bare": otel_vs_bare}
    return out


def _fmt_spread(sp: dict[str, float]) -> str:
    if not sp["n"]:
        return "n/a"
    return f"{sp['median']:.2f} [{sp['min']:.2f}-{sp['max']:.2f}]"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_tables(summary: dict[str, Any], args: argparse.Namespace) -> None:
    for endpoint, block in summary.items():
        print(f"\n{endpoint}   throughput vs {args.baseline} (same repetition): median [min-max]")
        head = (
            "config", "ratio", "CPU ratio", "CPU us/req", "p50 ms", "p99 ms", "req/s", "errors",
            "self-est.", "profiled",
        )  # fmt: skip
        print("  {:<12} {:<20} {:<20} {:>10} {:>8} {:>8} {:>9} {:>7} {:>10} {:>9}".format(*head))
        for config, row in block["configs"].items():
            print(
                f"  {config:<12} {_fmt_spread(row['ratio_vs_baseline']):<20} "
                f"{_fmt_spread(row['cpu_ratio_vs_baseline']):<20} {row['cpu_us_median']:10.1f} "
                f"{row['p50_ms_median']:8.2f} {row['p99_ms_median']:8.2f} "
                f"{row['rps_median']:9.1f} {row['errors']:7d} "
                f"{_pct(row.get('self_estimated_overhead_median')):>10} "
                f"{_pct(row.get('profiled_share_median')):>9}"
            )
        if block["otel_vs_bare"]["n"]:
            print(f"  otel vs bare: {_fmt_spread(block['otel_vs_bare'])}")


def print_markdown(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """The headline matrix, ready to paste into bench/README.md."""
    eps = list(summary)
    rev = getattr(args, "revision", None) or "unknown"
    titles = {
        "ratio_vs_baseline": "Throughput",
        "paired_ratio_vs_baseline": "Throughput in paired bursts (each against the same round's)",
        "cpu_ratio_vs_baseline": "Requests per CPU-second of the server",
    }
    for key, title in titles.items():
        over = "bursts" if key.startswith("paired") else f"{args.reps} reps"
        head = f"{title} vs {args.baseline}, median [min-max] over {over}"
        print(f"\n{head} (otel_wpm {rev}):\n")
        print("| config | " + " | ".join(f"`{e}`" for e in eps) + " |")
        print("|---" * (len(eps) + 1) + "|")
        for config in args.configs:
            cells = [_fmt_spread(summary[e]["configs"][config][key]) for e in eps]
            print(f"| {config} | " + " | ".join(cells) + " |")
    if all(summary[e]["otel_vs_bare"]["n"] for e in eps):
        cells = [_fmt_spread(summary[e]["otel_vs_bare"]) for e in eps]
        print("| otel / bare (throughput) | " + " | ".join(cells) + " |")


def print_issues(samples: Sequence[Sample], issues: RunIssues) -> None:
    bad = [s for s in samples if s.errors]
    print("\nChecks:")
    print(f"  wrk socket errors / non-2xx: {len(bad)} of {len(samples)} runs affected")
    for s in bad:
        print(f"    rep {s.rep} {s.config} {s.endpoint}: {s.socket_errors} non2xx={s.non_2xx}")
    print(f"  server start failures: {len(issues.start_failures)}")
    for line in issues.start_failures:
        print("    " + line.replace("\n", "\n    "))
    print(f"  suspicious server log lines: {len(issues.log_lines)}")
    for line in issues.log_lines[:20]:
        print("    " + line)
    print(
        "  HTML reports written (expected 0: nothing should reach the threshold): "
        f"{len(issues.report_files)}"
    )


# -------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default="app", choices=sorted(APPS), help="which bench app")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated")
    ap.add_argument("--endpoints", help="comma-separated (default: the app's)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--duration", type=float, default=10.0, help="seconds per config, endpoint and rep"
    )
    ap.add_argument("--bursts", type=int, default=5, help="alternating wrk runs per --duration")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each run")
    ap.add_argument("--baseline", default="otel", help="config the ratios are taken against")
    ap.add_argument("--json", dest="json_out", help="write samples and summary here")
    ap.add_argument("--log-dir", help="keep server logs here (default: a temp dir, removed)")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved --json run")
    ap.add_argument("--quick", action="store_true", help="smoke check: 1 rep, 2 s, 1 s warm-up")
    args = ap.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    endpoints = args.endpoints or ",".join(APPS[args.app][1])
    args.endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    if args.quick:
        args.reps, args.duration, args.warmup, args.bursts = 1, 2.0, 1.0, 1
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown configs {sorted(unknown)}; choose from {CONFIGS}")
    if args.baseline not in args.configs:
        args.baseline = args.configs[0]
    if not 1 <= args.reps <= 100 or not 0 < args.duration <= 600:
        ap.error("--reps must be 1..100 and --duration 0..600")
    # wrk takes whole seconds
    burst_seconds = args.duration / args.bursts if args.bursts > 0 else 0
    if not 1 <= args.bursts <= 100 or burst_seconds < 1 or burst_seconds != int(burst_seconds):
        ap.error("--bursts must be 1..100 and cut --duration into whole seconds")
    if args.warmup != int(args.warmup):
        ap.error("--warmup must be whole seconds")
    return args


@contextmanager
def _workdir(keep: Optional[str]) -> Iterator[str]:
    if keep:
        os.makedirs(keep, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="otel-wpm-bench-") as tmp:
        yield tmp


def report(args: argparse.Namespace) -> int:
    """Print the tables of a run saved with ``--json``, without measuring anything."""
    with open(args.report, encoding="utf-8") as fh:
        data = json.load(fh)
    keys = (
        "app", "configs", "endpoints", "reps", "duration", "warmup", "baseline", "log_dir",
        "revision",
    )  # fmt: skip
    for key in keys:
        setattr(args, key, data["meta"].get(key))
    args.bursts = data["meta"].get("bursts", 1)
    samples = [Sample(**raw) for raw in data["samples"]]
    issues = RunIssues(**data["issues"])
    present(args, samples, issues)
    return 0


def present(args: argparse.Namespace, samples: list[Sample], issues: RunIssues) -> None:
    """Print the summary tables and issues; save everything with ``--json``."""
    summary = summarise(samples, args)
    print_tables(summary, args)
    print_markdown(summary, args)
    print_issues(samples, issues)
    if args.json_out:
        write_json(args, samples, summary, issues)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(args)
    args.revision = revision()
    if shutil.which("wrk") is None:
        print("wrk not found on PATH", file=sys.stderr)
        return 2
    print(
        f"app={args.app} configs={args.configs} endpoints={args.endpoints} reps={args.reps} "
        f"duration={args.duration:g}s in {args.bursts} bursts warmup={args.warmup:g}s "
        f"wrk -t{WRK_THREADS} "
        f"-c{WRK_CONNECTIONS}; {SERVERS[APPS[args.app][2]]}; cpus={os.cpu_count()}; "
        f"otel_wpm at {args.revision}",
        flush=True,
    )
    issues = RunIssues()
    with _workdir(args.log_dir) as workdir:
        os.makedirs(os.path.join(workdir, "reports"), exist_ok=True)
        snapshot_package(workdir)
        samples = run_all(args, workdir, issues)
        issues.log_lines = scan_log(workdir)
        reports = os.listdir(os.path.join(workdir, "reports"))
        issues.report_files = sorted(name for name in reports if name.endswith(".html"))
    present(args, samples, issues)
    return 1 if issues.start_failures or any(s.errors for s in samples) else 0


def snapshot_package(workdir: str) -> None:
    """Copy ``otel_wpm/`` to ``<workdir>/src`` so every server of the run loads the same code."""
    shutil.copytree(
        os.path.join(ROOT, "otel_wpm"),
        os.path.join(workdir, "src", "otel_wpm"),
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )


def revision() -> str:
    """``<short HEAD>`` of the repo, ``+dirty`` when ``otel_wpm/`` has uncommitted changes."""

    def git(*cmd: str) -> str:
        done = subprocess.run(
            ["git", "-C", ROOT, *cmd], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "otel_wpm") else "")


def write_json(
    args: argparse.Namespace, samples: Sequence[Sample], summary: dict[str, Any], issues: RunIssues
) -> None:
    data = {
        "meta": {k: v for k, v in vars(args).items() if k not in ("json_out", "report")}
        | {"cpus": os.cpu_count()},
        "samples": [dataclasses.asdict(s) for s in samples],
        "summary": summary,
        "issues": dataclasses.asdict(issues),
    }
    with open(args.json_out, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    sys.exit(main())
