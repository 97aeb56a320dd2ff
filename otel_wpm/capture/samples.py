"""A request's stack samples, folded as they arrive so its memory stays bounded.

Usage (the sampler thread adds, the thread that ends the request takes a copy)::

    samples = FoldedSamples()
    samples.add(stack, seconds=0.01, cpu_seconds=0.008)   # cpu_seconds None: not measured
    kept = samples.snapshot()
    for stack, seconds, cpu, wait in kept.records():      # in time order
        ...
    kept.seconds, kept.cpu_seconds, kept.wait_seconds

The samples are kept as a timeline of slices, each a small table of stack ->
(seconds, CPU seconds, waiting seconds). While the request is short, a slice is
one run of identical consecutive stacks, so nothing is lost. Past
:data:`MAX_SLICES` slices, neighbouring slices are merged two by two: the
timeline's resolution halves and each slice sums the stacks of both. A slice
holding more than :data:`MAX_STACKS_PER_SLICE` stacks charges its lightest ones
to their callers. The totals of every call path shown (and so the call tree's
time per function) stay exact; only the time order and the detail of rare
leaves coarsen. Memory per request is therefore at most
``MAX_SLICES x MAX_STACKS_PER_SLICE`` entries, whatever the request's duration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Optional

Stack = tuple[str, ...]

#: Slices of the timeline kept before neighbours are merged.
MAX_SLICES = 256
#: Distinct stacks one slice keeps; the lightest beyond that go to their callers.
MAX_STACKS_PER_SLICE = 32
#: The most entries (stack, weights) a request ever holds.
MAX_ENTRIES = MAX_SLICES * MAX_STACKS_PER_SLICE

# One slice: stack -> [seconds, CPU seconds, waiting seconds], in the order first seen.
_Slice = dict[Stack, list[float]]


class FoldedSamples:
    """The samples of one request; see the module docstring. Safe to add from one thread
    while another takes a :meth:`snapshot`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slices: list[_Slice] = []
        self._last_stack: Optional[Stack] = None
        # Once the timeline was coarsened: the seconds a slice covers before the next begins.
        self._resolution = 0.0
        self._last_slice_seconds = 0.0
        self._stacks: dict[Stack, Stack] = {}  # one tuple per distinct stack kept
        self.seconds = 0.0
        self._cpu = 0.0
        self._wait = 0.0
        self._cpu_measured = False

    # --- adding (sampler thread) -----------------------------------------------------

    def add(self, stack: Stack, seconds: float, cpu_seconds: Optional[float] = None) -> None:
        """One sample: ``stack`` ran for the last ``seconds``, using ``cpu_seconds`` of CPU.

        ``cpu_seconds`` None means the thread's CPU time was not measured for it.
        """
        if cpu_seconds is None:
            cpu = wait = 0.0
        else:
            cpu = min(max(cpu_seconds, 0.0), seconds)
            wait = seconds - cpu
        with self._lock:
            stack = self._interned(stack)
            current = self._current_slice(stack)
            _charge(current, stack, (seconds, cpu, wait))
            if len(current) > MAX_STACKS_PER_SLICE:
                _within_limit(current)
            self._last_slice_seconds += seconds
            self._last_stack = stack
            self.seconds += seconds
            self._cpu += cpu
            self._wait += wait
            self._cpu_measured = self._cpu_measured or cpu_seconds is not None
            if len(self._slices) > MAX_SLICES:
                self._coarsen()

    def _interned(self, stack: Stack) -> Stack:
        if len(self._stacks) > MAX_ENTRIES:
            self._stacks = {kept: kept for part in self._slices for kept in part}
        return self._stacks.setdefault(stack, stack)

    def _current_slice(self, stack: Stack) -> _Slice:
        if self._slices:
            if self._resolution == 0.0 and stack == self._last_stack:
                return self._slices[-1]  # the same stack again: one run
            if self._resolution > 0.0 and self._last_slice_seconds < self._resolution:
                return self._slices[-1]
        self._slices.append({})
        self._last_slice_seconds = 0.0
        return self._slices[-1]

    def _coarsen(self) -> None:
        """Merge neighbouring slices two by two: half as many, each twice as long."""
        pairs = zip(self._slices[0::2], self._slices[1::2] + [{}])
        self._slices = [_merged(first, second) for first, second in pairs]
        longest = max(_seconds_of(part) for part in self._slices)
        self._resolution = max(self._resolution * 2, longest)
        self._last_slice_seconds = _seconds_of(self._slices[-1])
        self._stacks = {stack: stack for part in self._slices for stack in part}

    # --- reading (any thread) ----------------------------------------------------------

    def snapshot(self) -> FoldedSamples:
        """A copy that no longer changes."""
        copy = FoldedSamples()
        with self._lock:
            copy._slices = [{stack: list(w) for stack, w in part.items()} for part in self._slices]
            copy._resolution = self._resolution
            copy.seconds = self.seconds
            copy._cpu, copy._wait = self._cpu, self._wait
            copy._cpu_measured = self._cpu_measured
        return copy

    def records(self) -> Iterator[tuple[Stack, float, float, float]]:
        """(stack, seconds, CPU seconds, waiting seconds), in time order."""
        for part in self._slices:
            for stack, (seconds, cpu, wait) in part.items():
                yield stack, seconds, cpu, wait

    @property
    def cpu_seconds(self) -> Optional[float]:
        """CPU time the thread used over the samples that measured it; None if none did."""
        return self._cpu if self._cpu_measured else None

    @property
    def wait_seconds(self) -> Optional[float]:
        """Time over the same samples the thread did not run: I/O, sleep, locks, the GIL."""
        return self._wait if self._cpu_measured else None

    @property
    def entry_count(self) -> int:
        """Entries held (at most :data:`MAX_ENTRIES`)."""
        return sum(len(part) for part in self._slices)

    def __bool__(self) -> bool:
        return bool(self._slices)


def _charge(part: _Slice, stack: Stack, weights: tuple[float, float, float]) -> None:
    kept = part.get(stack)
    if kept is None:
        part[stack] = list(weights)
    else:
        for index, weight in enumerate(weights):
            kept[index] += weight


def _seconds_of(part: _Slice) -> float:
    return sum(weights[0] for weights in part.values())


def _merged(first: _Slice, second: _Slice) -> _Slice:
    merged: _Slice = {stack: list(weights) for stack, weights in first.items()}
    for stack, weights in second.items():
        _charge(merged, stack, (weights[0], weights[1], weights[2]))
    return _within_limit(merged)


def _within_limit(part: _Slice) -> _Slice:
    """Charge the lightest stacks to their callers, a level at a time, until few enough.

    Each round shortens the stacks in excess by one frame, so callers' totals stay
    exact; stacks that become equal merge. A stack of one frame is kept as it is.
    """
    while len(part) > MAX_STACKS_PER_SLICE:
        excess = len(part) - MAX_STACKS_PER_SLICE
        lightest = sorted(part, key=lambda stack: part[stack][0])[:excess]
        shortened = [stack for stack in lightest if len(stack) > 1]
        if not shortened:
            break
        for stack in shortened:
            weights = part.pop(stack)
            _charge(part, stack[:-1], (weights[0], weights[1], weights[2]))
    return part
