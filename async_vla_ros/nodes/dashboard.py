"""dashboard node: a live web page of what the latency is doing (served on 127.0.0.1 by default).

Subscribes to the graph's documented topics and keeps bounded windows of what it saw
(:class:`DashboardModel`, pure Python, thread-safe); a small stdlib HTTP server (own thread)
serves the page (``async_vla_ros/web/``: ``index.html``, ``dashboard.js`` and the vendored
Chart.js) and ``/api/state`` (JSON snapshot) which the page polls every ``poll_ms``.

Charts: per-chunk latency timeline and histogram and predicted vs measured delay
(``/scheduler/chunk_report``); the previous plan and the new chunk overlaid at the latest switch
with the frozen / soft-masked / free regions shaded (``/scheduler/action_plan`` +
``/policy/action_chunk`` + the report's n_frozen / n_soft / n_free); the executed command
trajectory with its acceleration and jerk and the command period jitter (the command topic);
counters of rejected chunks by reason and of every ``/diagnostics`` value whose key names drops,
safety interventions, rejects or timeouts (the nodes' own diagnostics).

Safety: the server binds ``host`` (default 127.0.0.1, loopback only). It has no authentication;
to look at it from another machine use an SSH tunnel (``ssh -L 8765:127.0.0.1:8765 robot``)
rather than binding 0.0.0.0 (docs/observability.md). ``port`` 0 picks a free port (tests); the
URL is logged.

Run: ``python -m async_vla_ros.nodes.dashboard --ros-args -p port:=8765``.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory

from async_vla_msgs.msg import ActionChunk, ActionPlan, ChunkReport, CommandMetrics
from async_vla_ros import names as N
from async_vla_ros.nodes.common import NS_PER_S, make_qos, run_node, stamp_to_ns
from async_vla_ros.nodes.params import Param, declare_params

NODE_NAME = "dashboard"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_COUNTER_KEY = re.compile(r"drop|interven|safety|reject|timeout|clamp|overrun", re.IGNORECASE)

PARAMS = (
    Param("host", "127.0.0.1", "address the web server binds (keep loopback; see docs/observability.md)"),
    Param("port", 8765, "web server port (0: any free port)", min=0, max=65535),
    Param("window_s", 30.0, "seconds of history shown in the timelines", min=1.0, max=3600.0),
    Param("max_points", 3000, "points kept per series", min=10, max=100000),
    Param("poll_ms", 500, "page refresh period (ms)", min=50, max=10000),
    Param("joint", 0, "joint shown in the chunk overlay (0-based action index)", min=0, max=63),
    Param("command_topic", N.FORWARD_COMMAND, "Float64MultiArray command topic ('' : none)"),
    Param("trajectory_topic", N.TRAJECTORY_COMMAND, "JointTrajectory command topic ('' : none)"),
    Param("joint_state_topic", N.JOINT_STATES, "measured joints"),
    Param(
        "command_metrics_topic",
        N.COMMAND_METRICS,
        "CommandMetrics of the correction loop: its own period error for the jitter chart ('' : from arrivals)",
    ),
)


class DashboardModel:
    """Bounded windows of the data the page shows; every ``on_*`` takes plain numbers so it is
    testable without ROS. Times in ns (any common time base); ``snapshot()`` returns seconds
    relative to the newest sample. Thread-safe (one lock, held only to copy)."""

    def __init__(self, max_points: int = 3000, window_s: float = 30.0, joint: int = 0) -> None:
        if max_points < 10 or window_s <= 0 or joint < 0:
            raise ValueError("max_points >= 10, window_s > 0 and joint >= 0 required")
        self.window_ns = int(window_s * NS_PER_S)
        self.joint = joint
        self._lock = threading.Lock()
        self.reports: deque[tuple] = deque(
            maxlen=max_points
        )  # (t, total, inference, transport, queue, pred, meas, jump, network)
        self.rejects: Counter[str] = Counter()
        self.n_reports = 0
        self.commands: deque[tuple[int, np.ndarray, bool]] = deque(maxlen=max_points)  # (t, q, opens a segment)
        self._segment_pending = False
        self.ticks: deque[tuple[int, float]] = deque(maxlen=max_points)  # (t, loop period error s) from CommandMetrics
        self.n_commands = 0
        self.n_joint_states = 0
        self.diag_counters: dict[str, float] = {}
        self.health: dict[str, tuple[int, str]] = {}  # node -> (diagnostic level, message)
        self._plans: deque[tuple[int, float, np.ndarray, set[int]]] = deque(maxlen=8)  # recent plans
        self._chunks: deque[tuple[int, int, float, np.ndarray]] = deque(maxlen=16)  # (id, obs_ns, dt, (H,A))
        self.overlay: dict[str, Any] | None = None
        self._pending: dict[int, tuple] = {}  # accepted chunk id -> (prev plan, n_frozen, n_soft, n_free)
        self.n_switches = 0

    # ------------------------------------------------------------------ inputs
    def on_report(
        self,
        t_ns: int,
        chunk_id: int,
        accepted: bool,
        reason: str,
        total_s: float,
        inference_s: float,
        transport_s: float,
        queue_s: float,
        predicted_d: int,
        measured_d: int,
        jump: float,
        n_frozen: int,
        n_soft: int,
        n_free: int,
        network_s: float = -1.0,
    ) -> None:
        with self._lock:
            self.n_reports += 1
            self.reports.append(
                (
                    t_ns,
                    total_s,
                    inference_s,
                    transport_s,
                    queue_s,
                    predicted_d,
                    measured_d,
                    jump if accepted else float("nan"),
                    network_s,
                )
            )
            if not accepted:
                self.rejects[reason or "unknown"] += 1
                return
            # the plan in force before the merge: the newest one that does not contain the new chunk
            prev = next((pl[:3] for pl in reversed(self._plans) if chunk_id not in pl[3]), None)
            if prev is None:
                return
            chunk = next((c for c in self._chunks if c[0] == chunk_id), None)
            if chunk is None:  # topics are not ordered against each other: draw when the chunk comes
                self._pending[chunk_id] = (prev, n_frozen, n_soft, n_free)
                while len(self._pending) > 16:
                    self._pending.pop(next(iter(self._pending)))
                return
            self._draw_overlay(chunk, prev, n_frozen, n_soft, n_free)

    def _draw_overlay(self, chunk, prev, n_frozen: int, n_soft: int, n_free: int) -> None:
        cid, obs_ns, dt, acts = chunk
        j = min(self.joint, acts.shape[1] - 1)
        x_new = [k * dt for k in range(len(acts))]
        p_ns, p_dt, p_acts = prev
        x_prev = [(p_ns - obs_ns) / NS_PER_S + i * p_dt for i in range(len(p_acts))]
        self.n_switches += 1
        self.overlay = {
            "chunk_id": cid,
            "joint": j,
            "dt": dt,
            "prev": [[x, float(a)] for x, a in zip(x_prev, p_acts[:, min(j, p_acts.shape[1] - 1)])],
            "new": [[x, float(a)] for x, a in zip(x_new, acts[:, j])],
            "regions": {
                "frozen": [0.0, n_frozen * dt],
                "soft": [n_frozen * dt, (n_frozen + n_soft) * dt],
                "free": [(n_frozen + n_soft) * dt, (n_frozen + n_soft + n_free) * dt],
            },
            "n_frozen": n_frozen,
            "n_soft": n_soft,
            "n_free": n_free,
        }

    def on_chunk(self, chunk_id: int, obs_ns: int, dt: float, actions: np.ndarray) -> None:
        """actions: (H, A)."""
        with self._lock:
            self._chunks.append((chunk_id, obs_ns, dt, np.array(actions, dtype=np.float64)))
            pending = self._pending.pop(chunk_id, None)
            if pending is not None:
                self._draw_overlay(self._chunks[-1], *pending)

    def on_plan(self, stamp_ns: int, dt: float, actions: np.ndarray, chunk_ids: list[int]) -> None:
        """actions: (L, A), chunk_ids: (L,) source chunk per step (kept for the switch overlay)."""
        if len(actions) == 0:
            return
        with self._lock:
            self._plans.append((stamp_ns, dt, np.array(actions, dtype=np.float64), set(int(c) for c in chunk_ids)))

    def on_command(self, t_ns: int, q: np.ndarray) -> None:
        with self._lock:
            self.n_commands += 1
            self.commands.append((t_ns, np.array(q, dtype=np.float64), self._segment_pending))
            self._segment_pending = False

    def on_segment(self) -> None:
        """The correction node restarted its filter (episode reset, start): the next command opens a
        new segment, and no acceleration/jerk is computed across the boundary (the sim teleports)."""
        with self._lock:
            self._segment_pending = True

    def on_command_metrics(self, t_ns: int, period_error_s: float) -> None:
        """The correction loop's own measured period error of one tick (``CommandMetrics``): the
        jitter chart shows it instead of the command arrival times (which add transport)."""
        if np.isfinite(period_error_s):
            with self._lock:
                self.ticks.append((t_ns, float(period_error_s)))

    def on_joint_state(self) -> None:
        with self._lock:
            self.n_joint_states += 1

    def on_diagnostic(self, name: str, values: dict[str, str], level: int | None = None, message: str = "") -> None:
        """One node's DiagnosticStatus: counters (keys naming drops, interventions, ...; rates
        ``*_per_s`` left out) and, when given, its level (0 OK, 1 WARN, 2 ERROR, 3 STALE)."""
        with self._lock:
            if level is not None:
                self.health[name] = (int(level), str(message))
            for k, v in values.items():
                if _COUNTER_KEY.search(k) and not k.endswith("_per_s"):
                    try:
                        self.diag_counters[f"{name}: {k}"] = float(v)
                    except ValueError:
                        continue

    # ------------------------------------------------------------------ output
    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws, JSON-ready (NaN -> None)."""
        with self._lock:
            reports = list(self.reports)
            commands = list(self.commands)
            ticks = list(self.ticks)
            out: dict[str, Any] = {
                "counts": {
                    "reports": self.n_reports,
                    "commands": self.n_commands,
                    "joint_states": self.n_joint_states,
                    "switches": self.n_switches,
                },
                "rejects": dict(self.rejects),
                "diag_counters": dict(self.diag_counters),
                "health": {n: {"level": lv, "message": msg} for n, (lv, msg) in sorted(self.health.items())},
                "overlay": self.overlay,
            }
        now = max([r[0] for r in reports[-1:]] + [c[0] for c in commands[-1:]] + [0])
        lo = now - self.window_ns
        rep = [r for r in reports if r[0] >= lo]

        def num(v, scale=1.0):
            return None if v is None or not np.isfinite(v) or v < 0 else round(float(v) * scale, 6)

        t = [round((r[0] - now) / NS_PER_S, 4) for r in rep]
        out["latency"] = {
            "t": t,
            "total_ms": [num(r[1], 1e3) for r in rep],
            "inference_ms": [num(r[2], 1e3) for r in rep],
            "transport_ms": [num(r[3], 1e3) for r in rep],
            "queue_ms": [num(r[4], 1e3) for r in rep],
            "network_ms": [num(r[8], 1e3) for r in rep],  # remote backends only (else empty points)
        }
        tot = np.asarray([r[1] * 1e3 for r in reports if np.isfinite(r[1]) and r[1] >= 0])
        if tot.size:
            edges = np.histogram_bin_edges(tot, bins=min(30, max(5, tot.size // 3)))
            hist, _ = np.histogram(tot, bins=edges)
            out["latency_hist"] = {
                "edges_ms": [round(float(e), 3) for e in edges],
                "counts": hist.tolist(),
                "p50_ms": float(np.median(tot)),
                "p95_ms": float(np.quantile(tot, 0.95)),
                "max_ms": float(tot.max()),
            }
        else:
            out["latency_hist"] = {"edges_ms": [], "counts": []}
        out["delay"] = {
            "t": t,
            "predicted": [int(r[5]) for r in rep],
            "measured": [int(r[6]) if r[6] >= 0 else None for r in rep],
            "jump": [num(r[7]) for r in rep],
        }
        cmd = [c for c in commands if c[0] >= lo]
        if len(cmd) >= 4:
            ts = np.asarray([c[0] for c in cmd], dtype=np.float64)
            dims = min(len(c[1]) for c in cmd)
            q = np.stack([c[1][:dims] for c in cmd])[:, : min(7, dims)]
            period = np.diff(ts) / 1e6
            nominal = float(np.median(period))
            dt = max(nominal / 1e3, 1e-6)
            acc = np.linalg.norm(np.diff(q, 2, axis=0), axis=1) / dt**2
            jerk = np.linalg.norm(np.diff(q, 3, axis=0), axis=1) / dt**3
            opens = np.asarray([c[2] for c in cmd], dtype=bool)  # differences never span a segment start
            acc = np.where([opens[i + 1 : i + 3].any() for i in range(len(acc))], np.nan, acc)
            jerk = np.where([opens[i + 1 : i + 4].any() for i in range(len(jerk))], np.nan, jerk)
            tt = (ts - now) / NS_PER_S
            out["command"] = {
                "t": [round(float(v), 4) for v in tt],
                "q": [[round(float(v), 5) for v in col] for col in q.T],
                "t_acc": [round(float(v), 4) for v in tt[1:-1]],
                "acc": [round(float(v), 4) if np.isfinite(v) else None for v in acc],
                "t_jerk": [round(float(v), 4) for v in tt[2:-1]],
                "jerk": [round(float(v), 3) if np.isfinite(v) else None for v in jerk],
                "t_period": [round(float(v), 4) for v in tt[1:]],
                "period_err_ms": [round(float(v - nominal), 4) for v in period],
                "nominal_ms": nominal,
                "jitter_p99_ms": float(np.quantile(np.abs(period - nominal), 0.99)),
                "period_source": "command arrival at the dashboard",
            }
            tk = [k for k in ticks if k[0] >= lo]
            if len(tk) >= 2:  # the loop's own measurement (CommandMetrics)
                err = np.asarray([k[1] * 1e3 for k in tk])
                out["command"].update(
                    {
                        "t_period": [round((k[0] - now) / NS_PER_S, 4) for k in tk],
                        "period_err_ms": [round(float(v), 4) for v in err],
                        "jitter_p99_ms": float(np.quantile(np.abs(err), 0.99)),
                        "period_source": "correction loop (CommandMetrics)",
                    }
                )
        else:
            out["command"] = None
        return out


class _Handler(BaseHTTPRequestHandler):
    model: DashboardModel
    config: dict[str, Any]
    files = {
        "/": ("index.html", "text/html; charset=utf-8"),
        "/index.html": ("index.html", "text/html; charset=utf-8"),
        "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
        "/chart.umd.min.js": ("chart.umd.min.js", "text/javascript; charset=utf-8"),
    }

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        path = self.path.split("?", 1)[0]
        if path == "/api/state":
            body = json.dumps(self.model.snapshot() | {"config": self.config}, allow_nan=False).encode()
            ctype = "application/json"
        elif path in self.files:
            name, ctype = self.files[path]
            body = (WEB_DIR / name).read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser closed the tab or moved on mid-answer: nothing to report

    def log_message(self, *args) -> None:  # quiet: one line per poll would flood the log
        return


def make_server(model: DashboardModel, host: str, port: int, config: dict[str, Any]) -> ThreadingHTTPServer:
    """The HTTP server (not started); ``server.server_address`` has the bound port."""
    handler = type("DashboardHandler", (_Handler,), {"model": model, "config": dict(config)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


class DashboardNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        self.model = DashboardModel(p["max_points"], p["window_s"], p["joint"])
        try:
            self.server = make_server(self.model, p["host"], p["port"], {"poll_ms": p["poll_ms"]})
        except OSError as exc:
            raise ValueError(f"cannot serve on {p['host']}:{p['port']}: {exc}") from exc
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="dashboard_http", daemon=True)
        self._thread.start()
        g = MutuallyExclusiveCallbackGroup()
        self._clock = self.get_clock()
        self.create_subscription(ChunkReport, N.CHUNK_REPORT, self._on_report, 50, callback_group=g)
        self.create_subscription(ActionChunk, N.ACTION_CHUNK, self._on_chunk, 10, callback_group=g)
        self.create_subscription(ActionPlan, N.ACTION_PLAN, self._on_plan, 10, callback_group=g)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20, callback_group=g)
        self.create_subscription(
            JointState,
            p["joint_state_topic"],
            lambda _m: self.model.on_joint_state(),
            make_qos("best_effort", 10),
            callback_group=g,
        )
        if p["command_topic"]:
            self.create_subscription(
                Float64MultiArray,
                p["command_topic"],
                lambda m: self.model.on_command(self._now(), np.asarray(m.data)),
                50,
                callback_group=g,
            )
        if p["trajectory_topic"]:
            self.create_subscription(JointTrajectory, p["trajectory_topic"], self._on_traj, 50, callback_group=g)
        self.create_subscription(
            Header, "correction/command_segment", lambda _m: self.model.on_segment(), 10, callback_group=g
        )
        if p["command_metrics_topic"]:
            self.create_subscription(
                CommandMetrics,
                p["command_metrics_topic"],
                lambda m: self.model.on_command_metrics(stamp_to_ns(m.header.stamp), m.period_error_s),
                100,
                callback_group=g,
            )
        self.get_logger().info(f"dashboard on {self.url} (bound to {host}; no authentication)")

    def _now(self) -> int:
        return int(self._clock.now().nanoseconds)

    def _on_report(self, m: ChunkReport) -> None:
        self.model.on_report(
            stamp_to_ns(m.header.stamp),
            int(m.chunk_id),
            bool(m.accepted),
            m.reject_reason,
            m.total_latency_s,
            m.inference_s,
            m.transport_s,
            m.queue_s,
            int(m.predicted_delay_steps),
            int(m.measured_delay_steps),
            m.boundary_jump,
            int(m.n_frozen),
            int(m.n_soft),
            int(m.n_free),
            m.network_s,
        )

    def _on_chunk(self, m: ActionChunk) -> None:
        if m.error_code != ActionChunk.ERROR_NONE or m.horizon * m.action_dim != len(m.actions) or not m.horizon:
            return
        self.model.on_chunk(
            int(m.chunk_id),
            stamp_to_ns(m.header.stamp),
            float(m.dt),
            np.asarray(m.actions, dtype=np.float64).reshape(m.horizon, m.action_dim),
        )

    def _on_plan(self, m: ActionPlan) -> None:
        if m.length * m.action_dim != len(m.actions):
            return
        self.model.on_plan(
            stamp_to_ns(m.header.stamp),
            float(m.dt),
            np.asarray(m.actions, dtype=np.float64).reshape(m.length, m.action_dim),
            list(m.chunk_ids),
        )

    def _on_traj(self, m: JointTrajectory) -> None:
        if len(m.points):
            self.model.on_command(self._now(), np.asarray(m.points[0].positions))

    def _on_diag(self, m: DiagnosticArray) -> None:
        for s in m.status:
            self.model.on_diagnostic(s.name, {kv.key: kv.value for kv in s.values}, s.level[0], s.message)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5.0)


def main(args=None) -> int:
    return run_node(DashboardNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
