"""Stream a control-rate plan at the command rate: interpolation + safety filter, pure numpy.

The plan holds one joint-position *knot* per control step (period ``control_dt``, e.g. 50 ms):
knot ``a[t]`` is the position to reach by the **end** of step ``t`` (a policy action is where the
arm should be after its step; the same convention as :mod:`async_vla_ros.nodes.plan`). The
streamer is ticked at the command rate (``command_dt``, 1 ms for libfranka); there are
``R = control_dt / command_dt`` ticks per step, and tick ``i`` (0-based) of step ``t`` has phase
``u = (i + 1) / R`` in ``(0, 1]``, so the last tick of a step commands its knot exactly.

Interpolation between ``a[t-1]`` (``u = 0``) and ``a[t]`` (``u = 1``), see
:func:`async_vla_ros.core.interpolation.interpolate` (re-exported here):

* ``linear`` (default): ``a[t-1] + u (a[t] - a[t-1])``. Position is continuous; velocity steps at
  every knot, which the safety filter turns into a jerk-limited change.
* ``cubic``: cubic Hermite with Catmull-Rom tangents ``(a[t] - a[t-2]) / 2`` and
  ``(a[t+1] - a[t-1]) / 2`` (per step). Continuous velocity while the plan does not change; uses
  the planned knot ``a[t+1]`` (look-ahead, when known) and reproduces any quadratic exactly.
* ``hold``: ``a[t]`` for the whole step (what the lockstep simulator does; a step per knot).

A step without a knot (the plan ran dry) holds the last knot before it. After interpolation the
core :class:`~async_vla_ros.core.safety.SafetyFilter` (``dt = command_dt``) runs on **every**
tick, so the stream sent to the robot keeps the FR3/Panda position, velocity, acceleration and
jerk limits whatever the plan does. ``StreamerConfig(safety=False)`` bypasses the filter: that
exists only to show that the robot's own checks fire without it (bench and tests); never drive
hardware with it.

Time is injected: the streamer counts ticks, it never reads a clock. :class:`MotionMonitor`
measures a command stream's backward differences the way the robot does, independently of the
filter (the differencing and limit comparison are :mod:`async_vla_ros.core.motion_check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from async_vla_ros.core.interpolation import INTERPOLATIONS, interpolate
from async_vla_ros.core.motion_check import DERIVATIVES, check_differences, limit_bounds
from async_vla_ros.core.safety import ROBOT_LIMITS, JointLimits, SafetyConfig, SafetyFilter, SafetyFlags
from async_vla_ros.robot.fci import fci_extrapolate

__all__ = [
    "INTERPOLATIONS",  # re-exported from core.interpolation
    "interpolate",
    "StreamerConfig",
    "CommandTick",
    "PlanStreamer",
    "MotionMonitor",
]


@dataclass(frozen=True)
class StreamerConfig:
    """How a control-rate plan becomes a command-rate stream."""

    control_dt: float = 0.05  # s, period of the plan's knots (the control rate, 20 Hz)
    command_dt: float = 0.001  # s, command period (libfranka: 1 kHz)
    interpolation: str = "linear"  # "linear" | "cubic" | "hold" (see module docstring)
    safety: bool = True  # run the core SafetyFilter on every tick; False ONLY to demonstrate aborts
    robot: str = "fr3"  # limits preset of the safety filter and the monitor ("fr3" | "panda")
    position_margin: float = 0.01  # rad kept clear of the joint limits by the filter
    # Fractions of the datasheet limits the filter allows. Below 1 on purpose: the robot flags a
    # command that lands exactly on a limit (float round-off; libfranka's own rate limiter aims
    # 1e-3 inside), and after a re-anchor on the robot's float32 echo of q_d (<= 2.4e-7 rad off)
    # the first command can be up to 0.24 rad/s^2 / 240 rad/s^3 off what we computed.
    scale_velocity: float = 0.95
    scale_acceleration: float = 0.9
    scale_jerk: float = 0.9

    def __post_init__(self) -> None:
        for name in ("control_dt", "command_dt"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                raise ValueError(f"StreamerConfig.{name} must be a positive number of seconds, got {v!r}")
        ratio = self.control_dt / self.command_dt
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"StreamerConfig.control_dt ({self.control_dt}) must be a whole multiple of command_dt ({self.command_dt})"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"StreamerConfig.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if not isinstance(self.safety, bool):
            raise ValueError(f"StreamerConfig.safety must be a bool, got {self.safety!r}")
        self.safety_config()  # validates robot, margin and scales with the filter's own checks

    @property
    def ticks_per_step(self) -> int:
        """R, command ticks per control step."""
        return int(round(self.control_dt / self.command_dt))

    def safety_config(self) -> SafetyConfig:
        """The filter's configuration (dt = command_dt)."""
        return SafetyConfig(
            robot=self.robot,
            dt=self.command_dt,
            position_margin=self.position_margin,
            scale_velocity=self.scale_velocity,
            scale_acceleration=self.scale_acceleration,
            scale_jerk=self.scale_jerk,
        )


@dataclass(frozen=True, eq=False)
class CommandTick:
    """One command tick's output."""

    tick: int  # command tick index since reset
    step: int  # control step containing the tick
    q_target: np.ndarray  # (7,) interpolated plan, before the filter
    q_cmd: np.ndarray  # (7,) what to send (filtered unless safety is off)
    gripper: float | None  # gripper width of the current knot (held, not interpolated), m
    flags: SafetyFlags | None  # the filter's interventions (None with safety off)


class PlanStreamer:
    """Knots per control step in, one filtered joint command per tick out (see module docstring).

    Use: :meth:`reset` at the measured joint positions, :meth:`set_knot` for each control step
    (before the tick that starts it; :attr:`at_step_start` says when), :meth:`tick` once per
    command period.
    """

    def __init__(self, config: StreamerConfig | None = None) -> None:
        self.config = config or StreamerConfig()
        self._r = self.config.ticks_per_step
        self.filter = SafetyFilter(self.config.safety_config()) if self.config.safety else None
        self._ready = False

    # ------------------------------------------------------------------ lifecycle
    def reset(self, q_init, gripper: float | None = None, start_step: int = 0) -> None:
        """Start at rest at ``q_init (7,)``: the next tick is the first of ``start_step``; the
        knots before it are ``q_init``."""
        q = np.array(q_init, dtype=np.float64, copy=True)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_init must be 7 finite joint positions, got {q_init!r}")
        if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)):
            raise ValueError(f"start_step must be an int, got {start_step!r}")
        if self.filter is not None:
            self.filter.reset(q, gripper)
        self._knots: dict[int, np.ndarray] = {int(start_step) - 1: q}
        self._grip: dict[int, float] = {}
        self._gripper = None if gripper is None else float(gripper)
        self._tick = int(start_step) * self._r  # index of the NEXT tick
        self._last_cmd = q.copy()
        self._frozen: np.ndarray | None = None
        self._undo = None
        self._ready = True

    def _require_ready(self) -> None:
        if not self._ready:
            raise RuntimeError("PlanStreamer.reset(q_init) must be called first")

    @property
    def next_tick(self) -> int:
        """Index of the tick the next :meth:`tick` call produces."""
        self._require_ready()
        return self._tick

    @property
    def step(self) -> int:
        """Control step of the next tick."""
        self._require_ready()
        return self._tick // self._r

    @property
    def at_step_start(self) -> bool:
        """True when the next tick is the first of a control step (set its knot first)."""
        self._require_ready()
        return self._tick % self._r == 0

    @property
    def last_command(self) -> np.ndarray:
        """(7,) copy of the last command produced (``q_init`` before the first tick)."""
        self._require_ready()
        return self._last_cmd.copy()

    def freeze(self, q=None) -> None:
        """Stop following the plan: from the next tick every target is ``q (7,)`` (default: the
        last command), so the filter brings the arm to rest within its limits."""
        self._require_ready()
        target = self._last_cmd if q is None else np.array(q, dtype=np.float64, copy=True)
        if target.shape != (7,) or not np.all(np.isfinite(target)):
            raise ValueError(f"freeze target must be 7 finite joint positions, got {q!r}")
        self._frozen = target.copy()

    @property
    def frozen(self) -> bool:
        return self._ready and self._frozen is not None

    def settled(self, tol: float = 1e-6) -> bool:
        """True when the commanded stream is at rest: the filter's velocity and acceleration are
        below ``tol`` (in rad/s, rad/s^2) and the output sits on the frozen target (always True
        without the filter once frozen)."""
        self._require_ready()
        if self.filter is None:
            return self._frozen is not None
        q, v, a = self.filter.state
        on_target = self._frozen is None or bool(np.all(np.abs(q - self._frozen) <= tol))
        return on_target and bool(np.all(np.abs(v) <= tol)) and bool(np.all(np.abs(a) <= tol))

    # ------------------------------------------------------------------ knots
    def set_knot(self, step: int, action) -> None:
        """The plan's action for control ``step`` (reached at its end), or None: nothing planned
        (the step holds the previous knot). ``action``: (7,) joints, or (8,) joints + gripper."""
        self._require_ready()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"step must be an int, got {step!r}")
        step = int(step)
        if step < self.step:
            raise ValueError(f"knot for step {step} is in the past (current step {self.step})")
        if action is None:
            self._knots.pop(step, None)
            self._grip.pop(step, None)
            return
        a = np.array(action, dtype=np.float64, copy=True).reshape(-1)
        if a.shape not in ((7,), (8,)) or not np.all(np.isfinite(a)):
            raise ValueError(f"knot must be 7 (joints) or 8 (joints + gripper) finite numbers, got shape {a.shape}")
        self._knots[step] = a[:7]
        if a.shape == (8,):
            self._grip[step] = float(a[7])
        else:
            self._grip.pop(step, None)

    def knot(self, step: int) -> np.ndarray:
        """(7,) effective knot of ``step``: its own, else the latest one before it (hold)."""
        self._require_ready()
        if step in self._knots:
            return self._knots[step].copy()
        earlier = [s for s in self._knots if s < step]
        if not earlier:
            raise ValueError(f"no knot at or before step {step}")
        return self._knots[max(earlier)].copy()

    def _prune(self, step: int) -> None:
        old = [s for s in self._knots if s < step - 2]
        if old:
            keep = max(old)  # the latest old knot stays: a later step may hold it
            for s in old:
                if s != keep:
                    del self._knots[s]
        for s in [s for s in self._grip if s < step]:
            self._gripper = self._grip.pop(s)

    # ------------------------------------------------------------------ tick
    def _next_target(self) -> tuple[int, int, np.ndarray]:
        """(tick, step, interpolated target) of the next tick; moves the tick counter on."""
        i = self._tick
        t, k = divmod(i, self._r)
        if k == 0:
            self._prune(t)
        u = (k + 1) / self._r
        a_m1, a_0 = self.knot(t - 1), self.knot(t)
        if self._frozen is not None:
            target = self._frozen.copy()
        elif self.config.interpolation == "cubic":
            target = interpolate(
                self.knot(t - 2) if self._has_before(t - 2) else a_m1, a_m1, a_0, self.knot(t + 1), u, "cubic"
            )
        else:
            target = interpolate(a_m1, a_m1, a_0, a_0, u, self.config.interpolation)
        if t in self._grip:
            self._gripper = self._grip[t]
        self._tick += 1
        return i, t, target

    def tick(self) -> CommandTick:
        """Produce the next command tick."""
        self._require_ready()
        i, t, target = self._next_target()
        if self.filter is not None:
            self._undo = (self.filter.save(), target)  # for resync(): this command may never be sent
            q_cmd, g_cmd, flags = self.filter.filter(target, self._gripper)
            gripper = g_cmd if self._gripper is not None else None
        else:
            q_cmd, gripper, flags = target.copy(), self._gripper, None
        self._last_cmd = q_cmd.copy()
        return CommandTick(tick=i, step=t, q_target=target, q_cmd=q_cmd, gripper=gripper, flags=flags)

    def resync(self, missed: int, on_step_start=None, robot=None) -> None:
        """The command of the last :meth:`tick` was never sent, and the robot extrapolated ``missed``
        (>= 1) cycles after the command before it (the loop was late). Go on from the robot's
        extrapolation instead of from our own path: the filter's state goes back to before that tick
        and takes the robot's steps for the missed cycles (:meth:`SafetyFilter.extrapolate`), and plan
        time moves on so that the next :meth:`tick` is the cycle after them. ``on_step_start`` is
        called at each control-step boundary crossed, as before a tick. ``robot = (q, v, a)``: the
        robot's differencing history after the last of the missed cycles (e.g. its reported one
        continued by the answer sent for that cycle), taken instead of modelling the fill-in
        (:meth:`SafetyFilter.extrapolate`).

        Catching up on our own path instead, the first command after a 2-cycle gap in motion was
        differenced by the robot against its extrapolation as a 1.8x acceleration limit (a reflex
        abort); see test_robot_libfranka. Without the filter, only plan time moves on."""
        self._require_ready()
        if isinstance(missed, bool) or not isinstance(missed, (int, np.integer)) or missed < 1:
            raise ValueError(f"missed must be an int >= 1, got {missed!r}")
        targets = []
        if self.filter is not None:
            if self._undo is None:
                raise RuntimeError("resync() needs a tick() whose command was not sent")
            saved, first = self._undo
            targets.append(first)
        for _ in range(int(missed) - 1):  # the last tick stands for the first missed cycle
            if on_step_start is not None and self.at_step_start:
                on_step_start()
            targets.append(self._next_target()[2])
        if self.filter is not None:
            self.filter.restore(saved)
            self._last_cmd = self.filter.extrapolate(targets, robot, fill_in=fci_extrapolate)
            self._undo = None

    def _has_before(self, step: int) -> bool:
        return any(s <= step for s in self._knots)


class MotionMonitor:
    """Backward differences of a command stream, checked against joint limits.

    ``update(q, cycles)`` takes each command sent; ``cycles`` is the number of command periods
    since the previous one (a robot differences a late command over the real interval).
    Velocity ``v = dq / (cycles dt)``, acceleration and jerk likewise, starting from rest at
    :meth:`reset`. Counts commands beyond the limits times ``(1 + tol)`` per kind and keeps the
    largest magnitudes seen (per joint).
    """

    KINDS = ("position", "velocity", "acceleration", "jerk")

    def __init__(self, limits: JointLimits | str = "fr3", dt: float = 0.001, tol: float = 1e-6) -> None:
        lim = ROBOT_LIMITS[limits] if isinstance(limits, str) else limits
        if not isinstance(lim, JointLimits):
            raise TypeError("limits must be a JointLimits or a preset name")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be > 0, got {dt!r}")
        self.limits = lim
        self.dt = float(dt)
        self.tol = float(tol)
        self._bounds = limit_bounds(lim)
        self._ready = False

    def reset(self, q0) -> None:
        """Start at rest at ``q0 (7,)``."""
        q = np.array(q0, dtype=np.float64, copy=True)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q0 must be 7 finite numbers, got {q0!r}")
        self._q, self._v, self._a = q, np.zeros(7), np.zeros(7)
        self.n = 0
        self.max_abs = {k: np.zeros(7) for k in ("velocity", "acceleration", "jerk")}
        self.violations = {k: 0 for k in self.KINDS}
        self.first_violation: tuple[int, str] | None = None
        self._ready = True

    def update(self, q, cycles: int = 1) -> None:
        """Record one command ``q (7,)`` sent ``cycles`` (>= 1) periods after the previous one."""
        if not self._ready:
            raise RuntimeError("MotionMonitor.reset(q0) must be called first")
        if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)) or cycles < 1:
            raise ValueError(f"cycles must be an int >= 1, got {cycles!r}")
        q = np.asarray(q, dtype=np.float64)
        chk = check_differences(np.stack((self._q, q)), cycles * self.dt, self.limits, self.tol, v0=self._v, a0=self._a)
        self.n += 1
        for kind, _ in DERIVATIVES:
            np.maximum(self.max_abs[kind], np.abs(chk.diffs[kind][0]), out=self.max_abs[kind])
            if chk.over[kind].any():
                self._violate(kind)
        if (chk.margin[1] < 0).any():
            self._violate("position")
        self._q, self._v, self._a = q.copy(), chk.diffs["velocity"][0], chk.diffs["acceleration"][0]

    def rebase(self, q, v, a) -> None:
        """The robot reports the history it differences the next command against (its last
        applied command and that command's backward differences): take it. Not a command."""
        if not self._ready:
            raise RuntimeError("MotionMonitor.reset(q0) must be called first")
        self._q, self._v, self._a = (np.array(x, dtype=np.float64, copy=True).reshape(7) for x in (q, v, a))

    def _violate(self, kind: str) -> None:
        self.violations[kind] += 1
        if self.first_violation is None:
            self.first_violation = (self.n, kind)

    @property
    def total_violations(self) -> int:
        return sum(self.violations.values())

    def summary(self) -> dict:
        """Largest |v|, |a|, |j| over all joints, the same as fractions of the limits, and the
        violation counts."""
        if not self._ready:
            raise RuntimeError("MotionMonitor.reset(q0) must be called first")
        out: dict = {"commands": self.n, "violations": dict(self.violations)}
        for kind, bound in self._bounds.items():
            out[f"max_{kind}"] = float(self.max_abs[kind].max())
            out[f"max_{kind}_frac"] = float((self.max_abs[kind] / bound).max())
        return out
