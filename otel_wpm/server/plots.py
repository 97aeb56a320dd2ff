"""Small plots drawn on the server as inline SVG: no script, no external asset.

Usage::

    from otel_wpm.server.plots import Dot, histogram, scatter, sparkline

    sparkline([0, 2, 5, 1], title="8 slow requests")            # bars, no axes
    scatter([Dot(started, seconds, href, label), ...], threshold=0.5)
    histogram(durations)

Each returns an ``<svg>`` element as text. Every text placed in it (titles,
labels) is HTML-escaped here; links must already be URLs of this server.
Coordinates are rounded to tenths of a pixel to keep pages small.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

_AXIS = "#8a8f98"
_GRID = "#e6e8eb"
_INK = "#2f6fb3"
_ALERT = "#c2410c"
_FONT = "font-size='11' fill='#5b616b'"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def bucket_counts(times: Sequence[float], start: float, end: float, buckets: int) -> list[int]:
    """How many of ``times`` fall in each of ``buckets`` equal spans of [start, end]."""
    counts = [0] * buckets
    width = (end - start) / buckets if end > start else 0.0
    for moment in times:
        position = int((moment - start) / width) if width else buckets - 1
        counts[min(max(position, 0), buckets - 1)] += 1
    return counts


def sparkline(counts: Sequence[int], title: str, width: int = 160, height: int = 22) -> str:
    """One bar per count, scaled to the largest."""
    top = max(counts, default=0) or 1
    step = width / max(len(counts), 1)
    bar = max(step - 1, 1)
    path = "".join(
        f"M{_n(i * step + bar / 2)} {height}v-{_n(max(count / top * (height - 2), 1.5))}"
        for i, count in enumerate(counts)
        if count
    )
    return (
        f"<svg class='spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"role='img'><title>{_e(title)}</title>"
        f"<path d='M0 {height - 0.5}H{width}' stroke='{_GRID}'/>"
        f"<path d='{path}' stroke='{_INK}' stroke-width='{_n(bar)}'/></svg>"
    )


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round values from 0 to at least ``top``: 0, 0.5, 1, 1.5 ..."""
    if not top > 0:
        return [0.0, 1.0]
    raw = max(top, 1e-6) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(max(math.ceil(top / step - 1e-9), 1) + 1)]


def seconds_label(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    return f"{seconds:.3g} s"


def _time_format(span_seconds: float) -> str:
    if span_seconds > 2 * 86400:
        return "%m-%d"
    if span_seconds > 3600:
        return "%m-%d %H:%M"
    return "%H:%M:%S"


def _time_label(moment: float, fmt: str) -> str:
    try:
        return datetime.fromtimestamp(moment, tz=timezone.utc).strftime(fmt)
    except (ValueError, OverflowError, OSError):
        return "?"


@dataclass(frozen=True)
class _Frame:
    """A plot area inside margins, mapping data to pixels."""

    width: int
    height: int
    left: int = 52
    right: int = 12
    top: int = 10
    bottom: int = 26

    @property
    def inner_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def inner_height(self) -> float:
        return self.height - self.top - self.bottom

    def x(self, fraction: float) -> float:
        return self.left + fraction * self.inner_width

    def y(self, fraction: float) -> float:
        return self.top + (1 - fraction) * self.inner_height

    def y_axis(self, ticks: Sequence[float], label: str = "{}") -> str:
        top = ticks[-1] or 1
        parts = []
        for tick in ticks:
            y = _n(self.y(tick / top))
            parts.append(
                f"<path d='M{self.left} {y}H{_n(self.width - self.right)}' stroke='{_GRID}'/>"
                f"<text x='{self.left - 6}' y='{y}' dy='4' text-anchor='end' {_FONT}>"
                f"{_e(label.format(tick))}</text>"
            )
        return "".join(parts)

    def x_label(self, fraction: float, text: str) -> str:
        anchor = "start" if fraction <= 0 else "end" if fraction >= 1 else "middle"
        return (
            f"<text x='{_n(self.x(fraction))}' y='{self.height - 8}' text-anchor='{anchor}' "
            f"{_FONT}>{_e(text)}</text>"
        )

    def open(self, title: str) -> str:
        return (
            f"<svg class='plot' width='{self.width}' height='{self.height}' "
            f"viewBox='0 0 {self.width} {self.height}' role='img'><title>{_e(title)}</title>"
        )

    def baseline(self) -> str:
        y = _n(self.y(0))
        return f"<path d='M{self.left} {y}H{_n(self.width - self.right)}' stroke='{_AXIS}'/>"


@dataclass(frozen=True)
class Dot:
    """One report in a scatter plot."""

    started: float  # seconds since the epoch
    seconds: float
    href: str
    label: str


def scatter(
    dots: Sequence[Dot], threshold: Optional[float] = None, width: int = 760, height: int = 240
) -> str:
    """Duration against start time; each dot links to its report."""
    frame = _Frame(width, height)
    ticks = nice_ticks(max([dot.seconds for dot in dots] + [threshold or 0.0]))
    top = ticks[-1]
    start = min((dot.started for dot in dots), default=0.0)
    end = max((dot.started for dot in dots), default=0.0)
    span = end - start
    parts = [frame.open("Duration of each slow request over time"), frame.y_axis(ticks, "{:g} s")]
    if threshold:
        y = _n(frame.y(threshold / top))
        parts.append(
            f"<path d='M{frame.left} {y}H{_n(width - frame.right)}' stroke='{_ALERT}' "
            f"stroke-dasharray='4 3'><title>threshold {_e(seconds_label(threshold))}</title></path>"
        )
    parts.append(frame.baseline())
    for dot in dots:
        fraction = (dot.started - start) / span if span > 0 else 0.5
        parts.append(
            f"<a href='{_e(dot.href)}'><circle cx='{_n(frame.x(fraction))}' "
            f"cy='{_n(frame.y(dot.seconds / top))}' r='3.5'><title>{_e(dot.label)}</title>"
            "</circle></a>"
        )
    if dots:
        fmt = _time_format(span)
        parts += [
            frame.x_label(0, _time_label(start, fmt)),
            frame.x_label(1, _time_label(end, fmt)),
        ]
        if span > 0:
            parts.append(frame.x_label(0.5, _time_label(start + span / 2, fmt)))
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    durations: Sequence[float], bins: int = 24, width: int = 760, height: int = 200
) -> str:
    """How many requests took how long, from 0 to the slowest."""
    frame = _Frame(width, height)
    longest = max(durations, default=0.0)
    edges = nice_ticks(longest, 6)
    span = edges[-1]
    counts = bucket_counts(durations, 0.0, span, bins)
    ticks = nice_ticks(max(counts, default=0) or 1)
    top = ticks[-1]
    step = frame.inner_width / bins
    parts = [frame.open("How many requests took how long"), frame.y_axis(ticks, "{:g}")]
    for i, count in enumerate(counts):
        if not count:
            continue
        low, high = span * i / bins, span * (i + 1) / bins
        y = frame.y(count / top)
        parts.append(
            f"<rect x='{_n(frame.left + i * step + 0.5)}' y='{_n(y)}' width='{_n(step - 1)}' "
            f"height='{_n(frame.y(0) - y)}' fill='{_INK}'><title>{count} requests of "
            f"{_e(seconds_label(low))} to {_e(seconds_label(high))}</title></rect>"
        )
    parts.append(frame.baseline())
    for edge in edges:
        parts.append(frame.x_label(edge / span if span else 0, seconds_label(edge)))
    parts.append("</svg>")
    return "".join(parts)
