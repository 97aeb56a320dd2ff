"""Bad requests cannot break, change or leak through the monitor (property-based).

One long-lived pair of real werkzeug servers for the module: the app monitored by
otel-wpm, and the same app traced by OpenTelemetry only (the baseline). Every
generated request is sent as raw bytes to both; the app echoes a sha256 of the
body it read. We check that

* the monitored app read exactly what the baseline read (and what we sent),
* nothing went wrong inside the monitor (no otel_wpm warnings, no internal
  errors, every answered request counted),
* a slow request's report is valid HTML in which no secret we sent appears and
  no tag or attribute we injected exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import pytest
from apps.hardening_app import (
    READ_STYLES,
    LogRecords,
    ParsedReport,
    make_app,
    raw_request,
    recording_logs,
    reports_of,
)
from apps.watched import Watched, served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_wpm import Config
from otel_wpm.masking import MASK, TOO_DEEP

CAPTURE_CAP = 4096
THRESHOLD = 0.05
SLOW_SECONDS = "0.08"
INJECTED_TAG = "wpminj"
INJECTED_ATTRIBUTE = "data-wpminj"
INJECTIONS = (
    f"<{INJECTED_TAG}>x</{INJECTED_TAG}>",
    f'"><img {INJECTED_ATTRIBUTE}=1 src=x>',
    f"</script><script {INJECTED_ATTRIBUTE}>alert(1)</script>",
    f"</pre><{INJECTED_TAG}/>",
    f"'><svg {INJECTED_ATTRIBUTE} onload=alert(1)>",
)


@dataclass
class Servers:
    monitored: Watched
    baseline: Watched
    output_dir: Path
    logs: LogRecords


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    output_dir = tmp_path_factory.mktemp("hardening-requests") / "reports"
    config = Config(
        threshold_seconds=THRESHOLD,
        local_output_dir=str(output_dir),
        capture_body_bytes=CAPTURE_CAP,
        alert_window_days=0,
        report_max_files=0,
        hung_request_factor=0,
    )
    with (
        recording_logs() as logs,
        served(make_app(), config) as monitored,
        served(make_app()) as baseline,
    ):
        yield Servers(monitored, baseline, output_dir, logs)


# --- what a generated request is made of -----------------------------------------------


@dataclass
class Generated:
    """A request to send, the body the app should read, and what must not show."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes  # the bytes on the wire after the headers
    expected_body: Optional[bytes]  # what the app reads; None when the read must fail
    half_close: bool = False
    secrets: list[str] = field(default_factory=list)
    slow: bool = False

    def wire(self) -> bytes:
        head = [f"{self.method} ".encode() + self.target + b" HTTP/1.1"]
        head += [name + b": " + value for name, value in self.headers]
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body


_secret = st.text("abcdefghjkmnpqrstuvwxyz23456789", min_size=8, max_size=16).map(
    lambda s: "S3cr" + s
)
_path_bytes = st.binary(max_size=40).map(
    lambda raw: bytes(b for b in raw if b > 0x20 and b not in b"#?")
)
_query_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n #"), max_size=40)
_header_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda n: (
        n.lower() not in ("content-length", "transfer-encoding", "host", "connection", "expect")
        and not n.lower().startswith("x-")
    )
)
_header_value = st.binary(max_size=60).map(
    lambda raw: bytes(b for b in raw if b not in b"\r\n\x00").strip()
)
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(INJECTIONS),
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _nested(value: Any, depth: int, key: str) -> Any:
    for level in range(depth):
        value = {key: value} if level % 2 else [value]
    return value


@st.composite
def bodies(draw: st.DrawFn, secrets: list[str]) -> tuple[bytes, str]:
    """A body and its content type; secret-bearing fields carry values from ``secrets``."""
    kind = draw(
        st.sampled_from(
            ["json", "deep_json", "form", "multipart", "binary", "latin1", "surrogate", "empty"]
        )
    )
    if kind == "json":
        secret = draw(_secret)
        secrets.append(secret)
        document = _nested(
            {"token": secret, "other": draw(_json_value)}, draw(st.integers(0, 80)), "x"
        )
        return json.dumps(document).encode(), "application/json"
    if kind == "deep_json":
        depth = draw(st.integers(50, 200_000))
        return b"[" * depth + b"]" * draw(st.sampled_from([depth, 0, 1])), "application/json"
    if kind == "surrogate":
        # Lone surrogates are valid JSON escapes but cannot be encoded as UTF-8.
        return b'{"a": "\\ud800", "b": ["\\udfff' + b'x"], "<wpminj>": 1}', "application/json"
    if kind == "form":
        secret = draw(_secret)
        secrets.append(secret)
        fields = [("password", secret), ("note", draw(st.sampled_from(INJECTIONS)))]
        fields += draw(st.lists(st.tuples(_query_text, _query_text), max_size=4))
        encoded = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields).encode()
        return encoded, "application/x-www-form-urlencoded"
    if kind == "multipart":
        secret = draw(_secret)
        secrets.append(secret)
        boundary = draw(st.sampled_from(["XyZ", "----b0undary", "a'b"]))
        filename = draw(st.sampled_from(["a.txt", INJECTIONS[0], "\u00e9t\u00e9.bin", ""]))
        parts = [
            b'Content-Disposition: form-data; name="password"\r\n\r\n' + secret.encode(),
            (
                f'Content-Disposition: form-data; name="upload"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + draw(st.binary(max_size=200)),
            draw(st.binary(max_size=100)),  # a part with no headers at all, or garbage
        ]
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
        body += b"--" + boundary.encode() + draw(st.sampled_from([b"--\r\n", b"", b"--"]))
        content_type = draw(
            st.sampled_from(
                [
                    f"multipart/form-data; boundary={boundary}",
                    f'multipart/form-data; boundary="{boundary}"',
                    "multipart/form-data",
                    "multipart/form-data; boundary=",
                ]
            )
        )
        return body, content_type
    if kind == "binary":
        size = draw(st.sampled_from([1, 100, CAPTURE_CAP - 1, CAPTURE_CAP + 1, 70_000, 300_000]))
        return random.Random(draw(st.integers(0, 1000))).randbytes(size), draw(
            st.sampled_from(["application/octet-stream", "application/json", "text/plain", ""])
        )
    if kind == "latin1":
        return bytes(range(128, 256)) * 3, "text/plain; charset=utf-8"
    return b"", draw(st.sampled_from(["", "application/json"]))


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, position = [], 0
    for size in sizes:
        if position >= len(body):
            break
        piece = body[position : position + size]
        out.append(f"{len(piece):x}".encode() + b"\r\n" + piece + b"\r\n")
        position += len(piece)
    if position < len(body):
        out.append(f"{len(body) - position:x}".encode() + b"\r\n" + body[position:] + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


@st.composite
def requests_(draw: st.DrawFn) -> Generated:
    secrets: list[str] = []
    body, content_type = draw(bodies(secrets))
    method = draw(st.sampled_from(["POST", "PUT", "PATCH", "GET", "DELETE", "X</script>"]))
    path = b"/" + draw(_path_bytes)
    if draw(st.booleans()):
        path += b"<" + INJECTED_TAG.encode() + b">"
    query_secret = draw(_secret)
    secrets.append(query_secret)
    pairs = [("api_key", query_secret), ("q", draw(st.sampled_from(INJECTIONS)))]
    pairs += draw(st.lists(st.tuples(_query_text, _query_text), max_size=3))
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='<>/')}" for k, v in pairs)
    target = path + b"?" + query.encode()

    header_secrets = [draw(_secret) for _ in range(3)]
    secrets += header_secrets
    headers: list[tuple[bytes, bytes]] = [
        (
            b"Host",
            draw(st.sampled_from([b"127.0.0.1", b"example.com:8080", b"[::1]:x", b"h:99999"])),
        ),
        (b"Connection", b"close"),
        (b"Authorization", b"Bearer " + header_secrets[0].encode()),
        (b"Cookie", b"sid=" + header_secrets[1].encode() + b"; theme=dark"),
        (b"X-Api-Key", header_secrets[2].encode()),
        (b"X-Read-Style", draw(st.sampled_from(READ_STYLES)).encode()),
        (b"X-Note", draw(st.sampled_from(INJECTIONS)).encode()),
    ]
    headers += [
        (n.encode(), v)
        for n, v in draw(st.lists(st.tuples(_header_name, _header_value), max_size=4))
    ]
    if content_type:
        headers.append((b"Content-Type", content_type.encode()))
    slow = draw(st.booleans())
    if slow:
        headers.append((b"X-Slow", SLOW_SECONDS.encode()))

    framing = draw(st.sampled_from(["length", "chunked", "short", "long", "bad", "none"]))
    expected: Optional[bytes] = body
    half_close = False
    wire_body = body
    if framing == "length":
        headers.append((b"Content-Length", str(len(body)).encode()))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        wire_body = _chunked(body, draw(st.lists(st.integers(1, 70_000), max_size=5)))
    elif framing == "short":
        cut = draw(st.integers(0, len(body)))
        headers.append((b"Content-Length", str(cut).encode()))
        expected = body[:cut]
    elif framing == "long":
        headers.append((b"Content-Length", str(len(body) + draw(st.integers(1, 5000))).encode()))
        half_close = True
        expected = None  # the client went away mid-body: the app's read fails, or is short
    elif framing == "bad":
        headers.append((b"Content-Length", draw(st.sampled_from([b"abc", b"-1", b"1e3", b"5, 5"]))))
        wire_body, expected = b"", b""
    else:
        wire_body, expected = b"", b""
    return Generated(method, target, headers, wire_body, expected, half_close, secrets, slow)


# --- checks --------------------------------------------------------------------------------


def _outcome(response: Any) -> Any:
    if response is None:
        return "closed without an answer"
    return (response.status, response.body)


def _check_report(servers: Servers, trace_id: str, request: Generated) -> None:
    [report] = reports_of(servers.output_dir, trace_id)
    raw = report.read_text(encoding="utf-8")
    page = ParsedReport(raw)
    assert INJECTED_TAG not in page.tag_names(), "an injected tag became markup"
    assert INJECTED_ATTRIBUTE not in page.attribute_names(), "an injected attribute became markup"
    meta = page.metadata()
    assert meta["trace_id"] == trace_id
    for secret in request.secrets:
        assert secret not in raw, f"secret {secret} in the report"
        assert secret not in page.text
    if request.secrets:
        assert MASK in page.text or TOO_DEEP in page.text


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests_())
def test_bad_requests_reach_the_app_unchanged_and_reports_stay_safe(
    servers: Servers, request: Generated
) -> None:
    wire = request.wire()
    baseline = raw_request(servers.baseline.url, wire, request.half_close)
    response = raw_request(servers.monitored.url, wire, request.half_close)

    assert _outcome(response) == _outcome(baseline)
    if response is not None and response.status == 200 and request.expected_body is not None:
        assert response.json() == {
            "sha256": hashlib.sha256(request.expected_body).hexdigest(),
            "length": len(request.expected_body),
        }
    trace_id = response.headers.get("X-Trace-Id") if response is not None else None
    if trace_id:
        servers.monitored.settle(trace_id)
        if request.slow:
            _check_report(servers, trace_id, request)
    problems = servers.logs.at_least(logging.WARNING)
    assert not problems, [r.getMessage() for r in problems]
    assert servers.monitored.processor.get_stats()["internal_errors"] == 0


def test_every_answered_request_was_watched(servers: Servers) -> None:
    """Runs after the property test: each request with a span was counted by the monitor."""
    processor = servers.monitored.processor
    for _ in range(3):
        response = raw_request(
            servers.monitored.url,
            b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Slow: 0.08\r\n\r\n",
        )
        assert response is not None and response.status == 200
        servers.monitored.settle(response.headers["X-Trace-Id"])
    spans = servers.monitored.exporter.get_finished_spans()
    stats = processor.get_stats()
    assert stats["total_requests"] == len(spans)
    assert stats["reports_failed"] == 0
    assert stats["reports_written"] == stats["slow_requests"] >= 3


NASTY_BODIES = {
    "lone surrogates in JSON": (b'{"a": "\\ud800", "b": ["\\udfff x"]}', "application/json"),
    "JSON nested 100000 deep": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "JSON nested 70 deep (past the masking depth)": (
        json.dumps(_nested({"token": "S3crdeepdeepdeep"}, 70, "k")).encode(),
        "application/json",
    ),
    "huge integer in JSON": (b'{"n": ' + b"9" * 5000 + b"}", "application/json"),
    "multipart with non-ASCII names": (
        b'--B\r\nContent-Disposition: form-data; name="\xff\xfe<wpminj>"; '
        b'filename="\xe9\xff.txt"\r\n\r\nabc\r\n'
        b"--B\r\nContent-Disposition: form-data; name*=utf-8''%ff%fe\r\n\r\nx\r\n--B--\r\n",
        "multipart/form-data; boundary=B",
    ),
    "multipart with a bad transfer encoding": (
        b"--B\r\nContent-Disposition: form-data; name=a\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!*\r\n--B--\r\n",
        "multipart/form-data; boundary=B",
    ),
    "form with invalid percent escapes": (
        b"password=S3crform%ZZ%ff&a=%\xff",
        "application/x-www-form-urlencoded",
    ),
}


@pytest.mark.parametrize("name", list(NASTY_BODIES))
def test_nasty_bodies_in_slow_requests_give_a_safe_report(servers: Servers, name: str) -> None:
    body, content_type = NASTY_BODIES[name]
    servers.logs.clear()
    headers = [
        (b"Host", b"127.0.0.1"),
        (b"Connection", b"close"),
        (b"X-Slow", SLOW_SECONDS.encode()),
        (b"Content-Length", str(len(body)).encode()),
    ]
    headers.append((b"Content-Type", content_type.encode()))
    request = Generated("POST", b"/nasty", headers, body, body, secrets=[])
    if b"S3cr" in body:
        request.secrets = [m.decode() for m in re.findall(rb"S3cr[a-z]+", body)]
    response = raw_request(servers.monitored.url, request.wire())
    assert response is not None
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()
    trace_id = response.headers["X-Trace-Id"]
    servers.monitored.settle(trace_id)
    _check_report(servers, trace_id, request)
    problems = servers.logs.at_least(logging.WARNING)
    assert not problems, [r.getMessage() for r in problems]
