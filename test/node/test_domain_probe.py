"""rosenv.domain_in_use / free_session_domain_id: a domain with a live node is seen as taken (the
test session then moves to the next id), a domain nobody uses is free."""

from __future__ import annotations

import os

import pytest

rclpy = pytest.importorskip("rclpy")

from async_vla_ros import rosenv  # noqa: E402
from async_vla_ros.rosenv import domain_in_use, free_session_domain_id, session_domain_id  # noqa: E402

pytestmark = pytest.mark.ros


def test_a_domain_with_a_node_is_in_use_and_skipped():
    """Discovery catches a node whose process takes no domain lock (a graph started by hand)."""
    mine = int(os.environ["ROS_DOMAIN_ID"])  # this session's (conftest; locked by this process)
    target = next(d for d in range(10, 99) if d != mine and rosenv.reserve_domain(d))
    rosenv.release_domain(target)  # its lock is free: only discovery can tell it is taken
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=target)
    node = rclpy.create_node("domain_probe_target", context=ctx)
    got = None
    try:
        assert domain_in_use(target, wait_s=5.0)
        seed = next(s for s in range(1000) if session_domain_id(s) == target)
        got = free_session_domain_id(seed, tries=2, wait_s=5.0)  # discovery takes up to ~2.6 s here
        assert got != target
        assert rosenv.reserve_domain(target)  # the busy candidate's lock was given back
        rosenv.release_domain(target)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        if got is not None and got != mine:
            rosenv.release_domain(got)
