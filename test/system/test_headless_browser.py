"""The headless-browser client the dashboard tests and `async-vla-ros snapshot` use: it waits for
what the page itself signals, reads the DOM and the screenshot from the same load, reports the
page's script errors, gives up within its deadline, and leaves no browser process behind."""

from __future__ import annotations

import os
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from async_vla_ros.eval.headless import BrowserError, HeadlessPage, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (make setup installs it)")

PAGE = """<!doctype html><html><body style="background:#fff">
<div id="box" style="width:400px;height:300px;background:rgb(200,30,30)"></div>
<div id="status" data-ready="0">loading</div>
<script>
  // the page keeps polling its server, as the dashboard does, and marks itself ready once the
  // server says so (the test decides when: no race with the page's timers)
  setInterval(() => fetch("/ready").then(r => {
    if (!r.ok) return;
    const s = document.getElementById("status");
    s.dataset.points = '{"box": 3}'; s.dataset.ready = "1"; s.textContent = "ready";
  }).catch(() => {}), 100);
  setTimeout(() => { throw new Error("deliberate page error"); }, 50);
</script></body></html>"""


class Site(str):
    """The page's address; ``.ready`` makes the server tell the page it is ready."""

    def __new__(cls, url, ready):
        obj = super().__new__(cls, url)
        obj.ready = ready
        return obj


@pytest.fixture
def site(tmp_path):
    (tmp_path / "index.html").write_text(PAGE)

    ready = threading.Event()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def do_GET(self):  # noqa: N802 - http.server API
            if self.path == "/ready":
                self.send_response(200 if ready.is_set() else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site = Site(f"http://127.0.0.1:{server.server_address[1]}/", ready)
    yield site
    server.shutdown()
    server.server_close()


def _alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    live = []
    for stat in os.listdir("/proc"):
        if not stat.isdigit():
            continue
        try:
            fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat))
    return live


def test_waits_for_the_page_then_reads_dom_and_screenshot(site, tmp_path):
    png = tmp_path / "shot.png"
    with HeadlessPage(site, size=(640, 480)) as page:
        # open() returns once the document has loaded: its elements are there
        assert page.evaluate("document.readyState") == "complete"
        assert page.evaluate("document.getElementById('status').dataset.ready") == "0"
        site.ready.set()
        assert page.wait_for("document.getElementById('status').dataset.ready === '1'", timeout_s=20) is True
        html = page.html()
        page.screenshot(png)
        assert page.evaluate("[window.innerWidth, window.innerHeight]") == [640, 480]
    assert 'id="status" data-ready="1"' in html and ">ready<" in html
    assert any("deliberate page error" in line for line in page.console), page.console
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    # the viewport size asked for, read from the PNG header (IHDR width, height)
    assert int.from_bytes(data[16:20], "big") == 640 and int.from_bytes(data[20:24], "big") == 480
    assert not _alive(page.pid)  # the browser's whole process group is gone


def test_gives_up_within_its_deadline_and_cleans_up(site):
    with HeadlessPage(site) as page:
        t0 = time.monotonic()
        with pytest.raises(BrowserError, match="still false after 1.5 s"):
            page.wait_for("document.getElementById('never')", timeout_s=1.5)
        assert time.monotonic() - t0 < 10.0
        with pytest.raises(BrowserError, match="page raised"):
            page.evaluate("undefinedName.property")
    assert not _alive(page.pid)


def test_unreachable_page_is_a_clear_error_and_leaves_no_browser():
    page = HeadlessPage("http://127.0.0.1:9/")  # discard port: nothing listens
    with pytest.raises(BrowserError, match="could not load"):
        with page:
            pass
    assert page.pid and not _alive(page.pid)


def test_missing_browser_is_a_clear_error():
    with pytest.raises(BrowserError, match="no chromium executable at"):
        HeadlessPage("http://127.0.0.1:9/", chromium="/nonexistent/chromium")


def test_snapshot_command_line(site, tmp_path, capsys):
    from async_vla_ros.cli import main

    site.ready.set()
    out = tmp_path / "dash.png"
    assert main(["snapshot", site, "--out", str(out), "--size", "800x600", "--timeout", "20"]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out and "{'box': 3}" in printed.out
    assert "deliberate page error" in printed.err  # the page's script errors are shown to the user
    assert int.from_bytes(out.read_bytes()[16:20], "big") == 800
    assert main(["snapshot", site, "--size", "huge"]) == 2
    assert main(["snapshot", "http://127.0.0.1:9/", "--out", str(tmp_path / "x.png")]) == 1
    assert "snapshot failed: could not load" in capsys.readouterr().err
