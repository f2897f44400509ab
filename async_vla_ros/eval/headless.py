"""Look at a page the way a person would: headless Chromium driven over the DevTools protocol.

Chromium's one-shot flags (``--dump-dom``, ``--screenshot`` with ``--virtual-time-budget``) hang now
and then on a page that keeps polling its server (a CI run of the dashboard test timed out after
90 s on the screenshot). This client instead talks to one Chromium process over
``--remote-debugging-pipe`` (file descriptors 3 and 4, NUL-separated JSON; no port is opened), waits
for a JavaScript condition the page sets itself, then reads the DOM and captures the screenshot from
the same loaded page. Every step has a deadline and the browser's whole process group is killed on
exit, so a stuck browser costs a bounded time and leaves nothing behind.

    with HeadlessPage(url, size=(1500, 1100)) as page:
        page.wait_for("document.getElementById('status').dataset.ready === '1'", timeout_s=30)
        html = page.html()
        page.screenshot(Path("dashboard.png"))

``dashboard_snapshot`` does this for the dashboard node's page (waits until every chart has points);
``async-vla-ros snapshot URL --out dashboard.png`` is its command line.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BrowserError", "DashboardSnapshot", "HeadlessPage", "dashboard_snapshot", "find_chromium"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--disable-breakpad",
    "--disable-crash-reporter",
)


class BrowserError(RuntimeError):
    """Chromium could not be started, exited, or did not answer a command in time."""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _above_9(fd: int) -> int:
    """The same pipe end on a descriptor >= 10, so that it cannot collide with 3 and 4."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class HeadlessPage:
    """One headless Chromium with one page open at ``url``. Use as a context manager."""

    def __init__(
        self,
        url: str,
        *,
        size: tuple[int, int] = (1500, 1100),
        chromium: str | None = None,
        command_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.size = size
        self.command_timeout_s = command_timeout_s
        self.chromium = chromium if chromium is not None else find_chromium()
        if not self.chromium:
            raise BrowserError("no chromium executable on PATH (make setup installs the Debian package)")
        if not os.access(self.chromium, os.X_OK):
            raise BrowserError(f"no chromium executable at {self.chromium!r}")
        self._proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the browser's process (and process group) id, kept after close
        self._profile: str | None = None
        self._to_browser: int | None = None
        self._from_browser: int | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._replies: dict[int, dict] = {}
        self._next_id = 0
        self._closed_reason: str | None = None
        self._stderr_tail: list[bytes] = []
        self._session: str | None = None
        self.console: list[str] = []  # console errors and uncaught exceptions from the page

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> HeadlessPage:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="async_vla_chromium_")
        cmd_r, cmd_w = os.pipe()  # we write commands, the browser reads them on fd 3
        out_r, out_w = os.pipe()  # the browser writes answers on fd 4
        cmd_r, out_w = _above_9(cmd_r), _above_9(out_w)
        argv = [
            self.chromium,
            *_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        # bash places our pipe ends on the fixed descriptors 3 and 4 the protocol uses, then execs
        # (subprocess cannot renumber descriptors, and dash cannot redirect from descriptors above 9)
        shell = f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-'
        bash = shutil.which("bash") or "/bin/bash"
        try:
            self._proc = subprocess.Popen(
                [bash, "-c", shell, *argv],
                pass_fds=(cmd_r, out_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (cmd_r, cmd_w, out_r, out_w):
                os.close(fd)
            raise BrowserError(f"could not start {self.chromium}: {exc}") from exc
        self.pid = self._proc.pid
        os.close(cmd_r)
        os.close(out_w)
        self._to_browser, self._from_browser = cmd_w, out_r
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self._load()
        except BaseException:
            self.close()  # a page that fails to load must not leave its browser running
            raise

    def _load(self) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False},
        )
        answer = self.call("Page.navigate", {"url": self.url})
        if answer.get("errorText"):
            raise BrowserError(f"could not load {self.url}: {answer['errorText']}")
        # navigate answers once the new document is committed, before it has loaded
        self.wait_for("document.readyState === 'complete'", timeout_s=self.command_timeout_s)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    self.call("Browser.close", session=False, timeout_s=2.0)
                except BrowserError:
                    pass
                try:
                    proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
            try:  # renderer / GPU / zygote children share the group; none may outlive us
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for attr in ("_to_browser", "_from_browser"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    # -- what callers use --------------------------------------------------------------------------

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"page raised evaluating {expression!r}: {answer['exceptionDetails'].get('text')}")
        return answer.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, poll_s: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; its value. BrowserError with the page's console
        errors if it is not truthy within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                if self._closed_reason:
                    raise
                value = None  # page still loading: the expression may refer to things not yet there
            if value:
                return value
            time.sleep(poll_s)
        raise BrowserError(
            f"{expression!r} still false after {timeout_s} s at {self.url} "
            f"(last value {value!r}; page console: {self.console[-5:]})"
        )

    def html(self) -> str:
        """The page's current DOM, serialised."""
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the viewport to ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    # -- protocol ----------------------------------------------------------------------------------

    def call(
        self, method: str, params: dict | None = None, *, session: bool = True, timeout_s: float | None = None
    ) -> dict:
        """Send one DevTools command and wait for its answer."""
        if self._to_browser is None:
            raise BrowserError("browser is not running")
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"browser pipe closed sending {method}: {exc}; {self._stderr()}") from exc
        deadline = time.monotonic() + (timeout_s or self.command_timeout_s)
        with self._answered:
            while ident not in self._replies:
                if self._closed_reason:
                    raise BrowserError(f"{method}: {self._closed_reason}; {self._stderr()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method} not answered in {timeout_s or self.command_timeout_s} s")
                self._answered.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method} failed: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 20) if self._from_browser is not None else b""
            except OSError:
                chunk = b""
            if not chunk:
                with self._answered:
                    self._closed_reason = "browser closed its DevTools pipe"
                    self._answered.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._answered:
                        self._replies[message["id"]] = message
                        self._answered.notify_all()
                else:
                    self._on_event(message)

    def _on_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            described = details.get("exception", {}).get("description", "")
            self.console.append(f"{details.get('text', 'exception')} {described}".strip())
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))

    def _drain_stderr(self) -> None:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        for line in proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line])[-20:]

    def _stderr(self) -> str:
        tail = b"".join(self._stderr_tail).decode(errors="replace").strip()
        return f"chromium stderr tail: {tail[-1500:]}" if tail else "chromium printed nothing"


# -- the dashboard page --------------------------------------------------------------------------

# dashboard.js sets data-ready and data-points (points drawn per chart) on #status after each draw;
# this is the JSON of data-points once every chart has points, else null
CHARTS_DRAWN_JS = (
    "(() => { const s = document.getElementById('status');"
    " if (!s || s.dataset.ready !== '1') return null;"
    " const p = JSON.parse(s.dataset.points || '{}');"
    " const n = Object.values(p);"
    " return n.length && n.every(v => v > 0) ? s.dataset.points : null; })()"
)


@dataclass
class DashboardSnapshot:
    points: dict[str, int]  # points drawn per chart
    html: str  # the DOM at the moment of the screenshot
    png: Path
    console: list[str]  # the page's script errors (none expected)


def dashboard_snapshot(
    url: str, png: Path, *, size: tuple[int, int] = (1500, 1100), timeout_s: float = 30.0
) -> DashboardSnapshot:
    """Open the dashboard at ``url``, wait until every chart shows data, save a PNG of it."""
    with HeadlessPage(url, size=size) as page:
        points = json.loads(page.wait_for(CHARTS_DRAWN_JS, timeout_s=timeout_s))
        html = page.html()
        page.screenshot(Path(png))
        console = list(page.console)
    return DashboardSnapshot(points=points, html=html, png=Path(png), console=console)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "url",
        nargs="?",
        default="http://127.0.0.1:8765/",
        help="the dashboard's address (default: the dashboard node's default, %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"), help="PNG to write (default %(default)s)")
    parser.add_argument("--size", default="1500x1100", help="viewport WIDTHxHEIGHT in pixels (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for every chart to have data (default %(default)s)"
    )
    return parser


def run(ns: argparse.Namespace) -> int:
    try:
        width, height = (int(v) for v in ns.size.lower().split("x"))
    except ValueError:
        print(f"--size must be WIDTHxHEIGHT, got {ns.size!r}", file=sys.stderr)
        return 2
    try:
        shot = dashboard_snapshot(ns.url, ns.out, size=(width, height), timeout_s=ns.timeout)
    except BrowserError as exc:
        print(f"snapshot failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {shot.png} ({shot.png.stat().st_size} bytes); points per chart: {shot.points}")
    for line in shot.console:
        print(f"page error: {line}", file=sys.stderr)
    return 0
