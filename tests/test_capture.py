"""Recording the request body must never change what the application reads."""

from __future__ import annotations

import io
import sys
import threading

from hypothesis import given
from hypothesis import strategies as st

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
