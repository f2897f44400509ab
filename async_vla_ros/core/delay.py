"""Inference-delay forecasting from a sliding window of measured delays.

``d`` is the number of control steps between the observation a chunk was computed from and the
first step at which the chunk can be used: ``d = ceil(latency / dt)``, or measured directly from
action indices as ``t_arrive - t_obs`` when a chunk arrives (the scheduler does this).

The forecast is a configurable quantile (``quantile=1.0``: the maximum) over the last ``window``
samples -- old spikes expire, unlike a running maximum that never forgets. The first
``warmup`` samples (JIT compilation, cache warm-up) are never used. The result is clamped to
``[d_min, d_max]``.

Delays that vary (simulated evaluation): :class:`DelaySpec` describes the delay of every chunk
of a run -- a fixed ``d``, a uniform ``U{lo..hi}`` (``"2:4"``) or a recorded trace of latencies
(:func:`load_delay_trace`, converted to steps at the control period) replayed in order from a
seeded offset. :meth:`DelaySpec.source` gives one scheduler's per-chunk source, deterministic in
``(seed, stream)``. :class:`ForecastTally` counts how often a forecast under- or over-shoots.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DelayConfig",
    "DelayEstimator",
    "DelaySpec",
    "ForecastTally",
    "latency_to_steps",
    "load_delay_trace",
    "parse_delay",
]


def latency_to_steps(latency_s: float, dt: float, eps: float = 1e-9) -> int:
    """``ceil(latency / dt)`` robust to float noise (0.04 / 0.02 is 2, not 3)."""
    if not (math.isfinite(latency_s) and latency_s >= 0):
        raise ValueError(f"latency must be finite and >= 0, got {latency_s!r}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and > 0, got {dt!r}")
    return max(0, math.ceil(latency_s / dt - eps))


@dataclass(frozen=True)
class DelayConfig:
    """How measured delays become a forecast."""

    window: int = 20  # number of most recent (post-warm-up) samples used
    quantile: float = 1.0  # in [0, 1]; 1.0 = max over the window, 0.5 = median
    warmup: int = 1  # first samples ignored (first inference compiles / warms caches)
    d_init: int = 0  # forecast while no usable sample exists yet
    d_min: int = 0  # lower clamp of the forecast
    d_max: int | None = None  # upper clamp (e.g. H - 1); None: unbounded

    def __post_init__(self) -> None:
        for name in ("window", "warmup", "d_init", "d_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"DelayConfig.{name} must be an int, got {v!r}")
        if self.window < 1:
            raise ValueError(f"DelayConfig.window must be >= 1, got {self.window}")
        if self.warmup < 0 or self.d_init < 0 or self.d_min < 0:
            raise ValueError("DelayConfig.warmup, d_init and d_min must be >= 0")
        if not (isinstance(self.quantile, (int, float)) and 0.0 <= self.quantile <= 1.0):
            raise ValueError(f"DelayConfig.quantile must be in [0, 1], got {self.quantile!r}")
        if self.d_max is not None:
            if isinstance(self.d_max, bool) or not isinstance(self.d_max, int):
                raise ValueError(f"DelayConfig.d_max must be an int or None, got {self.d_max!r}")
            if self.d_max < self.d_min:
                raise ValueError(f"DelayConfig.d_max ({self.d_max}) < d_min ({self.d_min})")


class DelayEstimator:
    """Sliding-window delay forecast (integer control steps)."""

    def __init__(self, config: DelayConfig | None = None, dt: float | None = None) -> None:
        self.config = config or DelayConfig()
        if dt is not None and not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be finite and > 0, got {dt!r}")
        self.dt = dt
        self.reset()

    def reset(self) -> None:
        """Forget every sample (including the warm-up count)."""
        self._window: deque[int] = deque(maxlen=self.config.window)
        self.n_seen = 0  # all samples offered, warm-up included
        self.n_warmup_dropped = 0

    def observe_steps(self, d: int) -> None:
        """Record one measured delay in steps (e.g. ``t_arrive - t_obs``)."""
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"a measured delay must be a non-negative int, got {d!r}")
        self.n_seen += 1
        if self.n_seen <= self.config.warmup:
            self.n_warmup_dropped += 1
            return
        self._window.append(int(d))

    def observe_latency(self, latency_s: float) -> int:
        """Record a latency in seconds (needs ``dt``); returns the step count it became."""
        if self.dt is None:
            raise ValueError("observe_latency needs the estimator to be built with dt")
        d = latency_to_steps(latency_s, self.dt)
        self.observe_steps(d)
        return d

    @property
    def samples(self) -> list[int]:
        """The samples currently in the window, oldest first."""
        return list(self._window)

    def forecast(self) -> int:
        """Forecast delay ``d`` in steps (``d_init`` until a usable sample exists)."""
        c = self.config
        if not self._window:
            d = c.d_init
        else:
            # "higher": never round a quantile down between two integer delays
            d = int(np.quantile(np.asarray(self._window), c.quantile, method="higher"))
        d = max(d, c.d_min)
        if c.d_max is not None:
            d = min(d, c.d_max)
        return d


# ---------------------------------------------------------------------- delays that vary
@dataclass(frozen=True)
class DelaySpec:
    """The delay (control steps) of every chunk of a simulated run.

    ``lo == hi``: fixed; ``lo < hi``: uniform on ``{lo..hi}``, drawn per chunk; ``trace``: the
    delays in order, cycled, each scheduler starting at its own seeded offset. ``label`` names it
    in reports (``"2"``, ``"U{1..4}"``, ``"trace:NAME"``).
    """

    lo: int = 0
    hi: int = 0
    trace: tuple[int, ...] | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.trace is not None:
            tr = tuple(int(v) for v in self.trace)
            if not tr or min(tr) < 0:
                raise ValueError("a delay trace needs at least one delay, all >= 0")
            object.__setattr__(self, "trace", tr)
            object.__setattr__(self, "lo", min(tr))
            object.__setattr__(self, "hi", max(tr))
        for name in ("lo", "hi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"DelaySpec.{name} must be an int >= 0, got {v!r}")
        if self.hi < self.lo:
            raise ValueError(f"DelaySpec: hi ({self.hi}) < lo ({self.lo})")
        if not self.label:
            if self.trace is not None:
                lab = "trace"
            else:
                lab = str(self.lo) if self.fixed is not None else f"U{{{self.lo}..{self.hi}}}"
            object.__setattr__(self, "label", lab)

    @property
    def fixed(self) -> int | None:
        """The delay if it never varies, else None."""
        return int(self.lo) if self.trace is None and self.lo == self.hi else None

    @property
    def mean(self) -> float:
        return float(np.mean(self.trace)) if self.trace is not None else (self.lo + self.hi) / 2.0

    def source(self, seed: int, stream: int = 0) -> Callable[[Any], int]:
        """Per-chunk delays for one scheduler: ``f(request) -> d`` (the argument is ignored)."""
        if self.fixed is not None:
            d = self.fixed
            return lambda _spec=None: d
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(stream), 0xDE1A])
        if self.trace is None:
            lo, hi = int(self.lo), int(self.hi)
            return lambda _spec=None: int(rng.integers(lo, hi + 1))
        trace = self.trace
        pos = [int(rng.integers(0, len(trace)))]

        def nxt(_spec=None) -> int:
            d = trace[pos[0] % len(trace)]
            pos[0] += 1
            return d

        return nxt


def parse_delay(text: str | int) -> DelaySpec:
    """``"3"`` (or 3): fixed; ``"2:4"``: uniform on {2, 3, 4}."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        return DelaySpec(int(text), int(text))
    t = str(text).strip()
    try:
        if ":" in t:
            lo, hi = (int(v) for v in t.split(":", 1))
        else:
            lo = hi = int(t)
    except ValueError as exc:
        raise ValueError(f"a delay is an int (e.g. 3) or a range LO:HI (e.g. 2:4), got {text!r}") from exc
    return DelaySpec(lo, hi)


def load_delay_trace(path: str | os.PathLike, dt: float, unit: str = "s") -> DelaySpec:
    """A recorded latency trace as a :class:`DelaySpec` (steps = ``ceil(latency / dt)``).

    ``path``: a recorded bag (folder or ``.mcap``): the ``total_latency_s`` (arrival - observation
    time) of the accepted ``/scheduler/chunk_report`` messages, in arrival order; a ``.json`` file:
    a list of numbers or an object with ``"latency_s"`` (seconds) or ``"delay_steps"``; any other
    file: one number per line (first comma-separated column; ``#`` comments). ``unit``: ``s``,
    ``ms`` or ``steps`` for the numbers of a json list or a text file.
    """
    p = Path(path)
    if unit not in ("s", "ms", "steps"):
        raise ValueError(f"unit must be s, ms or steps, got {unit!r}")
    if not p.exists():
        raise FileNotFoundError(f"delay trace {p} not found")
    vals: list[float]
    if p.is_dir() or p.suffix == ".mcap":
        from async_vla_ros.eval.bags import read_messages

        vals = [
            float(m.msg.total_latency_s)
            for m in read_messages(p, ["/scheduler/chunk_report"])
            if m.msg.accepted and m.msg.total_latency_s >= 0
        ]
        unit = "s"
    elif p.suffix == ".json":
        data = json.loads(p.read_text())
        if isinstance(data, dict):
            if "delay_steps" in data:
                vals, unit = [float(v) for v in data["delay_steps"]], "steps"
            elif "latency_s" in data:
                vals, unit = [float(v) for v in data["latency_s"]], "s"
            else:
                raise ValueError(f"{p}: a json trace needs 'latency_s' or 'delay_steps'")
        else:
            vals = [float(v) for v in data]
    else:
        vals = []
        for line in p.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                vals.append(float(line.split(",")[0]))
    if not vals:
        raise ValueError(f"{p}: no latencies in the trace")
    if unit == "steps":
        if any(v < 0 or v != round(v) for v in vals):
            raise ValueError(f"{p}: delays in steps must be non-negative integers")
        steps = [int(v) for v in vals]
    else:
        scale = 1e-3 if unit == "ms" else 1.0
        steps = [latency_to_steps(v * scale, dt) for v in vals]
    return DelaySpec(trace=tuple(steps), label=f"trace:{p.stem}")


class ForecastTally:
    """How often the delay forecast (the d a request used) missed the delay that happened."""

    def __init__(self) -> None:
        self.n = self.under = self.over = 0
        self.under_steps = self.over_steps = 0
        self.dropped = 0  # chunks that arrived too late to be used

    def add(self, forecast: int, actual: int) -> None:
        self.n += 1
        if actual > forecast:
            self.under += 1
            self.under_steps += actual - forecast
        elif actual < forecast:
            self.over += 1
            self.over_steps += forecast - actual

    def merge(self, others: Sequence[ForecastTally]) -> ForecastTally:
        for o in others:
            self.n += o.n
            self.under += o.under
            self.over += o.over
            self.under_steps += o.under_steps
            self.over_steps += o.over_steps
            self.dropped += o.dropped
        return self

    def as_dict(self) -> dict[str, float | int]:
        n = max(self.n, 1)
        return {
            "requests": self.n,
            "under": self.under,
            "over": self.over,
            "under_rate": self.under / n,
            "over_rate": self.over / n,
            "mean_under_steps": self.under_steps / max(self.under, 1),
            "mean_over_steps": self.over_steps / max(self.over, 1),
            "dropped": self.dropped,
        }
