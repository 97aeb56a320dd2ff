"""The HTML report of one slow request, read top-down.

Usage::

    hot = hot_frames(slow.profile.session)        # also what the alert shows
    spans = summarise_spans(slow.spans, slow.start_time, slow.duration_seconds, masker)
    page = render_report(slow, masker, hot, spans)  # a str holding the whole page

The page, from the top: a summary (:mod:`.summary`: duration against the
threshold, CPU against waiting, time in spans, the hottest functions and the
slowest spans); pyinstrument's profile (call stack and timeline, its own HTML
renderer); the request's spans as a waterfall (:mod:`.waterfall`); then the
request details (parameters, headers, ids, system), collapsed. Everything taken
from the request is masked (:mod:`otel_wpm.masking`) and HTML-escaped, and the
page loads nothing from the network (:mod:`.offline`).
"""

from __future__ import annotations

import json
import os
import platform
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Optional

from pyinstrument.renderers import HTMLRenderer

from ..alerting.alert import HotFrame
from ..capture.loops.waits import HeldLoop, LoopHolder
from ..capture.route import matched_no_route
from ..capture.semconv import HttpFacts
from ..masking import SecretMasker
from .markup import duration_text, escape, link, table
from .offline import offline
from .params import RequestParams, request_params
from .profile import Profile
from .report_format import metadata_element
from .slow_request import SlowRequest
from .spans import SpanSummary, summarise_spans
from .summary import summary_section
from .waterfall import waterfall_section

_PROFILE_ANCHOR = '<div id="app"></div>'
_EMPTY_PAGE = (
    "<!DOCTYPE html><html><head><meta charset='utf-8'><title>otel-wpm report</title>"
    f"</head><body>{_PROFILE_ANCHOR}</body></html>"
)


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
    slow: SlowRequest,
    masker: SecretMasker,
    hot: Sequence[HotFrame] = (),
    spans: Optional[SpanSummary] = None,
) -> dict[str, Any]:
    """The facts the report server lists; also embedded in the report as JSON."""
    meta = {
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
    if spans is not None and spans.count:
        meta.update(spans.metadata())
    return meta


def _profile_section(profile: Profile) -> str:
    note = f'<p class="wpm-note">{escape(_coverage_text(profile))}</p>'
    if profile.session is None:
        return (
            '<section class="wpm"><h2>Profile</h2>'
            f"<p>No stack samples were taken for this request.</p>{note}</section>"
        )
    # pyinstrument's viewer fills its containing block; give it one of its own
    return (
        f'<section class="wpm wpm-profile-head"><h2>Profile</h2>{note}</section>'
        f'<div id="otel-wpm-profile">{_PROFILE_ANCHOR}</div>'
    )


def _ids_section(slow: SlowRequest, masked_url: str) -> str:
    rows: list[tuple[str, Any]] = [
        ("Service", slow.service),
        ("Method", slow.facts.method),
        ("URL", masked_url),
        ("Route", _route_text(slow.facts)),
        ("Status", slow.facts.status if slow.facts.status is not None else "(not finished)"),
        ("Duration", f"{slow.duration_seconds:.3f} s (threshold {slow.threshold_seconds:.3f} s)"),
        ("Started", slow.started_at.isoformat()),
        ("Trace ID", slow.trace_id),
        ("Span ID", slow.span_id),
        ("Trace", link(slow.trace_url, "open the trace")),
        ("Request thread", cpu_text(slow.profile)),
    ]
    return "<h3>Request</h3>" + table(rows, frozenset({"Trace"}))


def _route_text(facts: HttpFacts) -> str:
    if facts.route or matched_no_route(facts.route, facts.status):
        return facts.route_key
    return f"{facts.route_key} (no route template: ids in the path shown as {{id}})"


def _held_loop_section(held: HeldLoop, masker: SecretMasker) -> str:
    """Who held the event loop while this (asyncio) request was not running on it."""
    intro = (
        f"While this request was not running, other code held its event loop for "
        f"{duration_text(held.held_seconds)}; it was ready to run and waiting for the loop "
        f"for {duration_text(held.ready_seconds)}. An await that completes while the loop "
        "is held resumes only once the holder lets go."
    )
    rows = "".join(
        f"<tr><td>{escape(_holder_name(holder, masker))}</td><td>{escape(holder.function)}</td>"
        f"<td>{duration_text(seconds)}</td></tr>"
        for holder, seconds in held.holders
    )
    listed = (
        "<table class='held-loop'><tr><th>held by</th><th>running</th><th>for</th></tr>"
        f"{rows}</table>"
        if rows
        else "<p class='none'>nothing else held the loop</p>"
    )
    return (
        f"<section class='wpm' id='otel-wpm-loop'><h2>Waiting for the loop</h2>"
        f"<p class='note'>{escape(intro)}</p>{listed}</section>"
    )


def _holder_name(holder: LoopHolder, masker: SecretMasker) -> str:
    if holder.request is not None:
        method, _, route = holder.request.partition(" ")
        return f"request {method} {masker.mask_url(route)} (trace {holder.trace_id})"
    if holder.task is not None:
        return f"task {holder.task}()"
    return "a callback"


def _params_section(params: RequestParams) -> str:
    parts = ["<h3>Query parameters</h3>", table(params.query)]
    parts += ["<h3>Form fields</h3>", table(params.form)]
    if params.has_json:
        pretty = json.dumps(params.json_body, indent=2, ensure_ascii=False, default=str)
        parts += ["<h3>JSON body</h3>", f"<pre>{escape(pretty)}</pre>"]
    parts += [f"<p class='note'>{escape(params.body_note)}</p>", "<h3>Headers</h3>"]
    parts.append(table(params.headers))
    return "".join(parts)


def _system_section(now: datetime) -> str:
    rows: list[tuple[str, Any]] = [
        ("Host", socket.gethostname()),
        ("Process", os.getpid()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Server time", now.isoformat()),
    ]
    return "<h3>System</h3>" + table(rows)


_STYLE = """<style>
.wpm{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:1em 1.5em;
 color:#1f2328;background:#fff}
.wpm h1{font-size:20px;margin:0 0 .1em}.wpm h2{font-size:15px;margin:0 0 .4em}
.wpm h3{font-size:14px;margin:1em 0 .3em}
.wpm table{border-collapse:collapse;margin:.3em 0}
.wpm th{text-align:left;padding:2px 12px 2px 0;color:#57606a;vertical-align:top;font-weight:600}
.wpm td{padding:2px 0;word-break:break-all}
.wpm .hot td{padding:2px 12px 2px 0;word-break:normal}
.wpm pre{background:#f6f8fa;padding:.5em;max-height:20em;overflow:auto}
.wpm code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.wpm .none,.wpm .note,.wpm-note,.wpm-dim{color:#6e7781}.wpm-note{margin:.3em 0 0;font-size:13px}
.wpm-url{margin:0 0 .2em;color:#57606a;word-break:break-all}
.wpm-facts{margin:0 0 1em;font-size:13px;color:#57606a}
.wpm-cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:12px}
.wpm-card{flex:1 1 240px;border:1px solid #d0d7de;border-radius:8px;padding:10px 14px}
.wpm-card.wpm-wide{flex:1 1 420px}
.wpm-big{font-size:20px;font-weight:600;margin:0 0 .35em}
.wpm-bar{position:relative;display:flex;height:14px;border-radius:4px;background:#eaeef2;
 overflow:visible}
.wpm-bar>span:first-child{border-radius:4px 0 0 4px}
.wpm-marker{position:absolute;top:-4px;bottom:-4px;width:2px;background:#1f2328}
.wpm-within{background:#8c959f}.wpm-over{background:#cf222e}
.wpm-cpu{background:#0969da}.wpm-wait{background:#afb8c1}
.wpm-db{background:#8250df}.wpm-http{background:#1a7f37}.wpm-other{background:#bc4c00}
.wpm-rest{background:#eaeef2}
.wpm-legend{margin:0 0 .45em;font-size:13px}
.wpm-key{margin-right:12px;white-space:nowrap}
.wpm-key i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.wpm-list{margin:0;padding-left:1.3em}.wpm-list li{margin:.15em 0 .35em}
.wpm-tag{display:inline-block;color:#fff;border-radius:3px;padding:0 5px;font-size:12px;
 font-weight:600}
.wpm-profile-head{padding-bottom:.5em}
#otel-wpm-profile{position:relative;height:65vh;min-height:420px}
.wpm-waterfall{width:100%;font-size:13px}
.wpm-waterfall th,.wpm-waterfall td{padding:3px 8px 3px 0;border-bottom:1px solid #eaeef2;
 vertical-align:top;white-space:nowrap;word-break:normal}
.wpm-waterfall td.wpm-name{white-space:normal;overflow-wrap:anywhere;min-width:20em}
.wpm-details{color:#57606a;font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.wpm-attr{color:#8c959f}
.wpm-axis{width:35%}.wpm-scale{display:flex;justify-content:space-between;font-weight:400}
.wpm-track{position:relative;height:12px;margin-top:3px;background:#f6f8fa}
.wpm-track span{position:absolute;top:0;bottom:0;border-radius:2px}
.wpm-error{color:#cf222e;font-weight:600}
details.wpm>summary{cursor:pointer;font-weight:600;font-size:15px}
.wpm .held-loop td{padding:2px 16px 2px 0;word-break:normal}
</style>"""


def render_report(
    slow: SlowRequest,
    masker: SecretMasker,
    hot: Sequence[HotFrame],
    spans: Optional[SpanSummary] = None,
    now: Optional[datetime] = None,
) -> str:
    """The complete HTML page for ``slow``; ``hot`` is ``hot_frames`` of its profile and
    ``spans`` what its spans add up to (worked out here when not given)."""
    now = now or datetime.now(timezone.utc)
    if spans is None:
        spans = summarise_spans(
            slow.spans, slow.start_time, slow.duration_seconds, masker, slow.spans_not_kept
        )
    masked_url = masker.mask_url(slow.facts.url)
    content = (
        # first, so that readers find it in the first bytes of the file
        metadata_element(metadata(slow, masker, hot, spans))
        + _STYLE
        + '<section id="otel-wpm" class="wpm">'
        + summary_section(slow, hot, spans, masked_url, cpu_text(slow.profile))
        + "</section>"
        + (_held_loop_section(slow.held_loop, masker) if slow.held_loop is not None else "")
        + _profile_section(slow.profile)
        + '<section class="wpm">'
        + waterfall_section(spans, slow.duration_seconds)
        + "</section>"
        + '<details class="wpm" id="otel-wpm-details"><summary>Request details</summary>'
        + _ids_section(slow, masked_url)
        + _params_section(request_params(slow.raw_request, masker))
        + _system_section(now)
        + "</details>"
    )
    page = _EMPTY_PAGE
    if slow.profile.session is not None:
        page = HTMLRenderer().render(slow.profile.session)
    return offline(page).replace(_PROFILE_ANCHOR, content, 1)
