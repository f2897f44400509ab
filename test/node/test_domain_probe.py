"""rosenv.domain_in_use / free_session_domain_id: a domain with a live node is seen as taken (the
test session then moves to the next id), a domain nobody uses is free."""

from __future__ import annotations

import os

import pytest

rclpy = pytest.importorskip("rclpy")

from async_vla_ros.rosenv import domain_in_use, free_session_domain_id, session_domain_id  # noqa: E402

pytestmark = pytest.mark.ros


def test_a_domain_with_a_node_is_in_use_and_skipped():
    mine = int(os.environ["ROS_DOMAIN_ID"])  # this session's (conftest)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=mine)
    node = rclpy.create_node("domain_probe_target", context=ctx)
    try:
        assert domain_in_use(mine, wait_s=5.0)
        seed = next(s for s in range(1000) if session_domain_id(s) == mine)
        assert free_session_domain_id(seed, tries=2, wait_s=5.0) != mine  # discovery takes up to ~2.6 s here
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
