"""A request's spans as a waterfall on its time axis (HTML).

Usage::

    html = waterfall_section(spans, duration_seconds)

One row per span, in trace order (children indented under their parent): start
offset, duration, kind, name and the attributes that say what happened, a bar
placed on the request's time axis, and the status. The records come masked
(:mod:`.spans`); everything is escaped here.
"""

from __future__ import annotations

from .markup import duration_text, escape, percent
from .spans import SpanRecord, SpanSummary

_MIN_BAR = 0.002  # of the axis: a 0.1 ms span in a 2 s request still shows


def waterfall_section(spans: SpanSummary, duration: float) -> str:
    title = '<h2 id="otel-wpm-spans">Spans</h2>'
    if not spans.count:
        return title + (
            '<p class="none">No span of this trace ended while the request ran. Spans come '
            "from OpenTelemetry instrumentations (database drivers, HTTP clients) or your "
            "own tracer.</p>"
        )
    note = f"{len(spans.spans)} spans of this trace ended while the request ran"
    if spans.not_kept:
        note += (
            f"; {spans.not_kept} more ended after the first {len(spans.spans)} and are not shown"
        )
    head = (
        "<thead><tr><th>start</th><th>duration</th><th>kind</th><th>span</th>"
        '<th class="wpm-axis"><div class="wpm-scale">'
        f"<span>0</span><span>{duration_text(duration)}</span></div></th>"
        "<th>status</th></tr></thead>"
    )
    rows = "".join(_row(span, duration) for span in spans.spans)
    return (
        title
        + f'<p class="wpm-note">{escape(note)}.</p>'
        + f'<table class="wpm-waterfall">{head}<tbody>{rows}</tbody></table>'
    )


def _row(span: SpanRecord, duration: float) -> str:
    left = min(span.start_seconds, duration)
    width = max(min(span.duration_seconds, duration - left), duration * _MIN_BAR)
    details = " · ".join(
        f'<span class="wpm-attr">{escape(label)}</span> {escape(value)}'
        for label, value in span.details
    )
    status = (
        f'<span class="wpm-error">{escape(span.error)}</span>' if span.error is not None else "ok"
    )
    return (
        f"<tr><td>+{duration_text(span.start_seconds)}</td>"
        f"<td>{duration_text(span.duration_seconds)}</td>"
        f'<td><span class="wpm-tag wpm-{span.kind}">{escape(span.kind)}</span> '
        f'<span class="wpm-dim">{escape(span.span_kind)}</span></td>'
        f'<td class="wpm-name" style="padding-left:{min(span.depth, 12) * 14 + 4}px">'
        f"<b>{escape(span.name)}</b>"
        + (f'<div class="wpm-details">{details}</div>' if details else "")
        + "</td>"
        f'<td class="wpm-axis"><div class="wpm-track"><span class="wpm-{span.kind}" '
        f'style="left:{percent(left, duration)};width:{percent(width, duration)}">'
        "</span></div></td>"
        f"<td>{status}</td></tr>"
    )
