"""The ``Robot`` seam: ``observe()`` / ``command()`` (docs/architecture.md, STYLE.md #3).

A backend that talks to a real arm (libfranka, a MuJoCo scene) implements :class:`Robot`. The
caller's control loop runs at the control rate (e.g. 20 Hz): it reads :meth:`Robot.observe`,
computes a joint position target, and hands it to :meth:`Robot.command`. How the target reaches
the arm (1 kHz interpolation, safety filtering) is the backend's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["RobotState", "Robot", "RobotError", "MotionAborted"]


class RobotError(RuntimeError):
    """A robot backend failed (connection, protocol, bad command)."""


class MotionAborted(RobotError):
    """The robot aborted the motion (a Franka reflex). ``reasons`` names the errors, e.g.
    ``("joint_motion_generator_velocity_discontinuity",)``."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


@dataclass(frozen=True, eq=False)
class RobotState:
    """One measurement of the arm.

    ``q``, ``dq``: (7,) measured joint positions (rad) and velocities (rad/s); ``q_cmd``: (7,) the
    last commanded joint positions (the robot's ``q_d``); ``gripper``: finger width in m, or None
    without a gripper; ``time_ns``: the robot's own clock (monotonic, ns).
    """

    q: np.ndarray
    dq: np.ndarray
    q_cmd: np.ndarray
    gripper: float | None
    time_ns: int

    def __post_init__(self) -> None:
        for name in ("q", "dq", "q_cmd"):
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True)
            if arr.shape != (7,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"RobotState.{name} must be 7 finite numbers, got {getattr(self, name)!r}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if isinstance(self.time_ns, bool) or not isinstance(self.time_ns, (int, np.integer)):
            raise ValueError(f"RobotState.time_ns must be an int, got {self.time_ns!r}")
        object.__setattr__(self, "time_ns", int(self.time_ns))


@runtime_checkable
class Robot(Protocol):
    """A controllable arm. ``command`` takes a target for the *next* control step:
    ``q_target (7,)`` joint positions in rad and an optional gripper width in m."""

    def observe(self) -> RobotState: ...

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None: ...
