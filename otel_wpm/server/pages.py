"""The report browser's HTML pages: routes overview, a route, the report list, a trace.

Usage::

    from otel_wpm.server.pages import overview_page, reports_page, route_page

    body = overview_page(summaries, OverviewQuery.from_query("sort=p95"), snapshot, root="")

Each returns the page as UTF-8 bytes. Every value from a report or a request
is HTML-escaped here (route names, like everything in a report, may come from
an attacker). ``root`` is where the application is mounted (the WSGI
``SCRIPT_NAME``), so links work under a prefix. The pages need no script: plots
are inline SVG (:mod:`.plots`) and tables are sorted by links.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import quote, urlencode

from .index import Entry, Snapshot, SortKey
from .listing import ListPage, ListQuery, cursor_text, last_values
from .plots import Dot, bucket_counts, histogram, scatter, seconds_label, sparkline
from .routes import Recurring, RouteKey, RouteSummary, recurring, route_key

ROUTES_PER_PAGE = 50
#: The most reports a route's scatter plot shows (the newest).
SCATTER_DOTS = 400
SPARK_BUCKETS = 40
DASH = "—"

_STYLE = """<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
margin:0;color:#1f2328;background:#fff}
nav{background:#24292f;padding:.55em 1.5em;font-weight:600}
nav a{color:#c9d1d9;text-decoration:none;margin-right:1.4em}nav a.here{color:#fff}
nav span{color:#8b949e;font-weight:400;margin-right:1.4em}
main{padding:.8em 1.5em 2em;max-width:1500px}
h1{font-size:1.45em;margin:.3em 0 .2em;word-break:break-all}
h2{font-size:1.1em;margin:1.6em 0 .5em}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th{text-align:left;font-weight:600;color:#424a53;border-bottom:2px solid #d0d7de;
padding:6px 14px 6px 0;white-space:nowrap;vertical-align:bottom}
td{padding:5px 14px 5px 0;border-bottom:1px solid #eaeef2;vertical-align:middle}
tbody tr:hover td{background:#f6f8fa}
.num{text-align:right;white-space:nowrap}.nowrap{white-space:nowrap}
.route{min-width:12em;max-width:34em;overflow-wrap:anywhere}
.route small{display:block;color:#656d76}
.muted,.note{color:#656d76}.note{margin:.4em 0 .8em}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
form{margin:.6em 0 .4em;display:flex;flex-wrap:wrap;gap:.4em 1em;align-items:center}
input{font:inherit;padding:2px 6px;border:1px solid #d0d7de;border-radius:4px}
input[type=submit]{background:#f6f8fa;cursor:pointer}
.pager{margin:.8em 0}.pager a,.pager span{margin-right:1.2em}
.figures{display:flex;flex-wrap:wrap;gap:.6em 2.2em;margin:.8em 0}
.figures div{display:flex;flex-direction:column}.figures b{font-size:1.25em;font-weight:600}
.figures span{color:#656d76;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:0 2.5em}
svg.plot{display:block;max-width:100%;height:auto}svg.plot circle{fill:#2f6fb3;fill-opacity:.7}
svg.plot a:hover circle{fill:#c2410c;fill-opacity:1}
svg.spark,svg.share{vertical-align:middle}.err{color:#c2410c}
</style>"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _http_link(url: Any, text: str) -> str:
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}">{_e(text)}</a>'
    return ""


def report_href(root: str, name: str) -> str:
    return f"{root}/reports/{quote(name)}"


def route_label(key: RouteKey) -> str:
    return f"{key.method} {key.route}".strip() or "(no route)"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def route_href(root: str, key: RouteKey) -> str:
    return f"{root}/route?" + urlencode(key._asdict())


def when(seconds: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A moment as ``2024-05-01 12:03:00`` (UTC), or in ``fmt``; empty when unknown."""
    if not seconds:
        return ""
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime(fmt)
    except (ValueError, OverflowError, OSError):
        return ""


_MINUTE = "%Y-%m-%d %H:%M"
_DAY = "%Y-%m-%d"


def _seconds(value: Optional[float]) -> str:
    return DASH if value is None else f"{value:.3f} s"


def _percent(share: Optional[float]) -> str:
    return DASH if share is None else f"{share:.0%}"


def page(title: str, body: str, root: Optional[str] = None, here: str = "") -> bytes:
    """A whole page; given ``root``, with the navigation bar (``here`` is the current item)."""
    nav = ""
    if root is not None:
        links = [("routes", "/", "Routes"), ("reports", "/reports", "Reports")]
        nav = (
            "<nav>"
            + "".join(
                f"<a href='{_e(root)}{path}'{' class=here' if key == here else ''}>{label}</a>"
                for key, path, label in links
            )
            + "<span>otel-wpm</span></nav>"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{_e(title)}</title>{_STYLE}</head><body>{nav}"
        f"<main><h1>{_e(title)}</h1>{body}</main></body></html>"
    ).encode()


def message_page(title: str, message: str = "", root: Optional[str] = None) -> bytes:
    """A page with one message and, given ``root``, a link to the index."""
    body = f"<p>{_e(message)}</p>" if message else ""
    if root is not None:
        body += f"<p><a href='{_e(root)}/'>Routes</a></p>"
    return page(title, body, root)


# --- the report list ---------------------------------------------------------------------


def _report_row(entry: Entry, root: str) -> str:
    meta = entry.meta
    status = meta.get("status")
    if meta.get("in_flight"):
        status_text = "still running"
    else:
        status_text = "" if status is None else str(status)
    trace_id = entry.text("trace_id")
    duration = entry.duration
    route = entry.text("route")
    route_cell = _e(route)
    if entry.problem is None:
        route_cell = f'<a href="{_e(route_href(root, route_key(entry)))}">{route_cell}</a>'
    cells = [
        f"<td class='nowrap'>{_e(when(entry.started))}</td>",
        f"<td>{_e(entry.text('host'))}</td>",
        f"<td>{_e(entry.text('method'))}</td>",
        f"<td class='route'>{route_cell}</td>",
        f"<td{' class=err' if isinstance(status, int) and status >= 500 else ''}>"
        f"{_e(status_text)}</td>",
        f"<td class='num'>{_e(f'{duration:.3f} s') if duration is not None else ''}</td>",
        f'<td><a href="{_e(root)}/trace/{_e(trace_id)}"><code>{_e(trace_id)}</code></a></td>',
        f'<td><a href="{_e(report_href(root, entry.file.name))}">report</a></td>',
        f"<td>{_http_link(meta.get('trace_url'), 'trace')}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def reports_table(entries: Sequence[Entry], root: str) -> str:
    head = (
        "<thead><tr><th>Started (UTC)</th><th>Host</th><th>Method</th><th>Route</th><th>Status</th>"
        "<th class='num'>Duration</th><th>Trace ID</th><th></th><th>Tracing</th></tr></thead>"
    )
    rows = "".join(_report_row(entry, root) for entry in entries)
    return f"<table>{head}<tbody>{rows}</tbody></table>"


def _pager(shown: ListPage, link: str) -> str:
    """Links to the newest, newer and older pages; ``link`` is the list's own URL."""
    if shown.newer is None and shown.older is None:
        return ""
    parts = [f"<a href='{_e(link)}'>Newest</a>"]
    if shown.newer is not None:
        parts.append(
            f"<a href='{_e(link)}{_e(_joined(link, 'newer_than', shown.newer))}'>← Newer</a>"
        )
    if shown.older is not None:
        parts.append(
            f"<a href='{_e(link)}{_e(_joined(link, 'older_than', shown.older))}'>Older →</a>"
        )
    return "<p class='pager'>" + "".join(parts) + "</p>"


def _joined(link: str, name: str, key: SortKey) -> str:
    return ("&" if "?" in link else "?") + urlencode({name: cursor_text(key)})


def _filter_form(query: ListQuery, root: str) -> str:
    minimum = "" if query.min_duration is None else f"{query.min_duration:g}"
    return (
        f'<form method="get" action="{_e(root)}/reports">'
        f'<label>Route <input name="route" value="{_e(query.route)}"></label>'
        f'<label>Host <input name="host" size="12" value="{_e(query.host)}"></label>'
        f'<label>Min. duration (s) <input name="min_duration" size="6" value="{_e(minimum)}">'
        f'</label><label>Trace ID <input name="trace_id" size="34" value="{_e(query.trace_id)}">'
        '</label><input type="submit" value="Filter"></form>'
    )


def _unreadable_note(snapshot: Snapshot) -> str:
    if not snapshot.unreadable:
        return ""
    return (
        f"; {snapshot.unreadable} listed by file name only, their metadata could not be read "
        "(the server log names the first)"
    )


def reports_page(
    snapshot: Snapshot, query: ListQuery, shown: ListPage, matching: int, root: str
) -> bytes:
    note = f"{matching} of {len(snapshot)} reports" + _unreadable_note(snapshot)
    if shown.entries:
        note += f"; {len(shown.entries)} shown, newest first"
    filters = query.filter_params()
    link = f"{root}/reports" + (("?" + urlencode(filters)) if filters else "")
    body = _filter_form(query, root) + f"<p class='note'>{_e(note)}</p>"
    if shown.entries:
        body += reports_table(shown.entries, root) + _pager(shown, link)
    return page("Slow request reports", body, root, here="reports")


def trace_page(trace_id: str, entries: list[Entry], root: str) -> bytes:
    return page(
        f"Reports of trace {trace_id}",
        f"<p>This trace has {len(entries)} reports (for example one written while the "
        "request was still running, and the final one, or one per profiled function).</p>"
        + reports_table(entries, root),
        root,
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
        f"<p><a href='{_e(root)}/reports'>All reports</a></p>",
        root,
    )


# --- the routes overview -----------------------------------------------------------------

SORTS = {
    "count": ("most slow requests", lambda s: (s.count, s.p95 or 0.0)),
    "p95": ("slowest p95", lambda s: (s.p95 or 0.0, s.count)),
    "last": ("most recently slow", lambda s: (s.last_seen, s.count)),
}


@dataclass(frozen=True)
class OverviewQuery:
    """What the routes overview was asked for."""

    sort: str = "count"
    route: str = ""
    page: int = 1
    host: str = ""  # exactly; empty: every host
    service: str = ""  # exactly; empty: every service

    @classmethod
    def from_query(cls, query: str) -> OverviewQuery:
        """Raises ``ValueError`` with a message fit to show for a bad parameter."""
        params = last_values(query)
        sort = params.get("sort") or "count"
        if sort not in SORTS:
            raise ValueError("sort must be one of " + ", ".join(SORTS))
        number = params.get("page") or "1"
        if not number.isdigit() or not 1 <= int(number) <= 10**6:
            raise ValueError("page must be a page number, 1 or more")
        return cls(
            sort=sort,
            route=params.get("route", ""),
            page=int(number),
            host=params.get("host", ""),
            service=params.get("service", ""),
        )

    def link(self, root: str, **changes: Any) -> str:
        values = {
            "sort": self.sort,
            "route": self.route,
            "host": self.host,
            "service": self.service,
            "page": self.page,
            **changes,
        }
        params = {key: str(value) for key, value in values.items() if value}
        if params.get("sort") == "count":
            del params["sort"]
        if params.get("page") == "1":
            del params["page"]
        return f"{root}/" + ("?" + urlencode(params) if params else "")


def share_bar(share: Optional[float]) -> str:
    """CPU against waiting as a small bar and a percentage."""
    if share is None:
        return DASH
    cpu = round(share * 60, 1)
    return (
        "<svg class='share' width='60' height='8' role='img'>"
        f"<title>{share:.0%} on CPU, {1 - share:.0%} waiting</title>"
        "<rect width='60' height='8' fill='#d8dee4'/>"
        f"<rect width='{cpu}' height='8' fill='#2f6fb3'/></svg> {share:.0%}"
    )


def _span_share(summary: RouteSummary, kind: str) -> str:
    if not summary.has_span_times:
        return DASH
    return _percent(summary.span_shares.get(kind, 0.0))


def _route_cell(summary: RouteSummary, root: str) -> str:
    key = summary.key
    service = f"<small>{_e(key.service)}</small>" if key.service else ""
    return (
        f"<td class='route'><a href=\"{_e(route_href(root, key))}\">"
        f"{_e(route_label(key))}</a>{service}</td>"
    )


def _overview_row(summary: RouteSummary, axis: tuple[float, float], root: str) -> str:
    counts = bucket_counts(summary.starts, axis[0], axis[1], SPARK_BUCKETS)
    title = (
        f"{summary.count} slow requests from {when(axis[0])} to {when(axis[1])} UTC, "
        f"{SPARK_BUCKETS} bars"
    )
    cells = [
        _route_cell(summary, root),
        f"<td class='num'>{summary.count}</td>",
        f"<td class='num'>{_seconds(summary.p50)}</td>",
        f"<td class='num'>{_seconds(summary.p95)}</td>",
        f"<td class='num'>{_seconds(summary.max)}</td>",
        f"<td class='nowrap'>{share_bar(summary.cpu_share)}</td>",
        f"<td class='num'>{_span_share(summary, 'db')}</td>",
        f"<td class='num'>{_span_share(summary, 'http')}</td>",
        f"<td class='nowrap'>{_e(when(summary.first_seen, _MINUTE))}</td>",
        f"<td class='nowrap'>{_e(when(summary.last_seen, _MINUTE))}</td>",
        f"<td>{sparkline(counts, title)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _sort_heading(query: OverviewQuery, root: str, sort: str, label: str) -> str:
    if query.sort == sort:
        return f"<th class='num'>{label} ▾</th>"
    return f"<th class='num'><a href='{_e(query.link(root, sort=sort, page=1))}'>{label}</a></th>"


def overview_page(
    summaries: Sequence[RouteSummary], query: OverviewQuery, snapshot: Snapshot, root: str
) -> bytes:
    """One row per route, sorted as asked, :data:`ROUTES_PER_PAGE` a page."""
    wanted = query.route.lower()
    shown = [s for s in summaries if wanted in s.key.route.lower()] if wanted else summaries
    ranked = sorted(shown, key=lambda s: s.key)
    ranked.sort(key=SORTS[query.sort][1], reverse=True)
    pages = max(math.ceil(len(ranked) / ROUTES_PER_PAGE), 1)
    start = (min(query.page, pages) - 1) * ROUTES_PER_PAGE
    rows = ranked[start : start + ROUTES_PER_PAGE]
    axis = (
        min((s.first_seen for s in summaries), default=0.0),
        max((s.last_seen for s in summaries), default=0.0),
    )
    note = (
        f"{plural(len(shown), 'route')}, {plural(sum(s.count for s in shown), 'slow request')}"
        f"{_unreadable_note(snapshot)}; sorted by {SORTS[query.sort][0]}"
    )
    form = (
        f"<form method='get' action='{_e(root)}/'>"
        f"<input type='hidden' name='sort' value='{_e(query.sort)}'>"
        f"<label>Route <input name='route' value='{_e(query.route)}'></label>"
        + _choice("service", "Service", query.service, snapshot)
        + _choice("host", "Host", query.host, snapshot)
        + "<input type='submit' value='Filter'></form>"
    )
    head = (
        "<thead><tr><th>Route</th>"
        + _sort_heading(query, root, "count", "Slow requests")
        + "<th class='num'>p50</th>"
        + _sort_heading(query, root, "p95", "p95")
        + "<th class='num'>Max</th><th>On CPU</th><th class='num'>In DB</th>"
        "<th class='num'>In HTTP</th><th>First seen (UTC)</th>"
        + _sort_heading(query, root, "last", "Last seen (UTC)").replace(" class='num'", "")
        + f"<th>Slow requests over time<br><small class='muted'>{_e(when(axis[0], _DAY))} to "
        f"{_e(when(axis[1], _DAY))}</small></th></tr></thead>"
    )
    body = form + f"<p class='note'>{_e(note)}</p>"
    if rows:
        table_rows = "".join(_overview_row(s, axis, root) for s in rows)
        body += f"<table>{head}<tbody>{table_rows}</tbody></table>"
    else:
        body += "<p>No slow requests yet.</p>" if not wanted else "<p>No route matches.</p>"
    if pages > 1:
        body += _route_pager(query, root, pages)
    body += _reading_guide()
    return page("Slow routes", body, root, here="routes")


def _choice(name: str, label: str, chosen: str, snapshot: Snapshot) -> str:
    """A drop-down of the values of metadata field ``name`` in the reports (and "all")."""
    values = sorted({entry.text(name) for entry in snapshot.entries} - {""} | {chosen} - {""})
    if not values:
        return ""
    options = "<option value=''>all</option>" + "".join(
        f"<option{' selected' if value == chosen else ''}>{_e(value)}</option>" for value in values
    )
    return f"<label>{label} <select name='{name}'>{options}</select></label>"


def _route_pager(query: OverviewQuery, root: str, pages: int) -> str:
    current = min(query.page, pages)
    parts = [f"<span>Page {current} of {pages}</span>"]
    if current > 1:
        parts.append(f"<a href='{_e(query.link(root, page=current - 1))}'>← Previous</a>")
    if current < pages:
        parts.append(f"<a href='{_e(query.link(root, page=current + 1))}'>Next →</a>")
    return "<p class='pager'>" + "".join(parts) + "</p>"


def _reading_guide() -> str:
    return (
        "<p class='note'>Each slow request counts once. <b>On CPU</b>: the requests' own CPU "
        "time against their time waiting (I/O, locks, other threads). <b>In DB</b> and "
        "<b>In HTTP</b>: time in database and outgoing HTTP spans against the requests' "
        f"duration. {DASH} where the reports do not tell (written by an older version, or "
        "by an engine that cannot measure it). Times are UTC.</p>"
    )


# --- one route ---------------------------------------------------------------------------


def route_query(query: str) -> RouteKey:
    params = last_values(query)
    return RouteKey(params.get("service", ""), params.get("method", ""), params.get("route", ""))


def _figures(summary: RouteSummary) -> str:
    shares = f"{_span_share(summary, 'db')} / {_span_share(summary, 'http')}"
    figures = [
        ("slow requests", str(summary.count)),
        ("p50", _seconds(summary.p50)),
        ("p95", _seconds(summary.p95)),
        ("max", _seconds(summary.max)),
        ("on CPU", _percent(summary.cpu_share)),
        ("in DB / HTTP spans", shares),
        ("first seen (UTC)", when(summary.first_seen, _MINUTE)),
        ("last seen (UTC)", when(summary.last_seen, _MINUTE)),
    ]
    cells = "".join(
        f"<div><b>{_e(value)}</b><span>{_e(name)}</span></div>" for name, value in figures
    )
    return f"<div class='figures'>{cells}</div>"


def _scatter_section(summary: RouteSummary, root: str) -> str:
    newest = summary.entries[-SCATTER_DOTS:]
    dots = [
        Dot(
            entry.started,
            entry.duration,
            report_href(root, entry.file.name),
            f"{when(entry.started, _MINUTE)}, {entry.duration:.3f} s",
        )
        for entry in newest
        if entry.duration is not None
    ]
    threshold = newest[-1].meta.get("threshold_seconds") if newest else None
    note = "Each dot is a report: open it with a click."
    if threshold:
        note += f" Dashed: the threshold ({seconds_label(threshold)})."
    if len(summary.entries) > SCATTER_DOTS:
        note += f" The newest {SCATTER_DOTS} of {summary.count} reports."
    return (
        "<h2>Duration over time</h2>"
        f"<p class='note'>{_e(note)}</p>{scatter(dots, threshold, width=640)}"
    )


def _histogram_section(summary: RouteSummary) -> str:
    if not summary.durations:
        return ""
    return (
        "<h2>How long they took</h2>"
        f"<p class='note'>{len(summary.durations)} slow requests by duration.</p>"
        + histogram(summary.durations, width=640, height=240)
    )


def _recurring_table(items: list[Recurring], headings: Sequence[str], first_label: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    head += (
        f"<th class='num'>{_e(first_label)}</th><th class='num'>Listed in</th>"
        "<th class='num'>Time in them</th>"
    )
    rows = "".join(
        "<tr>"
        + "".join(f"<td class='route'><code>{_e(part)}</code></td>" for part in item.what)
        + f"<td class='num'>{item.first_in} of {item.reports}</td>"
        f"<td class='num'>{item.listed_in}</td>"
        f"<td class='num'>{_e(seconds_label(item.seconds))}</td></tr>"
        for item in items
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _hot_frames_section(summary: RouteSummary) -> str:
    frames = recurring(summary.entries, "top_frames", ("function", "location"), "seconds")
    body = "<h2>Hot frames</h2>"
    if not frames:
        return body + "<p class='note'>These reports do not list their hot frames.</p>"
    leader = frames[0]
    body += (
        f"<p><code>{_e(leader.what[0])}</code> is the top frame in {leader.first_in} of "
        f"{leader.reports} reports.</p>"
    )
    return body + _recurring_table(frames, ["Function", "Location"], "Top frame in")


def _slow_spans_section(summary: RouteSummary) -> str:
    spans = recurring(summary.entries, "slowest_spans", ("name", "kind"), "duration_seconds")
    if not spans:
        return ""
    return "<h2>Slowest spans</h2>" + _recurring_table(spans, ["Span", "Kind"], "Slowest in")


def route_page(
    summary: Optional[RouteSummary],
    key: RouteKey,
    shown: ListPage,
    root: str,
) -> bytes:
    title = route_label(key)
    if summary is None:
        return page(title, "<p>No slow request of this route is in the directory.</p>", root)
    service = f"<p class='muted'>service {_e(key.service)}</p>" if key.service else ""
    link = route_href(root, key)
    body = (
        service
        + _figures(summary)
        + "<div class='plots'><div>"
        + _scatter_section(summary, root)
        + "</div><div>"
        + _histogram_section(summary)
        + "</div></div>"
        + _hot_frames_section(summary)
        + _slow_spans_section(summary)
        + "<h2>Reports</h2>"
        + reports_table(shown.entries, root)
        + _pager(shown, link)
    )
    return page(title, body, root, here="routes")
