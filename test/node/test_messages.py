"""Our messages import through rclpy and serialise round-trip."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
msgs = pytest.importorskip("async_vla_msgs.msg")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

ALL = [
    "Observation",
    "ChunkRequest",
    "ChunkTiming",
    "ActionChunk",
    "ActionPlan",
    "ChunkReport",
    "NodeMetrics",
    "CommandMetrics",
]


@pytest.mark.parametrize("name", ALL)
def test_every_message_has_a_header_and_round_trips(name):
    cls = getattr(msgs, name)
    msg = cls()
    assert hasattr(msg, "header"), f"{name} has no std_msgs/Header"
    msg.header.frame_id = "fr3_link0"
    msg.header.stamp.sec = 12
    back = deserialize_message(serialize_message(msg), cls)
    assert back == msg


def test_ids_shapes_and_error_fields_exist():
    chunk = msgs.ActionChunk()
    for field in (
        "chunk_id",
        "request_id",
        "obs_id",
        "episode_id",
        "horizon",
        "action_dim",
        "error_code",
        "error_message",
    ):
        assert hasattr(chunk, field)
    req = msgs.ChunkRequest()
    for field in ("request_id", "horizon", "action_dim", "delay_steps", "execution_horizon", "prefix", "weights"):
        assert hasattr(req, field)
    plan = msgs.ActionPlan()
    for field in ("plan_id", "length", "action_dim", "chunk_ids", "chunk_index"):
        assert hasattr(plan, field)
    assert msgs.ActionChunk.ERROR_NONE == 0
    assert msgs.ChunkRequest.SAMPLER_RTC == "rtc"
    # every sampler a request may carry has its constant in the message
    from async_vla_ros.core.strategies import SAMPLERS

    consts = {v for k, v in vars(msgs.ChunkRequest).items() if k.startswith("SAMPLER_")}
    assert consts == set(SAMPLERS)


def test_flat_arrays_carry_shaped_data():
    h, a = 8, 8
    actions = np.arange(h * a, dtype=np.float64).reshape(h, a)
    chunk = msgs.ActionChunk(horizon=h, action_dim=a, actions=actions.ravel().tolist())
    back = deserialize_message(serialize_message(chunk), msgs.ActionChunk)
    np.testing.assert_array_equal(np.asarray(back.actions).reshape(back.horizon, back.action_dim), actions)
