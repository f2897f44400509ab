"""sim node: the MuJoCo Panda task scene as a robot that looks like franka_ros2 + a camera driver.

Publishes
  ``/joint_states`` (sensor_msgs/JointState): arm joints (FR3 names by default) + two finger
  joints, at ``joint_state_rate_hz``;
  ``/camera/<name>/image_raw`` + ``/camera/<name>/camera_info`` (rgb8) for each MuJoCo camera
  in ``cameras`` (``scene``, ``wrist``; ``[]``, the default: none is rendered) at
  ``camera_rate_hz`` (0: off; up to the control rate the frames are rendered at control steps,
  just before that step's task state, so an observation's frames show the instant of its state);
  bringup lists the cameras the policy takes, so a state-only policy pays no rendering;
  ``/sim/task_state`` (async_vla_msgs/Observation): TCP + the task's observation fields, episode
  id and task name, at every control step (what a perception module would provide on hardware);
  ``/sim/episode_result`` (diagnostic_msgs/DiagnosticStatus): one per finished episode (success,
  seed, steps, metrics);
  ``/diagnostics``.
Accepts
  ``/fr3_arm_controller/joint_trajectory`` (trajectory_msgs/JointTrajectory, joint trajectory
  controller style: the first point's positions are applied at once; finger joint positions, if
  named, set the gripper to twice their value);
  ``/forward_position_controller/commands`` (std_msgs/Float64MultiArray, forward position
  controller style: 7 arm positions, optionally an 8th value = gripper width in m);
  ``/sim/episode_command`` (std_msgs/String): ``reset`` or ``reset <seed>``.
Fault injection (runtime parameters, for ``async-vla-ros chaos``): ``pause_joint_states``,
``pause_camera`` stop those streams; ``clock_offset_s`` shifts every published stamp (a clock jump).
Runs physics in real time on its own thread (blocks of ``physics_block_ms``), paced by a
monotonic :class:`~async_vla_ros.core.cycle_timer.CycleTimer`. After each reset the scene is held
frozen for ``settle_s`` (commands ignored) so the graph sees the new episode before the task
clock starts; then it runs ``episode_steps`` control steps, reports, and starts the next episode.
"""

from __future__ import annotations

import os
import sys
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from async_vla_msgs.msg import Observation
from async_vla_ros import names as N
from async_vla_ros.core.clock import MonotonicClock
from async_vla_ros.core.cycle_timer import CycleTimer
from async_vla_ros.nodes.common import NS_PER_S, DropCounter, ns_to_stamp, run_node, set_realtime, shutting_down
from async_vla_ros.nodes.health import Threshold
from async_vla_ros.nodes.metrics import Telemetry, telemetry_params
from async_vla_ros.nodes.params import Param, ParamError, declare_params, enable_runtime_updates

NODE_NAME = "sim"
FR3_JOINTS = list(N.ARM_JOINTS)
FR3_FINGERS = ["fr3_finger_joint1", "fr3_finger_joint2"]
TASKS = N.TASK_NAMES
# /diagnostics levels (limits: parameters diag.<key>.warn / .error; docs/observability.md)
THRESHOLDS = (
    Threshold(
        "physics_missed_ticks_per_s",
        1.0,
        20.0,
        description="physics blocks per s skipped by the pacing timer (the simulation fell behind real time)",
    ),
    Threshold(
        "rejected_commands_per_s",
        1.0,
        10.0,
        description="commands dropped per s as invalid (those ignored while the scene settles excluded)",
    ),
)

PARAMS = (
    Param("task", "track", "task scene to simulate", choices=TASKS),
    Param("seed", 0, "seed of the first episode (then +1 per episode)", min=0),
    Param("episodes", 0, "stop after this many episodes (0: run until shut down)", min=0),
    Param("joint_names", FR3_JOINTS, "arm joint names in /joint_states and accepted commands"),
    Param("finger_joint_names", FR3_FINGERS, "finger joint names (each finger = half the gripper width)"),
    Param("joint_state_rate_hz", 100.0, "rate of /joint_states", min=1.0, max=1000.0),
    Param(
        "physics_block_ms", 5, "physics steps (1 ms each) run per pacing tick with the latest command", min=1, max=50
    ),
    Param("real_time_factor", 1.0, "simulated seconds per wall second", min=0.05, max=20.0),
    Param("settle_s", 0.5, "after a reset, the scene is frozen this long (commands ignored)", min=0.0, max=10.0),
    Param(
        "wait_for_command",
        True,
        "after the settle time, stay frozen until the first command arrives "
        "(the episode clock starts when the controller is engaged)",
    ),
    Param("camera_rate_hz", 5.0, "camera image rate, every camera (0: no camera)", min=0.0, max=60.0),
    Param(
        "cameras",
        [],
        f"MuJoCo cameras to render and publish on camera/<name>/image_raw (of {', '.join(N.CAMERAS)}; [] : none)",
        elem=str,
    ),
    Param("image_width", 96, "image width (px)", min=16, max=640),
    Param("image_height", 96, "image height (px)", min=16, max=480),
    Param(
        "render_geoms",
        N.IMAGE_STYLE,
        "what the camera draws: collision geoms (fast) or visual meshes (names.IMAGE_STYLES; a camera policy "
        "must see the style it was trained on)",
        choices=tuple(N.IMAGE_STYLES),
    ),
    Param("frame_id", "fr3_link0", "frame of the task state (robot base)"),
    Param("camera_frame_id", "camera_optical_frame", "frame of the camera images (prefixed <camera>_)"),
    Param("sched_fifo_priority", 0, "SCHED_FIFO priority of the physics thread (0: default scheduler)", min=0, max=98),
    # fault injection (async-vla-ros chaos, test/system/test_chaos.py): settable at runtime
    Param("pause_joint_states", False, "fault injection: stop publishing /joint_states", dynamic=True),
    Param("pause_camera", False, "fault injection: stop publishing camera images", dynamic=True),
    Param(
        "clock_offset_s",
        0.0,
        "fault injection: added to every published header stamp (a clock jump)",
        min=-3600.0,
        max=3600.0,
        dynamic=True,
    ),
    *telemetry_params(THRESHOLDS),
)


class SimNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        if len(p["joint_names"]) != 7 or len(set(p["joint_names"])) != 7:
            raise ValueError("joint_names must be 7 distinct names")
        if len(p["finger_joint_names"]) != 2:
            raise ValueError("finger_joint_names must be 2 names")
        bad = [c for c in p["cameras"] if c not in N.CAMERAS]
        if bad or len(set(p["cameras"])) != len(p["cameras"]):
            raise ParamError(NODE_NAME, [f"cameras: {list(p['cameras'])} must be distinct names of {N.CAMERAS}"])
        from async_vla_ros.nodes.sim_driver import PhysicsDriver

        self.drops = DropCounter(self.get_logger())
        self.driver = PhysicsDriver(p["task"], seed=p["seed"])
        self._lock = threading.Lock()  # guards driver.command and the episode state
        self._stop = threading.Event()
        self._reset_request: tuple[bool, int | None] = (False, None)
        self.exit_code = 0
        self.shutdown_requested = False
        self.episodes_done = 0
        self.successes = 0
        self.n_commands = 0
        self._last_result = ""
        self._frozen_until_ns = 0
        self._await_command = False
        self._run_start_ns = 0  # when the episode clock started (ROS time)
        self.realtime_lag_s = 0.0
        self._name_index = {n: i for i, n in enumerate(p["joint_names"])}
        self._finger_index = {n: i for i, n in enumerate(p["finger_joint_names"])}

        self.pub_js = self.create_publisher(JointState, N.JOINT_STATES, 10)
        self.pub_task = self.create_publisher(Observation, N.TASK_STATE, 10)
        self.pub_result = self.create_publisher(DiagnosticStatus, N.EPISODE_RESULT, 10)
        # camera -> (image publisher, camera_info publisher)
        self.pub_cams: dict[str, tuple] = {}
        if p["camera_rate_hz"] > 0:
            for cam in p["cameras"]:
                self.pub_cams[cam] = (
                    self.create_publisher(Image, N.camera_image_topic(cam), 2),
                    self.create_publisher(CameraInfo, N.camera_info_topic(cam), 2),
                )
        self.frames_rendered = 0
        self.render_s: list[float] = []  # seconds per rendered frame (the last 200)
        group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(JointTrajectory, N.TRAJECTORY_COMMAND, self._on_trajectory, 10, callback_group=group)
        self.create_subscription(Float64MultiArray, N.FORWARD_COMMAND, self._on_forward, 10, callback_group=group)
        self.create_subscription(String, "sim/episode_command", self._on_episode_command, 10, callback_group=group)
        self.timer_stats = None
        self.diag = Telemetry(
            self,
            self._diag_values,
            THRESHOLDS,
            p,
            rate_keys=("rejected_commands", "physics_missed_ticks"),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        enable_runtime_updates(self, PARAMS, self.p)
        self._thread = threading.Thread(target=self._run, name="sim-physics", daemon=True)
        self._thread.start()

    def _stamp(self):
        """Header stamp of a published message: now, plus the injected clock offset (normally 0)."""
        return ns_to_stamp(max(0, self.get_clock().now().nanoseconds + int(self.p["clock_offset_s"] * NS_PER_S)))

    # ------------------------------------------------------------------ commands (edge)
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return self.drops.drop("empty_trajectory")
        pos = np.asarray(msg.points[0].positions, dtype=np.float64)
        if pos.shape != (len(msg.joint_names),):
            return self.drops.drop("bad_shape", f"{len(msg.joint_names)} names, {pos.size} positions")
        if not np.all(np.isfinite(pos)):
            return self.drops.drop("non_finite")
        q = np.full(7, np.nan)
        grip = None
        for name, v in zip(msg.joint_names, pos):
            if name in self._name_index:
                q[self._name_index[name]] = v
            elif name in self._finger_index:
                grip = 2.0 * v
            else:
                return self.drops.drop("unknown_joint", name)
        if np.isnan(q).any():
            return self.drops.drop("missing_joints", "a trajectory must name all 7 arm joints")
        self._apply(q, grip)

    def _on_forward(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape not in ((7,), (8,)):
            return self.drops.drop("bad_shape", f"forward command needs 7 or 8 values, got {data.size}")
        if not np.all(np.isfinite(data)):
            return self.drops.drop("non_finite")
        self._apply(data[:7], float(data[7]) if data.size == 8 else None)

    def _apply(self, q: np.ndarray, gripper: float | None) -> None:
        now = self.get_clock().now().nanoseconds
        if now < self._frozen_until_ns:
            return self.drops.drop("settling", "commands are ignored while the scene settles after a reset")
        with self._lock:
            self.driver.set_command(q, gripper)
            self.n_commands += 1
            if self._await_command:
                self._await_command = False
                self._run_start_ns = now

    def _on_episode_command(self, msg: String) -> None:
        parts = msg.data.split()
        if not parts or parts[0] != "reset" or len(parts) > 2:
            return self.drops.drop("bad_episode_command", f"{msg.data!r} (expected 'reset' or 'reset <seed>')")
        seed = None
        if len(parts) == 2:
            try:
                seed = int(parts[1])
            except ValueError:
                return self.drops.drop("bad_episode_command", f"seed {parts[1]!r} is not an int")
        with self._lock:
            self._reset_request = (True, seed)

    # ------------------------------------------------------------------ physics thread
    def _run(self) -> None:
        try:
            self._run_loop()
        finally:
            try:
                self.driver.close()  # here: the GL context of the renderer belongs to this thread
            except Exception as exc:  # noqa: BLE001 - closing must not mask the loop's outcome
                print(f"sim: closing the scene failed: {exc!r}")

    def _run_loop(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - surface a fatal physics error, never swallow it
            if self._stop.is_set() or shutting_down(self.context):
                return  # shutting down: publishers are gone
            self.get_logger().error(f"physics thread failed: {type(exc).__name__}: {exc}")
            self.exit_code = 1
            self.shutdown_requested = True

    def _loop(self) -> None:
        p = self.p
        set_realtime(p["sched_fifo_priority"], self.get_logger())
        block = p["physics_block_ms"]
        period = block * self.driver.physics_dt / p["real_time_factor"]
        # catch_up: a late tick (rendering, load) is made up by running the next ones back to back,
        # so simulated time keeps pace with wall time on average
        timer = CycleTimer(period, MonotonicClock(), catch_up=True)
        self.timer_stats = timer
        js_every = max(1, round(1.0 / (p["joint_state_rate_hz"] * period)))
        cam_every = max(1, round(1.0 / (p["camera_rate_hz"] * period))) if self.pub_cams else 0
        # at or below the control rate, frames are taken at control steps, every cam_steps-th, right
        # before that step's task state: an observation then pairs its state with a frame of the
        # same instant, as the lockstep runner and the demonstrations do (on their own 20 Hz phase
        # the frames were 30 ms older than the state, median); faster cameras keep the tick cadence
        control_hz = 1.0 / self.driver.dt
        cam_steps = round(control_hz / p["camera_rate_hz"]) if cam_every and p["camera_rate_hz"] <= control_hz else 0
        groups = N.IMAGE_STYLES[p["render_geoms"]]
        self._cameras_ok = bool(cam_every)
        frozen_every = max(1, round(self.driver.dt / period))  # task state rate while frozen
        self._start_episode(None)
        tick = 0
        timer.start()
        while not self._stop.is_set():
            timer.wait()
            tick += 1
            with self._lock:
                reset, seed = self._reset_request
                self._reset_request = (False, None)
            if reset:
                self._start_episode(seed)
                continue
            now = self.get_clock().now().nanoseconds
            with self._lock:
                running = now >= self._frozen_until_ns and not self._await_command
            if running:
                with self._lock:
                    crossed = self.driver.advance(block)
                    sim_s = self.driver.step_index * self.driver.dt + self.driver.sub_steps * self.driver.physics_dt
                self.realtime_lag_s = (now - self._run_start_ns) / NS_PER_S - sim_s / p["real_time_factor"]
                if crossed:
                    if cam_steps and self._cameras_ok and self.driver.step_index % cam_steps == 0:
                        self._publish_images_or_disable(groups)  # the frames of this step, then its state
                    self._publish_task_state()
                if self.driver.done:
                    self._finish_episode()
                    if p["episodes"] and self.episodes_done >= p["episodes"]:
                        self.get_logger().info(f"{self.episodes_done} episodes done; stopping")
                        self.shutdown_requested = True
                        return
                    self._start_episode(None)
                    continue
            elif tick % frozen_every == 0:
                self._publish_task_state()  # keeps observations fresh while the scene settles
            if tick % js_every == 0:
                self._publish_joint_states()
            # between control steps (a faster camera) and while the scene is frozen: the tick cadence
            if self._cameras_ok and (not cam_steps or not running) and tick % cam_every == 0:
                self._publish_images_or_disable(groups)

    def _publish_images_or_disable(self, groups: tuple[int, ...]) -> None:
        try:
            self._publish_images(groups)
        except Exception as exc:  # noqa: BLE001 - no GL here: run without a camera, say so once
            if self._stop.is_set() or shutting_down(self.context):
                raise  # shutting down, not a rendering problem
            self.get_logger().error(f"camera disabled, rendering failed: {type(exc).__name__}: {exc}")
            self._cameras_ok = False

    def _start_episode(self, seed: int | None) -> None:
        now = self.get_clock().now().nanoseconds
        with self._lock:
            eid = self.driver.reset(seed)
            self._await_command = self.p["wait_for_command"]
            self._run_start_ns = now + int(self.p["settle_s"] * NS_PER_S)
        self._frozen_until_ns = now + int(self.p["settle_s"] * NS_PER_S)
        self.get_logger().info(f"episode {eid} ({self.p['task']}, seed {self.driver.seed}) starts")
        self._publish_joint_states()
        self._publish_task_state()

    def _finish_episode(self) -> None:
        st = self.driver.state
        ok = self.driver.success()
        self.episodes_done += 1
        self.successes += int(ok)
        values = {
            "episode_id": self.driver.episode_id,
            "task": self.p["task"],
            "seed": self.driver.seed,
            "success": ok,
            "success_step": st.success_step,
            "steps": st.t,
        }
        for k, v in st.info.items():
            if isinstance(v, (int, float, bool, str)):
                values[k] = v
        self._last_result = "success" if ok else "failure"
        self.pub_result.publish(
            DiagnosticStatus(
                level=DiagnosticStatus.OK,
                name=f"{self.get_fully_qualified_name()}/episode",
                message=self._last_result,
                hardware_id="mujoco",
                values=[KeyValue(key=k, value=repr(v) if isinstance(v, float) else str(v)) for k, v in values.items()],
            )
        )
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in st.info.items() if isinstance(v, float))
        self.get_logger().info(
            f"episode {self.driver.episode_id}: {self._last_result} "
            f"({self.successes}/{self.episodes_done} so far{'; ' + metrics if metrics else ''})"
        )

    # ------------------------------------------------------------------ publishing
    def _publish_joint_states(self) -> None:
        if self.p["pause_joint_states"]:
            return
        with self._lock:
            q, qd, fq, fqd = self.driver.joints()
        msg = JointState()
        msg.header.stamp = self._stamp()
        msg.name = list(self.p["joint_names"]) + list(self.p["finger_joint_names"])
        msg.position = np.concatenate([q, fq]).tolist()
        msg.velocity = np.concatenate([qd, fqd]).tolist()
        self.pub_js.publish(msg)

    def _publish_task_state(self) -> None:
        with self._lock:
            state = self.driver.task_obs()
            names = self.driver.task_obs_names()
            eid = self.driver.episode_id
            step = self.driver.step_index
        msg = Observation()
        msg.header.stamp = self._stamp()
        msg.header.frame_id = self.p["frame_id"]
        msg.obs_id = eid * 1_000_000 + step + 1
        msg.episode_id = eid
        msg.task = self.p["task"]
        msg.status = Observation.STATUS_OK
        msg.state_dim = state.size
        msg.state_names = names
        msg.state = state.tolist()
        self.pub_task.publish(msg)

    def _publish_images(self, groups: tuple[int, ...]) -> None:
        p = self.p
        if p["pause_camera"]:
            return
        import mujoco

        for cam, (pub_img, pub_info) in self.pub_cams.items():
            t0 = time.perf_counter()
            with self._lock:
                rgb = self.driver.render(cam, p["image_width"], p["image_height"], groups)
            self.render_s.append(time.perf_counter() - t0)
            del self.render_s[:-200]
            self.frames_rendered += 1
            img = Image()
            img.header.stamp = self._stamp()
            img.header.frame_id = f"{cam}_{p['camera_frame_id']}"
            img.height, img.width = rgb.shape[:2]
            img.encoding = "rgb8"
            img.step = img.width * 3
            img.data = rgb.tobytes()
            pub_img.publish(img)
            info = CameraInfo()
            info.header = img.header
            info.height, info.width = img.height, img.width
            cam_id = mujoco.mj_name2id(self.driver.model, mujoco.mjtObj.mjOBJ_CAMERA, cam)
            fovy = float(self.driver.model.cam_fovy[cam_id])
            f = 0.5 * img.height / np.tan(np.deg2rad(fovy) / 2)
            cx, cy = (img.width - 1) / 2, (img.height - 1) / 2
            info.distortion_model = "plumb_bob"
            info.d = [0.0] * 5
            info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
            info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
            pub_info.publish(info)

    # ------------------------------------------------------------------ report / lifecycle
    def _diag_values(self) -> dict:
        vals = {
            "episodes": self.episodes_done,
            "successes": self.successes,
            "episode_id": self.driver.episode_id,
            "step": self.driver.step_index,
            "commands": self.n_commands,
            "dropped": self.drops.total(),
            "realtime_lag_s": float(self.realtime_lag_s),
            "cameras": ",".join(self.pub_cams),
            "frames_rendered": self.frames_rendered,
        }
        if self.render_s:
            vals["render_median_s"] = float(np.median(self.render_s))
        vals["rejected_commands"] = vals["dropped"] - self.drops.as_dict().get("settling", 0)
        vals.update({f"dropped.{k}": v for k, v in self.drops.as_dict().items()})
        if self.timer_stats is not None:
            s = self.timer_stats.stats()
            vals.update(
                {
                    "physics_overruns": s.overruns,
                    "physics_missed_ticks": s.missed,
                    "physics_period_error_p99_s": s.period_error_p99_s,
                }
            )
        return vals

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():  # said, so a stop that outlives launch's grace has a lead
                print("sim: the physics thread did not end within 5 s of the stop", file=sys.stderr, flush=True)


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
