"""Interpolating a control-rate plan between its knots: pure numpy.

A plan holds one knot per control step: knot ``a[t]`` is the position to reach by the **end** of
step ``t`` (a policy action is where the arm should be after its step). Inside step ``t`` the
phase ``u`` runs from ``0`` (start of the step: ``a[t-1]``) to ``1`` (end: ``a[t]``). Used by the
command-rate streamer (:mod:`async_vla_ros.robot.streamer`, phase ``u = (i + 1) / R`` of tick
``i``) and the correction node's plan buffer (:mod:`async_vla_ros.nodes.plan`, phase = the
fraction of the step elapsed, in ``[0, 1)``).

Modes (:data:`INTERPOLATIONS`):

* ``linear``: ``a[t-1] + u (a[t] - a[t-1])``;
* ``cubic``: cubic Hermite with Catmull-Rom tangents ``(a[t] - a[t-2]) / 2`` and
  ``(a[t+1] - a[t-1]) / 2`` (per step); reproduces any quadratic exactly;
* ``hold``: ``a[t]`` for the whole step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INTERPOLATIONS", "interpolate"]

INTERPOLATIONS = ("linear", "cubic", "hold")


def interpolate(
    a_m2: np.ndarray, a_m1: np.ndarray, a_0: np.ndarray, a_p1: np.ndarray, u: float, mode: str = "linear"
) -> np.ndarray:
    """Target at phase ``u`` in ``[0, 1]`` of step ``t``: between ``a_m1 = a[t-1]`` (``u = 0``)
    and ``a_0 = a[t]`` (``u = 1``). ``a_m2 = a[t-2]`` and ``a_p1 = a[t+1]`` shape the cubic's
    tangents only. All arrays ``(J,)``; returns a new ``(J,)`` array."""
    if not (0.0 <= u <= 1.0):
        raise ValueError(f"phase u must be in [0, 1], got {u!r}")
    if mode == "linear":
        return a_m1 + u * (a_0 - a_m1)
    if mode == "hold":
        return np.array(a_0, dtype=np.float64, copy=True)
    if mode == "cubic":
        m1 = 0.5 * (a_0 - a_m2)
        m2 = 0.5 * (a_p1 - a_m1)
        u2, u3 = u * u, u * u * u
        h00 = 2 * u3 - 3 * u2 + 1
        h10 = u3 - 2 * u2 + u
        h01 = -2 * u3 + 3 * u2
        h11 = u3 - u2
        return h00 * a_m1 + h10 * m1 + h01 * a_0 + h11 * m2
    raise ValueError(f"unknown interpolation {mode!r} (known: {', '.join(INTERPOLATIONS)})")
