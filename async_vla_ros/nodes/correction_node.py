"""correction node: the high-rate command loop (default 100 Hz) on its own thread.

Every tick (paced by a :class:`~async_vla_ros.core.cycle_timer.CycleTimer` on the monotonic
clock, optionally under SCHED_FIFO):

1. sample the scheduler's plan at the current ROS time (:class:`~async_vla_ros.nodes.plan.PlanBuffer`:
   ``linear`` interpolation between control steps, or ``hold``);
2. when an A2C2 head is loaded (``a2c2_head``), add its residual computed from the latest
   observation, the base action and the in-chunk index k (once per control step and
   observation; ``policy.a2c2.CorrectionHead``);
3. apply the core :class:`~async_vla_ros.core.safety.SafetyFilter` (FR3/Panda position,
   velocity, acceleration, jerk limits at the command period; NaN/Inf rejected);
4. publish the command: ``JointTrajectory`` (joint trajectory controller) or
   ``Float64MultiArray`` (forward position controller); the gripper as a finger joint / 8th value
   (sim), through franka_msgs actions (``franka_action``), or not at all.

Nothing is published before the first plan of an episode has been sampled (the robot's own
controller keeps holding); after that, when the plan runs dry (nothing planned for the current
step) it holds the last target. An episode may engage once the arm is measured: at start, any
``/joint_states``; at every new episode seen on ``/observation``, a ``/joint_states`` measured at or
after that observation (by stamp: a queued older message is not where the arm is) whose joints
agree with the observation's within ``episode_start_tol_rad``. Until then nothing is published (the
robot's controller holds). It engages at the first planned sample after that, and the filter then
starts from the newest measured joints (the arm may have moved while its controller held). It
never restarts from an observation's state, and an episode whose observation disagrees with the
arm (rogue, or stale) never engages. Episode ids
and plan ids follow :class:`~async_vla_ros.core.sequence.SequenceTracker` (an older id is dropped
unless ``rewind_after`` arrive in a row: its sender restarted). Plans of other episodes are dropped.
A head that reads the base policy's features (``latent_dim`` > 0: the VLA's head) runs with
``a2c2_policy``, the policy node's spec (and ``a2c2_policy_kind``): the node loads that policy,
refuses to start unless the head fits it (``policy.registry.check_head_fits``), and computes the
features of every observation (its cameras and instruction, its proprioception by
``policy.checks.policy_state``) on a worker thread, never in the command loop (newest observation
wins; superseded ones are counted). The loop adds the residual of the newest observation whose
features are ready. An observation without usable images, or whose features fail or are not
finite, is a counted drop (``a2c2.*``) and turns the head off until the next good one: the base
action passes through to the safety filter. Each filter restart is announced on
``/correction/command_segment`` (``std_msgs/Header``, stamped before the first command from the new
start): commands on either side of it are not consecutive filter outputs.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from async_vla_msgs.msg import ActionPlan, CommandMetrics, Observation
from async_vla_ros import names as N
from async_vla_ros.core.clock import MonotonicClock
from async_vla_ros.core.cycle_timer import CycleTimer
from async_vla_ros.core.safety import ROBOT_LIMITS, SafetyConfig, SafetyFilter
from async_vla_ros.core.sequence import SeqEvent, SequenceTracker
from async_vla_ros.nodes.common import (
    NS_PER_S,
    DropCounter,
    make_qos,
    run_node,
    set_realtime,
    shutting_down,
    stamp_to_ns,
)
from async_vla_ros.nodes.health import Threshold
from async_vla_ros.nodes.ingest import InputError, joint_arrays
from async_vla_ros.nodes.metrics import Telemetry, quantile_values, telemetry_params
from async_vla_ros.nodes.params import Param, declare_params
from async_vla_ros.nodes.plan import INTERPOLATIONS, PlanBuffer
from async_vla_ros.nodes.policy_node import observation_images
from async_vla_ros.nodes.worker import InferenceWorker
from async_vla_ros.policy.checks import policy_state

NODE_NAME = "correction"
FR3_JOINTS = list(N.ARM_JOINTS)
# /diagnostics levels (limits: parameters diag.<key>.warn / .error; docs/observability.md)
THRESHOLDS = (
    Threshold("period_error_p99_s", 0.005, 0.02, description="|command period - nominal|, p99 of the last 5000 ticks"),
    Threshold(
        "large_interventions_per_s",
        5.0,
        50.0,
        description="ticks per s on which the safety filter rejected or clamped the target, or moved the "
        "command more than safety_tolerance_rad from it",
    ),
    Threshold("holds_per_s", 5.0, 50.0, description="ticks per s that held the last target (plan ran dry)"),
    Threshold("dropped_per_s", 1.0, 10.0, description="inputs dropped per s (all reasons)"),
)
# SafetyFlags field -> CommandMetrics.SAFETY_* bit
_SAFETY_BITS = (
    ("input_rejected", 1),
    ("position_clamped", 2),
    ("limited", 4),
    ("braking", 8),
    ("gripper_rejected", 16),
    ("gripper_clamped", 32),
)

PARAMS = (
    Param("rate_hz", 100.0, "command rate", min=10.0, max=1000.0),
    Param("interpolation", "linear", "plan sampling between control steps", choices=INTERPOLATIONS),
    Param(
        "robot", "fr3", "joint limits of the safety filter (the MuJoCo scene is a Panda)", choices=tuple(ROBOT_LIMITS)
    ),
    Param("position_margin", 0.01, "rad kept clear of the joint limits", min=0.0, max=0.5),
    Param("scale_velocity", 1.0, "fraction of the velocity limits used", min=0.01, max=1.0),
    Param("scale_acceleration", 1.0, "fraction of the acceleration limits used", min=0.01, max=1.0),
    Param("scale_jerk", 1.0, "fraction of the jerk limits used", min=0.01, max=1.0),
    Param("a2c2_head", "", "A2C2 correction head checkpoint ('' : no correction)"),
    Param(
        "a2c2_policy",
        "",
        "policy spec whose features (latent) and share of the state the A2C2 head reads: the policy node's "
        "(bringup sets it for such a head); '' : the head reads the observation's state",
    ),
    Param("a2c2_policy_kind", "base", "checkpoint kind of a2c2_policy (the policy node's checkpoint_kind)"),
    Param("task", "track", "task of a2c2_policy (its default checkpoint)", choices=N.TASK_NAMES),
    Param("arm_joint_names", FR3_JOINTS, "the 7 arm joints (joint states and commands)"),
    Param("joint_state_topic", N.JOINT_STATES, "measured joints (start pose of the filter)"),
    Param(
        "rewind_after",
        10,
        "follow an older episode or plan id after this many in a row (its sender restarted, or a "
        "bad message carried a huge id; core/sequence.py)",
        min=1,
        max=100000,
    ),
    Param(
        "joint_state_reliability",
        "reliable",
        "QoS reliability of the joint states",
        choices=("reliable", "best_effort"),
    ),
    Param(
        "command_interface",
        "trajectory",
        "trajectory: JointTrajectory; forward: Float64MultiArray",
        choices=("trajectory", "forward"),
    ),
    Param("trajectory_topic", N.TRAJECTORY_COMMAND, "JointTrajectory command topic"),
    Param("forward_topic", N.FORWARD_COMMAND, "Float64MultiArray command topic"),
    Param(
        "gripper_mode",
        "joint",
        "joint: finger joint / 8th value (sim); franka_action: franka_msgs Move; none",
        choices=("joint", "franka_action", "none"),
    ),
    Param(
        "gripper_joint_name", "fr3_finger_joint1", "finger joint carrying width/2 in trajectories (gripper_mode joint)"
    ),
    Param("gripper_action_ns", "/fr3_gripper", "franka_gripper action namespace (gripper_mode franka_action)"),
    Param("sched_fifo_priority", 50, "SCHED_FIFO priority of the loop thread when permitted (0: off)", min=0, max=98),
    Param("command_metrics", True, "publish ~/command_metrics (CommandMetrics) on every commanding tick"),
    Param(
        "episode_start_tol_rad",
        0.1,
        "a new episode engages only once a joint state measured after its first "
        "observation agrees with that observation's joints within this (a rogue or stale observation never "
        "engages)",
        min=0.0,
        max=10.0,
    ),
    Param(
        "safety_tolerance_rad",
        0.01,
        "a filter change larger than this counts as a large intervention "
        "(diagnostics; smaller ones are ordinary rate limiting)",
        min=0.0,
        max=10.0,
    ),
    *telemetry_params(THRESHOLDS),
)


class CorrectionNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        if len(p["arm_joint_names"]) != 7:
            raise ValueError(f"arm_joint_names must list 7 joints, got {len(p['arm_joint_names'])}")
        self.period_s = 1.0 / p["rate_hz"]
        self.safety = SafetyFilter(
            SafetyConfig(
                robot=p["robot"],
                dt=self.period_s,
                position_margin=p["position_margin"],
                scale_velocity=p["scale_velocity"],
                scale_acceleration=p["scale_acceleration"],
                scale_jerk=p["scale_jerk"],
            )
        )
        self.head = None
        self.a2c2_policy = None  # the base policy whose features / state share the head reads
        self._takes_latent = self._wants_mapping = False
        if p["a2c2_head"]:
            self._load_head(p)
        self.drops = DropCounter(self.get_logger())
        self._lock = threading.Lock()  # guards plan, measured joints, observation, episode flags
        self.plan = PlanBuffer(8, p["interpolation"])
        self._plan_dim: int | None = None
        self._q_meas: np.ndarray | None = None
        self._grip_meas: float | None = None
        # (obs_id, state the head reads or None, features (1, L) or None) of the newest observation
        # whose features are ready; the head is off while either it needs is None
        self._obs: tuple[int, np.ndarray | None, np.ndarray | None] | None = None
        self._obs_seq = 0  # observations accepted (numbers the feature jobs)
        self._obs_seq_stored = 0  # ... the one in _obs (an older job's features never replace it)
        self.feature_s: deque[float] = deque(maxlen=400)  # time of each feature computation
        self.n_residual_ticks = 0  # ticks that added the head's residual
        self.episodes = SequenceTracker("episode", p["rewind_after"], repeats_ok=True)
        self.plan_ids = SequenceTracker("plan_id", p["rewind_after"])
        # a new episode waits for a measurement of the joints: (observation stamp, its joints) or None
        self._reset_pending: tuple[int, np.ndarray] | None = None
        self._mismatch_reported = False
        self._pair_tol_ns = int(0.02 * NS_PER_S)  # joint states this much older than the observation still count
        self._reset_to: tuple[np.ndarray, float | None] | None = None
        self._ready = False
        self._engaged = False  # a plan of the current episode has been sampled
        self._target: np.ndarray | None = None  # last (A,) target handed to the filter
        self._residual_key: tuple[int, int] | None = None
        self._residual = None
        self.n_ticks = self.n_holds = self.n_published = 0
        self.n_interventions = 0  # ticks on which the safety filter intervened (any flag)
        self.n_large_interventions = 0  # ... rejected / clamped, or changed the command > safety_tolerance_rad
        self._last_period_ns: int | None = None  # measured period of the current tick (monotonic)
        self.fifo = False
        self._intervals: deque[int] = deque(maxlen=5000)
        self.timer: CycleTimer | None = None
        self.exit_code = 0
        self.shutdown_requested = False
        self.gripper_bridge = None
        if p["gripper_mode"] == "franka_action":
            from async_vla_ros.nodes.franka_bridge import GripperBridge

            self.gripper_bridge = GripperBridge(self, p["gripper_action_ns"])

        group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(ActionPlan, N.ACTION_PLAN, self._on_plan, 10, callback_group=group)
        self.create_subscription(
            JointState,
            p["joint_state_topic"],
            self._on_joint_state,
            make_qos(p["joint_state_reliability"], 10),
            callback_group=group,
        )
        self.create_subscription(Observation, N.OBSERVATION, self._on_observation, 10, callback_group=group)
        if p["command_interface"] == "trajectory":
            self.pub_cmd = self.create_publisher(JointTrajectory, p["trajectory_topic"], 10)
        else:
            self.pub_cmd = self.create_publisher(Float64MultiArray, p["forward_topic"], 10)
        # one Header each time the safety filter restarts from rest at the measured pose (start,
        # new episode): the command stream's continuity checks (async-vla-ros chaos) split there
        self.pub_segment = self.create_publisher(Header, "correction/command_segment", 10)
        self.diag = Telemetry(
            self,
            self._diag_values,
            THRESHOLDS,
            p,
            rate_keys=("dropped", "large_interventions", "holds"),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.pub_tick = self.create_publisher(CommandMetrics, "~/command_metrics", 10) if p["command_metrics"] else None
        self._stop = threading.Event()
        self.feature_worker: InferenceWorker | None = None
        if self._takes_latent:
            self.feature_worker = InferenceWorker(
                self._features, self._on_feature_error, name="a2c2-features", max_consecutive_errors=1 << 30
            )
            self.feature_worker.start()
        self._thread = threading.Thread(target=self._run, name="correction-loop", daemon=True)
        self._thread.start()

    def _load_head(self, p: dict) -> None:
        """The A2C2 head, and the policy whose features it reads (module docstring); ValueError
        (the node does not start) for a head that does not fit it."""
        import torch

        from async_vla_ros.policy.a2c2 import CorrectionHead

        torch.set_num_threads(1)
        self.head = CorrectionHead.load(p["a2c2_head"])
        latent_dim = self.head.config.latent_dim
        if not p["a2c2_policy"]:
            if latent_dim:
                raise ValueError(
                    f"a2c2_head {p['a2c2_head']} reads the base policy's features ({latent_dim}): set a2c2_policy "
                    "to the policy node's spec (bringup does)"
                )
            return
        from async_vla_ros.policy.registry import BackendRequest, check_head_fits, load_policy_spec

        self.a2c2_policy = load_policy_spec(
            p["a2c2_policy"], BackendRequest(p["task"], kind=p["a2c2_policy_kind"], num_threads=1)
        )
        torch.set_num_threads(1)  # a backend may have set its own
        # also computes one observation's features (latent_dim): the first real one is not slower
        check_head_fits(self.head, self.a2c2_policy, f"a2c2_head {p['a2c2_head']} with a2c2_policy {p['a2c2_policy']}")
        self._takes_latent = bool(latent_dim)
        self._wants_mapping = bool(getattr(self.a2c2_policy, "camera_hw", None))  # cameras + instruction
        self.get_logger().info(
            f"A2C2 head {p['a2c2_head']} on {p['a2c2_policy']}"
            + (f" ({latent_dim} features of each observation)" if latent_dim else "")
        )

    @property
    def episode_id(self) -> int:
        return self.episodes.current

    # ------------------------------------------------------------------ inputs (edge)
    def _on_plan(self, msg: ActionPlan) -> None:
        try:
            if msg.episode_id != self.episode_id:
                raise InputError("other_episode", f"plan of episode {msg.episode_id}, now {self.episode_id}")
            n, a = int(msg.length), int(msg.action_dim)
            acts = np.asarray(msg.actions, dtype=np.float64)
            if a < 7 or acts.size != n * a or len(msg.chunk_ids) != n or len(msg.chunk_index) != n:
                raise InputError("bad_shape", f"plan length {n} x {a} with {acts.size} values")
            if not np.all(np.isfinite(acts)):
                raise InputError("non_finite", "plan contains NaN or Inf")
            if not (np.isfinite(msg.dt) and msg.dt > 0):
                raise InputError("bad_dt", f"plan dt {msg.dt}")
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp <= 0:
                raise InputError("no_stamp", "plan without a header stamp")
            with self._lock:
                order = self.plan_ids.update(int(msg.plan_id))
                if not order.accepted:
                    raise InputError("old_plan", order.describe())
                if order.kind is SeqEvent.REWIND:  # the scheduler restarted: its plan ids start again
                    self.get_logger().warning(order.describe())
                    self.plan.clear()
                if self._plan_dim != a:
                    self.plan = PlanBuffer(a, self.p["interpolation"])
                    self._plan_dim = a
                if not self.plan.set_plan(
                    int(msg.plan_id),
                    stamp,
                    int(msg.step),
                    int(round(msg.dt * NS_PER_S)),
                    acts.reshape(n, a),
                    np.asarray(msg.chunk_ids),
                    np.asarray(msg.chunk_index),
                    int(msg.horizon),
                ):
                    raise InputError("old_plan", f"plan {msg.plan_id} is not newer than {self.plan.plan_id}")
        except InputError as exc:
            self.drops.drop(f"plan.{exc.reason}", str(exc))

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            q, _, fingers = joint_arrays(
                msg.name,
                msg.position,
                msg.velocity,
                self.p["arm_joint_names"],
                [self.p["gripper_joint_name"]] if self.p["gripper_mode"] == "joint" else [],
            )
        except InputError as exc:
            return self.drops.drop(f"joint_state.{exc.reason}", str(exc))
        with self._lock:
            self._q_meas = q
            if fingers:
                self._grip_meas = 2.0 * next(iter(fingers.values()))
            pending = self._reset_pending
            if pending is not None:  # a new episode started: restart from the first fitting measurement
                obs_ns, obs_q = pending
                # measured at or after the observation (a queued older message is not where the arm is)
                if stamp_to_ns(msg.header.stamp) >= obs_ns - self._pair_tol_ns:
                    gap = float(np.max(np.abs(q - obs_q)))
                    if gap <= self.p["episode_start_tol_rad"]:
                        self._reset_pending = None
                        self._reset_to = (q.copy(), self._grip_meas)
                    elif not self._mismatch_reported:
                        self._mismatch_reported = True
                        self.drops.drop(
                            "observation.state_mismatch",
                            f"episode {self.episode_id} starts from joints {gap:.3f} rad away from the "
                            f"measured ones (> episode_start_tol_rad); not engaging until they agree",
                        )

    def _on_observation(self, msg: Observation) -> None:
        state = np.asarray(msg.state, dtype=np.float64)
        if state.size < 7 or not np.all(np.isfinite(state)):
            return self.drops.drop("observation.bad_state", "observation state must hold >= 7 finite joint positions")
        head_state, job_inputs = self._head_inputs(msg, state)
        with self._lock:
            episode = self.episodes.update(int(msg.episode_id))
            if episode.kind is SeqEvent.STALE:
                return self.drops.drop("observation.old_episode", episode.describe())
            if episode.starts_new:
                if episode.kind is SeqEvent.REWIND:
                    self.get_logger().warning(episode.describe())
                self.plan.clear()
                self.plan_ids.reset()
                # restart from the arm's measured joints, measured after this observation and agreeing
                # with it (module docstring)
                self._reset_pending = (stamp_to_ns(msg.header.stamp), state[:7].copy())
                self._mismatch_reported = False
                self._reset_to = None
            self._obs_seq += 1
            seq = self._obs_seq
            if job_inputs is None:  # no features to wait for: the head reads this (or is off: None)
                self._obs = (int(msg.obs_id), head_state, None)
                self._obs_seq_stored = seq
        if job_inputs is not None:
            self.feature_worker.submit((seq, int(msg.obs_id), head_state, *job_inputs))

    def _head_inputs(self, msg: Observation, state: np.ndarray):
        """(the state the head reads or None, (images, instruction) to compute features from or None).
        A problem is a counted drop and a None state: the head is off for this observation."""
        if self.a2c2_policy is None:
            return state, None
        try:
            head_state = policy_state(self.a2c2_policy, state)
        except ValueError as exc:
            self.drops.drop("a2c2.bad_state", str(exc))
            return None, None
        if not self._takes_latent:
            return head_state, None
        images: dict = {}
        if self._wants_mapping:
            try:
                images = observation_images(msg)
            except InputError as exc:
                self.drops.drop(f"a2c2.{exc.reason}", str(exc))
                return None, None
            wanted = set(self.a2c2_policy.camera_hw)
            missing = sorted(n for n in wanted if images.get(n) is None)
            if missing:
                self.drops.drop(
                    "a2c2.no_image",
                    f"observation {msg.obs_id} lacks camera(s) {missing} (image missing or stale): no A2C2 "
                    "features, the base action passes through",
                )
                return None, None
            images = {n: images[n] for n in wanted}
        return head_state, (images, str(msg.instruction))

    # ------------------------------------------------------------------ feature worker thread
    def _features(self, job) -> None:
        """The policy's features of one observation (worker thread); stored with its state unless a
        newer observation is already stored."""
        seq, obs_id, state, images, instruction = job
        x = state[None]
        if self._wants_mapping:
            x = {"state": x, "images": {n: img[None] for n, img in images.items()}, "instruction": instruction}
        t0 = time.perf_counter()
        try:
            latent = np.asarray(self.a2c2_policy.latent(x), dtype=np.float64)
            if latent.shape != (1, self.head.config.latent_dim) or not np.all(np.isfinite(latent)):
                raise ValueError(f"features of shape {latent.shape}, finite: {bool(np.all(np.isfinite(latent)))}")
        except Exception as exc:  # noqa: BLE001 - a failed feature is a counted drop, never a dead node
            self.drops.drop("a2c2.features", f"{type(exc).__name__}: {exc}: the base action passes through")
            state = latent = None
        self.feature_s.append(time.perf_counter() - t0)
        with self._lock:
            if seq > self._obs_seq_stored:
                self._obs = (obs_id, state, latent)
                self._obs_seq_stored = seq

    def _on_feature_error(self, job, exc: BaseException) -> None:
        self.drops.drop("a2c2.features", f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ loop thread
    def _run(self) -> None:
        try:
            self.fifo = set_realtime(self.p["sched_fifo_priority"], self.get_logger())
            self.timer = CycleTimer(self.period_s, MonotonicClock())
            self.timer.start()
            last = None
            while not self._stop.is_set():
                self.timer.wait()
                now_mono = self.timer.clock.now_ns()
                if last is not None:
                    self._intervals.append(now_mono - last)
                    self._last_period_ns = now_mono - last
                last = now_mono
                self._tick()
        except Exception as exc:  # noqa: BLE001 - a dead command loop is fatal: surface it
            if self._stop.is_set() or shutting_down(self.context):
                return  # shutting down: publishers are gone
            self.get_logger().error(f"command loop failed: {type(exc).__name__}: {exc}")
            self.exit_code = 1
            self.shutdown_requested = True

    def _tick(self) -> None:
        now = self.get_clock().now().nanoseconds
        with self._lock:
            reset, self._reset_to = self._reset_to, None
            if reset is None and not self._ready and self._q_meas is not None:
                reset = (self._q_meas.copy(), self._grip_meas)
            if self._reset_pending is not None:
                self._engaged = False  # new episode, no fitting measurement yet: publish nothing
            sample = self.plan.sample(now)
            horizon = self.plan.horizon
            obs = self._obs
            # where the arm is now: the command stream (re)starts from here when it engages (read only
            # on a tick that may engage; an engaged loop does not copy it 100 times a second)
            may_engage = not self._engaged or reset is not None
            newest = (self._q_meas.copy(), self._grip_meas) if may_engage and self._q_meas is not None else None
        if reset is not None:  # ready to engage (the episode's start agreed with the arm), not engaged
            self._ready = True
            self._engaged = False
        if not self._ready:
            return  # no measured joints yet: nothing safe to command
        if sample is None and not self._engaged:
            return  # no plan yet in this episode: leave the robot's controller holding on its own
        if not self._engaged:
            # Engage: the filter starts from the newest measured joints, not from the measurement
            # that let the episode engage. Between the two the robot's own controller held the last
            # target, and the arm may have kept moving towards it (a tracking lag of ~0.1 rad in a
            # loaded chaos run): starting from the older measurement would jump by that much.
            q0, g0 = newest if newest is not None else reset
            self.safety.reset(
                np.clip(q0, self.safety.config.joint_limits.q_min, self.safety.config.joint_limits.q_max), g0
            )
            self._target = np.concatenate([q0, [g0 if g0 is not None else self.safety.gripper]])
            self._residual_key = None
            self.pub_segment.publish(Header(stamp=self.get_clock().now().to_msg(), frame_id="filter_reset"))
            self._engaged = True
        self.n_ticks += 1
        residual_norm = 0.0
        if sample is None:
            self.n_holds += 1
            target = self._target  # plan ran dry: hold the last target
        else:
            target = sample.action
            if (
                self.head is not None
                and obs is not None
                and obs[1] is not None
                and (obs[2] is not None or not self._takes_latent)
                and horizon == self.head.config.horizon
            ):
                residual = self._a2c2(sample, obs, horizon)
                target = target + residual
                residual_norm = float(np.linalg.norm(residual))
                self.n_residual_ticks += 1
            self._target = target
        q_cmd, g_cmd, flags = self.safety.filter(target[:7], target[7] if target.size > 7 else None)
        self._publish(q_cmd, g_cmd)
        deviation = float(np.max(np.abs(q_cmd - target[:7]))) if np.all(np.isfinite(target[:7])) else float("nan")
        if flags.any:
            self.n_interventions += 1
            if (
                flags.input_rejected
                or flags.position_clamped
                or flags.gripper_rejected
                or not deviation <= self.p["safety_tolerance_rad"]
            ):
                self.n_large_interventions += 1
        if self.pub_tick is not None:
            self._publish_tick(sample, deviation, flags, residual_norm)

    def _publish_tick(self, sample, deviation: float, flags, residual_norm: float) -> None:
        """One CommandMetrics for this tick (period, hold, source chunk, A2C2 residual, safety)."""
        m = CommandMetrics()
        m.header.stamp = self.get_clock().now().to_msg()
        m.tick = self.n_ticks
        period = self._last_period_ns
        m.period_s = period / NS_PER_S if period is not None else float("nan")
        m.period_error_s = m.period_s - self.period_s
        m.hold = sample is None
        if sample is not None:
            m.chunk_id, m.chunk_index = int(sample.chunk_id), int(sample.k)
        m.residual_norm = residual_norm
        m.safety_flags = sum(bit for name, bit in _SAFETY_BITS if getattr(flags, name))
        m.safety_deviation = deviation
        m.safety_interventions = self.n_interventions
        m.dropped_inputs = self.drops.total()
        self.pub_tick.publish(m)

    def _a2c2(self, sample, obs: tuple[int, np.ndarray, np.ndarray | None], horizon: int) -> np.ndarray:
        """Residual (A,) for this control step and observation (cached between ticks)."""
        key = (sample.step, obs[0])
        if key != self._residual_key:
            state, latent = obs[1], obs[2]
            if state.size != self.head.config.obs_dim or sample.action.size != self.head.config.action_dim:
                self.drops.drop("a2c2.shape", f"head needs obs_dim {self.head.config.obs_dim}, got {state.size}")
                self._residual = np.zeros_like(sample.action)
            else:
                self._residual = self.head.residual(
                    state[None], sample.action[None], np.array([sample.k]), horizon, latent=latent
                )[0]
            self._residual_key = key
        return self._residual

    def _publish(self, q: np.ndarray, gripper: float) -> None:
        p = self.p
        if p["command_interface"] == "trajectory":
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.joint_names = list(p["arm_joint_names"])
            positions = q.tolist()
            if p["gripper_mode"] == "joint":
                msg.joint_names.append(p["gripper_joint_name"])
                positions.append(gripper / 2.0)
            pt = JointTrajectoryPoint(positions=positions)
            pt.time_from_start = Duration(nanoseconds=int(self.period_s * NS_PER_S)).to_msg()
            msg.points = [pt]
        else:
            msg = Float64MultiArray()
            msg.data = q.tolist() + ([gripper] if p["gripper_mode"] == "joint" else [])
        self.pub_cmd.publish(msg)
        if self.gripper_bridge is not None:
            self.gripper_bridge.command(gripper)
        self.n_published += 1

    # ------------------------------------------------------------------ report / lifecycle
    def period_errors(self) -> np.ndarray:
        """|actual period - nominal| of the recent ticks (s)."""
        iv = np.asarray(self._intervals, dtype=np.float64)
        return np.abs(iv / NS_PER_S - self.period_s)

    def _diag_values(self) -> dict:
        vals = {
            "rate_hz": self.p["rate_hz"],
            "sched_fifo": self.fifo,
            "ticks": self.n_ticks,
            "holds": self.n_holds,
            "commands": self.n_published,
            "episode_id": self.episode_id,
            "rewinds": self.episodes.rewinds + self.plan_ids.rewinds,
            "dropped": self.drops.total(),
            "interventions": self.n_interventions,
            "large_interventions": self.n_large_interventions,
        }
        err = self.period_errors()
        if err.size:
            vals.update(
                {
                    "period_error_median_s": float(np.median(err)),
                    "period_error_p99_s": float(np.quantile(err, 0.99)),
                    "period_error_max_s": float(err.max()),
                }
            )
        if self.timer is not None:
            st = self.timer.stats()
            vals.update({"overruns": st.overruns, "missed_ticks": st.missed})
        if self.head is not None:
            vals["a2c2_ticks"] = self.n_residual_ticks
        if self.feature_worker is not None:
            vals.update(
                {
                    "a2c2_features": self.feature_worker.completed,
                    "a2c2_features_superseded": self.feature_worker.superseded,
                }
            )
            vals.update(quantile_values("a2c2_feature", self.feature_s))  # time per observation
        vals.update({f"safety.{k}": v for k, v in self.safety.counts.items()})
        vals.update({f"dropped.{k}": v for k, v in self.drops.as_dict().items()})
        return vals

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if self.feature_worker is not None:
            self.feature_worker.stop(timeout=2.0)


def main(args=None) -> int:
    return run_node(CorrectionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
