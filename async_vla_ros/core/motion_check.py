"""Discrete differences of a joint command stream, checked against joint limits: pure numpy.

One definition, used by the streaming monitor (:class:`async_vla_ros.robot.streamer.MotionMonitor`,
one command at a time) and the batch check of a recorded stream
(:func:`async_vla_ros.eval.stream_check.check_command_stream`). Backward differences, the way the robot
and the :class:`~async_vla_ros.core.safety.SafetyFilter` count them: for sample ``k`` sent
``h[k]`` seconds after sample ``k - 1``

* velocity ``v[k] = (q[k] - q[k-1]) / h[k]``,
* acceleration ``a[k] = (v[k] - v[k-1]) / h[k]``,
* jerk ``j[k] = (a[k] - a[k-1]) / h[k]``.

Without an initial state the first sample has no velocity, the first two no acceleration and the
first three no jerk (nothing is assumed before ``q[0]``). With ``v0, a0`` (the velocity and
acceleration at ``q[0]``; zeros: at rest) every later sample has all three.

A value *exceeds* its limit when ``|x| / limit > 1 + rel_tol`` (relative slack for float
round-off). Position is compared without slack: :func:`position_margin` is the distance to the
nearest joint limit, negative outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from async_vla_ros.core.safety import JointLimits

__all__ = [
    "DERIVATIVES",
    "DifferenceCheck",
    "backward_differences",
    "check_differences",
    "limit_bounds",
    "position_margin",
]

# (name, order): the derivatives checked, in the order they are reported
DERIVATIVES: tuple[tuple[str, int], ...] = (("velocity", 1), ("acceleration", 2), ("jerk", 3))


@lru_cache(maxsize=16)
def _limit_arrays(limits: JointLimits) -> tuple[np.ndarray, ...]:
    """q_min, q_max, v_max, a_max, j_max as read-only (J,) arrays (cached: the monitor calls this
    at the command rate)."""
    arrays = tuple(
        np.asarray(getattr(limits, f), dtype=np.float64) for f in ("q_min", "q_max", "v_max", "a_max", "j_max")
    )
    for arr in arrays:
        arr.setflags(write=False)
    return arrays


def limit_bounds(limits: JointLimits) -> dict[str, np.ndarray]:
    """``{"velocity": v_max, "acceleration": a_max, "jerk": j_max}``, each a read-only ``(J,)``."""
    _, _, v_max, a_max, j_max = _limit_arrays(limits)
    return {"velocity": v_max, "acceleration": a_max, "jerk": j_max}


def position_margin(q: np.ndarray, limits: JointLimits) -> np.ndarray:
    """``min(q - q_min, q_max - q)`` elementwise, same shape as ``q (..., J)``: rad to the nearest
    position limit, negative outside (NaN stays NaN)."""
    q_min, q_max = _limit_arrays(limits)[:2]
    q = np.asarray(q, dtype=np.float64)
    return np.minimum(q - q_min, q_max - q)


def backward_differences(
    q: np.ndarray, h: float | np.ndarray, v0: np.ndarray | None = None, a0: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Velocity, acceleration and jerk of ``q (N, J)`` (see module docstring).

    ``h``: seconds between consecutive samples, a number or ``(N-1,)`` (``h[i]`` between ``q[i]``
    and ``q[i+1]``). ``v0, a0 (J,)``: velocity and acceleration at ``q[0]``, both or neither.
    Returns ``{"velocity": (N-1, J), "acceleration": (N-2, J), "jerk": (N-3, J)}`` without them
    (fewer rows clip at 0) and three ``(N-1, J)`` arrays with them; row ``i`` of the order-``n``
    array belongs to sample ``i + n`` without, ``i + 1`` with an initial state.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2:
        raise ValueError(f"q must be (N, J), got shape {q.shape}")
    if (v0 is None) != (a0 is None):
        raise ValueError("give both v0 and a0 (the state at q[0]) or neither")
    if np.ndim(h) == 0:
        hh = float(h)
        if not hh > 0:
            raise ValueError(f"h must be > 0, got {h!r}")
    else:
        hh = np.asarray(h, dtype=np.float64)
        if hh.shape != (max(q.shape[0] - 1, 0),):
            raise ValueError(f"h must be a number or one interval per difference ({q.shape[0] - 1}), got {hh.shape}")
        if not (hh > 0).all():
            raise ValueError("h must be > 0")
        hh = hh[:, None]
    v = (q[1:] - q[:-1]) / hh
    if v0 is None:
        h2, h3 = (hh, hh) if isinstance(hh, float) else (hh[1:], hh[2:])
        a = (v[1:] - v[:-1]) / h2
        j = (a[1:] - a[:-1]) / h3
    else:
        v_prev = np.concatenate((np.asarray(v0, dtype=np.float64)[None], v))[:-1]
        a = (v - v_prev) / hh
        a_prev = np.concatenate((np.asarray(a0, dtype=np.float64)[None], a))[:-1]
        j = (a - a_prev) / hh
    return {"velocity": v, "acceleration": a, "jerk": j}


@dataclass(frozen=True, eq=False)
class DifferenceCheck:
    """Result of :func:`check_differences`; dicts keyed by the names in :data:`DERIVATIVES`."""

    diffs: dict[str, np.ndarray]  # signed differences, rows as in backward_differences
    ratios: dict[str, np.ndarray]  # |diff| / limit, same shapes
    over: dict[str, np.ndarray]  # ratio > 1 + rel_tol, same shapes (bool)
    margin: np.ndarray  # (N, J) position_margin of q


def check_differences(
    q: np.ndarray,
    h: float | np.ndarray,
    limits: JointLimits,
    rel_tol: float = 1e-6,
    v0: np.ndarray | None = None,
    a0: np.ndarray | None = None,
) -> DifferenceCheck:
    """Backward differences of ``q (N, J)`` (see :func:`backward_differences` for ``h, v0, a0``)
    compared with ``limits``: which values exceed their limit by more than ``rel_tol`` (relative),
    and the position margin of every sample."""
    diffs = backward_differences(q, h, v0, a0)
    bounds = limit_bounds(limits)
    ratios = {kind: np.abs(d) / bounds[kind] for kind, d in diffs.items()}
    over = {kind: r > 1.0 + rel_tol for kind, r in ratios.items()}
    return DifferenceCheck(diffs, ratios, over, position_margin(q, limits))
