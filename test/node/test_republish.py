"""``replay BAG --republish``: a small bag played into a live subscriber at its original timing,
every message delivered in order, stamps shifted to now with the recorded spacing kept."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("rosbags")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from async_vla_msgs.msg import Observation  # noqa: E402
from async_vla_ros.bags import BagWriter, default_message  # noqa: E402
from async_vla_ros.eval.republish import parse_remaps, playback_plan, republish, shift_stamps  # noqa: E402
from async_vla_ros.nodes.common import stamp_to_ns  # noqa: E402

pytestmark = pytest.mark.ros
T0 = 1_700_000_000_000_000_000  # recording time (ns): long ago
MS = 1_000_000


def _write_bag(path):
    """1 s: /joint_states at 100 Hz, /sim/task_state at 20 Hz, plus a topic not played by default."""
    with BagWriter(path) as w:
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        w.add_topic("/sim/task_state", "async_vla_msgs/msg/Observation")
        w.add_topic("/scheduler/chunk_report", "async_vla_msgs/msg/ChunkReport")
        Time = w.new("builtin_interfaces/msg/Time")
        Header = w.new("std_msgs/msg/Header")
        for i in range(100):
            t = T0 + i * 10 * MS
            hdr = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="")
            w.write(
                "/joint_states",
                t + 2 * MS,
                default_message("sensor_msgs/msg/JointState", header=hdr, name=["j"], position=np.array([0.01 * i])),
            )
            if i % 5 == 0:
                w.write(
                    "/sim/task_state",
                    t + 3 * MS,
                    default_message(
                        "async_vla_msgs/msg/Observation",
                        header=hdr,
                        obs_id=i // 5 + 1,
                        state_dim=1,
                        state=np.array([float(i)]),
                    ),
                )
        w.write("/scheduler/chunk_report", T0, default_message("async_vla_msgs/msg/ChunkReport"))


def test_shift_stamps_and_plan(tmp_path):
    bag = tmp_path / "bag"
    _write_bag(bag)
    items, types, t_first = playback_plan(bag)  # robot topics by default: chunk reports are not played
    assert set(types) == {"/joint_states", "/sim/task_state"} and len(items) == 120 and t_first == T0 + 2 * MS
    assert [it.offset_ns for it in items[:3]] == [0, 1 * MS, 10 * MS]
    assert playback_plan(bag, rate=2.0)[0][2].offset_ns == 5 * MS
    msg = default_message("async_vla_msgs/msg/ActionChunk")
    msg.header.stamp.sec, msg.timing.inference_end.sec = 5, 7  # nested stamps; zero stamps stay zero
    assert shift_stamps(msg, 1_500_000_000) == 2
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.timing.inference_end.sec) == (6, 500_000_000, 8)
    assert msg.timing.obs_stamp.sec == 0
    with pytest.raises(ValueError, match="none of the topics"):
        playback_plan(bag, ["/nope"])
    with pytest.raises(ValueError, match="FROM:=TO"):
        parse_remaps(["/a"])


def test_republish_into_a_live_subscriber(tmp_path):
    bag = tmp_path / "bag"
    _write_bag(bag)
    rclpy.init()
    try:
        player = rclpy.create_node("bag_player_test")
        sink = rclpy.create_node("republish_sink")
        got_js: list[tuple[int, int, float]] = []  # (arrival, stamp, position)
        got_obs: list[int] = []
        sink.create_subscription(
            JointState,
            "/robot1/joint_states",
            lambda m: got_js.append((time.monotonic_ns(), stamp_to_ns(m.header.stamp), m.position[0])),
            200,
        )
        sink.create_subscription(Observation, "/sim/task_state", lambda m: got_obs.append(m.obs_id), 200)
        ex = SingleThreadedExecutor()
        ex.add_node(sink)
        result = {}
        t_start = sink.get_clock().now().nanoseconds
        th = threading.Thread(
            target=lambda: result.update(
                r=republish(player, bag, remap={"/joint_states": "/robot1/joint_states"}, wait_for_subscribers_s=10.0)
            )
        )
        th.start()
        deadline = time.monotonic() + 20
        while (len(got_js) < 100 or len(got_obs) < 20) and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.02)
        th.join(10)
        res = result["r"]
        assert res.counts == {"/robot1/joint_states": 100, "/sim/task_state": 20} and not res.stopped
        assert [p for _, _, p in got_js] == pytest.approx([0.01 * i for i in range(100)])  # all, in order
        assert got_obs == list(range(1, 21))
        stamps = np.array([s for _, s, _ in got_js])
        np.testing.assert_array_equal(np.diff(stamps), 10 * MS)  # recorded spacing kept exactly
        assert 0 <= stamps[0] - t_start < 15 * 10**9  # shifted to now (after discovery), not 2023
        arrivals = np.array([a for a, _, _ in got_js])
        assert np.median(np.diff(arrivals)) == pytest.approx(10 * MS, rel=0.3)  # original timing
        assert (arrivals[-1] - arrivals[0]) / 1e9 == pytest.approx(0.99, abs=0.25)
        ex.remove_node(sink)
        sink.destroy_node()
        player.destroy_node()
    finally:
        rclpy.shutdown()
