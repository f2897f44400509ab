"""A listener on a running graph: diagnostics, episode results and chunk reports, in one place.

Used by the main job (``async-vla-ros demo``: live status line, summary), the pipeline benchmark
and the system tests. It only subscribes; it never commands anything. All numbers it prints are
taken from the messages the nodes publish (measured by them), none are computed from settings.

Call :func:`async_vla_ros.rosenv.apply_ros_defaults` before ``rclpy.init`` (the CLI and the
tests do).
"""

from __future__ import annotations

import ast
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node

from async_vla_msgs.msg import ActionPlan, ChunkReport
from async_vla_ros import names as N
from async_vla_ros.core.clock import NS_PER_S, stamp_to_ns

__all__ = ["GraphMonitor", "EpisodeResult", "parse_value"]


def parse_value(text: str):
    """A diagnostic value back to a Python value (numbers, bools), else the string."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@dataclass(frozen=True)
class EpisodeResult:
    episode_id: int
    task: str
    success: bool
    seed: int
    values: dict


class GraphMonitor(Node):
    """Collects what the graph publishes (thread-safe accessors)."""

    def __init__(self, namespace: str = "", name: str = "graph_monitor") -> None:
        super().__init__(name, namespace=namespace or None)
        self._lock = threading.Lock()
        self.diagnostics: dict[str, dict] = {}  # short node name -> latest values
        self.episodes: list[EpisodeResult] = []
        self.reports: deque[ChunkReport] = deque(maxlen=20000)
        self.report_arrivals: deque[int] = deque(maxlen=20000)
        self.n_plans = 0
        self.plan_lengths: deque[int] = deque(maxlen=2000)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.create_subscription(DiagnosticStatus, N.EPISODE_RESULT, self._on_episode, 50)
        self.create_subscription(ChunkReport, N.CHUNK_REPORT, self._on_report, 100)
        self.create_subscription(ActionPlan, N.ACTION_PLAN, self._on_plan, 10)

    # ------------------------------------------------------------------ callbacks
    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for st in msg.status:
                short = st.name.rsplit("/", 1)[-1]
                self.diagnostics[short] = {kv.key: parse_value(kv.value) for kv in st.values}

    def _on_episode(self, msg: DiagnosticStatus) -> None:
        v = {kv.key: parse_value(kv.value) for kv in msg.values}
        res = EpisodeResult(
            int(v.get("episode_id", 0)),
            str(v.get("task", "")),
            bool(v.get("success", False)),
            int(v.get("seed", -1)),
            v,
        )
        with self._lock:
            self.episodes.append(res)

    def _on_report(self, msg: ChunkReport) -> None:
        with self._lock:
            self.reports.append(msg)
            self.report_arrivals.append(stamp_to_ns(msg.header.stamp))

    def _on_plan(self, msg: ActionPlan) -> None:
        with self._lock:
            self.n_plans += 1
            self.plan_lengths.append(int(msg.length))

    # ------------------------------------------------------------------ views
    def diag(self, node: str) -> dict:
        with self._lock:
            return dict(self.diagnostics.get(node, {}))

    def episode_results(self) -> list[EpisodeResult]:
        with self._lock:
            return list(self.episodes)

    def accepted_reports(self) -> list[ChunkReport]:
        with self._lock:
            return [r for r in self.reports if r.accepted]

    def chunk_rate_hz(self, window_s: float = 5.0) -> float:
        """Accepted chunks per second over the last ``window_s`` (arrival stamps)."""
        now = self.get_clock().now().nanoseconds
        with self._lock:
            n = sum(
                1 for r, t in zip(self.reports, self.report_arrivals) if r.accepted and now - t <= window_s * NS_PER_S
            )
        return n / window_s

    def latency_stats(self) -> dict[str, float]:
        """Median / p99 of measured latency components of accepted chunks (s), and of d."""
        reps = self.accepted_reports()
        if not reps:
            return {}
        total = np.array([r.total_latency_s for r in reps])
        inf = np.array([r.inference_s for r in reps])
        obs_age = np.array([r.obs_age_s for r in reps])
        inj = np.array([r.injected_delay_s for r in reps])
        overhead = total - obs_age - inf - inj  # request -> chunk available, minus model and injected time
        d = np.array([r.measured_delay_steps for r in reps], dtype=np.float64)
        dp = np.array([r.predicted_delay_steps for r in reps], dtype=np.float64)
        net = np.array([r.network_s for r in reps if r.network_s >= 0])  # remote backends only
        return {
            "n": float(len(reps)),
            "latency_median_s": float(np.median(total)),
            "latency_p99_s": float(np.quantile(total, 0.99)),
            "inference_median_s": float(np.median(inf)),
            "overhead_median_s": float(np.median(overhead)),
            "overhead_p99_s": float(np.quantile(overhead, 0.99)),
            "overhead_max_s": float(overhead.max()),
            "d_measured_median": float(np.median(d)),
            "d_measured_max": float(d.max()),
            "d_predicted_median": float(np.median(dp)),
            "network_median_s": float(np.median(net)) if net.size else -1.0,
            "network_p99_s": float(np.quantile(net, 0.99)) if net.size else -1.0,
        }

    def status_line(self) -> str:
        """One line: task, successes, chunk rate, latency and d, command-loop jitter."""
        eps = self.episode_results()
        sim = self.diag("sim")
        corr = self.diag("correction")
        lat = self.latency_stats()
        task = eps[-1].task if eps else str(self.diag("policy").get("policy", "?")).split("/")[-1]
        parts = [
            f"task {task}",
            f"episodes {sum(e.success for e in eps)}/{len(eps)} ok",
            f"step {sim.get('step', '-')}",
            f"chunks {self.chunk_rate_hz():.1f}/s",
        ]
        if lat:
            parts.append(
                f"latency {1e3 * lat['latency_median_s']:.0f} ms (model {1e3 * lat['inference_median_s']:.1f})"
            )
            parts.append(f"d {lat['d_measured_median']:.0f} (max {lat['d_measured_max']:.0f})")
        if "period_error_p99_s" in corr:
            parts.append(
                f"cmd jitter p99 {1e3 * corr['period_error_p99_s']:.2f} ms{' FIFO' if corr.get('sched_fifo') else ''}"
            )
        ing = self.diag("camera_ingestion")
        if "image_latency_median_s" in ing:
            parts.append(f"images {1e3 * ing['image_latency_median_s']:.0f} ms")
        said = self.diag("policy").get("instruction")
        if said:
            parts.append(f"'{said}'")
        return " | ".join(parts)
