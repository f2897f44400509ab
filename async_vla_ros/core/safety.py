"""Joint-space safety filter for the Franka FR3 / Panda command stream.

Applied once per command tick (period ``dt``). The OUTPUT stream never violates, in discrete
differences, any of:

* position: ``lo <= q[k] <= hi`` with ``[lo, hi] = [q_min + margin, q_max - margin]``;
* velocity ``|q[k] - q[k-1]| / dt <= v_max``;
* acceleration ``|v[k] - v[k-1]| / dt <= a_max``;
* jerk ``|a[k] - a[k-1]| / dt <= j_max``,

starting from rest at the position given to :meth:`SafetyFilter.reset`. A feasible input stream
passes through unchanged; a step becomes a limited ramp; a target beyond a position limit is
clamped and the joint stops at the limit without overshoot; NaN/Inf or a wrong-shaped target is
rejected (counted) and the last valid target is kept, so the robot settles on the last safe
command instead of jumping.

How (per joint, vectorised over the 7 joints). State ``(q, v, a)`` holds the discrete
differences of the output, and the update ``a' = a + j dt, v' = v + a' dt, q' = q + v' dt`` makes
``j, a', v'`` exactly the jerk, acceleration and velocity of the output. Each tick:

1. the candidate jerk is the one that reproduces the target exactly (pass-through) when that is
   within the one-step bounds; else a 3-step dead-beat stop on the target when that fits all
   limits; else a cascaded tracking law (sqrt/linear position -> velocity -> acceleration) with
   the target's velocity as feed-forward; it is clipped to the one-step bounds on jerk,
   acceleration, velocity and position;
2. brake-ahead: the candidate is accepted only if, from the state it leads to, a braking
   manoeuvre exists (a jerk-limited trapezoidal acceleration profile that ends exactly at
   ``v = 0, a = 0``; constructed in closed form and simulated in discrete time) that stays within
   velocity and position limits. Otherwise the candidate is pulled towards the stored brake
   plan's next jerk (bisection); if nothing passes, the stored plan is followed;
3. invariant: the current state always has a verified brake plan, hence the filter never paints
   itself into a corner near a position limit.

Limits come from Franka's published tables (see the constants below). On FR3 the robot also
applies position-dependent velocity limits near the joint ends; use ``scale_velocity`` (and the
``position_margin``) to stay conservative there.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "JointLimits",
    "FR3_LIMITS",
    "PANDA_LIMITS",
    "ROBOT_LIMITS",
    "SafetyConfig",
    "SafetyFlags",
    "SafetyFilter",
    "brake_profile",
]

_TOL = 1e-9  # relative slack for float round-off in limit checks


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits (7 entries each), SI units (rad, rad/s, rad/s^2, rad/s^3)."""

    name: str
    q_min: tuple[float, ...]
    q_max: tuple[float, ...]
    v_max: tuple[float, ...]
    a_max: tuple[float, ...]
    j_max: tuple[float, ...]

    def __post_init__(self) -> None:
        for fname in ("q_min", "q_max", "v_max", "a_max", "j_max"):
            arr = np.asarray(getattr(self, fname), dtype=np.float64)
            if arr.shape != (7,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"JointLimits.{fname} must be 7 finite numbers, got {getattr(self, fname)!r}")
            object.__setattr__(self, fname, tuple(float(x) for x in arr))
        if any(lo >= hi for lo, hi in zip(self.q_min, self.q_max)):
            raise ValueError("JointLimits: q_min must be < q_max for every joint")
        for fname in ("v_max", "a_max", "j_max"):
            if any(x <= 0 for x in getattr(self, fname)):
                raise ValueError(f"JointLimits.{fname} must be > 0")


# Franka Research 3. Positions and velocities: frankaemika/franka_description
# robots/fr3/joint_limits.yaml (= "Limits for Franka Research 3" on
# https://frankaemika.github.io/docs/control_parameters.html); acceleration 10 rad/s^2 and jerk
# 5000 rad/s^3 for every joint: the same page and libfranka's FR3 rate_limiting.h
# (kMaxJointAcceleration / kMaxJointJerk, without its 1e-3 epsilon).
FR3_LIMITS = JointLimits(
    name="fr3",
    q_min=(-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
    q_max=(2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
    v_max=(2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26),
    a_max=(10.0,) * 7,
    j_max=(5000.0,) * 7,
)

# Franka Emika Panda (FER): "Limits for Panda" on
# https://frankaemika.github.io/docs/control_parameters.html; velocity/acceleration/jerk also in
# libfranka 0.9 include/franka/rate_limiting.h (kMaxJointVelocity/Acceleration/Jerk, without
# the 1e-3 epsilon and packet-loss margin).
PANDA_LIMITS = JointLimits(
    name="panda",
    q_min=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    q_max=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    v_max=(2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100),
    a_max=(15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0),
    j_max=(7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0),
)

ROBOT_LIMITS: dict[str, JointLimits] = {"fr3": FR3_LIMITS, "panda": PANDA_LIMITS}


@dataclass(frozen=True)
class SafetyConfig:
    """Safety filter settings."""

    robot: str = "fr3"  # preset in ROBOT_LIMITS ("fr3" | "panda"), ignored when limits is given
    dt: float = 0.001  # command period in seconds (the rate the filter is called at)
    position_margin: float = 0.01  # rad kept clear of q_min / q_max (Franka requires strict <)
    scale_velocity: float = 1.0  # fraction of the datasheet velocity limit used, in (0, 1]
    scale_acceleration: float = 1.0  # fraction of the acceleration limit used, in (0, 1]
    scale_jerk: float = 1.0  # fraction of the jerk limit used, in (0, 1]
    gripper_min: float = 0.0  # m, Franka Hand fully closed
    gripper_max: float = 0.08  # m, Franka Hand fully open
    limits: JointLimits | None = field(default=None)  # custom limits instead of the preset

    def __post_init__(self) -> None:
        if self.limits is None and self.robot not in ROBOT_LIMITS:
            close = difflib.get_close_matches(str(self.robot), list(ROBOT_LIMITS), n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown robot {self.robot!r}{hint} (known: {', '.join(ROBOT_LIMITS)})")
        if not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and 0 < self.dt <= 1.0):
            raise ValueError(f"SafetyConfig.dt must be in (0, 1] s, got {self.dt!r}")
        for name in ("scale_velocity", "scale_acceleration", "scale_jerk"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 1.0):
                raise ValueError(f"SafetyConfig.{name} must be in (0, 1], got {v!r}")
        lim = self.joint_limits
        half = min(hi - lo for lo, hi in zip(lim.q_min, lim.q_max)) / 2
        if not (math.isfinite(self.position_margin) and 0 <= self.position_margin < half):
            raise ValueError(f"SafetyConfig.position_margin must be in [0, {half:.3f}), got {self.position_margin!r}")
        if not (
            math.isfinite(self.gripper_min) and math.isfinite(self.gripper_max) and self.gripper_min < self.gripper_max
        ):
            raise ValueError("SafetyConfig.gripper_min must be < gripper_max (finite)")

    @property
    def joint_limits(self) -> JointLimits:
        """The limits in use (preset or custom), unscaled."""
        return self.limits if self.limits is not None else ROBOT_LIMITS[self.robot]


@dataclass(frozen=True)
class SafetyFlags:
    """What the filter did on one tick."""

    input_rejected: bool = False  # joint target NaN/Inf/wrong shape: last valid target reused
    position_clamped: bool = False  # target outside [q_min + margin, q_max - margin]
    limited: bool = False  # output differs from the (clamped) target: rate limiting active
    braking: bool = False  # at least one joint followed its stored brake plan
    gripper_rejected: bool = False  # gripper command NaN/Inf/not a scalar: last valid kept
    gripper_clamped: bool = False  # gripper command outside [gripper_min, gripper_max]

    @property
    def any(self) -> bool:
        """True when the filter intervened in any way."""
        return any(
            (
                self.input_rejected,
                self.position_clamped,
                self.limited,
                self.braking,
                self.gripper_rejected,
                self.gripper_clamped,
            )
        )


def brake_profile(v0: np.ndarray, a0: np.ndarray, a_max: np.ndarray, j_max: np.ndarray, dt: float):
    """Discrete jerk-limited stop from ``(v0, a0)`` (arrays of equal shape ``(M,)``).

    Acceleration goes linearly from ``a0`` to a floor ``-L`` in ``n_down`` steps, stays there
    ``n_hold`` steps, returns linearly to 0 in ``n_up`` steps; ``L`` is solved so that the
    velocity ends exactly at 0. ``|L| <= a_max`` and every jerk ``<= j_max`` by construction.

    Returns ``acc (M, N)``: accelerations after each step (0 after each row's end) and
    ``n (M,)``: steps until rest.
    """
    jd = j_max * dt
    n_down = np.maximum(1, np.ceil((np.abs(a0) + a_max) / jd - 1e-9)).astype(np.int64)
    n_up = np.maximum(1, np.ceil(a_max / jd - 1e-9)).astype(np.int64)
    c0 = a0 * (n_down - 1) / 2.0 + v0 / dt
    base = (n_down + n_up) / 2.0
    n_hold = np.maximum(0, np.ceil(np.abs(c0) / a_max - base - 1e-12)).astype(np.int64)
    level = c0 / (base + n_hold)  # L; the floor is -L
    level = np.clip(level, -a_max, a_max)
    n = n_down + n_hold + n_up
    nmax = int(n.max()) if n.size else 0
    k = np.arange(1, nmax + 1)[None, :]  # (1, N)
    nd, nh, nu = n_down[:, None], n_hold[:, None], n_up[:, None]
    a0c, lc = a0[:, None], level[:, None]
    down = a0c + (-lc - a0c) * (k / nd)
    hold = np.broadcast_to(-lc, down.shape)
    up = -lc + lc * ((k - nd - nh) / nu)
    acc = np.where(k <= nd, down, np.where(k <= nd + nh, hold, np.where(k <= nd + nh + nu, up, 0.0)))
    # exact zeros at and after the end of each profile
    acc = np.where(k >= nd + nh + nu, 0.0, acc)
    return acc, n


class SafetyFilter:
    """Stateful per-tick filter: ``filter(q_target (7,), gripper) -> (q_cmd (7,), gripper_cmd,
    SafetyFlags)``. Call :meth:`reset` with the measured joint positions first."""

    def __init__(self, config: SafetyConfig | None = None) -> None:
        self.config = config or SafetyConfig()
        c = self.config
        lim = c.joint_limits
        self.dt = float(c.dt)
        self.q_min = np.asarray(lim.q_min) + c.position_margin
        self.q_max = np.asarray(lim.q_max) - c.position_margin
        self.v_max = np.asarray(lim.v_max) * c.scale_velocity
        self.a_max = np.asarray(lim.a_max) * c.scale_acceleration
        self.j_max = np.asarray(lim.j_max) * c.scale_jerk
        # tracking-law constants (per joint)
        self._t_v = np.maximum(3.0 * self.dt, 3.0 * self.a_max / self.j_max)  # velocity-loop time constant
        self._kp = 1.0 / (3.0 * self._t_v)  # linear position gain near the target
        self._a_brake = 0.5 * self.a_max  # deceleration assumed by the sqrt profile
        # how closely a pass-through step must match the target's own velocity / acceleration
        # (small against what the next ticks can absorb: 5 % of one step's velocity / accel change)
        self._sync_tol_v = 0.05 * np.minimum(self.a_max * self.dt, self.j_max * self.dt**2)
        self._sync_tol_a = 0.05 * np.minimum(self.a_max, self.j_max * self.dt)
        self._dt2, self._dt3 = self.dt**2, self.dt**3
        self._jdt_tol = self.j_max * self.dt * (1 + _TOL)
        self._amax_tol = self.a_max * (1 + _TOL)
        self._vmax_tol = self.v_max * (1 + _TOL)
        self._ready = False
        self.counts = {
            "ticks": 0,
            "input_rejected": 0,
            "position_clamped": 0,
            "limited": 0,
            "braking": 0,
            "gripper_rejected": 0,
            "gripper_clamped": 0,
            "extrapolated": 0,
            "rebased": 0,
            "history_clipped": 0,
        }

    # ------------------------------------------------------------------ state
    def reset(self, q_init, gripper_init: float | None = None) -> None:
        """Start from rest at the measured joint positions ``q_init (7,)``.

        ``q_init`` must lie within the robot's limits; inside the margin band is allowed (the
        lower/upper bound used then includes ``q_init``, so the joint can move back in).
        """
        q = np.asarray(q_init, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_init must be 7 finite joint positions, got {q_init!r}")
        lim = self.config.joint_limits
        if np.any(q < np.asarray(lim.q_min)) or np.any(q > np.asarray(lim.q_max)):
            raise ValueError(f"q_init {np.round(q, 4).tolist()} is outside the {lim.name} joint limits")
        self._lo = np.minimum(self.q_min, q)
        self._hi = np.maximum(self.q_max, q)
        self.q = q.copy()
        self.v = np.zeros(7)
        self.a = np.zeros(7)
        self._target = q.copy()
        self._prev_target = q.copy()
        self._prev_vt = np.zeros(7)
        self._commit = np.zeros((7, 2))  # remaining dead-beat jerks
        self._commit_n = np.zeros(7, dtype=np.int64)
        self._commit_target = q.copy()
        # stored brake plan per joint, kept as the state it starts from and the number of its
        # steps already executed (regenerated on demand: brake_profile is deterministic)
        self._origin_q, self._origin_v, self._origin_a = q.copy(), np.zeros(7), np.zeros(7)
        self._plan_pos = np.zeros(7, dtype=np.int64)
        g = self.config.gripper_max if gripper_init is None else float(gripper_init)
        if not math.isfinite(g):
            raise ValueError(f"gripper_init must be finite, got {gripper_init!r}")
        self.gripper = float(np.clip(g, self.config.gripper_min, self.config.gripper_max))
        self._ready = True

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the commanded ``(q, v, a)`` (discrete differences of the output)."""
        self._require_ready()
        return self.q.copy(), self.v.copy(), self.a.copy()

    def _require_ready(self) -> None:
        if not self._ready:
            raise RuntimeError("SafetyFilter.reset(q_init) must be called before use")

    # names of the attributes that change from tick to tick (everything else is configuration)
    _STATE = (
        "q",
        "v",
        "a",
        "_target",
        "_prev_target",
        "_prev_vt",
        "_commit",
        "_commit_n",
        "_commit_target",
        "_origin_q",
        "_origin_v",
        "_origin_a",
        "_plan_pos",
        "_lo",
        "_hi",
        "gripper",
        "counts",
    )

    def save(self) -> tuple:
        """A copy of the filter's state, for :meth:`restore` (a command computed ahead and never sent)."""
        self._require_ready()
        return tuple(
            dict(v) if isinstance(v, dict) else (v.copy() if isinstance(v, np.ndarray) else v)
            for v in (getattr(self, k) for k in self._STATE)
        )

    def restore(self, saved: tuple) -> None:
        """Go back to a state from :meth:`save`."""
        if len(saved) != len(self._STATE):
            raise ValueError("not a SafetyFilter.save() state")
        for k, v in zip(self._STATE, saved):
            setattr(self, k, dict(v) if isinstance(v, dict) else (v.copy() if isinstance(v, np.ndarray) else v))

    def extrapolate(self, targets, robot=None, fill_in=None) -> np.ndarray:
        """The robot did not get the next ``len(targets)`` commands and filled them in itself; go
        on from there, since it differences the next command it receives against that. How the
        robot fills in is its own (``fill_in(q, v, a, dt, cycles) -> (q, v)``, e.g. the Franka
        controller's :func:`async_vla_ros.robot.fci.fci_extrapolate`). ``targets (m, 7)`` are the plan's targets of the missed cycles (they
        keep the target stream's own velocity and acceleration right for the next tick). Dead-beat
        stops and stored brake plans restart from the new state. Returns the extrapolated position.

        ``robot = (q, v, a)``: the robot's own differencing history after the last of those cycles
        (its last applied command and that command's backward differences), taken instead of the
        filter's model of the fill-in. A history beyond the robot's own limits (one it aborts on
        anyway) is clipped to them, so the filter's brake plans stay bounded."""
        self._require_ready()
        tg = np.asarray(targets, dtype=np.float64).reshape(-1, 7)
        if robot is None:
            if fill_in is None:
                raise ValueError("extrapolate needs the robot's history (robot=) or its fill-in model (fill_in=)")
            self.q, self.v = fill_in(self.q, self.v, self.a, self.dt, len(tg))
        else:
            q, v, a = (np.array(x, dtype=np.float64, copy=True).reshape(-1) for x in robot)
            if not all(x.shape == (7,) and np.all(np.isfinite(x)) for x in (q, v, a)):
                raise ValueError("robot history must be three finite (7,) arrays (q, v, a)")
            lim = self.config.joint_limits
            v_lim, a_lim = np.asarray(lim.v_max, dtype=np.float64), np.asarray(lim.a_max, dtype=np.float64)
            if np.any(np.abs(v) > v_lim) or np.any(np.abs(a) > a_lim):
                self.counts["history_clipped"] += 1
            self.q, self.v, self.a = q, np.clip(v, -v_lim, v_lim), np.clip(a, -a_lim, a_lim)
            self._lo, self._hi = np.minimum(self._lo, self.q), np.maximum(self._hi, self.q)
            self.counts["rebased"] += 1
        for t in tg:
            if np.all(np.isfinite(t)):
                t = np.minimum(np.maximum(t, self._lo), self._hi)
                self._prev_vt = (t - self._prev_target) / self.dt
                self._prev_target = t.copy()
                self._target = t.copy()
        self._commit_n = np.zeros(7, dtype=np.int64)
        self._origin_q, self._origin_v, self._origin_a = self.q.copy(), self.v.copy(), self.a.copy()
        self._plan_pos = np.zeros(7, dtype=np.int64)
        self.counts["extrapolated"] += len(tg)
        return self.q.copy()

    # ------------------------------------------------------------------ brake check
    def _brake_ok(self, q, v, a, idx) -> np.ndarray:
        """Does a verified brake plan exist from states ``(q, v, a)`` (shape (M,)) of joints
        ``idx (M,)``? Simulates the discrete plan of :func:`brake_profile`."""
        dt = self.dt
        acc, _ = brake_profile(v, a, self.a_max[idx], self.j_max[idx], dt)
        vel = v[:, None] + dt * np.cumsum(acc, axis=1)
        pos = q[:, None] + dt * np.cumsum(vel, axis=1)
        lo, hi = self._lo[idx], self._hi[idx]
        vtol = self.v_max[idx] * (1 + _TOL) + 1e-12
        ok = np.all(np.abs(vel) <= vtol[:, None], axis=1)
        ok &= np.all(pos >= (lo - 1e-9)[:, None], axis=1) & np.all(pos <= (hi + 1e-9)[:, None], axis=1)
        ok &= (q >= lo - 1e-9) & (q <= hi + 1e-9)
        return ok

    def _fast_ok(self, q, v, a, j) -> np.ndarray:
        """Cheap sufficient test for all 7 joints: after jerk ``j``, a brake plan of n steps keeps
        ``|v| <= |v'| + |a'| n_down dt`` and moves at most ``n dt`` times that, so if both fit
        the limits no simulation is needed (False means "simulate", not "infeasible")."""
        dt = self.dt
        a_n = a + j * dt
        v_n = v + a_n * dt
        q_n = q + v_n * dt
        jd = self.j_max * dt
        n_down = np.maximum(1, np.ceil((np.abs(a_n) + self.a_max) / jd - 1e-9))
        n_up = np.maximum(1, np.ceil(self.a_max / jd - 1e-9))
        c0 = a_n * (n_down - 1) / 2.0 + v_n / dt
        n_hold = np.maximum(0, np.ceil(np.abs(c0) / self.a_max - (n_down + n_up) / 2.0 - 1e-12))
        n = n_down + n_hold + n_up
        v_bound = np.abs(v_n) + np.abs(a_n) * n_down * dt
        reach = n * dt * v_bound
        return (
            (v_bound <= self.v_max)
            & (q_n - reach >= self._lo)
            & (q_n + reach <= self._hi)
            & (np.abs(a_n) <= self.a_max * (1 + _TOL))
        )

    def _plan_jerk(self, idx: np.ndarray) -> np.ndarray:
        """Next jerk of the stored brake plans of joints ``idx`` (0 once a plan has ended)."""
        dt = self.dt
        ao, vo = self._origin_a[idx], self._origin_v[idx]
        acc, n = brake_profile(vo, ao, self.a_max[idx], self.j_max[idx], dt)
        pos = self._plan_pos[idx]
        out = np.zeros(idx.size)
        for m in range(idx.size):
            p = int(pos[m])
            if p < n[m]:
                prev = ao[m] if p == 0 else acc[m, p - 1]
                out[m] = (acc[m, p] - prev) / dt
        return out

    # ------------------------------------------------------------------ main
    def filter(self, q_target, gripper: float | None = None):
        """One command tick: returns ``(q_cmd (7,), gripper_cmd, SafetyFlags)``."""
        self._require_ready()
        dt = self.dt
        self.counts["ticks"] += 1
        # ---------------------------------------------------------- validate inputs
        input_rejected = False
        try:
            tgt = np.asarray(q_target, dtype=np.float64)
            valid = tgt.shape == (7,) and bool(np.all(np.isfinite(tgt)))
        except (TypeError, ValueError):
            valid = False
        if valid:
            raw = tgt
        else:
            input_rejected = True
            raw = self._target
        clamped = np.minimum(np.maximum(raw, self._lo), self._hi)
        position_clamped = bool(np.any(clamped != raw))
        target = clamped
        # the target stream's own discrete velocity / acceleration
        v_t_raw = (target - self._prev_target) / dt if valid else np.zeros(7)
        a_t_raw = (v_t_raw - self._prev_vt) / dt
        v_t = np.minimum(np.maximum(v_t_raw, -self.v_max), self.v_max)
        target_before = self._prev_target  # the stream at the time of the current output q
        self._prev_target = target.copy()
        self._prev_vt = v_t_raw
        self._target = target.copy()

        q, v, a = self.q, self.v, self.a
        amax, vmax, jmax = self.a_max, self.v_max, self.j_max
        # ---------------------------------------------------------- one-step jerk bounds
        dt2, dt3 = self._dt2, self._dt3
        free_q = q + v * dt + a * dt2  # where the joint lands with zero jerk
        v_free = v + a * dt
        j_lo = np.maximum(
            np.maximum(-jmax, (-amax - a) / dt), np.maximum((-vmax - v_free) / dt2, (self._lo - free_q) / dt3)
        )
        j_hi = np.minimum(
            np.minimum(jmax, (amax - a) / dt), np.minimum((vmax - v_free) / dt2, (self._hi - free_q) / dt3)
        )
        # ---------------------------------------------------------- candidate jerk
        # pass-through: only when landing on the target also matches its velocity and
        # acceleration (in sync with a feasible stream), else a stationary target would be hit
        # at speed and overshot
        j_pass = (target - free_q) / dt3
        v_p = (target - q) / dt
        a_p = (v_p - v) / dt
        pass_ok = (
            (j_pass >= j_lo)
            & (j_pass <= j_hi)
            & (np.abs(v_p - v_t_raw) <= self._sync_tol_v)
            & (np.abs(a_p - a_t_raw) <= self._sync_tol_a)
        )
        # a dead-beat started on an earlier tick continues while its target is unchanged
        committed = (self._commit_n > 0) & (target == self._commit_target)
        start_db = np.zeros(7, dtype=bool)
        u2 = u3 = np.zeros(7)
        if np.all(pass_ok & ~committed):  # common case: in sync with a feasible stream
            cand = j_pass
        else:
            j_commit = np.where(self._commit_n == 2, self._commit[:, 0], self._commit[:, 1])
            # 3-step dead-beat stop on the target (u = accel increments)
            u1 = (target - q) / dt2 - v / dt - a
            u2 = -v / dt - 2 * a - 2 * u1
            u3 = -a - u1 - u2
            a1, a2 = a + u1, a + u1 + u2
            v1 = v + a1 * dt
            v2 = v1 + a2 * dt
            db_ok = (
                (np.abs(v_t_raw) <= self._sync_tol_v)  # stationary target only
                & (np.maximum(np.maximum(np.abs(u1), np.abs(u2)), np.abs(u3)) <= self._jdt_tol)
                & (np.maximum(np.abs(a1), np.abs(a2)) <= self._amax_tol)
                & (np.maximum(np.abs(v1), np.abs(v2)) <= self._vmax_tol)
            )
            j_db = u1 / dt
            # cascaded tracking law; the error compares output and stream at the same time
            # index (target_before vs q), the target's own velocity / acceleration are fed forward
            e = target_before - q
            ae = np.abs(e)
            v_fb = np.sign(e) * np.minimum(np.sqrt(2 * self._a_brake * ae), self._kp * ae)
            v_ref = np.minimum(np.maximum(v_t + v_fb, -vmax), vmax)
            a_ff = np.minimum(np.maximum(a_t_raw, -amax), amax) if valid else 0.0
            a_ref = np.minimum(np.maximum(a_ff + (v_ref - v) / self._t_v, -amax), amax)
            j_trk = (a_ref - a) / dt
            cand = np.where(committed, j_commit, np.where(pass_ok, j_pass, np.where(db_ok, j_db, j_trk)))
            start_db = ~committed & ~pass_ok & db_ok
        cand = np.minimum(np.maximum(cand, j_lo), j_hi)
        # ---------------------------------------------------------- brake-ahead check
        cand_n = (q, v, a, cand)
        ok = self._fast_ok(*cand_n)
        chosen = cand.copy()
        accepted = ok.copy()
        remaining = np.flatnonzero(~ok)
        if remaining.size:
            j_plan = self._plan_jerk(remaining)
            j_plan_r = j_plan
            for alpha in (1.0, 0.5, 0.25, 0.125, 0.0625, 1.0 / 64):
                if remaining.size == 0:
                    break
                jp = j_plan_r
                jj = jp + alpha * (cand[remaining] - jp)
                jj = np.minimum(np.maximum(jj, j_lo[remaining]), j_hi[remaining])
                a_n = a[remaining] + jj * dt
                v_n = v[remaining] + a_n * dt
                q_n = q[remaining] + v_n * dt
                good = self._brake_ok(q_n, v_n, a_n, remaining)
                chosen[remaining[good]] = jj[good]
                accepted[remaining[good]] = True
                j_plan_r = jp[~good]
                remaining = remaining[~good]
            j_plan_final = j_plan_r if remaining.size else np.zeros(0)
        braking = bool(remaining.size > 0)
        if braking:  # follow the stored (verified) plan
            chosen[remaining] = j_plan_final
        # ---------------------------------------------------------- integrate
        self.a = a + chosen * dt
        self.v = v + self.a * dt
        self.q = q + self.v * dt
        # dead-beat bookkeeping: a started one commits its two remaining jerks, if it ran as planned
        if start_db.any() or self._commit_n.any():
            ran = np.abs(chosen - cand) <= 1e-12 * np.maximum(1.0, np.abs(cand))
            new_n = np.where(committed & ran, self._commit_n - 1, 0)
            new_n = np.where(start_db & ran, 2, new_n)
            self._commit = np.where(start_db[:, None], np.stack([u2 / dt, u3 / dt], axis=1), self._commit)
            self._commit_n = new_n
            self._commit_target = target.copy()
        # stored brake plans: restart from the new state where a candidate was accepted,
        # advance one step where the plan was followed
        self._origin_q = np.where(accepted, self.q, self._origin_q)
        self._origin_v = np.where(accepted, self.v, self._origin_v)
        self._origin_a = np.where(accepted, self.a, self._origin_a)
        self._plan_pos = np.where(accepted, 0, self._plan_pos + 1)
        limited = bool(np.any(np.abs(self.q - target) > 1e-12))
        # ---------------------------------------------------------- gripper
        g_rej, g_clamp = False, False
        if gripper is not None:
            try:
                g = float(gripper)
            except (TypeError, ValueError):
                g = float("nan")
            if not math.isfinite(g):
                g_rej = True
            else:
                gc = min(max(g, self.config.gripper_min), self.config.gripper_max)
                g_clamp = gc != g
                self.gripper = gc
        flags = SafetyFlags(input_rejected, position_clamped, limited, braking, g_rej, g_clamp)
        for key, val in (
            ("input_rejected", input_rejected),
            ("position_clamped", position_clamped),
            ("limited", limited),
            ("braking", braking),
            ("gripper_rejected", g_rej),
            ("gripper_clamped", g_clamp),
        ):
            if val:
                self.counts[key] += 1
        return self.q.copy(), self.gripper, flags
