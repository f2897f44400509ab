"""Inference-delay forecasting from a sliding window of measured delays.

``d`` is the number of control steps between the observation a chunk was computed from and the
first step at which the chunk can be used: ``d = ceil(latency / dt)``, or measured directly from
action indices as ``t_arrive - t_obs`` when a chunk arrives (the scheduler does this).

The forecast is a configurable quantile (``quantile=1.0``: the maximum) over the last ``window``
samples -- old spikes expire, unlike a running maximum that never forgets. The first
``warmup`` samples (JIT compilation, cache warm-up) are never used. The result is clamped to
``[d_min, d_max]``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["DelayConfig", "DelayEstimator", "latency_to_steps"]


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
