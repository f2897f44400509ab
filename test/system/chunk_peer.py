"""A tiny talker/listener pair for the cross-process ActionChunk test.

talker:   publishes a fully populated ActionChunk on /test_chunk until a subscriber has matched
          and the deadline passes (bounded: at most --timeout seconds).
listener: waits for one ActionChunk and prints every field as JSON on stdout, then exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from async_vla_ros.rosenv import apply_ros_defaults

apply_ros_defaults()

import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402

from async_vla_msgs.msg import ActionChunk  # noqa: E402
from async_vla_ros.msgdict import message_to_dict  # noqa: E402

TOPIC = "/test_chunk"


def make_chunk() -> ActionChunk:
    h, a = 8, 8
    msg = ActionChunk()
    msg.header.stamp.sec = 1234
    msg.header.stamp.nanosec = 567_000_000
    msg.header.frame_id = "fr3_link0"
    msg.chunk_id = 17
    msg.request_id = 16
    msg.episode_id = 3
    msg.obs_id = 99
    msg.sampler = "rtc"
    msg.policy_name = "flow/track"
    msg.horizon = h
    msg.action_dim = a
    msg.dt = 0.05
    msg.action_names = [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"]
    msg.actions = [0.001 * i - 0.01 for i in range(h * a)]
    msg.error_code = ActionChunk.ERROR_NONE
    msg.error_message = ""
    msg.timing.header.stamp.sec = 1235
    msg.timing.obs_stamp.sec = 1234
    msg.timing.obs_stamp.nanosec = 567_000_000
    msg.timing.queue_s = 0.0005
    msg.timing.inference_s = 0.0123
    msg.timing.injected_delay_s = 0.1
    msg.timing.obs_age_at_start_s = 0.002
    return msg


def talker(timeout: float) -> int:
    rclpy.init()
    node = Node("chunk_talker")
    pub = node.create_publisher(ActionChunk, TOPIC, 10)
    deadline = time.monotonic() + timeout
    matched_at = None
    while time.monotonic() < deadline:
        if pub.get_subscription_count() > 0:
            matched_at = matched_at or time.monotonic()
            pub.publish(make_chunk())
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if matched_at else 3


def listener(timeout: float) -> int:
    rclpy.init()
    node = Node("chunk_listener")
    got: list[ActionChunk] = []
    node.create_subscription(ActionChunk, TOPIC, got.append, 10)
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if got:
        d = message_to_dict(got[0])
        print(json.dumps(d, default=list), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if got else 4


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["talker", "listener"])
    ap.add_argument("--timeout", type=float, default=20.0)
    ns = ap.parse_args()
    sys.exit(talker(ns.timeout) if ns.role == "talker" else listener(ns.timeout))
