"""Injected clocks for everything in ``core`` that needs time.

``core`` never reads the wall clock itself: the ROS nodes pass a :class:`MonotonicClock`, the
tests and the lockstep benchmark pass a :class:`FakeClock` that only moves when told to.
All times are integer nanoseconds on a monotonic time base (never ``time.time()``).
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock", "FakeClock", "StepClock", "NS_PER_S", "stamp_to_ns"]

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """A ROS time stamp (anything with ``sec`` and ``nanosec``: ``builtin_interfaces/Time``, a
    bag's decoded message) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now_ns() -> int`` on a monotonic time base.

    Clocks may also offer ``sleep_ns(ns)``; :class:`~async_vla_ros.core.cycle_timer.CycleTimer`
    uses it when present (a fake clock then advances instead of sleeping).
    """

    def now_ns(self) -> int:  # pragma: no cover - protocol
        ...


class MonotonicClock:
    """The process's monotonic clock (``time.monotonic_ns``); sleeps for real."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, ns: int) -> None:
        """Sleep ``ns`` nanoseconds (no-op for ns <= 0)."""
        if ns > 0:
            time.sleep(ns / NS_PER_S)


class FakeClock:
    """A clock that moves only by hand: ``advance(dt_s)`` / ``advance_ns(ns)`` / ``set_ns(t)``.

    ``sleep_ns`` advances the clock instantly, so pacing code runs without real sleeps.
    """

    def __init__(self, start_ns: int = 0) -> None:
        if not isinstance(start_ns, int) or isinstance(start_ns, bool) or start_ns < 0:
            raise ValueError(f"start_ns must be a non-negative int, got {start_ns!r}")
        self._t = start_ns
        self.sleep_calls: list[int] = []  # every sleep_ns request, for tests

    def now_ns(self) -> int:
        return self._t

    def advance_ns(self, ns: int) -> int:
        """Move the clock forward by ``ns`` (>= 0) and return the new time."""
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
            raise ValueError(f"a monotonic clock cannot go backwards: advance_ns({ns!r})")
        self._t += ns
        return self._t

    def advance(self, seconds: float) -> int:
        """Move the clock forward by ``seconds`` (rounded to the nearest ns)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"advance() needs a finite non-negative duration, got {seconds!r}")
        return self.advance_ns(round(seconds * NS_PER_S))

    def set_ns(self, t_ns: int) -> None:
        """Jump to absolute time ``t_ns`` (must not be in the past)."""
        if t_ns < self._t:
            raise ValueError(f"a monotonic clock cannot go backwards: {t_ns} < {self._t}")
        self._t = int(t_ns)

    def sleep_ns(self, ns: int) -> None:
        """Record the request and advance the clock by it (instant)."""
        self.sleep_calls.append(int(ns))
        if ns > 0:
            self._t += int(ns)


class StepClock:
    """Maps a clock to integer control steps: ``t = floor((now - t0) / dt)``.

    This is the time base of ``core`` (see docs/architecture.md, "Time"). ``t0`` is taken at
    construction unless given.
    """

    def __init__(self, clock: Clock, dt: float, t0_ns: int | None = None) -> None:
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive finite number of seconds, got {dt!r}")
        self.clock = clock
        self.dt = float(dt)
        self.dt_ns = round(self.dt * NS_PER_S)
        if self.dt_ns <= 0:
            raise ValueError(f"dt={dt!r} is below 1 ns")
        self.t0_ns = clock.now_ns() if t0_ns is None else int(t0_ns)

    def step(self, now_ns: int | None = None) -> int:
        """Current step (or the step of ``now_ns``, e.g. an observation stamp)."""
        now = self.clock.now_ns() if now_ns is None else int(now_ns)
        return (now - self.t0_ns) // self.dt_ns

    def step_start_ns(self, t: int) -> int:
        """Clock time at which step ``t`` begins."""
        return self.t0_ns + int(t) * self.dt_ns
