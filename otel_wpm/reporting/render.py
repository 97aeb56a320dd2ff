"""The HTML report of one slow request: who, what, how slow, and pyinstrument's profile.

Usage::

    hot = hot_frames(slow.profile.session)        # also what the alert shows
    page = render_report(slow, masker, hot)       # a str holding the whole page

Everything taken from the request is masked (:mod:`otel_wpm.masking`) and
HTML-escaped here. The profile is rendered by pyinstrument's own HTML renderer;
our header is placed above it in the same page.
"""

from __future__ import annotations

import html
import json
import os
import platform
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Optional

from pyinstrument.renderers import HTMLRenderer

from ..alerting.alert import HotFrame
from ..capture.route import matched_no_route
from ..capture.semconv import HttpFacts
from ..masking import SecretMasker
from .params import RequestParams, request_params
from .profile import Profile, cpu_and_wait_by_function
from .report_format import metadata_element
from .slow_request import SlowRequest

_PROFILE_ANCHOR = '<div id="app"></div>'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _link(url: Optional[str], text: str) -> str:
    if not url:
        return "not configured"
    if not url.startswith(("http://", "https://", "/")):
        return _e(url)
    return f'<a href="{_e(url)}">{_e(text)}</a>'


def _table(rows: list[tuple[str, Any]], raw_html_keys: frozenset[str] = frozenset()) -> str:
    if not rows:
        return "<p class='none'>none</p>"
    cells = "".join(
        f"<tr><th>{_e(k)}</th><td>{v if k in raw_html_keys else _e(v)}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _coverage_text(profile: Profile) -> str:
    engine = "pyinstrument profiler" if profile.engine == "pyinstrument" else "stack sampler"
    return (
        f"{profile.covered_seconds:.3f} s of {profile.duration_seconds:.3f} s "
        f"({profile.coverage:.0%}) profiled by the {engine}"
    )


def cpu_text(profile: Profile) -> str:
    """ "CPU x s, waiting y s" of the request thread, or why it is not known."""
    cpu, wait = profile.cpu_seconds, profile.wait_seconds
    if cpu is None or wait is None:
        return "CPU time not measured on this platform"
    return f"CPU {cpu:.3f} s, waiting {wait:.3f} s (over {cpu + wait:.3f} s measured)"


def _rounded(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, 6)


def metadata(
    slow: SlowRequest, masker: SecretMasker, hot: Sequence[HotFrame] = ()
) -> dict[str, Any]:
    """The facts the report server lists; also embedded in the report as JSON."""
    return {
        "service": slow.service,
        "host": slow.host,
        "method": slow.facts.method,
        "route": slow.facts.route_key,
        "url": masker.mask_url(slow.facts.url),
        "status": slow.facts.status,
        "duration_seconds": round(slow.duration_seconds, 6),
        "cpu_seconds": _rounded(slow.profile.cpu_seconds),
        "wait_seconds": _rounded(slow.profile.wait_seconds),
        "threshold_seconds": slow.threshold_seconds,
        "start_time": slow.started_at.isoformat(),
        "trace_id": slow.trace_id,
        "span_id": slow.span_id,
        "trace_url": slow.trace_url,
        "in_flight": slow.in_flight,
        "top_frames": [
            {"function": f.function, "location": f.location, "seconds": round(f.seconds, 6)}
            for f in hot
        ],
    }


def _summary_section(slow: SlowRequest, meta: dict[str, Any]) -> str:
    title = "Request still running" if slow.in_flight else "Slow request"
    rows: list[tuple[str, Any]] = [
        ("Service", meta["service"]),
        ("Method", meta["method"]),
        ("URL", meta["url"]),
        ("Route", _route_text(slow.facts)),
        ("Status", meta["status"] if meta["status"] is not None else "(not finished)"),
        ("Duration", f"{slow.duration_seconds:.3f} s (threshold {slow.threshold_seconds:.3f} s)"),
        ("Started", meta["start_time"]),
        ("Trace ID", slow.trace_id),
        ("Span ID", slow.span_id),
        ("Trace", _link(slow.trace_url, "open the trace")),
        ("Profile", _coverage_text(slow.profile)),
        ("Request thread", cpu_text(slow.profile)),
    ]
    return f"<h1>{_e(title)}: {_e(meta['method'])} {_e(meta['route'])}</h1>" + _table(
        rows, frozenset({"Trace"})
    )


def _route_text(facts: HttpFacts) -> str:
    if facts.route or matched_no_route(facts.route, facts.status):
        return facts.route_key
    return f"{facts.route_key} (no route template: ids in the path shown as {{id}})"


def _hot_frames_section(hot: Sequence[HotFrame], profile: Profile) -> str:
    if not hot:
        return "<h2>Where the time went</h2>" + _table([])
    split = cpu_and_wait_by_function(profile)
    head = "<tr><th>Function</th><th>Time</th><th>CPU</th><th>Waiting</th><th>Where</th></tr>"
    rows = []
    for frame in hot:
        cpu, wait = split.get((frame.function, frame.location), (None, None))
        cells = (
            frame.function,
            f"{frame.seconds:.3f} s ({frame.share:.0%})",
            "-" if cpu is None else f"{cpu:.3f} s",
            "-" if wait is None else f"{wait:.3f} s",
            frame.location,
        )
        rows.append("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>")
    table = f"<table class='hot'>{head}{''.join(rows)}</table>"
    note = f"<p class='note'>{_e(_split_note(profile, split))}</p>"
    return f"<h2>Where the time went</h2>{table}{note}"


def _split_note(profile: Profile, split: dict[tuple[str, str], tuple[float, float]]) -> str:
    if split:
        return (
            "CPU: the request thread ran. Waiting: it did not (I/O, sleep, a lock, "
            "or the GIL held by another thread)."
        )
    if profile.engine == "pyinstrument":
        return "The pyinstrument engine measures the request's CPU time, not each function's."
    return "CPU time not measured on this platform."


def _request_section(params: RequestParams) -> str:
    parts = ["<h2>Request</h2>", "<h3>Query parameters</h3>", _table(params.query)]
    parts += ["<h3>Form fields</h3>", _table(params.form)]
    if params.has_json:
        pretty = json.dumps(params.json_body, indent=2, ensure_ascii=False, default=str)
        parts += ["<h3>JSON body</h3>", f"<pre>{_e(pretty)}</pre>"]
    parts += [f"<p class='note'>{_e(params.body_note)}</p>", "<h3>Headers</h3>"]
    parts.append(_table(params.headers))
    return "".join(parts)


def _system_section(now: datetime) -> str:
    rows: list[tuple[str, Any]] = [
        ("Host", socket.gethostname()),
        ("Process", os.getpid()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Server time", now.isoformat()),
    ]
    return "<h2>System</h2>" + _table(rows)


_STYLE = """<style>
#otel-wpm{font:14px/1.4 system-ui,sans-serif;margin:0;padding:1em 1.5em;color:#222;background:#fff}
#otel-wpm table{border-collapse:collapse;margin:.3em 0}
#otel-wpm th{text-align:left;padding:2px 12px 2px 0;color:#555;vertical-align:top}
#otel-wpm td{padding:2px 0;word-break:break-all}
#otel-wpm .hot td{padding:2px 12px 2px 0}
#otel-wpm pre{background:#f4f4f4;padding:.5em;max-height:20em;overflow:auto}
#otel-wpm .none,#otel-wpm .note{color:#777}
#otel-wpm-profile{position:relative;height:85vh;min-height:480px}
</style>"""


def render_report(
    slow: SlowRequest,
    masker: SecretMasker,
    hot: Sequence[HotFrame],
    now: Optional[datetime] = None,
) -> str:
    """The complete HTML page for ``slow``; ``hot`` is ``hot_frames`` of its profile."""
    now = now or datetime.now(timezone.utc)
    meta = metadata(slow, masker, hot)
    header = (
        _STYLE
        + metadata_element(meta)
        + '<section id="otel-wpm">'
        + _summary_section(slow, meta)
        + _hot_frames_section(hot, slow.profile)
        + _request_section(request_params(slow.raw_request, masker))
        + _system_section(now)
        + "<h2>Profile</h2></section>"
    )
    if slow.profile.session is None:
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>otel-wpm report</title>"
            f"</head><body>{header}<p>No stack samples were taken for this request.</p>"
            "</body></html>"
        )
    profile_page = HTMLRenderer().render(slow.profile.session)
    # pyinstrument's viewer fills its containing block; give it one below our header
    viewer = f'<div id="otel-wpm-profile">{_PROFILE_ANCHOR}</div>'
    return profile_page.replace(_PROFILE_ANCHOR, header + viewer, 1)
