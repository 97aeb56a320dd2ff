"""Small HTML pieces the report is made of: escaped text, tables, bars, durations.

Usage::

    from otel_wpm.reporting.markup import bar, duration_text, escape, table

    table([("Host", "web-1")])                       # <table> of escaped rows
    bar([("wpm-db", 0.4, "database"), ("wpm-rest", 0.6, "outside spans")], total=1.0)
    duration_text(0.0123)                            # "12.3 ms"

Every value is escaped here unless its caller says it is already HTML.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Optional


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def link(url: Optional[str], text: str) -> str:
    """A link for a URL the page may follow (http, https, or on this server); else the text."""
    if not url:
        return "not configured"
    if not url.startswith(("http://", "https://", "/")):
        return escape(url)
    return f'<a href="{escape(url)}">{escape(text)}</a>'


def table(rows: Sequence[tuple[str, Any]], raw_html_keys: frozenset[str] = frozenset()) -> str:
    if not rows:
        return "<p class='none'>none</p>"
    cells = "".join(
        f"<tr><th>{escape(k)}</th><td>{v if k in raw_html_keys else escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table>{cells}</table>"


def duration_text(seconds: float) -> str:
    """``1.23 s``, ``456 ms``, ``12.3 ms``, ``85 µs``: three significant digits at most."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    milliseconds = seconds * 1000
    if milliseconds >= 100:
        return f"{milliseconds:.0f} ms"
    if milliseconds >= 1:
        return f"{milliseconds:.1f} ms"
    return f"{milliseconds * 1000:.0f} µs"


def percent(part: float, whole: float) -> str:
    """``part`` as a CSS percentage of ``whole``, within 0-100."""
    share = part / whole * 100 if whole > 0 else 0.0
    return f"{min(100.0, max(0.0, share)):.2f}%"


def bar(
    segments: Sequence[tuple[str, float, str]], total: float, marker: Optional[float] = None
) -> str:
    """A horizontal bar of ``(css class, seconds, label)`` segments out of ``total`` seconds.

    ``marker`` draws a line at that many seconds (the threshold). Labels show on hover
    and are read out by screen readers.
    """
    parts = "".join(
        f'<span class="{cls}" style="width:{percent(seconds, total)}" '
        f'title="{escape(label)}"></span>'
        for cls, seconds, label in segments
        if seconds > 0
    )
    if marker is not None:
        parts += f'<span class="wpm-marker" style="left:{percent(marker, total)}"></span>'
    summary = ", ".join(f"{label}" for _, seconds, label in segments if seconds > 0)
    return f'<div class="wpm-bar" role="img" aria-label="{escape(summary)}">{parts}</div>'
