"""The report server's HTML pages: the index, a trace's reports, and messages.

Usage::

    from otel_wpm.server.pages import IndexFilter, index_page

    wanted = IndexFilter.from_query("route=users&min_duration=1.5")   # ValueError if bad
    body = index_page(index.entries(), wanted, root="")               # UTF-8 bytes

Every value from a report or a request is HTML-escaped. ``root`` is where the
application is mounted (the WSGI ``SCRIPT_NAME``), so links work under a prefix.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import parse_qs, quote

from .index import Entry

_TRACE_ID_PREFIX = re.compile(r"\A[0-9a-fA-F]{1,32}\Z")

_STYLE = """<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em 1.5em;color:#222}
table{border-collapse:collapse}th,td{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
tr:nth-child(even){background:#f6f6f6}td.num{text-align:right}code{font-size:12px}
form{margin:.5em 0 1em}input{margin-right:1em}.note{color:#666}
</style>"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _http_link(url: Any, text: str) -> str:
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}">{_e(text)}</a>'
    return ""


def report_href(root: str, name: str) -> str:
    return f"{root}/reports/{quote(name)}"


def page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title>{_STYLE}</head><body>"
        f"<h1>{_e(title)}</h1>{body}</body></html>"
    ).encode()


def message_page(title: str, message: str = "", root: Optional[str] = None) -> bytes:
    """A page with one message and, given ``root``, a link to the index."""
    body = f"<p>{_e(message)}</p>" if message else ""
    if root is not None:
        body += f"<p><a href='{_e(root)}/'>Reports</a></p>"
    return page(title, body)


def _row(entry: Entry, root: str) -> str:
    meta = entry.meta
    duration = entry.duration
    status = meta.get("status")
    if meta.get("in_flight"):
        status_text = "still running"
    else:
        status_text = "" if status is None else str(status)
    trace_id = entry.text("trace_id")
    cells = [
        _e(entry.text("start_time") or entry.file.name[:16]),
        _e(entry.text("method")),
        _e(entry.text("route")),
        _e(status_text),
        _e(f"{duration:.3f} s") if duration is not None else "",
        f'<a href="{_e(root)}/trace/{_e(trace_id)}"><code>{_e(trace_id)}</code></a>',
        f'<a href="{_e(report_href(root, entry.file.name))}">report</a>',
        _http_link(meta.get("trace_url"), "trace"),
    ]
    classes = ["", "", "", "", " class='num'", "", "", ""]
    return "<tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(classes, cells)) + "</tr>"


def _table(entries: list[Entry], root: str) -> str:
    headings = ["Started", "Method", "Route", "Status", "Duration", "Trace ID", "", "Tracing"]
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    return f"<table><tr>{head}</tr>{''.join(_row(entry, root) for entry in entries)}</table>"


@dataclass(frozen=True)
class IndexFilter:
    """What ``/`` was asked to narrow the list to."""

    route: str = ""
    min_duration: Optional[float] = None
    trace_id: str = ""

    @classmethod
    def from_query(cls, query: str) -> IndexFilter:
        """Raises ``ValueError`` with a message fit to show for a bad parameter."""
        params = {key: values[-1].strip() for key, values in parse_qs(query).items()}
        min_duration = None
        if params.get("min_duration"):
            try:
                min_duration = float(params["min_duration"])
            except ValueError:
                raise ValueError("min_duration must be a number of seconds") from None
            if not min_duration >= 0:
                raise ValueError("min_duration must be a number of seconds, 0 or more")
        trace_id = params.get("trace_id", "")
        if trace_id and not _TRACE_ID_PREFIX.match(trace_id):
            raise ValueError("trace_id must be hexadecimal, at most 32 digits")
        return cls(params.get("route", ""), min_duration, trace_id.lower())

    def matches(self, entry: Entry) -> bool:
        if self.route and self.route.lower() not in entry.text("route").lower():
            return False
        if self.min_duration is not None:
            duration = entry.duration
            if duration is None or duration < self.min_duration:
                return False
        return not self.trace_id or entry.text("trace_id").startswith(self.trace_id)

    def form(self, root: str) -> str:
        minimum = "" if self.min_duration is None else f"{self.min_duration:g}"
        return (
            f'<form method="get" action="{_e(root)}/">'
            f'Route <input name="route" value="{_e(self.route)}">'
            f'Min. duration (s) <input name="min_duration" size="6" value="{_e(minimum)}">'
            f'Trace ID <input name="trace_id" size="34" value="{_e(self.trace_id)}">'
            '<input type="submit" value="Filter"></form>'
        )


def index_page(entries: list[Entry], wanted: IndexFilter, root: str) -> bytes:
    shown = [entry for entry in entries if wanted.matches(entry)]
    note = f"{len(shown)} of {len(entries)} reports"
    unreadable = sum(1 for entry in entries if entry.problem)
    if unreadable:
        note += (
            f"; {unreadable} listed by file name only, their metadata could not be read "
            "(the server log names the first)"
        )
    body = wanted.form(root) + f"<p class='note'>{_e(note)}</p>"
    return page("Slow request reports", body + (_table(shown, root) if shown else ""))


def trace_page(trace_id: str, entries: list[Entry], root: str) -> bytes:
    return page(
        f"Reports of trace {trace_id}",
        f"<p>This trace has {len(entries)} reports (for example one written while the "
        "request was still running, and the final one, or one per profiled function).</p>"
        + _table(entries, root),
    )


def no_report_page(trace_id: str, root: str) -> bytes:
    return page(
        "No report for this trace",
        f"<p>There is no report for trace <code>{_e(trace_id)}</code>.</p>"
        "<p>Reports are written only for requests slower than the threshold. This trace may "
        "have been fast, its URL may be excluded from monitoring, the report may not be "
        "written yet, or it may have been removed by retention "
        "(<code>report_max_files</code>, <code>report_max_bytes</code>, "
        "<code>report_max_age_days</code>).</p>"
        f"<p><a href='{_e(root)}/'>All reports</a></p>",
    )
