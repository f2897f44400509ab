"""Tearing down a node that an executor spins in another thread (the chaos/soak probes, the
system-test monitor): the spin must be over before entities go, and the chaos probe's bag
subscriptions go in the spin thread itself."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from async_vla_ros.eval.graph_probe import make_probe_class  # noqa: E402
from async_vla_ros.nodes.common import SpinThread, stop_spin  # noqa: E402


@pytest.fixture()
def ctx():
    c = rclpy.Context()
    rclpy.init(context=c)
    yield c
    if c.ok():
        rclpy.shutdown(context=c)


def _spin(node, c):
    ex = SingleThreadedExecutor(context=c)
    ex.add_node(node)
    th = SpinThread(ex, name="spin-under-test")
    th.start()
    return ex, th


def test_stop_spin_returns_once_the_spin_thread_ended(ctx):
    """rclpy's Executor.shutdown alone returns while the spin may still run; stop_spin joins it."""
    node = rclpy.create_node("stop_spin_target", context=ctx)
    node.create_timer(0.001, lambda: time.sleep(0.002))  # a spin that is always busy
    for _ in range(5):
        ex, th = _spin(node, ctx)
        time.sleep(0.05)
        stop_spin(ex, th)
        assert not th.is_alive()
        ex.remove_node(node)
    node.destroy_node()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the raise under test
def test_spin_thread_keeps_the_error_that_ended_its_spin(ctx):
    """A callback that raises ends the spin; the thread keeps the exception for its owner to report
    (a stopped spin has none)."""
    node = rclpy.create_node("spin_error_target", context=ctx)

    def boom():
        raise RuntimeError("callback failed")

    node.create_timer(0.01, boom)
    ex, th = _spin(node, ctx)
    th.join(10.0)
    assert not th.is_alive()
    assert isinstance(th.error, RuntimeError) and "callback failed" in str(th.error)
    stop_spin(ex, th)
    node.destroy_node()

    quiet = rclpy.create_node("spin_quiet_target", context=ctx)
    ex, th = _spin(quiet, ctx)
    time.sleep(0.05)
    stop_spin(ex, th)
    assert th.error is None
    quiet.destroy_node()


def test_probe_unsubscribes_its_bag_topics_in_the_spin_thread(ctx, tmp_path):
    """stop_bag(executor) while the probe spins: its bag subscriptions are gone, the bag is closed,
    and the spin thread is still alive (destroyed from this thread instead, the spin died once with
    rclpy's InvalidHandle in a loaded chaos run)."""
    probe_cls = make_probe_class()
    for i in range(30):
        probe = probe_cls(ctx, "trajectory", record_bag=str(tmp_path / f"bag{i}"))
        # a busy spin, as under traffic: it passes the window between gathering the entities and
        # building the wait set all the time (destroyed from this thread instead: the spin died in
        # 3 of 100 such rounds here)
        probe.create_timer(0.0002, lambda: None)
        n_subs = len(list(probe.subscriptions))
        ex, th = _spin(probe, ctx)
        time.sleep(0.02)
        probe.stop_bag(ex)
        assert th.is_alive(), "the probe's spin died while it unsubscribed"
        assert len(list(probe.subscriptions)) == n_subs - 4  # the four recorded topics
        assert probe._bag is None
        stop_spin(ex, th)
        probe.destroy_node()
