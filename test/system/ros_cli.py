"""Helpers for the launch tests: the real `ros2` command line against the graph, and a probe node
(``eval.graph_probe``) spinning in the test process.

Every call inherits the test session's ROS environment (conftest: its own ROS_DOMAIN_ID,
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a temporary ROS_LOG_DIR) and uses ``--no-daemon`` where
the verb has it, so no ros2 daemon outlives the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROS2 = str(Path(sys.executable).parent / "ros2")
SPIN_S = "5"  # discovery time given to the CLI's node (the graph is on the same host)


def ros2(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``ros2 ARGS`` to completion; stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        [ROS2, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def node_list() -> list[str]:
    out = ros2("node", "list", "--no-daemon", "--spin-time", SPIN_S)
    assert out.returncode == 0, out.stdout
    return sorted(line.strip() for line in out.stdout.splitlines() if line.startswith("/"))


def topic_hz(topic: str, reports: int = 4, timeout: float = 40.0) -> tuple[list[float], str]:
    """Run ``ros2 topic hz TOPIC`` (its own session) until it printed ``reports`` averages or the
    deadline passed, then SIGINT it (by pid). Returns the averages (Hz) and the output."""
    p = subprocess.Popen(
        [ROS2, "topic", "hz", topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
        start_new_session=True,
    )
    lines: list[str] = []
    got = threading.Event()

    def read() -> None:
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            if sum("average rate" in ln for ln in lines) >= reports:
                got.set()
        got.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    got.wait(timeout)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)  # the process group this call started
        try:
            p.wait(10.0)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    reader.join(5.0)
    rates = [float(m.group(1)) for ln in lines if (m := re.search(r"average rate: ([0-9.]+)", ln))]
    return rates, "\n".join(lines)


def wait_for(cond, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return cond()


class Probe:
    """The chaos/soak probe node on its own context and executor thread (start/stop)."""

    def __init__(self, command_interface: str = "trajectory") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from async_vla_ros.eval.graph_probe import make_probe_class
        from async_vla_ros.nodes.common import SpinThread

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = make_probe_class()(self.ctx, command_interface)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = SpinThread(self.executor, name="probe")
        self.thread.start()

    def accepted(self, t0: int = 0) -> list[tuple]:
        return [r for r in self.node.reports_since(t0) if r[2]]

    def stop(self) -> None:
        import rclpy

        from async_vla_ros.nodes.common import stop_spin

        stop_spin(self.executor, self.thread)  # before the node goes (see stop_spin)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
