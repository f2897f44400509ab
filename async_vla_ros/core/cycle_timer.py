"""Pacing on an injected monotonic clock, with overrun and period-error statistics.

Two ways to use it:

* a loop that owns its thread: ``timer.start()`` then ``timer.wait()`` once per cycle; deadlines
  lie on the absolute grid ``t0 + k * period`` (no drift); a cycle that finishes after its
  deadline is an *overrun*, and with ``catch_up=False`` (default) the missed grid points are
  skipped and counted instead of being run back to back;
* a callback driven by someone else's timer (rclpy): call ``timer.tick()`` at the start of every
  callback; it only measures (period error = actual interval - nominal period).

Tests use :class:`~async_vla_ros.core.clock.FakeClock`, whose ``sleep_ns`` advances instantly.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .clock import NS_PER_S, Clock, MonotonicClock

__all__ = ["CycleTimer", "CycleInfo", "TimerStats"]


@dataclass(frozen=True)
class CycleInfo:
    """What happened in one ``wait()``."""

    index: int  # cycle number (0 for the first wait after start)
    deadline_ns: int  # grid deadline this wait aimed at
    lateness_ns: int  # now - deadline when wait returned (>= 0 after a sleep; > 0 on overrun)
    overrun: bool  # the work of the cycle ran past its deadline
    missed: int  # grid points skipped because of the overrun (0 when catch_up=True)


@dataclass(frozen=True)
class TimerStats:
    """Summary over the last ``window`` measurements (seconds)."""

    cycles: int
    overruns: int
    missed: int
    period_error_mean_s: float
    period_error_p99_s: float  # p99 of |actual interval - period|
    period_error_max_s: float  # max of |actual interval - period|
    lateness_p99_s: float
    lateness_max_s: float


class CycleTimer:
    """Fixed-rate pacing on ``clock`` (``period_s`` seconds per cycle)."""

    def __init__(
        self,
        period_s: float,
        clock: Clock | None = None,
        *,
        sleep: Callable[[int], None] | None = None,
        catch_up: bool = False,
        overrun_tolerance_s: float = 0.0,
        window: int = 10_000,
    ) -> None:
        if not (isinstance(period_s, (int, float)) and math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"period_s must be a positive finite number, got {period_s!r}")
        if not (math.isfinite(overrun_tolerance_s) and overrun_tolerance_s >= 0):
            raise ValueError(f"overrun_tolerance_s must be >= 0, got {overrun_tolerance_s!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.period_ns = round(period_s * NS_PER_S)
        if self.period_ns <= 0:
            raise ValueError(f"period_s={period_s!r} is below 1 ns")
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        if sleep is not None:
            self._sleep = sleep
        elif hasattr(self.clock, "sleep_ns"):
            self._sleep = self.clock.sleep_ns  # type: ignore[attr-defined]
        else:
            self._sleep = lambda ns: time.sleep(ns / NS_PER_S) if ns > 0 else None
        self.catch_up = bool(catch_up)
        self.tolerance_ns = round(overrun_tolerance_s * NS_PER_S)
        self._window = window
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all statistics; the next ``wait()``/``tick()`` starts a fresh grid."""
        self._t0: int | None = None
        self._next_deadline: int | None = None
        self._index = 0
        self._last_tick: int | None = None
        self.cycles = 0
        self.overruns = 0
        self.missed = 0
        self._period_err: deque[int] = deque(maxlen=self._window)
        self._lateness: deque[int] = deque(maxlen=self._window)

    def start(self) -> None:
        """Anchor the grid at the current clock time (first deadline = now + period)."""
        self.reset()
        self._t0 = self.clock.now_ns()
        self._next_deadline = self._t0 + self.period_ns
        self._last_tick = self._t0

    # ------------------------------------------------------------------ pacing
    def wait(self) -> CycleInfo:
        """Block until the next grid deadline; report lateness, overrun and skipped ticks."""
        if self._next_deadline is None:
            self.start()
        assert self._next_deadline is not None
        deadline = self._next_deadline
        now = self.clock.now_ns()
        overrun = now > deadline + self.tolerance_ns
        missed = 0
        if now < deadline:
            self._sleep(deadline - now)
            now = self.clock.now_ns()
        lateness = max(0, now - deadline)
        if overrun:
            self.overruns += 1
            if self.catch_up:
                self._next_deadline = deadline + self.period_ns
            else:
                # skip the grid points already in the past
                behind = (now - deadline) // self.period_ns
                missed = int(behind)
                self.missed += missed
                self._next_deadline = deadline + (behind + 1) * self.period_ns
        else:
            self._next_deadline = deadline + self.period_ns
        info = CycleInfo(self._index, deadline, lateness, overrun, missed)
        self._index += 1
        self._record_tick(now)
        self._lateness.append(lateness)
        return info

    def tick(self) -> int:
        """Measure only: record the interval since the previous tick; returns now (ns).

        An interval longer than ``period + tolerance`` counts as an overrun.
        """
        now = self.clock.now_ns()
        if self._last_tick is not None:
            interval = now - self._last_tick
            if interval > self.period_ns + self.tolerance_ns:
                self.overruns += 1
                self.missed += max(0, interval // self.period_ns - 1)
            self._lateness.append(max(0, interval - self.period_ns))
        self._record_tick(now)
        return now

    def _record_tick(self, now: int) -> None:
        if self._last_tick is not None:
            self._period_err.append((now - self._last_tick) - self.period_ns)
        self.cycles += 1
        self._last_tick = now

    # ------------------------------------------------------------------ report
    def stats(self) -> TimerStats:
        """Statistics over the last ``window`` cycles (zeros before two cycles)."""
        if self._period_err:
            err = np.abs(np.asarray(self._period_err, dtype=np.float64)) / NS_PER_S
            signed = np.asarray(self._period_err, dtype=np.float64) / NS_PER_S
            mean, p99, mx = float(signed.mean()), float(np.quantile(err, 0.99)), float(err.max())
        else:
            mean = p99 = mx = 0.0
        if self._lateness:
            lat = np.asarray(self._lateness, dtype=np.float64) / NS_PER_S
            lp99, lmax = float(np.quantile(lat, 0.99)), float(lat.max())
        else:
            lp99 = lmax = 0.0
        return TimerStats(self.cycles, self.overruns, self.missed, mean, p99, mx, lp99, lmax)
