"""Headless Chromium driven over the DevTools protocol, for tests of pages people look at.

Usage::

    with Chromium(tmp_path / "profile") as browser:
        visit = browser.load("http://127.0.0.1:8099/")
        assert visit.console_errors == []
        assert all(url.startswith("http://127.0.0.1:8099/") for url in visit.requests)
        Path("page.png").write_bytes(visit.screenshot)

It starts the Debian ``chromium`` with a new empty profile and no background
networking, connects to its page over the DevTools websocket (the ``websockets``
package), and waits on the protocol's own events (load, then network idle), never
on a sleep. A visit collects what a person would see go wrong: console errors,
uncaught exceptions, errors Chromium logs itself (a blocked resource, a
Content-Security-Policy violation, a failed request), and every URL the page
requested.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import requests
from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
TIMEOUT_SECONDS = 30.0


@dataclass
class Visit:
    """What happened while one page loaded."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""


class Chromium:
    def __init__(self, profile: Path, width: int = 1400, height: int = 900) -> None:
        self.profile = profile
        self.width, self.height = width, height
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._socket: Optional[ClientConnection] = None
        self._closing = contextlib.ExitStack()
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=False)  # new and empty
        self._process = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._wait_for_port()
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(target for target in targets if target["type"] == "page")
        self._socket = self._closing.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.setLifecycleEventsEnabled", enabled=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def _wait_for_port(self) -> int:
        # Chromium writes the port it chose to this file once it listens
        active_port = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self._process.returncode}")
            if active_port.exists():
                first_line = active_port.read_text().split("\n", 1)[0]
                if first_line.isdigit():
                    return int(first_line)
            time.sleep(0.05)  # polling a file chromium writes; no event to wait on
        raise TimeoutError("chromium did not open its DevTools port")

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self._socket is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from chromium in time")
        message: dict[str, Any] = json.loads(self._socket.recv(timeout=remaining))
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; events meanwhile are kept."""
        assert self._socket is not None
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            message = self._receive(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._events.append(message)

    def _wait_for_event(self, method: str, **wanted: Any) -> None:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        position = 0
        while True:
            for event in self._events[position:]:
                params = event.get("params", {})
                if event.get("method") == method and all(
                    params.get(key) == value for key, value in wanted.items()
                ):
                    return
            position = len(self._events)
            self._events.append(self._receive(deadline))

    def load(self, url: str) -> Visit:
        """Open ``url``, wait until the network is idle, and take a full-page screenshot."""
        self._events.clear()
        navigation = self.call("Page.navigate", url=url)
        if "errorText" in navigation:
            raise RuntimeError(f"{url}: {navigation['errorText']}")
        self._wait_for_event(
            "Page.lifecycleEvent", name="networkIdle", loaderId=navigation["loaderId"]
        )
        visit = Visit(url)
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        visit.screenshot = base64.b64decode(shot["data"])
        for event in self._events:
            self._note(visit, event.get("method"), event.get("params", {}))
        return visit

    def click(self, selector: str) -> str:
        """Click the middle of the first element matching ``selector``; the URL it led to.

        A real mouse press and release, as a person clicks; the page's own CSP
        does not apply to this DevTools query of where the element is.
        """
        box = self.call(
            "Runtime.evaluate",
            expression=f"JSON.stringify(document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect())",
            returnByValue=True,
        )["result"]["value"]
        rect = json.loads(box)
        x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        self._events.clear()
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        self._wait_for_event("Page.loadEventFired")
        url: str = self.call("Runtime.evaluate", expression="location.href")["result"]["value"]
        return url

    @staticmethod
    def _note(visit: Visit, method: Optional[str], params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            visit.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            visit.console_errors.append("console: " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            visit.console_errors.append("exception: " + params["exceptionDetails"]["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            visit.console_errors.append(
                f"{entry['source']}: {entry['text']} {entry.get('url', '')}"
            )
