"""Instructions per request, counted by valgrind: a cost the machine's noise does not move.

Usage::

    python bench/instructions.py                           # WSGI /fast: otel, otel_noop,
                                                           # otel_minimal, wpm
    python bench/instructions.py --asgi                    # bench/asgi_app.py, a task each
    python bench/instructions.py --configs otel_minimal,wpm --calls 300,1300

Timing a difference of 1 % on a shared 2-core machine takes many alternating
rounds (``inprocess.py``) or many wrk bursts (``run.py``). Counting instructions
does not: each configuration of ``bench/app.py`` runs in a child process under
``valgrind --tool=callgrind`` twice, serving ``a`` and then ``b`` requests (from
``--calls a,b``) after the same warm-up, and the difference of the two counts
of the request thread, divided by ``b - a``, is what one request costs, free
of start-up and of the monitor's own threads (those are ``run.py``'s to
measure). ``PYTHONHASHSEED`` is fixed, so a run repeats to within about a thousand
instructions. Flask's ``/fast`` runs about 5 instructions a nanosecond on the
benchmark machine, so 1,000 instructions are about 0.2 us; code made of
attribute reads and dict operations, as the monitor's request path is, runs
fewer a nanosecond (time it with ``inprocess.py``).

Needs valgrind (Debian package ``valgrind``); a run takes a minute or two.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app import CONFIGS  # noqa: E402

WARM_UP_CALLS = 200
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def serve(config: str, calls: int, asgi: bool) -> None:
    """In the child: the warm-up, then ``calls`` requests of ``/fast``."""
    from werkzeug.test import EnvironBuilder

    from bench.inprocess import (
        _asgi_stacks,
        _wsgi_stacks,
        asgi_microseconds_per_request,
        microseconds_per_request,
    )

    if asgi:
        app = _asgi_stacks([config])[config][0]
        for count in (WARM_UP_CALLS, calls):
            asgi_microseconds_per_request(app, "/fast", count)
        return
    app = _wsgi_stacks([config], 0)[config][0]
    template = EnvironBuilder(path="/fast", headers={"User-Agent": "bench"}).get_environ()
    for count in (WARM_UP_CALLS, calls):
        microseconds_per_request(app, template, count)


def counted(config: str, calls: int, asgi: bool) -> int:
    """Instructions the request thread of a child serving ``calls`` requests ran."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "callgrind.out")
        command = [
            "valgrind", "--tool=callgrind", "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable, __file__, "--child", config, str(calls),
            *(["--asgi"] if asgi else []),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        main_thread = Path(f"{out}-01").read_bytes()
    found = _TOTALS.search(main_thread)
    if found is None:
        raise RuntimeError(f"no instruction total in callgrind's output for {config}")
    return int(found.group(1))


def per_request(config: str, calls: tuple[int, int], asgi: bool) -> float:
    fewer, more = (counted(config, n, asgi) for n in calls)
    return (more - fewer) / (calls[1] - calls[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="otel_noop,otel_minimal,wpm", help="otel is added")
    parser.add_argument("--calls", default="300,1300", help="requests of the two runs: a,b")
    parser.add_argument("--asgi", action="store_true", help="the ASGI app (bench/asgi_app.py)")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        serve(args.child[0], int(args.child[1]), args.asgi)
        return 0
    configs = ["otel", *[c for c in args.configs.split(",") if c and c != "otel"]]
    unknown = [c for c in configs if c not in CONFIGS or c == "bare"]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; expected some of {CONFIGS[1:]}")
    fewer, more = (int(n) for n in args.calls.split(","))
    if not 0 <= fewer < more:
        parser.error(f"--calls {args.calls!r}: expected a,b with 0 <= a < b")
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(
            zip(configs, pool.map(lambda c: per_request(c, (fewer, more), args.asgi), configs))
        )
    base = counts["otel"]
    print(f"/fast{' (ASGI)' if args.asgi else ''}: instructions per request, request thread")
    for name, count in counts.items():
        print(f"  {name:13s} {count:11,.0f}  {count - base:+9,.0f}  {count / base:6.3f}x otel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
