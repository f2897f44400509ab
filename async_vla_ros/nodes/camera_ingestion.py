"""camera_ingestion node: joint states (+ task state) (+ named camera images) -> ``Observation``.

Subscribes to the configured topics (QoS configurable: franka_ros2's convenience state topics are
BEST_EFFORT), pairs them by header stamp and publishes ``/observation``:

* ``state`` = arm q (7) + arm qd (7) + gripper width (sum of the finger joints, 1) + the task
  state's fields (on the sim: TCP (3) and the task fields), i.e. the layout of the sim tasks'
  observations (``sim.tasks``: q, qd, gripper, tcp, task fields);
* ``camera_names`` / ``images`` = one slot per camera of ``camera_names`` (parameter; each read
  from ``camera/<name>/image_raw`` unless ``camera_topics`` maps it elsewhere): the frame of that
  camera nearest in time, resized (nearest-neighbour) to ``image_size`` x ``image_size`` rgb8
  (uint8; the policy backend scales to [0, 1]). A camera whose nearest frame is missing or
  further than ``max_image_age_s`` from the observation time keeps its slot empty (height =
  width = 0) and the observation says ``STATUS_IMAGE_MISSING``; counted per camera
  (``images_missing.<name>`` in /diagnostics). Bad frames are counted drops
  (``image.<name>.<reason>``). A name ``<camera>_prev`` (``names.frame_source``) is not a camera
  of its own: its slot holds ``<camera>``'s frame nearest to ``prev_frame_offset_s`` (one control
  period) before the observation, the previous frame a policy needs to see motion;
  ``<camera>_prev<k>`` the frame k such periods before.
* ``instruction`` = the ``instruction`` parameter (settable at runtime: ``ros2 param set
  /camera_ingestion instruction "..."``), or, when empty, the observed task's first paraphrase
  (``names.INSTRUCTIONS``).

Trigger: with a task-state topic, one observation per task state (the task state fixes the
observation time; the joint state nearest to it within ``max_pair_dt_s`` is used). Without one, a
timer at ``rate_hz`` publishes the latest joint state. Stale data (older than ``max_state_age_s``
when it would be published) and already-published stamps are dropped, never republished; inputs
stamped more than ``max_future_s`` ahead (a sender's clock jumped) are dropped before buffering.

Timing, per stage of the image path, as rolling medians / p95 / p99 in /diagnostics (the pipeline
benchmark's stage split): ``image_transport`` (an image's header stamp -> its callback here),
``image_prep`` (its decoding and resize here), ``obs_age`` (the observation's state stamp -> its
assembly starts), ``ingest`` (assembly starts -> ``publish`` returned), ``obs_age_out`` (the
state stamp -> ``publish`` returned). In one process with the policy node (``policy_container``)
each observation is handed to it directly before it is published (``local_sinks``).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from async_vla_msgs.msg import Observation
from async_vla_ros import names as N
from async_vla_ros.nodes.common import (
    NS_PER_S,
    DropCounter,
    make_qos,
    run_node,
    stamp_to_ns,
)
from async_vla_ros.nodes.health import Threshold
from async_vla_ros.nodes.ingest import InputError, StampedBuffer, image_to_rgb, joint_arrays, resize_nearest
from async_vla_ros.nodes.metrics import Telemetry, quantile_values, telemetry_params
from async_vla_ros.nodes.params import Param, ParamError, declare_params, enable_runtime_updates

NODE_NAME = "camera_ingestion"
QOS = ("reliable", "best_effort")
# /diagnostics levels (limits: parameters diag.<key>.warn / .error; docs/observability.md)
THRESHOLDS = (
    Threshold("dropped_per_s", 1.0, 10.0, description="inputs dropped per s (all reasons)"),
    Threshold("obs_age_p95_s", 0.03, 0.08, description="age of the state when its observation is published, p95"),
)

PARAMS = (
    Param("joint_state_topic", N.JOINT_STATES, "sensor_msgs/JointState input"),
    Param("joint_state_reliability", "reliable", "QoS reliability of the joint-state subscription", choices=QOS),
    Param(
        "camera_names",
        [],
        "cameras to attach, in order (each a sensor_msgs/Image topic camera/<name>/image_raw; [] : none)",
        elem=str,
    ),
    Param(
        "camera_topics",
        [],
        "NAME=TOPIC entries: read camera NAME from TOPIC instead of camera/<name>/image_raw "
        "(entries for cameras not in camera_names are unused)",
        elem=str,
    ),
    Param("image_reliability", "reliable", "QoS reliability of the image subscriptions", choices=QOS),
    Param("task_state_topic", N.TASK_STATE, "async_vla_msgs/Observation with task fields ('' : none)"),
    Param("qos_depth", 10, "history depth of every subscription", min=1, max=1000),
    Param("arm_joint_names", list(N.ARM_JOINTS), "the 7 arm joints, in order"),
    Param(
        "finger_joint_names",
        ["fr3_finger_joint1", "fr3_finger_joint2"],
        "finger joints summed into the gripper width (absent joints count 0)",
        elem=str,
    ),
    Param("rate_hz", 20.0, "observation rate without a task-state topic", min=0.5, max=1000.0),
    Param(
        "max_state_age_s", 0.1, "drop an observation whose state is older than this when published", min=0.001, max=10.0
    ),
    Param("max_pair_dt_s", 0.02, "max stamp difference between a task state and its joint state", min=0.0, max=1.0),
    Param(
        "max_image_age_s",
        0.3,
        "max stamp difference between the observation and each camera's image",
        min=0.0,
        max=10.0,
    ),
    Param(
        "max_future_s",
        0.2,
        "drop inputs stamped further in the future than this (a sender's clock jumped)",
        min=0.0,
        max=60.0,
    ),
    Param("image_size", 64, "side of the published square image (0: never attach images)", min=0, max=512),
    Param(
        "prev_frame_offset_s",
        0.05,
        "a camera named <camera>_prev in camera_names is <camera>'s frame this long before the observation "
        "(one control period: the previous frame); <camera>_prev<k>, k times this long",
        min=0.001,
        max=1.0,
    ),
    Param("frame_id", "fr3_link0", "frame_id of the observations"),
    Param(
        "instruction",
        "",
        "language instruction sent with every observation ('' : the observed task's first paraphrase)",
        dynamic=True,
    ),
    *telemetry_params(THRESHOLDS),
)


class CameraIngestionNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        if len(p["arm_joint_names"]) != 7:
            raise ValueError(f"arm_joint_names must list 7 joints, got {len(p['arm_joint_names'])}")
        # every slot of camera_names, in order; a <camera>_prev slot is <camera>'s earlier frame, so only
        # the cameras themselves are subscribed
        self.slots = [str(n) for n in p["camera_names"]] if p["image_size"] > 0 else []
        if len(set(self.slots)) != len(self.slots):
            raise ParamError(NODE_NAME, [f"camera_names: duplicate names in {self.slots}"])
        sources = list(dict.fromkeys(N.frame_source(n)[0] for n in self.slots))
        self.cameras = camera_topics(sources, p["camera_topics"]) if self.slots else {}
        self.drops = DropCounter(self.get_logger())
        # in-process consumers (policy_container): called with (observation, ns) before it is published
        self.local_sinks: list = []
        self._js: StampedBuffer = StampedBuffer(64)
        self._img: dict[str, StampedBuffer] = {name: StampedBuffer(8) for name in self.cameras}
        self._task: StampedBuffer = StampedBuffer(8)
        self._last_published_ns = -1
        self.obs_id = 0
        self.n_images_attached = 0  # observations with every camera attached
        self.n_missing: dict[str, int] = {name: 0 for name in self.slots}
        self.obs_ages: deque[float] = deque(maxlen=200)  # state age at publication (s)
        self.image_latencies: deque[float] = deque(maxlen=200)  # oldest attached frame's age at publication (s)
        # stage timing (s): frame stamp -> callback, decode + resize, observation assembly + publish
        self.image_transport: deque[float] = deque(maxlen=400)
        self.image_prep: deque[float] = deque(maxlen=400)
        self.ingest: deque[float] = deque(maxlen=400)
        self.obs_age_out: deque[float] = deque(maxlen=400)
        group = MutuallyExclusiveCallbackGroup()  # one group: buffers need no locks
        depth = p["qos_depth"]
        # Deep history: after a stall the sim catches up with a burst of ~40 task states; a depth
        # of 10 let a reliable reader (the recorder) lose observations in that burst.
        self.pub = self.create_publisher(Observation, N.OBSERVATION, 100)
        self.create_subscription(
            JointState,
            p["joint_state_topic"],
            self._on_joint_state,
            make_qos(p["joint_state_reliability"], depth),
            callback_group=group,
        )
        for name, topic in self.cameras.items():
            self.create_subscription(
                Image,
                topic,
                lambda msg, name=name: self._on_image(name, msg),
                make_qos(p["image_reliability"], min(depth, 4)),
                callback_group=group,
            )
        self.use_task = bool(p["task_state_topic"])
        if self.use_task:
            self.create_subscription(
                Observation,
                p["task_state_topic"],
                self._on_task_state,
                make_qos("reliable", depth),
                callback_group=group,
            )
        else:
            self.create_timer(1.0 / p["rate_hz"], self._on_timer, callback_group=group)
        self.diag = Telemetry(self, self._diag_values, THRESHOLDS, p, callback_group=MutuallyExclusiveCallbackGroup())
        enable_runtime_updates(self, PARAMS, self.p)
        if self.cameras:
            self.get_logger().info(
                "cameras: " + ", ".join(f"{n} <- {self.resolve_topic_name(t)}" for n, t in self.cameras.items())
            )

    # ------------------------------------------------------------------ inputs (edge)
    def _checked_stamp(self, stamp_msg, what: str) -> int:
        """Header stamp (ns); InputError when missing or from the future (a sender's clock jumped
        ahead: buffering it would make every later, correct sample look out of order)."""
        stamp = stamp_to_ns(stamp_msg)
        if stamp <= 0:
            raise InputError("no_stamp", f"{what} without a header stamp")
        ahead = stamp - self.get_clock().now().nanoseconds
        if ahead > self.p["max_future_s"] * NS_PER_S:
            raise InputError("future_stamp", f"{what} stamped {ahead / 1e9:.3f} s in the future")
        return stamp

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            q, qd, fingers = joint_arrays(
                msg.name, msg.position, msg.velocity, self.p["arm_joint_names"], self.p["finger_joint_names"]
            )
            stamp = self._checked_stamp(msg.header.stamp, "joint state")
            self._js.push(stamp, np.concatenate([q, qd, [sum(fingers.values())]]))
        except InputError as exc:
            self.drops.drop(f"joint_state.{exc.reason}", str(exc))

    def _on_image(self, name: str, msg: Image) -> None:
        received = self.get_clock().now().nanoseconds
        try:
            rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
            stamp = self._checked_stamp(msg.header.stamp, f"image of camera {name!r}")
            self._img[name].push(stamp, resize_nearest(rgb, self.p["image_size"]))
        except InputError as exc:
            return self.drops.drop(f"image.{name}.{exc.reason}", str(exc))
        self.image_transport.append((received - stamp) / NS_PER_S)
        self.image_prep.append((self.get_clock().now().nanoseconds - received) / NS_PER_S)

    def _on_task_state(self, msg: Observation) -> None:
        try:
            state = np.asarray(msg.state, dtype=np.float64)
            if state.shape != (msg.state_dim,):
                raise InputError("bad_shape", f"state has {state.size} values, state_dim says {msg.state_dim}")
            if not np.all(np.isfinite(state)):
                raise InputError("non_finite", "task state contains NaN or Inf")
            stamp = self._checked_stamp(msg.header.stamp, "task state")
            self._task.push(stamp, (state, int(msg.episode_id), msg.task, list(msg.state_names)))
        except InputError as exc:
            return self.drops.drop(f"task_state.{exc.reason}", str(exc))
        self._publish(stamp)

    def _on_timer(self) -> None:
        latest = self._js.latest()
        if latest is not None and latest[0] > self._last_published_ns:
            self._publish(latest[0])

    # ------------------------------------------------------------------ pairing + output
    def _publish(self, ref_ns: int) -> None:
        p = self.p
        now = self.get_clock().now().nanoseconds
        if now - ref_ns > p["max_state_age_s"] * NS_PER_S:
            return self.drops.drop("stale_state", f"state is {(now - ref_ns) / 1e6:.1f} ms old")
        if ref_ns <= self._last_published_ns:
            return self.drops.drop("out_of_order", "observation time did not advance")
        js = self._js.nearest(ref_ns, int(p["max_pair_dt_s"] * NS_PER_S) if self.use_task else None)
        if js is None:
            return self.drops.drop("unpaired", "no joint state close enough in time to the task state")
        state_parts = [js[1]]
        names = (
            [f"{n}.position" for n in p["arm_joint_names"]]
            + [f"{n}.velocity" for n in p["arm_joint_names"]]
            + ["gripper_width"]
        )
        msg = Observation()
        task = ""
        if self.use_task:
            task_state, episode_id, task, task_names = self._task.nearest(ref_ns)[1]
            state_parts.append(task_state)
            names += task_names if len(task_names) == task_state.size else [f"task_{i}" for i in range(task_state.size)]
            msg.episode_id, msg.task = episode_id, task
        state = np.concatenate(state_parts)
        self.obs_id += 1
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ref_ns, NS_PER_S)
        msg.header.frame_id = p["frame_id"]
        msg.obs_id = self.obs_id
        msg.status = Observation.STATUS_OK
        msg.state_dim = state.size
        msg.state_names = names
        msg.state = state.tolist()
        msg.instruction = p["instruction"] or N.default_instruction(task)
        oldest_frame_ns = self._attach_images(msg, ref_ns)
        self._last_published_ns = ref_ns
        self.obs_ages.append((now - ref_ns) / NS_PER_S)
        if self.local_sinks:
            for sink in self.local_sinks:  # the policy in this process first: its model can start now
                sink(msg, self.get_clock().now().nanoseconds)
            # let the woken inference thread take the interpreter lock now, not after this publish
            time.sleep(0)
        self.pub.publish(msg)
        out = self.get_clock().now().nanoseconds
        self.ingest.append((out - now) / NS_PER_S)
        self.obs_age_out.append((out - ref_ns) / NS_PER_S)
        if self._img and msg.status == Observation.STATUS_OK:
            # the image pipeline's latency: the oldest attached frame's stamp -> this observation out
            self.image_latencies.append((out - oldest_frame_ns) / NS_PER_S)

    def _attach_images(self, msg: Observation, ref_ns: int) -> int:
        """One slot per configured camera: its frame nearest to ``ref_ns`` within
        ``max_image_age_s``, or an empty image (and STATUS_IMAGE_MISSING). Returns the oldest
        attached frame's stamp (``ref_ns`` when none is older)."""
        max_age = int(self.p["max_image_age_s"] * NS_PER_S)
        complete = True
        oldest = ref_ns
        for name in self.slots:
            cam, back = N.frame_source(name)
            buf = self._img[cam]
            at = ref_ns - int(back * self.p["prev_frame_offset_s"] * NS_PER_S)
            slot = Image()
            found = buf.nearest(at, max_age) if len(buf) else None
            if found is None:
                complete = False
                self.n_missing[name] += 1
                age = 0.0
            else:
                stamp, rgb = found
                oldest = min(oldest, stamp)
                slot.header.stamp.sec, slot.header.stamp.nanosec = divmod(stamp, NS_PER_S)
                slot.height, slot.width = rgb.shape[:2]
                slot.encoding = "rgb8"
                slot.step = rgb.shape[1] * 3
                slot.data = rgb.tobytes()
                age = abs(ref_ns - stamp) / NS_PER_S
            msg.camera_names.append(name)
            msg.images.append(slot)
            msg.image_ages_s.append(age)
        if not complete:
            msg.status = Observation.STATUS_IMAGE_MISSING
        elif self._img:
            self.n_images_attached += 1
        return oldest

    def _diag_values(self) -> dict:
        vals = {
            "observations": self.obs_id,
            "images_attached": self.n_images_attached,
            "cameras": ",".join(self.slots),
            "instruction": self.p["instruction"],
            "dropped": self.drops.total(),
        }
        vals.update({f"images_missing.{k}": v for k, v in self.n_missing.items()})
        vals.update(quantile_values("obs_age", self.obs_ages))
        lat = np.asarray(self.image_latencies)
        if lat.size:
            vals.update(
                {"image_latency_median_s": float(np.median(lat)), "image_latency_p95_s": float(np.quantile(lat, 0.95))}
            )
        for name in ("image_transport", "image_prep", "ingest", "obs_age_out"):
            vals.update(quantile_values(name, getattr(self, name)))
        vals.update({f"dropped.{k}": v for k, v in self.drops.as_dict().items()})
        return vals


def camera_topics(names, entries) -> dict[str, str]:
    """Camera name -> image topic: ``camera/<name>/image_raw`` unless an entry ``NAME=TOPIC`` of
    ``camera_topics`` says otherwise (entries of other cameras are unused: a bridge config may list
    every physical camera). ParamError on duplicate or empty names and malformed entries."""
    problems = []
    names = [str(n) for n in names]
    if any(not n.strip() for n in names):
        problems.append("camera_names: empty name")
    if len(set(names)) != len(names):
        problems.append(f"camera_names: duplicate names in {names}")
    topics = {n: N.camera_image_topic(n) for n in names}
    for entry in entries:
        name, sep, topic = str(entry).partition("=")
        if not sep or not name.strip() or not topic.strip():
            problems.append(f"camera_topics: {entry!r} is not NAME=TOPIC")
        elif name.strip() in topics:
            topics[name.strip()] = topic.strip()
    if problems:
        raise ParamError(NODE_NAME, problems)
    return topics


def main(args=None) -> int:
    return run_node(CameraIngestionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
