"""Recording the request body must never change what the application reads."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
from apps.watched import Watched, served
from hypothesis import given
from hypothesis import strategies as st

from otel_wpm import Config
from otel_wpm.capture.request import RecordingInput, find_wsgi_environ, snapshot, start_recording

reads = st.lists(
    st.sampled_from(["read", "read_n", "readline", "readline_n", "readinto", "readlines", "iter"]),
    max_size=8,
)


def consume(stream, plan: list[str]) -> bytes:
    out = bytearray()
    for step in plan:
        if step == "read":
            out += stream.read()
        elif step == "read_n":
            out += stream.read(7)
        elif step == "readline":
            out += stream.readline()
        elif step == "readline_n":
            out += stream.readline(5)
        elif step == "readinto":
            buffer = bytearray(11)
            count = stream.readinto(buffer)
            out += buffer[:count]
        elif step == "readlines":
            out += b"".join(stream.readlines())
        else:
            out += b"".join(stream)
    return bytes(out)


@given(body=st.binary(max_size=4096), plan=reads, limit=st.integers(0, 600))
def test_the_app_reads_the_same_bytes_and_we_keep_a_prefix(body: bytes, plan, limit: int) -> None:
    expected = consume(io.BytesIO(body), plan)
    recorder = RecordingInput(io.BytesIO(body), limit)
    assert consume(recorder, plan) == expected
    assert recorder.kept == expected[:limit]
    assert recorder.bytes_read == len(expected)
    assert recorder.truncated == (len(expected) > limit)


def test_environ_is_found_up_the_stack_and_input_wrapped_once() -> None:
    def app(environ, start_response):
        return inner()

    def inner():
        return find_wsgi_environ()

    environ = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(b"a=1"), "QUERY_STRING": "x=1"}
    assert app(environ, None) is environ
    first = start_recording(environ, 100)
    assert start_recording(environ, 100) is first
    assert environ["wsgi.input"] is first
    assert first.read() == b"a=1"
    raw = snapshot(environ, first, with_headers=True)
    assert raw.body == b"a=1" and raw.query == "x=1"


def test_no_environ_on_the_stack_gives_none() -> None:
    assert find_wsgi_environ() is None


def test_environ_held_in_a_closure_is_found() -> None:
    """werkzeug's server keeps environ in a cell that its nested functions read."""

    def serve(environ):
        def execute():
            return inner()

        def inner():
            return environ is not None and find_wsgi_environ()

        return execute()

    environ = {"REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    assert serve(environ) is environ


def test_environ_is_found_from_the_frame_another_thread_runs() -> None:
    environ = {"REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    inside, leave = threading.Event(), threading.Event()

    def app(environ, start_response):
        inside.set()
        leave.wait(10)

    thread = threading.Thread(target=app, args=(environ, None))
    thread.start()
    try:
        assert inside.wait(10)
        frame = sys._current_frames()[thread.ident or 0]
        assert find_wsgi_environ(frame) is environ
    finally:
        leave.set()
        thread.join(10)


# --- the recorder is a drop-in wsgi.input, behind a real server --------------------------


def stream_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Reads its body with ``next()`` and inside ``with``; says what it saw of the stream."""
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    first = next(stream)
    with stream as entered:
        rest = entered.read(length - len(first))
    answer = {
        "first": first.decode(),
        "rest": rest.decode(),
        "same_object_entered": entered is stream,
        "kinds": [kind.__name__ for kind in IO_KINDS if isinstance(stream, kind)],
        "closed_after_with": stream.closed,
        "mode": getattr(stream, "mode", None),
    }
    if environ.get("HTTP_X_SLOW"):
        time.sleep(float(environ["HTTP_X_SLOW"]))
    payload = json.dumps(answer).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [payload]


IO_KINDS = (io.IOBase, io.RawIOBase, io.BufferedIOBase, io.TextIOBase)
BODY = b'{"first": "line",\n "second": "recorded too"}'


def _post_through(config: Optional[Config], slow: str = "0") -> tuple[dict[str, Any], Watched]:
    with served(stream_app, config) as watched:
        response = requests.post(
            watched.url + "/upload",
            data=BODY,
            headers={"Content-Type": "application/json", "X-Slow": slow, "Connection": "close"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        watched.server_spans()
    return dict(response.json()), watched


def test_next_with_and_attributes_work_as_without_the_monitor(tmp_path: Path) -> None:
    baseline, _ = _post_through(None)
    config = Config(threshold_seconds=0.05, local_output_dir=str(tmp_path), capture_body_bytes=4096)
    seen, watched = _post_through(config, slow="0.1")
    assert seen == baseline
    assert seen["first"] == '{"first": "line",\n' and seen["same_object_entered"]
    assert "IOBase" in seen["kinds"]
    (report,) = watched.reports()
    assert "recorded too" in report.read_text(encoding="utf-8")  # both reads were recorded


def test_a_stream_without_iterator_or_context_manager_fails_as_it_would() -> None:
    class Body:
        def read(self, size: int = -1) -> bytes:
            return b""

    recorder = RecordingInput(Body(), 10)
    with pytest.raises(TypeError):
        next(recorder)
    assert not isinstance(recorder, io.IOBase)


def test_generator_iteration_of_the_stream_is_recorded() -> None:
    class Lines:
        def __iter__(self) -> Iterator[bytes]:
            yield b"a\n"
            yield b"b\n"

    recorder = RecordingInput(Lines(), 10)
    assert list(recorder) == [b"a\n", b"b\n"]
    assert recorder.kept == b"a\nb\n"
