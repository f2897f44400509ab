"""Telemetry of a node: ``~/metrics`` (NodeMetrics) and ``/diagnostics`` with OK / WARN / ERROR.

One mechanism for every node of the graph. A node gives :class:`Telemetry` its ``collect()``
function (``{name: value}``: counters, durations in s, a few strings), its threshold rows
(:class:`~async_vla_ros.nodes.health.Threshold`, limits from the node's ``diag.<key>.warn`` /
``diag.<key>.error`` parameters) and the counters whose rates are judged (``rate_keys``, e.g.
``dropped`` -> ``dropped_per_s``). Every ``metrics_period_s`` it collects once, derives the rates
and the level (:class:`~async_vla_ros.nodes.health.HealthMonitor`), publishes the numeric values
as ``async_vla_msgs/NodeMetrics`` on ``~/metrics`` (names append-only, so ``values[i]`` is a
stable series for rqt_plot), and every ``diagnostics_period_s`` -- or at once when the level
changes -- one ``DiagnosticStatus`` on ``/diagnostics`` (name = the node's fully qualified name,
message = the breaches, values = everything collected plus the rates).

A node declares the parameters with ``PARAMS = (... ) + telemetry_params(THRESHOLDS)`` and builds
``Telemetry(self, self._diag_values, THRESHOLDS, p)``; the object keeps the interface of
:class:`async_vla_ros.nodes.common.Diagnostics` (``status()``, ``publish()``, ``level``,
``message``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from async_vla_msgs.msg import NodeMetrics
from async_vla_ros.core.clock import MonotonicClock
from async_vla_ros.nodes.common import NS_PER_S  # noqa: F401 - applies the ROS environment defaults first
from async_vla_ros.nodes.health import (
    OK,
    TELEMETRY_PARAMS,
    Health,
    HealthMonitor,
    Threshold,
    numeric_values,
    threshold_params,
    thresholds_from_values,
)
from async_vla_ros.nodes.params import Param

__all__ = ["Telemetry", "telemetry_params", "quantile_values"]


def quantile_values(name: str, samples: Sequence[float]) -> dict[str, float]:
    """``{name}_median_s``, ``{name}_p95_s``, ``{name}_p99_s`` of a node's rolling window of
    durations (s); nothing while it is empty (a metric without samples yet is absent). The window is
    copied first (one C-level step: another thread may append to a deque meanwhile)."""
    a = np.asarray(list(samples), dtype=np.float64)
    if not a.size:
        return {}
    med, p95, p99 = np.quantile(a, (0.5, 0.95, 0.99))
    return {f"{name}_median_s": float(med), f"{name}_p95_s": float(p95), f"{name}_p99_s": float(p99)}


def telemetry_params(thresholds: Sequence[Threshold]) -> tuple[Param, ...]:
    """Parameter rows every node adds to its table: periods, rate window, its thresholds."""
    return TELEMETRY_PARAMS + threshold_params(thresholds)


class Telemetry:
    """See the module docstring. Thread-safe; the timer runs in ``callback_group``."""

    def __init__(
        self,
        node,
        collect: Callable[[], dict[str, Any]],
        thresholds: Sequence[Threshold],
        params: Mapping[str, Any],
        rate_keys: Sequence[str] = ("dropped",),
        callback_group=None,
        clock=None,
    ) -> None:
        self._node = node
        self._collect = collect
        self.thresholds = thresholds_from_values(node.get_name(), thresholds, params)
        self.monitor = HealthMonitor(self.thresholds, rate_keys, params.get("diag_window_s", 10.0))
        self._clock = clock or MonotonicClock()
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self.health = Health(OK, "starting")
        self.level = DiagnosticStatus.OK
        self.message = "starting"
        self.values: dict[str, Any] = {}
        self.n_metrics = self.n_diagnostics = 0
        self._diag_period_ns = int(params.get("diagnostics_period_s", 1.0) * NS_PER_S)
        self._next_diag_ns = 0
        metrics_period = float(params.get("metrics_period_s", 0.2))
        self._pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._pub_metrics = node.create_publisher(NodeMetrics, "~/metrics", 10) if metrics_period > 0 else None
        period = metrics_period if metrics_period > 0 else params.get("diagnostics_period_s", 1.0)
        self._timer = node.create_timer(period, self._on_timer, callback_group=callback_group)

    # ------------------------------------------------------------------ evaluation
    def update(self) -> tuple[dict[str, Any], Health]:
        """Collect, derive rates, judge; the result is kept in ``values`` / ``health``."""
        raw = self._collect()
        with self._lock:
            values, health = self.monitor.update(self._clock.now_ns(), raw)
            changed = health.level != self.health.level
            self.values, self.health = values, health
            self.level = bytes([health.level])
            self.message = health.message
        if changed and health.level != OK:
            self._node.get_logger().warning(f"health {['OK', 'WARN', 'ERROR'][health.level]}: {health.message}")
        elif changed and self.n_diagnostics:
            self._node.get_logger().info("health back to OK")
        return values, health

    def _on_timer(self) -> None:
        if not self._node.context.ok():
            return
        prev = self.health.level
        values, health = self.update()
        if self._pub_metrics is not None:
            self._publish_metrics(values, health)
        now = self._clock.now_ns()
        if now >= self._next_diag_ns or health.level != prev:
            self._publish_diag(values, health)
            self._next_diag_ns = now + self._diag_period_ns

    # ------------------------------------------------------------------ messages
    def metrics_message(self, values: Mapping[str, Any], health: Health) -> NodeMetrics:
        """NodeMetrics of ``values`` (numeric only; names append-only; missing -> NaN)."""
        nums = numeric_values(values)
        with self._lock:
            for k in nums:
                if k not in self._index:
                    self._index[k] = len(self._names)
                    self._names.append(k)
            names = list(self._names)
        vals = [math.nan] * len(names)
        for k, v in nums.items():
            vals[self._index[k]] = v
        msg = NodeMetrics()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.node = self._node.get_fully_qualified_name()
        msg.level = int(health.level)
        msg.names = names
        msg.values = vals
        return msg

    def status(self) -> DiagnosticStatus:
        """The node's DiagnosticStatus from the latest values (collects if none yet)."""
        with self._lock:
            values, health = self.values, self.health
        if not values:
            values, health = self.update()
        return self._status(values, health)

    def _status(self, values: Mapping[str, Any], health: Health) -> DiagnosticStatus:
        kv = [KeyValue(key=str(k), value=repr(v) if isinstance(v, float) else str(v)) for k, v in values.items()]
        return DiagnosticStatus(
            level=bytes([health.level]),
            name=self._node.get_fully_qualified_name(),
            message=health.message,
            hardware_id="async_vla_ros",
            values=kv,
        )

    def _publish_metrics(self, values, health) -> None:
        self._pub_metrics.publish(self.metrics_message(values, health))
        self.n_metrics += 1

    def _publish_diag(self, values, health) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self._node.get_clock().now().to_msg()
        arr.status = [self._status(values, health)]
        self._pub_diag.publish(arr)
        self.n_diagnostics += 1

    def publish(self) -> None:
        """Collect now and publish both topics (also called by the timer)."""
        values, health = self.update()
        if self._pub_metrics is not None:
            self._publish_metrics(values, health)
        self._publish_diag(values, health)
