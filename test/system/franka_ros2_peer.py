"""A stand-in for franka_ros2 (and a perception node) on the topics and QoS of
config/franka_bridge.yaml, for the `sim:=none bridge:=franka` launch test.

- ``/joint_states`` (sensor_msgs/JointState, RELIABLE, depth 10, as joint_state_broadcaster
  publishes it): ``fr3_joint1..7`` and the two finger joints at ``--rate`` Hz;
- ``/fr3_arm_controller/joint_trajectory`` (trajectory_msgs/JointTrajectory, RELIABLE depth 10, as
  the joint trajectory controller subscribes it): the arm follows the first point at once;
- ``/perception/task_state`` (async_vla_msgs/Observation, RELIABLE): the track task's fields, TCP
  (forward kinematics of the measured joints), a fixed target 5 cm away, zero target velocity.

Runs until SIGINT / SIGTERM (exit status 0). Prints one line per second with the commands it
received (how many, and how many named other joints than fr3_joint1..7).
"""

from __future__ import annotations

import argparse
import signal
import threading

import numpy as np

from async_vla_ros.rosenv import apply_ros_defaults

apply_ros_defaults()

import rclpy  # noqa: E402
from rclpy._rclpy_pybind11 import RCLError  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from async_vla_msgs.msg import Observation  # noqa: E402
from async_vla_ros.sim import kinematics as K  # noqa: E402

ARM = [f"fr3_joint{i}" for i in range(1, 8)]
FINGERS = ["fr3_finger_joint1", "fr3_finger_joint2"]
READY = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])  # franka_ros2's ready pose


class FrankaRos2Peer(Node):
    def __init__(self, rate_hz: float, task_hz: float) -> None:
        super().__init__("franka_ros2_peer")
        self._lock = threading.Lock()
        self.q = READY.copy()
        self.commands = 0
        self.foreign = 0
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_js = self.create_publisher(JointState, "/joint_states", reliable)
        self.pub_task = self.create_publisher(Observation, "/perception/task_state", reliable)
        self.create_subscription(JointTrajectory, "/fr3_arm_controller/joint_trajectory", self._on_command, reliable)
        tcp0 = np.asarray(K.fk(READY)[0], dtype=np.float64).reshape(3)
        self.target = tcp0 + np.array([0.05, 0.05, 0.0])
        self.obs_id = 0
        self.create_timer(1.0 / rate_hz, self._publish_joint_states)
        self.create_timer(1.0 / task_hz, self._publish_task_state)
        self.create_timer(1.0, self._report)

    def _on_command(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        pos = dict(zip(msg.joint_names, msg.points[0].positions))
        with self._lock:
            self.commands += 1
            if not all(n in pos for n in ARM):
                self.foreign += 1
                return
            self.q = np.array([pos[n] for n in ARM])

    def _publish_joint_states(self) -> None:
        with self._lock:
            q = self.q.copy()
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = ARM + FINGERS
        msg.position = q.tolist() + [0.02, 0.02]
        msg.velocity = [0.0] * 9
        self.pub_js.publish(msg)

    def _publish_task_state(self) -> None:
        with self._lock:
            q = self.q.copy()
        tcp = np.asarray(K.fk(q)[0], dtype=np.float64).reshape(3)
        state = np.concatenate([tcp, self.target, np.zeros(3)])
        self.obs_id += 1
        msg = Observation()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "fr3_link0"
        msg.obs_id = self.obs_id
        msg.episode_id = 1
        msg.task = "track"
        msg.status = Observation.STATUS_OK
        msg.state_dim = state.size
        msg.state_names = (
            ["tcp_x", "tcp_y", "tcp_z"] + [f"target_pos_{i}" for i in range(3)] + [f"target_vel_{i}" for i in range(3)]
        )
        msg.state = state.tolist()
        self.pub_task.publish(msg)

    def _report(self) -> None:
        with self._lock:
            n, bad = self.commands, self.foreign
        print(f"franka_ros2_peer: {n} commands received, {bad} with other joint names", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="joint state rate (Hz)")
    ap.add_argument("--task-rate", type=float, default=20.0, help="task state rate (Hz)")
    ns, _ros = ap.parse_known_args()
    rclpy.init()
    node = FrankaRos2Peer(ns.rate, ns.task_rate)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    try:
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGINT shut the context down while a timer published ("publisher's context is invalid",
        # seen in a loaded fresh-clone run): a clean stop; any other rcl error is a real one
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
