"""Instructions each part of the request path costs, counted alone under valgrind.

Usage::

    python bench/path_parts.py                 # every part, ~3 min on 2 cores
    python bench/path_parts.py --parts key,body

``bench/instructions.py`` says what the whole path costs a request; this says
where it goes. Each part is one statement of what ``ProfilingSpanProcessor``
does on a request's ``on_start`` and ``on_end``, run once for each of a list
of ended server spans, in a child process under ``valgrind --tool=callgrind``,
twice (for ``a`` and ``b`` spans): the difference of the two counts divided by
``b - a``, less the same for an empty statement, is what the part costs. The
statements run in a function, as the processor's do, and those of
:data:`IN_A_TASK` inside an asyncio task, as an ASGI request's do.

Alone, with warm caches, a part costs fewer instructions than the sum shows on
a request, and far less time than its count suggests there: the processor's
path touches a dozen Python functions and the SDK's span properties, each
cold again by the next request (``bench/inprocess.py`` times it).

Needs valgrind (Debian package ``valgrind``).
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

_LOCAL_ROOT = "s.kind is SERVER and (s.parent is None or s.parent.is_remote)"
_REGISTRY = "requests.start(s, c, thread_id, thread_id, settings); requests.leave(c, thread_id)"
#: name -> (what it is, the statement run for each span ``s``)
PARTS: dict[str, tuple[str, str]] = {
    "local_root": ("the request test (the minimal watcher's too)", _LOCAL_ROOT),
    "duration": ("end_time - start_time (the minimal watcher's too)", "s.end_time - s.start_time"),
    "context": ("span.context, read once at each end", "s.context"),
    "key": ("request_key(thread), at each end", "request_key(thread_id)"),
    "key_task": ("request_key(thread) in an asyncio task", "request_key(thread_id)"),
    "registry": ("InFlightRequests.start + leave (with whether it has state)", _REGISTRY),
    "trace_mark": ("TraceSpans.watch + leave", "traces.watch(c); traces.leave(s, c)"),
    "body": ("the body recorder decided from the name", "captures and may_carry_body(s)"),
    "count": ("Stats.count_request", "stats.count_request(thread_id, 5)"),
    "awake": ("StackSampler.asleep, read", "sampler.asleep"),
    "settings": ("the settings in force, enabled?", "processor._settings.enabled"),
}
#: The parts run inside an asyncio task, as an ASGI request's are.
IN_A_TASK = frozenset({"key_task"})
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)
CALLS = (2000, 12000)


def run_child(part: str, count: int) -> None:
    """In the child: the statement of ``part`` once for each of ``count`` spans."""
    import asyncio
    import threading

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_wpm import Config, ProfilingSpanProcessor
    from otel_wpm.capture.inflight import request_key
    from otel_wpm.capture.semconv import may_carry_body

    tracer = TracerProvider().get_tracer("bench.path_parts")
    spans = [tracer.start_span("GET /fast", kind=SpanKind.SERVER) for _ in range(count)]
    for span in spans:
        span.end()
    processor = ProfilingSpanProcessor(
        Config(threshold_seconds=1.0, local_output_dir=tempfile.mkdtemp())
    )
    processor._sampler.asleep = False  # as under load: awake, nothing to start
    names = {
        "SERVER": SpanKind.SERVER,
        "request_key": request_key,
        "may_carry_body": may_carry_body,
        "processor": processor,
        "requests": processor._requests,
        "traces": processor._trace_spans,
        "stats": processor.stats,
        "sampler": processor._sampler,
        "settings": processor.settings,
        "captures": processor.settings.captures_body,
        "thread_id": threading.get_ident(),
        "c": spans[0].context,
        "spans": spans,
    }
    statement = PARTS[part][1] if part != "empty" else "pass"
    exec(f"def run():\n    for s in spans:\n        {statement}\n", names)
    if part in IN_A_TASK:

        async def in_a_task() -> None:
            names["run"]()

        asyncio.run(in_a_task())
    else:
        names["run"]()
    processor.shutdown()


def counted(part: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "callgrind.out")
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--child", part, str(count),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        found = _TOTALS.search(Path(out).read_bytes())
    if found is None:
        raise RuntimeError(f"no instruction total in callgrind's output for {part}")
    return int(found.group(1))


def per_span(part: str) -> float:
    low, high = (counted(part, count) for count in CALLS)
    return (high - low) / (CALLS[1] - CALLS[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated")
    parser.add_argument("--child", nargs=2, metavar=("PART", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child[0], int(args.child[1]))
        return 0
    parts = [part for part in args.parts.split(",") if part]
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part {unknown[0]!r}; expected some of {', '.join(PARTS)}")
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        costs = dict(zip(["empty", *parts], pool.map(per_span, ["empty", *parts])))
    print("instructions per request of each part alone (warm), over an empty statement:")
    for part in parts:
        print(f"  {part:11s} {costs[part] - costs['empty']:+8,.0f}   {PARTS[part][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
