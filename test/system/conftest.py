"""Fixtures of the system tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def monitor():
    """A GraphMonitor (chunk reports, diagnostics, episode results of the running graph), spun on
    its own thread for the test's duration."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.monitor import GraphMonitor
    from async_vla_ros.nodes.common import SpinThread, stop_spin

    rclpy.init()
    mon = GraphMonitor()
    ex = SingleThreadedExecutor()
    ex.add_node(mon)
    th = SpinThread(ex, name="monitor")
    th.start()
    yield mon
    stop_spin(ex, th)  # before the node goes (see stop_spin)
    mon.destroy_node()
    rclpy.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _no_ros2_daemon_outlives_the_session():
    """Verbs of the ros2 CLI without ``--no-daemon`` (``topic hz``, ``param set`` ...) start a ros2
    daemon for the session's domain, which outlived the test run (two were found after fresh-clone
    runs): stop it at the end of the session (a no-op when none runs)."""
    yield
    import os
    import subprocess
    import sys
    from pathlib import Path

    ros2 = Path(sys.executable).parent / "ros2"
    if ros2.exists():
        subprocess.run(
            [str(ros2), "daemon", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=60,
            env=dict(os.environ),
            check=False,
        )
