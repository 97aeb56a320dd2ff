"""How long importing otel-wpm takes, read from ``python -X importtime`` in fresh interpreters.

Usage::

    python bench/import_time.py                # 9 fresh interpreters per measurement
    python bench/import_time.py --runs 21 --top 15
    git worktree add /tmp/otel-wpm-main main
    python bench/import_time.py --against /tmp/otel-wpm-main   # before/after, interleaved

For each way in (``import otel_wpm``, the two classes an app imports, the
``opentelemetry-instrument`` hook on and off) it prints the median time the
statement's imports take: cold, and with the OpenTelemetry SDK already imported,
as in an app that uses OpenTelemetry (what otel-wpm adds to its start-up), and how
much of that is otel_wpm's own module code. Then, for each way in, with the SDK
already imported, the parts that dominate: outside modules, each with the otel_wpm
module that imports it, and otel_wpm modules' own code.

Modules are imported from bytecode, as once a package is installed: the
interpreters keep it under a temporary ``PYTHONPYCACHEPREFIX`` (whatever
``PYTHONDONTWRITEBYTECODE`` says), written by a first round that is not counted.
The otel_wpm measured is the one beside this script. ``--against DIR`` also measures
the otel_wpm in ``DIR`` (another checkout), each of its runs right after ours, so a
busy moment on the machine hits both alike, and prints the two side by side.

Only import time is counted, not the time the statement then spends running.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "otel_wpm"
SOURCE = str(Path(__file__).resolve().parent.parent)  # the checkout holding this script
SDK_IMPORT = "import opentelemetry.sdk.trace"
MARK = "--- measured statement starts here ---"
OWN_CODE = "(its own code)"
# "import time:      1640 |     161221 |     otel_wpm.monitor": 2 spaces of indent a level
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


@dataclass(frozen=True)
class WayIn:
    label: str
    statement: str
    env: dict[str, str] = field(default_factory=dict)


WAYS_IN = [
    WayIn("import otel_wpm", "import otel_wpm"),
    WayIn("from otel_wpm import Config", "from otel_wpm import Config"),
    WayIn(
        "from otel_wpm import ProfilingSpanProcessor",
        "from otel_wpm import ProfilingSpanProcessor",
    ),
    WayIn("from otel_wpm import PerformanceMonitor", "from otel_wpm import PerformanceMonitor"),
    WayIn(
        "opentelemetry-instrument hook",
        "from otel_wpm.install import post_instrument; post_instrument()",
    ),
    WayIn(
        "the hook, OTEL_SDK_DISABLED=true",
        "from otel_wpm.install import post_instrument; post_instrument()",
        {"OTEL_SDK_DISABLED": "true"},
    ),
]


@dataclass
class Import:
    """One line of ``-X importtime``: a module, its own time and with what it imported (µs)."""

    name: str
    self_us: int
    cumulative_us: int
    children: list[Import]


def parse_importtime(stderr: str) -> list[Import]:
    """The imports made after ``MARK``, as trees (a child's line comes before its parent's)."""
    pending: dict[int, list[Import]] = defaultdict(list)
    for line in stderr.split(MARK, 1)[-1].splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        depth = len(indent) // 2
        children = pending.pop(depth + 1, [])
        pending[depth].append(Import(name, int(self_us), int(cumulative_us), children))
    return pending.get(0, [])


def is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def heavy_parts(imports: list[Import]) -> dict[tuple[str, str], int]:
    """{(what, why): µs}: outside modules with the otel_wpm module that imported them
    ("(statement)" for the statement itself), and otel_wpm modules' own code (``OWN_CODE``)."""
    found: dict[tuple[str, str], int] = {}

    def walk(node: Import) -> None:
        found[(node.name, OWN_CODE)] = node.self_us
        for child in node.children:
            if is_ours(child.name):
                walk(child)
            else:
                found[(child.name, node.name)] = child.cumulative_us

    for node in imports:
        if is_ours(node.name):
            walk(node)
        else:
            found[(node.name, "(statement)")] = node.cumulative_us
    return found


def measure_once(way: WayIn, preload: str, workdir: str, source: str) -> list[Import]:
    code = "\n".join(
        [preload, "import sys", f"sys.stderr.write({MARK!r} + '\\n')", "sys.stderr.flush()"]
    )
    code += "\n" + way.statement
    env = {
        **os.environ,
        "PYTHONPATH": source,
        "PYTHONPYCACHEPREFIX": os.path.join(workdir, "pycache"),
        "WPM_LOCAL_OUTPUT_DIR": workdir,
        **way.env,
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as once a package is installed
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"{way.label!r} failed:\n{result.stderr[-2000:]}")
    return parse_importtime(result.stderr)


@dataclass
class Measurement:
    totals_ms: list[float] = field(default_factory=list)
    parts_ms: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, imports: list[Import]) -> None:
        self.totals_ms.append(sum(node.cumulative_us for node in imports) / 1000)
        for key, us in heavy_parts(imports).items():
            self.parts_ms[key].append(us / 1000)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.totals_ms)


def measure_all(
    runs: int, workdir: str, sources: list[str]
) -> dict[tuple[str, str, str], Measurement]:
    """{(source, way in, preload): Measurement}; interleaved, so a busy moment hits every
    figure alike."""
    measurements: dict[tuple[str, str, str], Measurement] = defaultdict(Measurement)
    for way, source in itertools.product(WAYS_IN, sources):  # not counted: writes the bytecode
        measure_once(way, "", workdir, source)
    for _ in range(runs):
        for way in WAYS_IN:
            for preload in ("", SDK_IMPORT):
                for source in sources:
                    imports = measure_once(way, preload, workdir, source)
                    measurements[(source, way.label, preload)].add(imports)
    return measurements


def median_part(values: list[float], runs: int) -> float:
    return statistics.median(values + [0.0] * (runs - len(values)))  # absent: 0 ms that run


def own_code_ms(measurement: Measurement, runs: int) -> float:
    parts = measurement.parts_ms.items()
    return sum(median_part(values, runs) for (_, why), values in parts if why == OWN_CODE)


def heaviest(measurement: Measurement, runs: int, top: int) -> list[tuple[float, str, str]]:
    rows = [(median_part(v, runs), what, why) for (what, why), v in measurement.parts_ms.items()]
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh interpreters per figure")
    parser.add_argument("--top", type=int, default=8, help="heaviest parts listed per way in")
    parser.add_argument("--against", metavar="DIR", help="also measure the otel_wpm in DIR")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.against and not (Path(args.against) / PACKAGE).is_dir():
        parser.error(f"--against: no {PACKAGE}/ in {args.against}")
    sources = [SOURCE, str(Path(args.against).resolve())] if args.against else [SOURCE]

    with tempfile.TemporaryDirectory() as workdir:
        measured = measure_all(args.runs, workdir, sources)

    python = sys.version.split()[0]
    print(f"Import time, median of {args.runs} fresh interpreters (ms), Python {python}")
    for source in sources:
        print_totals(source, measured, args.runs)

    for way in WAYS_IN:
        rows = heaviest(measured[(SOURCE, way.label, SDK_IMPORT)], args.runs, args.top)
        print(f"\n{way.label} (SDK loaded): heaviest parts, ms")
        for ms, what, why in rows:
            print(f"  {ms:6.1f}  {what:<45} {why if why == OWN_CODE else '<- ' + why}")


def print_totals(source: str, measured: dict[tuple[str, str, str], Measurement], runs: int) -> None:
    width = max(len(way.label) for way in WAYS_IN)
    print(f"\n{source}")
    print(f"{'way in':<{width}}  {'cold':>7}  {'SDK loaded':>10}  {'otel_wpm own':>12}")
    for way in WAYS_IN:
        c, w = measured[(source, way.label, "")], measured[(source, way.label, SDK_IMPORT)]
        own = own_code_ms(w, runs)
        print(f"{way.label:<{width}}  {c.median_ms:7.1f}  {w.median_ms:10.1f}  {own:12.1f}")


if __name__ == "__main__":
    main()
