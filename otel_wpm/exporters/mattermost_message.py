"""The Mattermost message for an alert: markdown that request text cannot break, within limits.

Usage::

    from otel_wpm.exporters.mattermost_message import format_markdown

    message = format_markdown(alert)   # at most MAX_MESSAGE_CHARS characters

Request-derived text (URL, route, host...) goes in code spans, so a path like
``/@channel`` can neither notify anyone nor inject markdown. Each such field is
cut to ``MAX_FIELD_CHARS`` (a 20,000-character query still posts); the attached
report keeps it whole.
"""

from __future__ import annotations

from ..alerting.alert import Alert, HotFrame, SlowSpan

#: Mattermost refuses a post whose message is longer (400).
MAX_MESSAGE_CHARS = 16_383
MAX_FIELD_CHARS = 1_000
MAX_HOT_FRAMES = 5
SHORTENED_NOTE = "_Long fields are shortened here; the attached report has them in full._"


def format_markdown(alert: Alert) -> str:
    """The message for ``alert``, never longer than :data:`MAX_MESSAGE_CHARS`."""
    lines = [
        f"#### {_title(alert)}",
        f"**Service:** {_code(alert.service)}",
        f"**Request:** {_code(f'{alert.method} {alert.route}')}",
        f"**URL:** {_code(alert.url)}",
        f"**Duration:** {_duration(alert)}",
        f"**Status:** {_status(alert)}",
        f"**Host:** {_code(alert.host)}",
        f"**Trace ID:** {_code(alert.trace_id)}",
    ]
    links = [
        f"[{label}]({_link(url)})"
        for label, url in (("trace", alert.trace_url), ("report", alert.report_url))
        if url
    ]
    if links:
        lines.append("**Links:** " + " · ".join(links))
    if alert.suppressed_since_last > 0:
        count = alert.suppressed_since_last
        noun = "alert" if count == 1 else "alerts"
        lines.append(f"_{count} similar {noun} suppressed since the last one_")
    if alert.slowest_span is not None:
        lines.append(f"**Slowest span:** {_slow_span(alert.slowest_span)}")
    if alert.hot_frames:
        lines.append("**Where the time went:**")
        lines.extend(_hot_frame_line(frame) for frame in alert.hot_frames[:MAX_HOT_FRAMES])
    return _within_limit(lines)


def _within_limit(lines: list[str]) -> str:
    """Join the lines; when a field was cut or the whole is too long, say so."""
    shortened = any(_CUT_SPAN in line for line in lines)
    # Whole lines go, from the end: cutting inside one could leave a code span
    # open and let the rest of its text act as markdown.
    while len("\n".join([*lines, SHORTENED_NOTE])) > MAX_MESSAGE_CHARS:
        lines.pop()
        shortened = True
    return "\n".join([*lines, SHORTENED_NOTE] if shortened else lines)


def _title(alert: Alert) -> str:
    if alert.is_test:
        return ":white_check_mark: otel-wpm test alert"
    if alert.in_flight:
        return ":rotating_light: Request still running"
    return ":warning: Slow request"


def _duration(alert: Alert) -> str:
    running = " and counting" if alert.in_flight else ""
    return f"{alert.duration_seconds:.2f} s{running} (threshold {alert.threshold_seconds:.2f} s)"


def _status(alert: Alert) -> str:
    if alert.status is not None:
        return str(alert.status)
    return "still running" if alert.in_flight else "unknown"


def _hot_frame_line(frame: HotFrame) -> str:
    return (
        f"- {_code(frame.function)} — {_code(frame.location)} — "
        f"{frame.seconds:.2f} s — {frame.share * 100:.0f} %"
    )


def _slow_span(span: SlowSpan) -> str:
    return f"{_code(span.description)} — {span.kind} — {span.seconds:.2f} s"


#: Ends a code span that was cut. Request text has no backticks left, so only a cut makes this.
_CUT_SPAN = "`…"


def _code(text: str) -> str:
    """An inline code span that the text cannot close or break, at most MAX_FIELD_CHARS long."""
    flat = " ".join(text.split()).replace("`", "'")
    if len(flat) > MAX_FIELD_CHARS:
        return f"`{flat[:MAX_FIELD_CHARS]}{_CUT_SPAN}"
    return f"`{flat}`" if flat else "—"


def _link(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
