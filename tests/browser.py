"""Open a page in a real headless Chromium and report what a reader would get.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ending in a NUL byte, the browser reads fd 3 and writes fd 4), which
needs nothing beyond the standard library and catches console messages precisely:
``Runtime.consoleAPICalled`` (console.error / assert), ``Runtime.exceptionThrown``
(uncaught script errors) and ``Log.entryAdded`` at level error (failed loads,
blocked requests, CSP). The page's screenshot comes back as PNG bytes.

Browser: /usr/bin/chromium (Debian's package; ``apt-get install -y chromium``) or
$CHROMIUM. Tests skip when it is absent unless $CI is set, where a missing
browser fails.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
    "--remote-debugging-pipe",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def require_chromium() -> str:
    """The browser's path; skips the test if there is none, except under CI where that fails."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium); required under CI")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)  # errors the page caused
    console_messages: list[str] = field(default_factory=list)  # everything logged, for failure messages
    screenshot: bytes = b""  # PNG of the whole page
    title: str = ""
    text: str = ""  # document.body.innerText
    svg_count: int = 0
    size: tuple[int, int] = (0, 0)  # the page's CSS content size


class _Pipe:
    """The DevTools protocol over Chromium's debugging pipe."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int):
        self.process = process
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                self.messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self.messages.put(json.loads(message))

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.to_browser, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline, method)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline, method)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def _next(self, deadline: float, waiting_for: str) -> dict:
        try:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"chromium did not answer {waiting_for} in time") from None
        if message is None:
            raise RuntimeError(f"chromium exited (rc {self.process.poll()}) while waiting for {waiting_for}")
        return message


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or above, so that moving it to 3 or 4 in the child cannot clash."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return copy


def _hold_low_fds() -> list[int]:
    """Open /dev/null until fds 3 and 4 are taken; the fds opened, to close after the Popen."""
    held = []
    while True:
        fd = os.open(os.devnull, os.O_RDONLY)  # not inheritable (PEP 446)
        if fd > 4:
            os.close(fd)
            return held
        held.append(fd)


def open_page(path: str | Path, width: int = 1280, height: int = 900, timeout: float = 60.0) -> PageResult:
    """Load ``path`` (a local file) in headless Chromium; return its console errors and a screenshot."""
    browser = require_chromium()
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        to_read, to_write = (_high_fd(fd) for fd in os.pipe())  # we write, the browser reads (fd 3)
        from_read, from_write = (_high_fd(fd) for fd in os.pipe())  # the browser writes (fd 4), we read

        def wire_fds() -> None:  # runs in the child, before exec
            os.dup2(to_read, 3)
            os.dup2(from_write, 4)

        # Not pass_fds=(3, 4): whatever holds fds 3 and 4 here (matplotlib's font files, once a
        # figure was drawn) may be closed by at-fork handlers before the child marks them
        # inheritable (EBADF). wire_fds makes the browser's 3 and 4 itself, and close_fds=False
        # keeps them; other fds reach the browser only if made inheritable on purpose (PEP 446).
        # Holding 3 and 4 while forking keeps subprocess's own error pipe off them.
        placeholders = _hold_low_fds()
        try:
            process = subprocess.Popen(
                [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=wire_fds,
                close_fds=False,
            )
        finally:
            for fd in placeholders:
                os.close(fd)
        os.close(to_read)
        os.close(from_write)
        stderr_lines: list[str] = []
        threading.Thread(
            target=lambda: stderr_lines.extend(line.decode(errors="replace") for line in process.stderr), daemon=True
        ).start()
        try:
            return _drive(_Pipe(process, to_write, from_read), url, width, height, timeout)
        except Exception as exc:
            raise RuntimeError(f"{exc}; chromium stderr tail:\n{''.join(stderr_lines[-20:])}") from exc
        finally:
            try:
                os.close(to_write)  # closing the pipe asks the browser to quit
            except OSError:
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(from_read)


def _drive(pipe: _Pipe, url: str, width: int, height: int, timeout: float) -> PageResult:
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    pipe.events.clear()
    pipe.send("Page.navigate", {"url": url}, session=session)
    pipe.wait_event("Page.loadEventFired", timeout=timeout)
    result = PageResult()
    evaluate = lambda expression: pipe.send(  # noqa: E731
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
    )["result"].get("value")
    result.title = evaluate("document.title") or ""
    result.text = evaluate("document.body ? document.body.innerText : ''") or ""
    result.svg_count = int(evaluate("document.querySelectorAll('svg').length") or 0)
    content = pipe.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
    result.size = (int(content["width"]), int(content["height"]))
    shot = pipe.send(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True,
         "clip": {"x": 0, "y": 0, "width": content["width"], "height": min(content["height"], 16000), "scale": 1}},
        session=session,
        timeout=timeout,
    )
    result.screenshot = base64.b64decode(shot["data"])
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            result.console_messages.append(f"console.{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                result.console_errors.append(text)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            result.console_messages.append(f"exception: {text}")
            result.console_errors.append(text)
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            text = f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
            result.console_messages.append(f"log.{entry.get('level')}: {text}")
            if entry.get("level") == "error":
                result.console_errors.append(text)
    return result


def png_pixels(data: bytes):
    """The PNG as an (h, w, channels) float array in [0, 1]."""
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")


def distinct_colours(pixels) -> int:
    import numpy as np

    rgb = (np.asarray(pixels)[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    return len(np.unique(rgb[:: max(1, len(rgb) // 200_000)], axis=0))


def open_report(run_dir: Path, out_html: Path, figure_key: str) -> PageResult:
    """A run folder's report, written and opened: it holds the figure ``figure_key`` and the
    browser logged no error."""
    from testbed.report import write_report

    page = write_report([run_dir], out_html)
    assert f'id="fig-{figure_key}"' in page.read_text()
    result = open_page(page)
    assert result.console_errors == [], result.console_messages
    return result
