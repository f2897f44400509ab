"""franka_ros2 specifics used by the correction node when it drives a real FR3 (or franka Gazebo).

The arm needs nothing special: the correction node publishes ``JointTrajectory`` to the joint
trajectory controller (``/fr3_arm_controller/joint_trajectory``) or ``Float64MultiArray`` to a
forward position controller, both standard ros2_control interfaces (see config/franka_bridge.yaml).

The Franka Hand is not a ros2_control joint there: franka_ros2's ``franka_gripper`` node serves
``franka_msgs/action/Move`` and ``Grasp`` (``/fr3_gripper/move``, ``/fr3_gripper/grasp``) and the
robot state broadcaster publishes ``franka_msgs/msg/FrankaRobotState``. Those types exist only in
a franka_ros2 workspace. :class:`GripperBridge` uses them when ``franka_msgs`` is importable and
otherwise says so once, clearly, and the graph runs arm-only.
"""

from __future__ import annotations

import importlib
import math

__all__ = ["franka_msgs_available", "GripperBridge"]


def franka_msgs_available() -> tuple[bool, str]:
    """(True, "") when franka_msgs (actions + FrankaRobotState) can be imported, else (False, why)."""
    try:
        importlib.import_module("franka_msgs.action")
        importlib.import_module("franka_msgs.msg")
        return True, ""
    except ImportError as exc:
        return False, f"franka_msgs is not importable ({exc}): source a franka_ros2 workspace for the gripper"


class GripperBridge:
    """Franka Hand through franka_msgs actions; arm-only (inactive) without franka_msgs.

    ``command(width)`` sends a ``Move`` goal when the commanded width differs from the last goal
    by more than ``threshold`` m and no goal is in flight (the hand is slow; streaming goals at
    the command rate would only pre-empt each other). ``robot_state`` holds the last
    FrankaRobotState message when available.
    """

    def __init__(
        self,
        node,
        action_ns: str = "/fr3_gripper",
        robot_state_topic: str = "/franka_robot_state_broadcaster/robot_state",
        speed: float = 0.1,
        threshold: float = 0.005,
    ) -> None:
        self.node = node
        self.speed = float(speed)
        self.threshold = float(threshold)
        self.active, why = franka_msgs_available()
        self.robot_state = None
        self.goals_sent = 0
        self._last_goal: float | None = None
        self._in_flight = False
        if not self.active:
            node.get_logger().warning(f"gripper bridge inactive, running ARM-ONLY: {why}")
            return
        from franka_msgs.action import Move  # type: ignore[import-not-found]
        from franka_msgs.msg import FrankaRobotState  # type: ignore[import-not-found]
        from rclpy.action import ActionClient

        from async_vla_ros.nodes.common import make_qos

        self._Move = Move
        self._client = ActionClient(node, Move, f"{action_ns}/move")
        node.create_subscription(FrankaRobotState, robot_state_topic, self._on_state, make_qos("best_effort", 1))
        node.get_logger().info(
            f"gripper bridge: franka_msgs Move on {action_ns}/move, robot state on {robot_state_topic}"
        )

    def _on_state(self, msg) -> None:
        self.robot_state = msg

    def command(self, width: float) -> None:
        """Ask for gripper ``width`` (m); a no-op when inactive or nothing changed."""
        if not self.active or not math.isfinite(width):
            return
        if self._in_flight or (self._last_goal is not None and abs(width - self._last_goal) <= self.threshold):
            return
        if not self._client.server_is_ready():
            return
        goal = self._Move.Goal()
        goal.width = float(width)
        goal.speed = self.speed
        self._in_flight = True
        self._last_goal = float(width)
        self.goals_sent += 1
        future = self._client.send_goal_async(goal)
        future.add_done_callback(self._on_goal_response)

    def _on_goal_response(self, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self._in_flight = False
            return
        handle.get_result_async().add_done_callback(lambda _f: setattr(self, "_in_flight", False))
