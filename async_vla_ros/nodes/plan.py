"""The correction node's view of the scheduler's plan: pure numpy, no rclpy.

The scheduler publishes ``ActionPlan`` messages: action ``i`` is the target for control step
``step + i``, which starts at ``stamp + i * dt``. Plans share one step grid
(``grid_t0 = stamp - step * dt``). :class:`PlanBuffer` keeps the newest plan per step (a newer
plan overwrites the steps it covers, earlier steps stay so the interpolation has a start point)
and samples it at any time:

* ``hold``: the action of the step containing ``now`` (exactly what the lockstep simulator does:
  one action held for the whole control step);
* ``linear``: a ramp from the previous step's action (at the start of the step) to this step's
  action (at its end). A policy action is the position to reach by the end of its step, so the
  ramp reaches it on time and the high-rate command stream has no steps at control-step
  boundaries.

``sample`` returns None when nothing is planned for the current step: the plan ran dry and the
caller holds position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from async_vla_ros.core.interpolation import interpolate

__all__ = ["PlanSample", "PlanBuffer", "INTERPOLATIONS"]

INTERPOLATIONS = ("linear", "hold")  # the modes of core.interpolation that need no look-ahead


@dataclass(frozen=True)
class PlanSample:
    """The plan at one instant."""

    action: np.ndarray  # (A,) interpolated target
    step: int  # control step containing the instant
    fraction: float  # position inside the step, in [0, 1)
    chunk_id: int  # source chunk of the step (0: ensemble / unknown)
    k: int  # index of the step's action inside its chunk (A2C2 feature)


class PlanBuffer:
    """Newest planned action per control step, sampled at arbitrary times (see module docstring)."""

    def __init__(self, action_dim: int, interpolation: str = "linear", keep_past: int = 4) -> None:
        if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
            raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if keep_past < 1:
            raise ValueError("keep_past must be >= 1")
        self.action_dim = action_dim
        self.interpolation = interpolation
        self.keep_past = keep_past
        self.clear()

    def clear(self) -> None:
        """Forget every plan (new episode, or the scheduler restarted)."""
        self._steps: dict[int, tuple[np.ndarray, int, int]] = {}
        self._grid_t0: int | None = None
        self._dt_ns: int | None = None
        self.plan_id = 0
        self.horizon = 0

    @property
    def dt_ns(self) -> int | None:
        return self._dt_ns

    def set_plan(
        self,
        plan_id: int,
        stamp_ns: int,
        step: int,
        dt_ns: int,
        actions: np.ndarray,
        chunk_ids: np.ndarray,
        ks: np.ndarray,
        horizon: int,
    ) -> bool:
        """Install a plan: ``actions (n, A)`` for steps ``step .. step+n-1`` starting at ``stamp_ns``.

        Returns False (nothing changed) for a plan id not newer than the current one. A plan on a
        different step grid or period (the scheduler restarted) replaces everything.
        """
        acts = np.asarray(actions, dtype=np.float64)
        if acts.ndim != 2 or acts.shape[1] != self.action_dim:
            raise ValueError(f"actions must be (n, {self.action_dim}), got {acts.shape}")
        n = acts.shape[0]
        cids = np.asarray(chunk_ids, dtype=np.int64).reshape(-1)
        kk = np.asarray(ks, dtype=np.int64).reshape(-1)
        if cids.shape != (n,) or kk.shape != (n,):
            raise ValueError("chunk_ids and ks must have one entry per planned step")
        if not np.all(np.isfinite(acts)):
            raise ValueError("plan actions contain NaN or Inf")
        if dt_ns <= 0:
            raise ValueError(f"dt must be > 0, got {dt_ns} ns")
        if plan_id <= self.plan_id:
            return False
        grid = int(stamp_ns) - int(step) * int(dt_ns)
        if self._grid_t0 is not None and (grid != self._grid_t0 or dt_ns != self._dt_ns):
            self._steps.clear()
        self._grid_t0, self._dt_ns = grid, int(dt_ns)
        self.plan_id = int(plan_id)
        self.horizon = int(horizon)
        for s in [s for s in self._steps if s >= step]:
            del self._steps[s]
        for i in range(n):
            self._steps[step + i] = (acts[i].copy(), int(cids[i]), int(kk[i]))
        for s in [s for s in self._steps if s < step - self.keep_past]:
            del self._steps[s]
        return True

    def step_at(self, now_ns: int) -> tuple[int, float] | None:
        """(step, fraction in [0, 1)) of ``now_ns`` on the plan grid, or None without a plan."""
        if self._grid_t0 is None or self._dt_ns is None:
            return None
        rel = int(now_ns) - self._grid_t0
        step = rel // self._dt_ns
        return int(step), (rel - step * self._dt_ns) / self._dt_ns

    def sample(self, now_ns: int) -> PlanSample | None:
        """The plan at ``now_ns``, or None when nothing is planned for that step (ran dry)."""
        pos = self.step_at(now_ns)
        if pos is None:
            return None
        step, frac = pos
        entry = self._steps.get(step)
        if entry is None:
            return None
        action, cid, k = entry
        prev = self._steps.get(step - 1) if self.interpolation == "linear" else None
        if prev is None:  # hold, or the first planned step (nothing to ramp from): its own action
            target = interpolate(action, action, action, action, frac, "hold")
        else:  # frac in [0, 1) is the phase: the ramp reaches this step's action at the step's end
            target = interpolate(prev[0], prev[0], action, action, frac, "linear")
        return PlanSample(target, step, frac, cid, k)

    def planned_until(self) -> int | None:
        """Last planned step, or None."""
        return max(self._steps) if self._steps else None
