"""Recorder node in-process: every published message ends up in the bag (counts match), values
survive rclpy CDR -> bag -> rosbags / mcap-ros2-support, and late (metrics) topics are discovered."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
msgs = pytest.importorskip("async_vla_msgs.msg")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from async_vla_ros import bags as B  # noqa: E402
from async_vla_ros.nodes.common import SpinThread, build_node, stop_spin  # noqa: E402
from async_vla_ros.nodes.params import ParamError  # noqa: E402
from async_vla_ros.nodes.recorder import RecorderNode  # noqa: E402

N = 150  # messages per topic
RATE_HZ = 200.0  # per topic; 5 topics -> 1000 msg/s, above every default rate of the graph


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def _make_messages(i: int):
    obs = msgs.Observation(obs_id=i, episode_id=1, task="track", state_dim=3, state=[float(i), 0.5, -1.0])
    obs.header.stamp.sec, obs.header.stamp.nanosec = 100 + i, 7
    chunk = msgs.ActionChunk(
        chunk_id=i,
        request_id=i,
        horizon=2,
        action_dim=2,
        actions=[i, 1.0, 2.0, 3.0],
        sampler="rtc",
        action_names=["a", "b"],
    )
    chunk.timing.inference_s = 0.001 * i
    js = JointState(name=[f"fr3_joint{k}" for k in range(1, 8)], position=[0.1 * i] * 7)
    cmd = Float64MultiArray(data=[float(i)] * 8)
    metric = Float64MultiArray(data=[float(i), 2.0 * i])
    return {
        "/observation": obs,
        "/policy/action_chunk": chunk,
        "/joint_states": js,
        "/forward_position_controller/commands": cmd,
        "/metrics/test": metric,
    }


def test_recorder_counts_match_publishers(ros, tmp_path):
    bag = tmp_path / "bag"
    stats = tmp_path / "stats.json"
    rec = RecorderNode(
        parameter_overrides=[
            Parameter("output", value=str(bag)),
            Parameter(
                "topics",
                value=[
                    "observation",
                    "policy/action_chunk",
                    "joint_states",
                    "forward_position_controller/commands",
                    "metrics/test",
                ],
            ),
            Parameter("discovery_period_s", value=0.1),
            Parameter("stats_file", value=str(stats)),
        ]
    )
    pub_node = rclpy.create_node("recorder_test_pub")
    types = {
        "/observation": msgs.Observation,
        "/policy/action_chunk": msgs.ActionChunk,
        "/joint_states": JointState,
        "/forward_position_controller/commands": Float64MultiArray,
        "/metrics/test": Float64MultiArray,
    }
    pubs = {t: pub_node.create_publisher(cls, t, 10) for t, cls in types.items()}
    sent = {t: 0 for t in types}
    lock = threading.Lock()

    def tick():
        with lock:
            i = min(sent.values()) + 1
            if i > N:
                return
            for t, m in _make_messages(i).items():
                pubs[t].publish(m)
                sent[t] += 1

    # The recorder and the publishers each on their own single-threaded executor and thread, as in
    # the graph (one process per node, one executor thread each). Not one rclpy
    # MultiThreadedExecutor for both: it re-submits every task still queued in its thread pool on
    # each wake-up (1000 messages/s here), so on a loaded machine its queue fills with duplicates
    # (65 queued for 7 tasks, measured) and the 200 Hz publishing timer could stall behind them.
    spins = []
    for node in (rec, pub_node):
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        spins.append(SpinThread(ex, name=f"spin-{node.get_name()}"))
        spins[-1].start()
    try:
        # the metrics topic has no default type: the recorder subscribes once it shows up in the graph
        _wait(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()), 20.0, "recorder subscriptions")
        pub_node.create_timer(1.0 / RATE_HZ, tick)
        _wait(lambda: all(v == N for v in sent.values()), 30.0, "publishing")
        _wait(lambda: all(rec.counts().get(t, {}).get("received", 0) >= N for t in types), 20.0, "recorder receipt")
    finally:
        for spin in spins:  # each spin over (joined) before its executor shuts down: see SpinThread
            stop_spin(spin.executor, spin)
    assert [spin.error for spin in spins] == [None, None]
    counts = rec.close()
    for t in types:
        assert counts[t] == {"received": N, "written": N, "dropped": 0}, t
    assert B.bag_info(bag).counts == {t: N for t in types}
    assert '"dropped": 0' in stats.read_text()

    # values and order: rclpy CDR through the bag decodes with rosbags exactly
    obs_ids = [m.msg.obs_id for m in B.read_messages(bag, ["/observation"])]
    assert obs_ids == list(range(1, N + 1))
    last = list(B.read_messages(bag, ["/policy/action_chunk"]))[-1].msg
    assert last.actions.tolist() == [N, 1.0, 2.0, 3.0] and last.sampler == "rtc"
    assert last.timing.inference_s == pytest.approx(0.001 * N)
    types_in_bag = B.bag_info(bag).topics
    assert types_in_bag["/metrics/test"] == "std_msgs/msg/Float64MultiArray"
    assert types_in_bag["/observation"] == "async_vla_msgs/msg/Observation"
    mcap_reader = pytest.importorskip("mcap_ros2.reader")
    (mcap_file,) = bag.glob("*.mcap")
    states = [list(m.ros_msg.state) for m in mcap_reader.read_ros2_messages(str(mcap_file), topics=["/observation"])]
    assert states[4] == [5.0, 0.5, -1.0]
    rec.destroy_node()
    pub_node.destroy_node()


def test_recorder_rejects_existing_output_and_bad_params(ros, tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        build_node(RecorderNode, parameter_overrides=[Parameter("output", value=str(tmp_path / "exists"))])
    with pytest.raises(ParamError, match="queue_size"):
        build_node(
            RecorderNode,
            parameter_overrides=[Parameter("output", value=str(tmp_path / "b")), Parameter("queue_size", value=1)],
        )
