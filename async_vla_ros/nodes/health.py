"""Node health from metrics: thresholds, windowed rates, OK / WARN / ERROR (numpy only, no rclpy).

Every node of the graph reports a flat ``{name: value}`` dict of its measurements (counters,
durations in s). :class:`HealthMonitor` turns the cumulative counters named in ``rate_keys`` into
rates over a sliding time window (``<key>_per_s`` = increase during the last ``window_s`` seconds
divided by ``window_s``: a single event never looks like a burst at start-up) and compares the
values with the node's :class:`Threshold` rows; the worst breach sets the level. The ROS side
(:mod:`async_vla_ros.nodes.metrics`) publishes the result on ``/diagnostics`` and ``~/metrics``;
the node parameters ``diag.<key>.warn`` / ``diag.<key>.error`` set the limits
(:func:`threshold_params`, :func:`thresholds_from_values`).

Levels are the ``diagnostic_msgs/DiagnosticStatus`` values: OK 0, WARN 1, ERROR 2. A metric that
has no value yet (missing, None, NaN) is not judged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from async_vla_ros.nodes.params import Param, ParamError

__all__ = [
    "OK",
    "WARN",
    "ERROR",
    "LEVEL_NAMES",
    "Threshold",
    "Breach",
    "Health",
    "evaluate",
    "RateWindow",
    "HealthMonitor",
    "threshold_params",
    "thresholds_from_values",
    "numeric_values",
    "TELEMETRY_PARAMS",
]

OK, WARN, ERROR = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}
NS_PER_S = 1_000_000_000

# common to every node (async_vla_ros.nodes.metrics.Telemetry reads them)
TELEMETRY_PARAMS = (
    Param("metrics_period_s", 0.2, "period of ~/metrics (NodeMetrics; 0: not published)", min=0.0, max=60.0),
    Param(
        "diagnostics_period_s",
        1.0,
        "period of /diagnostics (also sent at once when the level changes)",
        min=0.05,
        max=60.0,
    ),
    Param("diag_window_s", 10.0, "window of the rates (<counter>_per_s) judged by the thresholds", min=0.5, max=3600.0),
)


@dataclass(frozen=True)
class Threshold:
    """One health rule: ``key`` above ``warn`` -> WARN, above ``error`` -> ERROR (``above=False``:
    below). Limits are in the metric's unit (s, per s, fraction)."""

    key: str  # metric name in the node's values (a rate: "<counter>_per_s")
    warn: float  # WARN limit
    error: float  # ERROR limit (beyond warn)
    above: bool = True  # True: bad when the value exceeds a limit; False: bad when below
    description: str = ""  # what the metric means, shown in the parameter descriptions

    def __post_init__(self) -> None:
        if not self.key or not isinstance(self.key, str) or any(c.isspace() for c in self.key):
            raise ValueError(f"Threshold key must be a non-empty name without spaces, got {self.key!r}")
        for name in ("warn", "error"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Threshold {self.key}: {name} must be a finite number, got {v!r}")
        if self.above and self.error < self.warn:
            raise ValueError(f"Threshold {self.key}: error limit {self.error} must be >= warn limit {self.warn}")
        if not self.above and self.error > self.warn:
            raise ValueError(
                f"Threshold {self.key}: error limit {self.error} must be <= warn limit {self.warn} (a lower bound)"
            )

    def level(self, value: Any) -> int:
        """OK / WARN / ERROR for ``value`` (OK when there is no value yet)."""
        v = _as_float(value)
        if v is None:
            return OK
        if self.above:
            return ERROR if v > self.error else WARN if v > self.warn else OK
        return ERROR if v < self.error else WARN if v < self.warn else OK


@dataclass(frozen=True)
class Breach:
    """A threshold crossed: the metric, its value, the level and the limit crossed."""

    key: str
    value: float
    level: int
    limit: float
    above: bool

    def __str__(self) -> str:
        return (
            f"{self.key} {self.value:.4g} {'>' if self.above else '<'} {LEVEL_NAMES[self.level]} limit {self.limit:.4g}"
        )


@dataclass(frozen=True)
class Health:
    """Result of :func:`evaluate`: overall level, a one-line message, every breach (worst first)."""

    level: int
    message: str
    breaches: tuple[Breach, ...] = ()


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def evaluate(values: Mapping[str, Any], thresholds: Iterable[Threshold], ok_message: str = "ok") -> Health:
    """Judge ``values`` against ``thresholds``; the message names every breach, worst first."""
    breaches = []
    for t in thresholds:
        lvl = t.level(values.get(t.key))
        if lvl != OK:
            breaches.append(Breach(t.key, float(values[t.key]), lvl, t.error if lvl == ERROR else t.warn, t.above))
    if not breaches:
        return Health(OK, ok_message)
    breaches.sort(key=lambda b: -b.level)
    return Health(breaches[0].level, "; ".join(str(b) for b in breaches), tuple(breaches))


class RateWindow:
    """Rate of a cumulative counter over a sliding window: ``update(t_ns, total)`` returns the
    increase during the last ``window_s`` divided by ``window_s`` (events per second). A counter
    that goes down (node restarted its count) restarts the window."""

    def __init__(self, window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        self.window_ns = int(window_s * NS_PER_S)
        self._samples: deque[tuple[int, float]] = deque()

    def update(self, t_ns: int, total: float) -> float:
        """Rate (per s) after recording the counter's ``total`` at ``t_ns``. The counter is taken
        to start at 0 when the window starts (the node's start) until the history is a full
        window long."""
        s = self._samples
        t_ns, total = int(t_ns), float(total)
        if s and (t_ns < s[-1][0] or total < s[-1][1]):
            s.clear()  # time went back or the count was reset: start again from 0
        s.append((t_ns, total))
        start = t_ns - self.window_ns
        # keep the newest sample at or before the window start: the baseline of the increase
        while len(s) >= 2 and s[1][0] <= start:
            s.popleft()
        base = s[0][1] if s[0][0] <= start else 0.0
        return (total - base) / (self.window_ns / NS_PER_S)


def numeric_values(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a node's values (bools as 0/1; strings dropped)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool):
            out[k] = 1.0 if v else 0.0
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[k] = float(v)
    return out


class HealthMonitor:
    """Per node: derived rates + threshold evaluation, on an injected time (ns, monotonic).

    ``update(t_ns, values)`` -> ``(values + {"<key>_per_s": rate for key in rate_keys}, Health)``.
    """

    def __init__(
        self, thresholds: Sequence[Threshold], rate_keys: Sequence[str] = ("dropped",), window_s: float = 10.0
    ) -> None:
        keys = [t.key for t in thresholds]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate threshold keys: {keys}")
        self.thresholds = tuple(thresholds)
        self.window_s = float(window_s)
        self._rates = {k: RateWindow(window_s) for k in rate_keys}

    def update(self, t_ns: int, values: Mapping[str, Any]) -> tuple[dict[str, Any], Health]:
        out = dict(values)
        for key, win in self._rates.items():
            v = _as_float(values.get(key))
            if v is not None:
                out[f"{key}_per_s"] = win.update(t_ns, v)
        return out, evaluate(out, self.thresholds)


def threshold_params(thresholds: Sequence[Threshold]) -> tuple[Param, ...]:
    """``diag.<key>.warn`` / ``diag.<key>.error`` parameter rows (defaults: the rows' limits)."""
    rows = []
    for t in thresholds:
        word = "above" if t.above else "below"
        what = f" ({t.description})" if t.description else ""
        rows.append(Param(f"diag.{t.key}.warn", float(t.warn), f"/diagnostics WARN when {t.key} is {word} this{what}"))
        rows.append(Param(f"diag.{t.key}.error", float(t.error), f"/diagnostics ERROR when {t.key} is {word} this"))
    return tuple(rows)


def thresholds_from_values(
    node: str, defaults: Sequence[Threshold], values: Mapping[str, Any]
) -> tuple[Threshold, ...]:
    """The node's thresholds with the limits from its (validated) parameter values; a WARN limit
    beyond the ERROR limit is a :class:`ParamError` naming both parameters."""
    out, problems = [], []
    for t in defaults:
        warn = float(values.get(f"diag.{t.key}.warn", t.warn))
        error = float(values.get(f"diag.{t.key}.error", t.error))
        try:
            out.append(Threshold(t.key, warn, error, t.above, t.description))
        except ValueError:
            rel = ">=" if t.above else "<="
            problems.append(f"diag.{t.key}.error ({error}) must be {rel} diag.{t.key}.warn ({warn})")
    if problems:
        raise ParamError(node, problems)
    return tuple(out)
