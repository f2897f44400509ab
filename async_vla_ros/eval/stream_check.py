"""Command-stream checks (pure numpy, no ROS): is a recorded joint command stream within the joint
limits, and does each restart of it begin where the arm was measured?

Used by ``async-vla-ros chaos`` (:mod:`async_vla_ros.eval.chaos`) and ``async-vla-ros soak``
(:mod:`async_vla_ros.eval.soak`) on the commands a probe node received from the correction node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from async_vla_ros.core.motion_check import DERIVATIVES, check_differences, limit_bounds, position_margin
from async_vla_ros.core.safety import JointLimits

__all__ = ["NS", "StreamCheck", "check_command_stream", "check_restarts"]

NS = 1_000_000_000


@dataclass(frozen=True)
class StreamCheck:
    """Result of :func:`check_command_stream` (ratios: max |x| / limit over every joint and command)."""

    n_commands: int
    n_segments: int
    max_velocity_ratio: float  # max |v| / v_max (1.0: at the limit)
    max_acceleration_ratio: float
    max_jerk_ratio: float
    min_position_margin: float  # rad to the nearest position limit (negative: outside)
    violations: tuple[str, ...]  # first few violations, human-readable
    missed: int = 0  # commands the listener did not receive (publication sequence gaps): not checked

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        return (
            f"max |v|/v_max {self.max_velocity_ratio:.2f}, |a|/a_max {self.max_acceleration_ratio:.2f}, "
            f"|j|/j_max {self.max_jerk_ratio:.2f}, position margin >= {self.min_position_margin:.3f} rad "
            f"({self.n_commands} commands" + (f"; {self.missed} not received" if self.missed else "") + ")"
        )


def check_command_stream(
    stamps_ns: np.ndarray,
    q: np.ndarray,
    dt: float,
    limits: JointLimits,
    segment_starts_ns: Sequence[int] = (),
    rel_tol: float = 1e-6,
    max_report: int = 5,
    seq: np.ndarray | None = None,
) -> StreamCheck:
    """Check a joint command stream against joint limits, as discrete differences.

    ``stamps_ns (N,)``: publication stamps of the commands, in order; ``q (N, 7)``: commanded joint
    positions; ``dt``: the command period (the safety filter guarantees its limits for
    ``v[k] = (q[k] - q[k-1]) / dt``, ``a[k] = (v[k] - v[k-1]) / dt``, ``j[k] = (a[k] - a[k-1]) / dt``
    between consecutive outputs, whatever the tick jitter); ``segment_starts_ns``: stamps at which
    the stream restarts from rest at a measured pose (differences never span one); ``seq (N,)``:
    the publisher's sequence numbers (DDS publication sequence) when known: a gap means the
    listener missed commands (under load), and differences never span it either (counted in
    ``missed``). A value counts as a violation when it exceeds its limit by more than ``rel_tol``
    (relative).
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 7 or q.shape[0] != stamps.size:
        raise ValueError(f"q must be (N, 7) with N = len(stamps) = {stamps.size}, got {q.shape}")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be > 0, got {dt}")
    lo, hi = np.asarray(limits.q_min), np.asarray(limits.q_max)
    violations: list[str] = []
    ratios = {"v": 0.0, "a": 0.0, "j": 0.0}
    margin = math.inf
    if stamps.size == 0:
        return StreamCheck(0, 0, 0.0, 0.0, 0.0, margin, ())
    if not np.all(np.isfinite(q)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(q), axis=1))[0])
        violations.append(f"command {bad} is not finite")
    seg = np.searchsorted(np.asarray(sorted(segment_starts_ns), dtype=np.int64), stamps, side="right")
    breaks = np.diff(seg) != 0
    missed = 0
    if seq is not None:
        sq = np.asarray(seq, dtype=np.int64).reshape(-1)
        if sq.shape != stamps.shape:
            raise ValueError(f"seq must have one entry per command ({stamps.size}), got {sq.shape}")
        step = np.diff(sq)
        breaks |= step != 1
        missed = int(np.sum(step[step > 1] - 1))
    bounds = np.flatnonzero(breaks) + 1
    segments = np.split(np.arange(stamps.size), bounds)
    fin = np.where(np.isfinite(q), q, 0.0)
    pos = position_margin(fin, limits)
    margin = float(np.min(pos))
    if margin < -rel_tol:
        k, j = np.unravel_index(np.argmin(pos), fin.shape)
        violations.append(f"command {k}: joint {j + 1} at {fin[k, j]:.4f} rad outside [{lo[j]}, {hi[j]}]")
    lims = limit_bounds(limits)
    for idx in segments:
        chk = check_differences(fin[idx], dt, limits, rel_tol)
        for (kind, order), name in zip(DERIVATIVES, ("v", "a", "j")):
            d, r, lim = chk.diffs[kind], chk.ratios[kind], lims[kind]
            if d.shape[0] == 0:
                continue
            ratios[name] = max(ratios[name], float(r.max()))
            over = np.argwhere(chk.over[kind])
            for k, j in over[: max(0, max_report - len(violations))]:
                violations.append(
                    f"command {idx[k + order]}: joint {j + 1} {name} = {d[k, j]:.4g} (limit {lim[j]:.4g})"
                )
    return StreamCheck(
        int(stamps.size),
        len(segments),
        ratios["v"],
        ratios["a"],
        ratios["j"],
        margin,
        tuple(violations[:max_report]),
        missed,
    )


def check_restarts(
    segment_starts_ns: Sequence[int],
    cmd_t: np.ndarray,
    cmd_q: np.ndarray,
    js_t: np.ndarray,
    js_q: np.ndarray,
    tol_rad: float = 0.05,
    t0: int = 0,
    window_ns: int = 100_000_000,
) -> tuple[list[str], float]:
    """Each restart of the command stream (``segment_starts_ns`` at or after ``t0``) must begin where
    the arm was measured: the first command stamped at or after the restart is compared with the
    joint states stamped in the ``window_ns`` before it, and the closest one counts (the node may
    have started from any of them; the window covers delivery delays under load). Returns (problems,
    largest distance in rad, NaN when no restart could be checked: no command after it, or no joint
    state in the window, e.g. while the sim's stamps are shifted in a clock-jump case)."""
    cmd_t, js_t = np.asarray(cmd_t, dtype=np.int64), np.asarray(js_t, dtype=np.int64)
    cmd_q, js_q = np.asarray(cmd_q, dtype=np.float64).reshape(-1, 7), np.asarray(js_q, dtype=np.float64).reshape(-1, 7)
    problems: list[str] = []
    worst = float("nan")
    for seg in sorted(s for s in segment_starts_ns if s >= t0):
        after = np.flatnonzero(cmd_t >= seg)
        if after.size == 0:
            continue
        i = int(after[0])
        near = (js_t <= cmd_t[i]) & (js_t >= cmd_t[i] - window_ns)
        if not near.any():
            continue
        dist = float(np.min(np.max(np.abs(js_q[near] - cmd_q[i]), axis=1)))
        worst = dist if not np.isfinite(worst) else max(worst, dist)
        if not dist <= tol_rad:
            problems.append(
                f"the command stream restarted {dist:.3f} rad away from the measured joints "
                f"(restart at {seg / NS:.3f} s; allowed {tol_rad} rad)"
            )
    return problems, worst
