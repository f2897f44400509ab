"""Names shared across the stack, defined once: tasks, FR3 joints, action dimensions, topics.

Topic names are relative (nodes resolve them in their namespace, so ``namespace:=/arm`` moves the
whole graph); :func:`absolute` gives the name as recorded in a bag of an un-namespaced graph.
The joint names are franka_ros2's (``fr3_joint1..7``); the action is the 7 joint position
targets plus the gripper width.
"""

from __future__ import annotations

TASK_NAMES = ("track", "intercept", "bifurcate", "pick_moving")  # sim/tasks.py TASKS, in this order

ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))  # franka_ros2 FR3 arm joints, in order
ACTION_NAMES = (*ARM_JOINTS, "gripper_width")  # the A = 8 action dimensions

# topics (relative names)
OBSERVATION = "observation"  # camera_ingestion -> policy, scheduler, correction
CHUNK_REQUEST = "policy/chunk_request"  # scheduler -> policy
ACTION_CHUNK = "policy/action_chunk"  # policy -> scheduler
ACTION_PLAN = "scheduler/action_plan"  # scheduler -> correction
CHUNK_REPORT = "scheduler/chunk_report"  # scheduler -> metrics, dashboard, bags
JOINT_STATES = "joint_states"  # robot (sim | franka_ros2)
IMAGE = "camera/image_raw"  # camera driver | sim
CAMERA_INFO = "camera/camera_info"
TASK_STATE = "sim/task_state"  # sim: privileged task state (experts, success checks)
EPISODE_RESULT = "sim/episode_result"
FORWARD_COMMAND = "forward_position_controller/commands"  # Float64MultiArray command interface
TRAJECTORY_COMMAND = "fr3_arm_controller/joint_trajectory"  # JointTrajectory command interface
COMMAND_METRICS = "correction/command_metrics"  # correction's per-tick metrics
DIAGNOSTICS = "/diagnostics"
COMMAND_TOPICS = (FORWARD_COMMAND, TRAJECTORY_COMMAND)  # the two ros2_control command interfaces


def absolute(name: str) -> str:
    """``/name`` (a relative topic as it appears in a bag of an un-namespaced graph)."""
    return name if name.startswith("/") else "/" + name
