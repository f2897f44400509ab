"""Small statistics helpers for benchmark reports (stdlib + numpy only).

- ``wilson_interval(k, n, confidence)``: Wilson score interval of a binomial proportion
  (Wilson 1927); unlike the normal approximation it stays inside [0, 1] and is sensible at
  k = 0 or k = n:  centre = (p + z^2/2n) / (1 + z^2/n),
  half-width = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
- ``format_rate(k, n)``: ``"0.850 [0.793, 0.893] (170/200)"``.
- ``mean_sem(values)``: mean and standard error of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist

import numpy as np


def _z(confidence: float) -> float:
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lo, hi) for ``successes`` out of ``n`` trials."""
    if isinstance(successes, bool) or isinstance(n, bool):
        raise TypeError("successes and n must be ints, not bools")
    k, n = int(successes), int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (0 <= k <= n):
        raise ValueError(f"successes must be in [0, n={n}], got {k}")
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate(successes: int, n: int, confidence: float = 0.95) -> str:
    """``"p [lo, hi] (k/n)"`` with the Wilson interval."""
    lo, hi = wilson_interval(successes, n, confidence)
    return f"{successes / n:.3f} [{lo:.3f}, {hi:.3f}] ({successes}/{n})"


def mean_sem(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sem = 0 for one value; NaNs for none)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
