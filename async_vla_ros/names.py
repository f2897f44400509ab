"""Names shared across the stack, defined once: tasks, FR3 joints, action dimensions, topics,
cameras and the tasks' language instructions.

Topic names are relative (nodes resolve them in their namespace, so ``namespace:=/arm`` moves the
whole graph); :func:`absolute` gives the name as recorded in a bag of an un-namespaced graph.
The joint names are franka_ros2's (``fr3_joint1..7``); the action is the 7 joint position
targets plus the gripper width.
"""

from __future__ import annotations

import re

TASK_NAMES = ("track", "intercept", "bifurcate", "pick_moving")  # sim/tasks.py TASKS, in this order

ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))  # franka_ros2 FR3 arm joints, in order
ACTION_NAMES = (*ARM_JOINTS, "gripper_width")  # the A = 8 action dimensions
N_ARM = len(ARM_JOINTS)  # the joint targets at the head of an action (and the joint positions of a state)
# What a LeRobot folder's 7 joint targets are (its sidecar's ``action_frame``): absolute joint positions,
# or relative to the observation's joint positions (``delta_q``; the gripper width stays absolute)
ACTION_FRAMES = ("absolute", "delta_q")

# topics (relative names)
OBSERVATION = "observation"  # camera_ingestion -> policy, scheduler, correction
CHUNK_REQUEST = "policy/chunk_request"  # scheduler -> policy
ACTION_CHUNK = "policy/action_chunk"  # policy -> scheduler
ACTION_PLAN = "scheduler/action_plan"  # scheduler -> correction
CHUNK_REPORT = "scheduler/chunk_report"  # scheduler -> metrics, dashboard, bags
JOINT_STATES = "joint_states"  # robot (sim | franka_ros2)
CAMERAS = ("scene", "wrist")  # the sim scene's cameras (sim/scene.py): fixed scene view, wrist (hand) view
# What a camera draws (MuJoCo geom groups): the Panda's collision meshes (~5x faster on CPU) or its
# visual meshes; table and task objects are group 0. One default for every renderer (demos, the sim
# node, the lockstep runner): a policy trained on one style and run on the other sees another robot.
IMAGE_STYLES = {"collision": (0, 3), "visual": (0, 2)}
IMAGE_STYLE = "collision"
# Where the fixed scene camera stands (placements by name in sim/scene.py SCENE_CAMERAS). A policy
# trained on one placement and run on another sees another picture: the VLA's sidecar records it
# (``scene_camera``) and the LeRobot backend refuses a folder whose placement is not this one.
SCENE_CAMERA = "front_v1"
SCENE_CAMERA_LEGACY = "front_v1"  # what a folder whose sidecar names no placement was trained on
TASK_STATE = "sim/task_state"  # sim: privileged task state (experts, success checks)
EPISODE_RESULT = "sim/episode_result"
FORWARD_COMMAND = "forward_position_controller/commands"  # Float64MultiArray command interface
TRAJECTORY_COMMAND = "fr3_arm_controller/joint_trajectory"  # JointTrajectory command interface
COMMAND_METRICS = "correction/command_metrics"  # correction's per-tick metrics
DIAGNOSTICS = "/diagnostics"
COMMAND_TOPICS = (FORWARD_COMMAND, TRAJECTORY_COMMAND)  # the two ros2_control command interfaces


# Proprioception: the first values of every observation state, in this order, in the simulator's
# observation (sim/tasks.py COMMON_FIELDS: q 7, qd 7, gripper 1) and in camera_ingestion's
# (``<joint>.position`` x 7, ``<joint>.velocity`` x 7, ``gripper_width``). A policy that reads only
# these (``reads_proprio``, e.g. the multi-task VLA) takes that prefix of any task's state.
N_PROPRIO = 15

# Language instructions per task: several paraphrases each. The first of ``INSTRUCTIONS[task]`` is
# the task's default (camera_ingestion's ``instruction`` parameter when empty); ``HELD_OUT``
# paraphrases never go into training data (demos, dataset exports), only into evaluation.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "track": (
        "follow the moving target with the gripper",
        "keep the gripper on the moving target",
        "track the target as it moves",
    ),
    "intercept": (
        "catch the rolling ball before it reaches the goal",
        "stop the ball with the paddle before it gets to the goal",
        "intercept the rolling ball",
    ),
    "bifurcate": (
        "reach the goal past the drifting pole",
        "go around the pole to the goal",
        "move to the goal without touching the pole",
    ),
    "pick_moving": (
        "pick up the moving cube",
        "grasp the sliding cube and lift it",
        "grab the cube while it moves",
    ),
}
HELD_OUT: dict[str, tuple[str, ...]] = {
    "track": ("stay close to the target wherever it goes",),
    "intercept": ("block the ball on its way to the goal",),
    "bifurcate": ("pass the moving pole on either side and reach the goal",),
    "pick_moving": ("lift the cube that is moving",),
}
assert set(INSTRUCTIONS) == set(HELD_OUT) == set(TASK_NAMES), "an instruction table misses a task"


def default_instruction(task: str) -> str:
    """The task's first paraphrase ('' for an unknown or empty task)."""
    return INSTRUCTIONS.get(task, ("",))[0]


# A policy camera named ``<camera>_prev`` is that camera's frame one control period earlier (the
# previous frame, so a policy sees motion); ``<camera>_prev<k>`` (k >= 2) is its frame k periods
# earlier, for motion too small to see in one period. It is not rendered or published on its own:
# the lockstep runner and camera_ingestion derive it from ``<camera>``'s frames, training from the
# demo's t - k.
PREV_SUFFIX = "_prev"
MAX_FRAMES_BACK = 6  # camera_ingestion keeps 8 frames per camera; one period of slack each side


def prev_frame_name(camera: str, back: int = 1) -> str:
    """The policy camera that is ``camera``'s frame ``back`` control periods earlier."""
    if isinstance(back, bool) or not isinstance(back, int) or not 1 <= back <= MAX_FRAMES_BACK:
        raise ValueError(f"a previous frame is 1..{MAX_FRAMES_BACK} control periods back, got {back!r}")
    return camera + PREV_SUFFIX + ("" if back == 1 else str(back))


def frame_source(camera: str) -> tuple[str, int]:
    """``(camera it comes from, control periods back)``: ``("scene", 1)`` for ``scene_prev``,
    ``("scene", 3)`` for ``scene_prev3``, ``("scene", 0)`` for ``scene``."""
    m = re.fullmatch(r"(.+)" + PREV_SUFFIX + r"([2-9]|[1-9][0-9]+)?", camera)
    if m is None:
        return camera, 0
    back = int(m.group(2) or 1)
    if back > MAX_FRAMES_BACK:
        raise ValueError(f"camera {camera!r}: at most {MAX_FRAMES_BACK} control periods back")
    return m.group(1), back


def camera_image_topic(camera: str) -> str:
    """``camera/<camera>/image_raw``: one sensor_msgs/Image topic per camera (relative)."""
    return f"camera/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    """``camera/<camera>/camera_info`` (relative)."""
    return f"camera/{camera}/camera_info"


def absolute(name: str) -> str:
    """``/name`` (a relative topic as it appears in a bag of an un-namespaced graph)."""
    return name if name.startswith("/") else "/" + name
