"""The graph probe: one rclpy node that listens to the running Franka graph (commands, command-stream
restarts, chunk reports, chunks, observations, requests, diagnostics, joint states), optionally
records part of it into a bag, and owns the rogue publishers the chaos cases use.

Used by ``async-vla-ros chaos`` and ``async-vla-ros soak``. The class is built by
:func:`make_probe_class` so that importing this module does not import rclpy (call it after
:func:`async_vla_ros.rosenv.apply_ros_defaults`).
"""

from __future__ import annotations

import copy as copy_module
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from async_vla_ros.eval.stream_check import NS
from async_vla_ros.names import ARM_JOINTS

__all__ = ["ARM_JOINTS", "ROGUE_CHUNK_BASE", "ROGUE_NAME", "ROGUE_REQUEST_BASE", "make_probe_class"]

# the probe's own view of the graph ignores what the chaos cases inject: rogue chunks carry
# policy_name ROGUE_NAME, rogue observations task ROGUE_NAME, rogue requests ids >= ROGUE_REQUEST_BASE
ROGUE_NAME = "chaos/rogue"
ROGUE_CHUNK_BASE = 1 << 60  # chunk ids of rogue chunks (the policy's ids are microseconds since 1970)
ROGUE_REQUEST_BASE = 1 << 40  # request ids of the rogue request flood


def make_probe_class():
    """The probe node class (imports rclpy: call after apply_ros_defaults)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, Header
    from trajectory_msgs.msg import JointTrajectory

    from async_vla_msgs.msg import ActionChunk, ChunkReport, ChunkRequest, Observation
    from async_vla_ros.bringup.monitor import parse_value

    def stamp_ns(stamp) -> int:
        return int(stamp.sec) * NS + int(stamp.nanosec)

    class ChaosProbe(Node):
        """Listens to the graph (commands, reports, chunks, observations, diagnostics) and owns the
        rogue publishers. Thread-safe accessors; all times are ROS (system) time in ns."""

        def __init__(self, context, command_interface: str = "trajectory", record_bag: str | None = None):
            super().__init__("chaos_probe", context=context)
            self._lock = threading.Lock()
            self.cmd_t: list[int] = []
            self.cmd_q: list[np.ndarray] = []
            self.cmd_g: list[float] = []
            self.cmd_seq: list[int] = []  # DDS publication sequence numbers (-1: unknown)
            self.segments: list[int] = []
            self.reports: list[tuple[int, int, bool, str, float, int]] = []  # arrival, chunk, ok, why, latency, d
            self.chunks: deque = deque(maxlen=50)  # real chunks (ActionChunk) with ERROR_NONE
            self.chunk_errors: dict[int, int] = {}
            # arrival, episode, has images (every camera), status, published (DDS source timestamp),
            # newest image stamp (0: none)
            self.obs: list[tuple[int, int, bool, int, int, int]] = []
            self.requests: list[tuple[int, int, int]] = []  # arrival, request_id, obs_id (real ones)
            self.diag: dict[str, tuple[int, dict]] = {}  # node -> (stamp, values)
            self.js: deque = deque(maxlen=20000)  # (stamp, (7,) arm joints) of /joint_states
            self.last_obs = None  # the latest real Observation message
            deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
            if command_interface == "trajectory":
                self.create_subscription(JointTrajectory, "fr3_arm_controller/joint_trajectory", self._on_traj, deep)
            else:
                self.create_subscription(Float64MultiArray, "forward_position_controller/commands", self._on_fwd, deep)
            self.create_subscription(Header, "correction/command_segment", self._on_segment, 100)
            self.create_subscription(ChunkReport, "scheduler/chunk_report", self._on_report, deep)
            self.create_subscription(ActionChunk, "policy/action_chunk", self._on_chunk, deep)
            self.create_subscription(Observation, "observation", self._on_obs, deep)
            self.create_subscription(ChunkRequest, "policy/chunk_request", self._on_request, deep)
            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
            # best effort matches a reliable or a best-effort publisher
            self.create_subscription(
                JointState,
                "joint_states",
                self._on_joint_state,
                QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT),
            )
            self.pub_chunk = self.create_publisher(ActionChunk, "policy/action_chunk", 100)
            self.pub_obs = self.create_publisher(Observation, "observation", 100)
            self.pub_request = self.create_publisher(ChunkRequest, "policy/chunk_request", 100)
            self._bag = None
            self._bag_lock = threading.Lock()
            if record_bag:
                self._start_bag(record_bag)
            self.msgs = {"ActionChunk": ActionChunk, "ChunkRequest": ChunkRequest, "Observation": Observation}

        # -------------------------------------------------------------- recording (raw CDR)
        def _start_bag(self, path: str) -> None:
            from async_vla_ros.bags import DEFAULT_TOPICS, BagWriter

            self._bag = BagWriter(path)
            topics = ("/observation", "/scheduler/chunk_report", "/scheduler/action_plan", "/policy/chunk_request")
            from async_vla_msgs.msg import ActionPlan

            classes = {
                "/observation": Observation,
                "/scheduler/chunk_report": ChunkReport,
                "/scheduler/action_plan": ActionPlan,
                "/policy/chunk_request": ChunkRequest,
            }
            self._bag_subs = []
            for t in topics:
                self._bag.add_topic(t, DEFAULT_TOPICS[t])
                self._bag_subs.append(
                    self.create_subscription(classes[t], t, lambda data, t=t: self._write_raw(t, data), 1000, raw=True)
                )

        def _write_raw(self, topic: str, data: bytes) -> None:
            with self._bag_lock:
                if self._bag is not None:
                    self._bag.write_raw(topic, self.get_clock().now().nanoseconds, data)

        def stop_bag(self, executor=None, timeout_s: float = 10.0) -> None:
            """Close the bag and drop its subscriptions. While ``executor`` spins this node in
            another thread, they are destroyed in that thread (an executor task): destroyed from
            here, one can vanish while the executor builds its wait set, and rclpy's spin then dies
            ("InvalidHandle: cannot use Destroyable because destruction was requested", seen in a
            loaded chaos run) and the probe hears nothing more. Without ``executor`` (nothing spins
            the node) they are destroyed here."""
            with self._bag_lock:
                if self._bag is not None:
                    self._bag.close()
                    self._bag = None
            subs, self._bag_subs = list(getattr(self, "_bag_subs", [])), []

            def destroy() -> None:
                for s in subs:
                    self.destroy_subscription(s)

            if not subs:
                return
            if executor is None:
                destroy()
                return
            task = executor.create_task(destroy)
            deadline = time.monotonic() + timeout_s
            while not task.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the probe's executor did not run the unsubscribe within {timeout_s} s")
                time.sleep(0.01)
            task.result()  # re-raises what the destroy raised

        # -------------------------------------------------------------- callbacks
        def now(self) -> int:
            return int(self.get_clock().now().nanoseconds)

        def _add_cmd(self, stamp: int, q: Sequence[float], g: float, info) -> None:
            seq = info.get("publication_sequence_number") if info else None
            with self._lock:
                self.cmd_t.append(stamp)
                self.cmd_q.append(np.asarray(q[:7], dtype=np.float64))
                self.cmd_g.append(g)
                self.cmd_seq.append(-1 if seq is None else int(seq))

        def _on_traj(self, msg, info) -> None:
            if not msg.points:
                return
            pos = list(msg.points[0].positions)
            g = 2.0 * pos[7] if len(pos) > 7 else float("nan")
            self._add_cmd(stamp_ns(msg.header.stamp), pos, g, info)

        def _on_fwd(self, msg, info) -> None:
            d = list(msg.data)
            self._add_cmd(self.now(), d, d[7] if len(d) > 7 else float("nan"), info)

        def _on_segment(self, msg) -> None:
            with self._lock:
                self.segments.append(stamp_ns(msg.stamp))

        def _on_report(self, msg) -> None:
            with self._lock:
                self.reports.append(
                    (
                        stamp_ns(msg.header.stamp),
                        int(msg.chunk_id),
                        bool(msg.accepted),
                        msg.reject_reason,
                        float(msg.total_latency_s),
                        int(msg.measured_delay_steps),
                    )
                )

        def _on_chunk(self, msg) -> None:
            if msg.policy_name == ROGUE_NAME:
                return
            with self._lock:
                if msg.error_code == 0:
                    self.chunks.append(msg)
                else:
                    self.chunk_errors[int(msg.error_code)] = self.chunk_errors.get(int(msg.error_code), 0) + 1

        def _on_obs(self, msg, info) -> None:
            if msg.task == ROGUE_NAME:
                return
            published = int(info.get("source_timestamp", 0) or 0) if info else 0
            # "has image": every camera slot filled; image stamp: the newest attached frame (0: none)
            stamps = [stamp_ns(im.header.stamp) for im in msg.images if im.height]
            complete = bool(msg.images) and len(stamps) == len(msg.images)
            image_stamp = max(stamps, default=0)
            with self._lock:
                self.obs.append((self.now(), int(msg.episode_id), complete, int(msg.status), published, image_stamp))
                self.last_obs = msg

        def _on_joint_state(self, msg) -> None:
            pos = dict(zip(msg.name, msg.position))
            if all(n in pos for n in ARM_JOINTS):
                with self._lock:
                    self.js.append((stamp_ns(msg.header.stamp), np.asarray([pos[n] for n in ARM_JOINTS])))

        def joint_states(self, t0: int = 0) -> tuple[np.ndarray, np.ndarray]:
            """Stamps (N,) and arm joints (N, 7) of the joint states stamped at or after ``t0``."""
            with self._lock:
                rows = [r for r in self.js if r[0] >= t0]
            return (
                np.asarray([r[0] for r in rows], dtype=np.int64),
                np.asarray([r[1] for r in rows], dtype=np.float64).reshape(-1, 7),
            )

        def latest_observation(self):
            with self._lock:
                return copy_module.deepcopy(self.last_obs) if self.last_obs is not None else None

        def _on_request(self, msg) -> None:
            if msg.request_id >= ROGUE_REQUEST_BASE:
                return
            with self._lock:
                self.requests.append((self.now(), int(msg.request_id), int(msg.obs_id)))

        def _on_diag(self, msg) -> None:
            t = stamp_ns(msg.header.stamp)
            with self._lock:
                for st in msg.status:
                    self.diag[st.name.rsplit("/", 1)[-1]] = (t, {kv.key: parse_value(kv.value) for kv in st.values})

        # -------------------------------------------------------------- views
        def n_commands(self) -> int:
            with self._lock:
                return len(self.cmd_t)

        def commands(self, t0: int = 0, t1: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Stamps (N,), joint commands (N, 7), publication sequence numbers (N,) (None when
            the middleware gave none) of the commands stamped in [t0, t1]."""
            with self._lock:
                t = np.asarray(self.cmd_t, dtype=np.int64)
                q = np.asarray(self.cmd_q, dtype=np.float64).reshape(-1, 7)
                sq = np.asarray(self.cmd_seq, dtype=np.int64)
            sel = (t >= t0) & (t <= (t1 if t1 is not None else np.iinfo(np.int64).max))
            sq = sq[sel]
            return t[sel], q[sel], (None if np.any(sq < 0) else sq)

        def segment_starts(self) -> list[int]:
            with self._lock:
                return list(self.segments)

        def reports_since(self, t0: int) -> list[tuple]:
            with self._lock:
                return [r for r in self.reports if r[0] >= t0]

        def first_accept_after(self, t0: int, pred: Callable[[tuple], bool] | None = None) -> int | None:
            with self._lock:
                for r in self.reports:
                    if r[0] >= t0 and r[2] and (pred is None or pred(r)):
                        return r[0]
            return None

        def latest_chunk(self, back: int = 0):
            with self._lock:
                return self.chunks[-1 - back] if len(self.chunks) > back else None

        def obs_since(self, t0: int) -> list[tuple]:
            with self._lock:
                return [o for o in self.obs if o[0] >= t0]

        def latest_episode(self) -> int:
            with self._lock:
                return self.obs[-1][1] if self.obs else 0

        def requests_since(self, t0: int) -> list[tuple]:
            with self._lock:
                return [r for r in self.requests if r[0] >= t0]

        def diag_of(self, node: str) -> dict:
            with self._lock:
                return dict(self.diag.get(node, (0, {}))[1])

        def diag_stamped(self, node: str) -> tuple[int, dict]:
            with self._lock:
                t, v = self.diag.get(node, (0, {}))
                return t, dict(v)

        def max_chunk_id(self) -> int:
            with self._lock:
                return max((int(c.chunk_id) for c in self.chunks), default=0)

    return ChaosProbe
