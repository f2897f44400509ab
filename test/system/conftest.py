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
