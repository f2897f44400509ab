"""Dashboard node fed by ROS messages, page loaded in headless Chromium: charts show data."""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
msgs = pytest.importorskip("async_vla_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from async_vla_ros.eval.headless import dashboard_snapshot, find_chromium  # noqa: E402
from async_vla_ros.nodes.common import SpinThread, ns_to_stamp, stop_spin  # noqa: E402
from async_vla_ros.nodes.dashboard import DashboardModel, DashboardNode  # noqa: E402

CHROMIUM = find_chromium()
H, A, DT = 8, 8, 0.05
SCREENSHOT_DIR = Path(os.environ.get("ASYNC_VLA_TEST_ARTIFACTS", tempfile.gettempdir())) / "async_vla_dashboard"


def _wait(cond, timeout_s, what, state=lambda: ""):
    """Poll cond until true; on timeout the error says what was awaited and ``state()`` (what had
    arrived), so a failure under load tells a starved executor from a dead spin thread."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {state()}")
        time.sleep(0.02)


class FakeGraph:
    """Publishes what scheduler / policy / correction / nodes' diagnostics publish, from timers."""

    def __init__(self, node):
        self.node = node
        self.pub_plan = node.create_publisher(msgs.ActionPlan, "scheduler/action_plan", 10)
        self.pub_chunk = node.create_publisher(msgs.ActionChunk, "policy/action_chunk", 10)
        self.pub_rep = node.create_publisher(msgs.ChunkReport, "scheduler/chunk_report", 10)
        self.pub_cmd = node.create_publisher(Float64MultiArray, "forward_position_controller/commands", 10)
        self.pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.clock = node.get_clock()
        self.step = 0
        self.chunk_id = 0
        self.plan = None  # (t0_step, (L, A), ids)
        self.rng = np.random.default_rng(0)
        node.create_timer(DT, self.tick)
        node.create_timer(0.01, self.command)

    def traj(self, steps):
        s = np.asarray(steps, dtype=np.float64)[:, None]
        return 0.3 * np.sin(0.6 * s * DT + np.arange(A)[None, :]) + 0.02 * np.cos(3.1 * s * DT)

    def tick(self):
        now = self.clock.now().nanoseconds
        t = self.step
        self.step += 1
        if t % 4 == 0:  # a chunk arrives, observed d = 2 steps ago, with some noise
            self.chunk_id += 1
            t_obs = t - 2
            acts = self.traj(range(t_obs, t_obs + H)) + self.rng.normal(0, 0.03, (H, A))
            ch = msgs.ActionChunk(
                chunk_id=self.chunk_id,
                request_id=self.chunk_id,
                horizon=H,
                action_dim=A,
                dt=DT,
                actions=acts.ravel().tolist(),
            )
            ch.header.stamp = ns_to_stamp(now - int(2 * DT * 1e9))
            self.pub_chunk.publish(ch)
            rep = msgs.ChunkReport(
                chunk_id=self.chunk_id,
                request_id=self.chunk_id,
                accepted=self.chunk_id % 7 != 0,
                reject_reason="" if self.chunk_id % 7 else "stale",
                inference_s=0.012 + 0.004 * self.rng.random(),
                transport_s=0.001,
                queue_s=0.0005,
                total_latency_s=0.08 + 0.03 * self.rng.random(),
                predicted_delay_steps=2,
                measured_delay_steps=2 + int(self.rng.random() < 0.2),
                n_frozen=2,
                n_soft=2,
                n_free=4,
                boundary_jump=0.05,
            )
            rep.header.stamp = ns_to_stamp(now)
            # the plan before the merge first, then the report, then the merged plan
            self.publish_plan(now, t)
            if rep.accepted:
                self.plan = (t, acts[2:], [self.chunk_id] * (H - 2))
            self.pub_rep.publish(rep)
        self.publish_plan(now, t)
        if t % 10 == 0:
            st = DiagnosticStatus(
                name="/correction",
                values=[
                    KeyValue(key="safety interventions", value=str(t // 10)),
                    KeyValue(key="dropped nonfinite", value="1"),
                ],
            )
            self.pub_diag.publish(DiagnosticArray(status=[st]))

    def publish_plan(self, now, t):
        if self.plan is None:
            return
        t0, acts, ids = self.plan
        k = t - t0
        if k >= len(acts):
            return
        m = msgs.ActionPlan(
            plan_id=t + 1,
            step=t,
            dt=DT,
            length=len(acts) - k,
            action_dim=A,
            actions=acts[k:].ravel().tolist(),
            chunk_ids=ids[k:],
            horizon=H,
        )
        m.header.stamp = ns_to_stamp(now)
        self.pub_plan.publish(m)

    def command(self):
        s = self.clock.now().nanoseconds / 1e9
        self.pub_cmd.publish(Float64MultiArray(data=(0.3 * np.sin(0.6 * s + np.arange(A))).tolist()))


def test_model_known_answers():
    m = DashboardModel(max_points=100, window_s=10.0)
    for i in range(10):
        m.on_command(i * 10_000_000, np.full(7, 0.5 * (i * 0.01) ** 2))  # q = a t^2 / 2, a = 1 rad/s^2 per joint
    s = m.snapshot()
    assert s["command"]["nominal_ms"] == pytest.approx(10.0)
    np.testing.assert_allclose(
        s["command"]["acc"], np.sqrt(7.0), atol=1e-4
    )  # |(1,...,1)| over 7 joints (JSON rounds to 1e-4)
    np.testing.assert_allclose(s["command"]["jerk"], 0.0, atol=1e-6)
    m.on_report(0, 1, False, "stale", 0.1, 0.01, 0.001, 0.0, 2, -1, 0.0, 0, 0, 0)
    m.on_diagnostic("/policy", {"dropped stale": "3", "model": "x"})
    s = m.snapshot()
    assert s["rejects"] == {"stale": 1} and s["diag_counters"] == {"/policy: dropped stale": 3.0}
    with pytest.raises(ValueError):
        DashboardModel(max_points=1)


def test_model_does_not_difference_across_a_command_segment():
    """An episode reset teleports the arm: acceleration/jerk are not computed across it."""
    m = DashboardModel(max_points=100, window_s=10.0)
    for i in range(6):
        m.on_command(i * 10_000_000, np.full(7, 0.1 * i))  # constant velocity: zero acceleration
    m.on_segment()
    for i in range(6, 12):
        m.on_command(i * 10_000_000, np.full(7, 2.0 + 0.1 * i))  # jump of 2 rad at the reset
    c = m.snapshot()["command"]
    acc, jerk = c["acc"], c["jerk"]
    # command 6 opens the segment: acc rows 4 and 5 (commands 4-6, 5-7) and jerk rows 3-5 span it
    assert [i for i, v in enumerate(acc) if v is None] == [4, 5]
    assert [i for i, v in enumerate(jerk) if v is None] == [3, 4, 5]
    np.testing.assert_allclose([v for v in acc if v is not None], 0.0, atol=1e-3)
    np.testing.assert_allclose([v for v in jerk if v is not None], 0.0, atol=1e-1)


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make setup installs it)")
def test_dashboard_in_headless_chromium(ros):
    dash = DashboardNode(parameter_overrides=[Parameter("port", value=0), Parameter("poll_ms", value=200)])
    assert dash.url.startswith("http://127.0.0.1:")
    pub = rclpy.create_node("dashboard_test_graph")
    FakeGraph(pub)
    ex = MultiThreadedExecutor(num_threads=2)
    ex.add_node(dash)
    ex.add_node(pub)
    # SpinThread, not ex.spin() in a thread: Executor.shutdown() under a live spin destroys its guard
    # condition and the spin died with InvalidHandle in one CI run (test passed, teardown failed)
    spin_thread = SpinThread(ex, name="dashboard-test-spin")
    spin_thread.start()
    m = dash.model

    def arrived():
        alive = "alive" if spin_thread.is_alive() else f"dead ({spin_thread.error!r})"
        return (
            f"reports {m.n_reports}/12, commands {m.n_commands}/100, overlay {m.overlay is not None}, "
            f"diagnostic counters {len(m.diag_counters)}, spin thread {alive}"
        )

    try:
        # 12 chunk reports take 2.4 s and 100 commands 1 s at the fake graph's rates; the deadline
        # is only for a graph that never delivers (a busy machine slows the Python executor a lot)
        _wait(
            lambda: m.n_reports >= 12 and m.n_commands >= 100 and m.overlay is not None and m.diag_counters,
            90.0,
            "dashboard data",
            arrived,
        )
        state = json.loads(urllib.request.urlopen(dash.url + "api/state", timeout=5).read())
        assert state["overlay"]["n_frozen"] == 2 and len(state["overlay"]["new"]) == H
        assert state["rejects"].get("stale", 0) >= 1
        shot = dashboard_snapshot(dash.url, SCREENSHOT_DIR / "dashboard.png", size=(1500, 1100), timeout_s=30.0)
    finally:
        stop_spin(ex, spin_thread)  # the spin is over before the nodes go
        dash.close()
        dash.destroy_node()
        pub.destroy_node()
    assert spin_thread.error is None, repr(spin_thread.error)  # no callback raised while the page loaded
    for chart in ("latency", "hist", "delay", "overlay", "traj", "jitter", "accjerk"):
        assert shot.points[chart] > 0, (chart, shot.points)
    assert "safety interventions" in shot.html and "rejected chunks: stale" in shot.html
    assert not shot.console, shot.console  # no script errors in the page
    assert shot.png.is_file() and shot.png.stat().st_size > 20_000


def test_model_prefers_the_loops_own_period_error():
    """With CommandMetrics the jitter chart shows the correction loop's measured period error, not
    the command arrival times at the dashboard (which add transport jitter)."""
    m = DashboardModel(max_points=100, window_s=10.0)
    for i in range(10):
        m.on_command(i * 10_000_000 + (3_000_000 if i == 5 else 0), np.zeros(7))  # one late arrival
    s = m.snapshot()
    assert s["command"]["period_source"].startswith("command arrival") and max(s["command"]["period_err_ms"]) > 2.9
    for i in range(10):
        m.on_command_metrics(i * 10_000_000, 0.0005 * (i % 2))
    m.on_command_metrics(11, float("nan"))  # first tick of a loop: no period yet, ignored
    s = m.snapshot()
    assert s["command"]["period_source"] == "correction loop (CommandMetrics)"
    assert s["command"]["period_err_ms"] == [0.0, 0.5] * 5
    assert s["command"]["jitter_p99_ms"] == pytest.approx(0.5)
