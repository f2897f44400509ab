"""The whole Franka graph against remote policy servers on 127.0.0.1.

* ``async-vla-ros serve`` (openpi websocket) with the shipped track checkpoint: a full episode
  with RTC through the server, network time in the chunk reports, then the server killed mid-run:
  the policy node stays up and answers BACKEND_UNAVAILABLE, the scheduler times out and
  re-requests, the correction loop keeps commanding (the robot holds), and after a restart the
  chunks flow again (reconnect);
* ``serve --policy lerobot:DIR`` (the tiny SmolVLA of the fixtures, camera on): rtc through it;
* LeRobot's stock gRPC ``policy_server`` serving the same folder (``lerobot-grpc://``, a vanilla
  method: it does no guidance), killed and restarted.
"""

from __future__ import annotations

import time

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
from async_vla_ros.eval.policy_servers import free_port, start_lerobot_grpc, start_serve  # noqa: E402

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_graph_against_openpi_server_with_kill_and_reconnect(monitor):
    port = free_port()
    server = start_serve("track", port)
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
        server = start_serve("track", port)
        n_mid = len(monitor.accepted_reports())
        assert n_mid - n_before < 5
        assert wait_for(lambda: len(monitor.accepted_reports()) > n_mid + 10, 30.0, launcher), "\n".join(lines[-40:])
    finally:
        codes = launcher.stop()
        server.kill()
    assert codes == {n.name: 0 for n in graph.nodes}, codes


def _run_graph_with_images(monitor, policy: str, method: str, sampler: str, n: int = 5) -> None:
    """The Franka graph (camera on) against a remote policy until ``n`` chunks of ``sampler`` merged."""
    graph = build_graph("franka", {"policy": policy, "method": method, "task": "track", "camera": "true"})
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    try:
        ok = wait_for(lambda: sum(r.sampler == sampler for r in monitor.accepted_reports()) >= n, 150.0, launcher)
        reasons = [(r.reject_reason, r.sampler) for r in monitor.reports if not r.accepted][:10]
        assert ok, f"rejects {reasons}; policy {monitor.diag('policy')}\n" + "\n".join(lines[-40:])
        assert wait_for(lambda: monitor.diag("correction").get("commands", 0) > 0, 10.0, launcher)
    finally:
        codes = launcher.stop()
    assert {r.sampler for r in monitor.accepted_reports()} <= {sampler, "vanilla"}
    assert codes == {n.name: 0 for n in graph.nodes}, codes


def test_graph_against_serve_of_a_lerobot_folder(monitor, tiny_smolvla_dir):
    """``serve --policy lerobot:DIR`` (the tiny SmolVLA, its camera and instruction) with rtc through it."""
    pytest.importorskip("lerobot")
    port = free_port()
    server = start_serve("track", port, policy=f"lerobot:{tiny_smolvla_dir}")
    try:
        _run_graph_with_images(monitor, f"openpi://127.0.0.1:{port}", "rtc", "rtc")
    finally:
        server.kill()
    assert 0.0 <= monitor.latency_stats()["network_median_s"] < 0.1


def test_graph_against_lerobot_stock_grpc_server(monitor, tiny_smolvla_dir):
    """LeRobot's stock ``policy_server`` (gRPC) serving the tiny SmolVLA; the graph runs a vanilla
    method through it (the server does no guidance); a kill and restart is survived."""
    pytest.importorskip("grpc")
    pytest.importorskip("lerobot")
    port = free_port()
    server = start_lerobot_grpc(port)
    spec = f"lerobot-grpc://127.0.0.1:{port}?policy={tiny_smolvla_dir}&timeout=2"
    graph = build_graph("franka", {"policy": spec, "method": "naive", "task": "track", "camera": "true"})
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    try:
        ok = wait_for(lambda: len(monitor.accepted_reports()) >= 5, 150.0, launcher)
        reasons = [(r.reject_reason, r.sampler) for r in monitor.reports if not r.accepted][:10]
        assert ok, f"rejects {reasons}; policy {monitor.diag('policy')}\n{server.output()}\n" + "\n".join(lines[-40:])
        assert {r.sampler for r in monitor.accepted_reports()} == {"vanilla"}
        assert str(monitor.diag("policy").get("policy", "")).startswith("lerobot-grpc/track/")
        # killed: the node answers unavailable and stays up; restarted: it reconnects (policy re-sent)
        server.kill()
        assert wait_for(lambda: monitor.diag("policy").get("backend_unavailable", 0) >= 2, 30.0, launcher)
        assert sorted(launcher.alive()) == sorted(n.name for n in graph.nodes)
        server = start_lerobot_grpc(port)
        n_mid = len(monitor.accepted_reports())
        assert wait_for(lambda: len(monitor.accepted_reports()) >= n_mid + 5, 60.0, launcher), server.output()
    finally:
        codes = launcher.stop()
        server.kill()
    assert codes == {n.name: 0 for n in graph.nodes}, codes
