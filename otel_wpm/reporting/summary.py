"""The summary at the top of a report: how slow, CPU or waiting, where, which spans.

Usage::

    html = summary_section(slow, hot, spans, masked_url, cpu_note)

Four answers a person looks for first, each in a few words and a bar: the
duration against the threshold; the request thread's CPU time against its
waiting (or why it is not known); the time spent in database calls, outgoing
HTTP and other spans; then the three hottest application functions, each with
its CPU and waiting time when the engine split them, and the three slowest
spans. Everything comes already masked (the span summary) or is
escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from ..alerting.alert import HotFrame
from .markup import bar, duration_text, escape, link
from .profile import Profile, cpu_and_wait_by_function
from .slow_request import SlowRequest
from .spans import SpanSummary

TOP_FRAMES = 3
KIND_NAMES = {"db": "database", "http": "outgoing HTTP", "other": "other spans"}


def summary_section(
    slow: SlowRequest,
    hot: Sequence[HotFrame],
    spans: SpanSummary,
    masked_url: str,
    cpu_note: str,
) -> str:
    """``cpu_note`` is the request thread's CPU and waiting time in words."""
    title = "Request still running" if slow.in_flight else "Slow request"
    return (
        f"<h1>{escape(title)}: {escape(slow.facts.method)} "
        f"{escape(slow.facts.route_key)}</h1>"
        f'<p class="wpm-url">{escape(masked_url)}</p>'
        + _facts_line(slow)
        + '<div class="wpm-cards">'
        + _duration_card(slow)
        + _cpu_card(slow.profile, cpu_note)
        + _spans_card(slow.duration_seconds, spans)
        + "</div>"
        + '<div class="wpm-cards">'
        + _frames_card(hot, slow.profile)
        + _slowest_card(spans)
        + "</div>"
    )


def _facts_line(slow: SlowRequest) -> str:
    status = slow.facts.status if slow.facts.status is not None else "not finished"
    facts = [
        f"service <b>{escape(slow.service)}</b>",
        f"status <b>{escape(status)}</b>",
        f"started {escape(slow.started_at.isoformat(timespec='milliseconds'))}",
        f"trace {link(slow.trace_url, 'open the trace')}"
        if slow.trace_url
        else f"trace id <code>{escape(slow.trace_id)}</code>",
    ]
    return f'<p class="wpm-facts">{" · ".join(facts)}</p>'


def _card(title: str, body: str, wide: bool = False) -> str:
    cls = "wpm-card wpm-wide" if wide else "wpm-card"
    return f'<div class="{cls}"><h2>{escape(title)}</h2>{body}</div>'


def _duration_card(slow: SlowRequest) -> str:
    duration, threshold = slow.duration_seconds, slow.threshold_seconds
    counting = " and counting" if slow.in_flight else ""
    times = f" · {duration / threshold:.1f}× the threshold" if threshold > 0 else ""
    scale = max(duration, threshold)
    within = min(duration, threshold)
    segments = [
        ("wpm-within", within, f"{duration_text(within)} within the threshold"),
        ("wpm-over", duration - within, f"{duration_text(duration - within)} over it"),
    ]
    body = (
        f'<p class="wpm-big">{duration_text(duration)}{counting}</p>'
        + bar(segments, scale, marker=threshold)
        + f'<p class="wpm-note">threshold {duration_text(threshold)}{times}</p>'
    )
    return _card("Duration", body)


def _cpu_card(profile: Profile, note: str) -> str:
    cpu, waiting = profile.cpu_seconds, profile.wait_seconds
    if cpu is None or waiting is None:
        body = f'<p class="wpm-big wpm-dim">not measured</p><p class="wpm-note">{escape(note)}</p>'
        return _card("CPU vs waiting", body)
    segments = [
        ("wpm-cpu", cpu, f"CPU {duration_text(cpu)}"),
        ("wpm-wait", waiting, f"waiting {duration_text(waiting)}"),
    ]
    body = (
        f'<p class="wpm-big">CPU {duration_text(cpu)}'
        f' <span class="wpm-dim">· waiting {duration_text(waiting)}</span></p>'
        + bar(segments, cpu + waiting)
        + f'<p class="wpm-note">{escape(note)}</p>'
    )
    return _card("CPU vs waiting", body)


def _spans_card(duration: float, spans: SpanSummary) -> str:
    if not spans.count:
        body = (
            '<p class="wpm-big wpm-dim">no spans</p>'
            '<p class="wpm-note">No span of this trace ended while the request ran.</p>'
        )
        return _card("Time in spans", body)
    by_kind = spans.seconds_by_kind
    outside = max(0.0, duration - sum(by_kind.values()))
    segments = [
        (f"wpm-{kind}", seconds, f"{KIND_NAMES[kind]} {duration_text(seconds)}")
        for kind, seconds in by_kind.items()
    ]
    segments.append(("wpm-rest", outside, f"outside spans {duration_text(outside)}"))
    shown = {kind: seconds for kind, seconds in by_kind.items() if seconds > 0} or by_kind
    legend = " ".join(
        f'<span class="wpm-key"><i class="wpm-{kind}"></i>{escape(KIND_NAMES[kind])} '
        f"<b>{duration_text(seconds)}</b></span>"
        for kind, seconds in shown.items()
    )
    count = f"{spans.count} span{'s' if spans.count != 1 else ''}"
    if spans.not_kept:
        count += f" ({spans.not_kept} past the first {len(spans.spans)} not shown)"
    body = (
        f'<p class="wpm-legend">{legend}</p>'
        + bar(segments, duration)
        + f'<p class="wpm-note"><a href="#otel-wpm-spans">{escape(count)} below</a></p>'
    )
    return _card("Time in spans", body)


def _frames_card(hot: Sequence[HotFrame], profile: Profile) -> str:
    if not hot:
        return _card("Where the time went", '<p class="none">no samples</p>', wide=True)
    split = cpu_and_wait_by_function(profile)
    head = "<tr><th>function</th><th>time</th><th>CPU</th><th>waiting</th><th>where</th></tr>"
    rows = []
    for frame in hot[:TOP_FRAMES]:
        cpu, waiting = split.get((frame.function, frame.location), (None, None))
        rows.append(
            f"<tr><td><code>{escape(frame.function)}</code></td>"
            f"<td><b>{frame.seconds:.3f} s</b> ({frame.share:.0%})</td>"
            f"<td>{_seconds(cpu)}</td><td>{_seconds(waiting)}</td>"
            f'<td class="wpm-dim">{escape(frame.location)}</td></tr>'
        )
    table = f'<table class="hot">{head}{"".join(rows)}</table>'
    note = f'<p class="wpm-note">{escape(_split_note(profile, bool(split)))}</p>'
    return _card("Where the time went", table + note, wide=True)


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _split_note(profile: Profile, split: bool) -> str:
    if split:
        return (
            "CPU: the request thread ran. Waiting: it did not (I/O, sleep, a lock, "
            "or the GIL held by another thread)."
        )
    if profile.engine == "pyinstrument":
        return "The pyinstrument engine measures the request's CPU time, not each function's."
    return "CPU time not measured on this platform."


def _slowest_card(spans: SpanSummary) -> str:
    if not spans.slowest:
        return _card("Slowest spans", '<p class="none">none</p>', wide=True)
    rows = "".join(
        f'<li><span class="wpm-tag wpm-{span.kind}">{escape(span.kind)}</span> '
        f"<b>{duration_text(span.duration_seconds)}</b> "
        f'<span class="wpm-dim">at +{duration_text(span.start_seconds)}</span>'
        f"<br><code>{escape(span.description)}</code></li>"
        for span in spans.slowest
    )
    return _card("Slowest spans", f'<ol class="wpm-list">{rows}</ol>', wide=True)
