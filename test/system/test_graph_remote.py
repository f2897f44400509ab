"""The whole Franka graph against a remote policy: `async-vla-ros serve` (openpi websocket) on 127.0.0.1.

The policy node runs ``--policy openpi://127.0.0.1:PORT``; the server serves the shipped track
checkpoint. Checks a full episode with RTC through the server, that network time reaches the
chunk reports, then kills the server mid-run: the policy node stays up and answers
BACKEND_UNAVAILABLE, the scheduler times out and re-requests, the correction loop keeps
commanding (the robot holds), and after a restart the chunks flow again (reconnect).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("mujoco")
pytest.importorskip("openpi_server")
from async_vla_ros.assets import panda_available  # noqa: E402

if not panda_available():
    pytest.skip("MuJoCo Panda model not fetched (make setup)", allow_module_level=True)


from graph_fixtures import wait_for  # noqa: E402

from async_vla_ros.bringup.graph import build_graph  # noqa: E402
from async_vla_ros.bringup.launcher import Launcher  # noqa: E402

pytestmark = [pytest.mark.system, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "async_vla_ros.cli", "serve", "--task", "track", "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    assert "serving default" in line, line
    deadline = time.monotonic() + 30  # "serving" is printed just before the socket is bound
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise AssertionError("serve did not listen")


def test_graph_against_openpi_server_with_kill_and_reconnect(monitor):
    port = free_port()
    server = serve(port)
    graph = build_graph(
        "franka", {"policy": f"openpi://127.0.0.1:{port}", "method": "rtc", "task": "track", "camera": "false"}
    )
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    try:
        assert wait_for(lambda: len(monitor.episode_results()) >= 1, 120.0, launcher), "\n".join(lines[-60:])
        ok = wait_for(lambda: len(monitor.accepted_reports()) >= 20, 30.0, launcher)
        reasons = [(r.reject_reason, r.sampler) for r in monitor.reports if not r.accepted][:20]
        assert ok, f"{len(monitor.accepted_reports())} accepted; rejects {reasons}; policy {monitor.diag('policy')}"
        reps = monitor.accepted_reports()
        assert any(r.sampler == "rtc" for r in reps)  # the server ran our guidance
        lat = monitor.latency_stats()
        assert 0.0 <= lat["network_median_s"] < 0.1  # network time measured and reported (loopback)
        assert lat["network_median_s"] < lat["latency_median_s"]
        # kill the server mid-run: the graph stays up, the robot holds, requests time out and repeat
        n_before = len(monitor.accepted_reports())
        holds0 = monitor.diag("correction").get("holds", 0)
        server.kill()
        server.wait(timeout=10)
        assert wait_for(lambda: monitor.diag("policy").get("backend_unavailable", 0) >= 2, 20.0, launcher)
        assert wait_for(lambda: monitor.diag("scheduler").get("timeouts", 0) >= 1, 20.0, launcher) or (
            monitor.diag("scheduler").get("requests", 0) > 0
        )
        # the robot holds: the correction node holds the last target (plan ran dry), or, once a new
        # episode began without a plan, publishes nothing (the robot's controller holds)
        if not wait_for(lambda: monitor.diag("correction").get("holds", 0) > holds0, 10.0, launcher):
            c1 = monitor.diag("correction").get("commands", 0)
            time.sleep(1.5)
            assert monitor.diag("correction").get("commands", 0) == c1
        assert sorted(launcher.alive()) == sorted(n.name for n in graph.nodes)
        # restart: the policy node reconnects and chunks are accepted again
        server = serve(port)
        n_mid = len(monitor.accepted_reports())
        assert n_mid - n_before < 5
        assert wait_for(lambda: len(monitor.accepted_reports()) > n_mid + 10, 30.0, launcher), "\n".join(lines[-40:])
    finally:
        codes = launcher.stop()
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)
    assert codes == {n.name: 0 for n in graph.nodes}, codes
