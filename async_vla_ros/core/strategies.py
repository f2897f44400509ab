"""Chunk merging strategies behind one interface, plus the RTC soft-mask schedules.

Each strategy is a small class that answers four questions for the
:class:`~async_vla_ros.core.scheduler.ChunkScheduler`:

* how many actions of a chunk execute before the next one takes over (``execution_horizon``)
  and how many steps before that the request must go out (``request_lead``);
* what guidance the request carries (``guidance``: weights ``W (H,)`` over the prefix
  ``Y (H, A)`` and the number of frozen actions), and which sampler the policy must run
  (``sampler``: ``vanilla`` | ``rtc`` | ``prefix`` | ``bid``);
* where an arriving chunk's index 0 sits in time (``anchor``);
* how it is written into the plan (``merge``).

Names (``make_strategy``): ``sync``, ``naive``, ``te``, ``rtc``, ``rtc_hard``, ``remac``, ``bid``.

Conventions (docs/architecture.md): a chunk requested at step ``t_req`` predicts action ``k`` for
step ``t_req + k`` and arrives at ``t_req + d``; prefix row ``Y[i]`` is the plan's action for step
``t_req + i``; the first ``d`` rows are "frozen" (they execute before the chunk can arrive).
"""

from __future__ import annotations

import abc
import difflib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .chunk import Chunk
from .timeline import ActionTimeline

__all__ = [
    "SCHEDULES",
    "SAMPLERS",
    "check_beta",
    "prefix_weights",
    "MergeStrategy",
    "SyncStrategy",
    "NaiveStrategy",
    "TemporalEnsembleStrategy",
    "RTCStrategy",
    "REMACStrategy",
    "REMACCleanStrategy",
    "RTCJFStrategy",
    "BIDStrategy",
    "STRATEGIES",
    "make_strategy",
    "Guidance",
]

SCHEDULES = ("exp", "linear", "hard", "ones", "zeros")
SAMPLERS = ("vanilla", "rtc", "rtc_jf", "prefix", "remac", "bid", "rtc_lerobot")
"""Every sampler name a request may carry (the one list; each backend says which of them it runs:
the flow backend's are the keys of ``policy.samplers.SAMPLER_INPUTS``)."""


def check_beta(beta: Any, who: str = "beta") -> float | None:
    """A request's RTC guidance clip: None (the policy's default) or a finite number > 0."""
    if beta is None:
        return None
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise ValueError(f"{who}: guidance beta must be a number > 0 or None, got {beta!r}")
    if not (math.isfinite(float(beta)) and float(beta) > 0):
        raise ValueError(f"{who}: guidance beta must be finite and > 0, got {beta!r}")
    return float(beta)


def _check_nonneg_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return int(v)


def prefix_weights(d: int, s: int, horizon: int, schedule: str = "exp", n_real: int | None = None) -> np.ndarray:
    """RTC guidance weights ``W (H,)`` over the prefix.

    Regions (RTC, Black et al. 2025, eq. 5, and the reference ``get_prefix_weights`` of
    Physical-Intelligence/real-time-chunking-kinetix with ``start = d``, ``end = H - s``):

    * ``i < d``: frozen, ``W = 1`` (these actions execute before the chunk arrives);
    * ``d <= i < end``: soft, ``c_i = (end - i) / (end - d + 1)``; ``linear``: ``W = c_i``;
      ``exp``: ``W = c_i * (exp(c_i) - 1) / (e - 1)`` (the paper's schedule);
    * ``i >= end``: free, ``W = 0``.

    ``end = min(H - s, n_real)``: the soft region never reaches past the plan's real (unpadded)
    actions. Other schedules: ``hard`` -- 1 for ``i < d`` and 0 after (the paper's hard-masking
    ablation; the reference code calls it "zeros"); ``ones`` -- 1 over the whole overlap
    ``i < max(d, end)``; ``zeros`` -- all 0 (no guidance at all; a control condition).
    ``n_real == 0`` (nothing planned) gives all zeros for every schedule.
    """
    d = _check_nonneg_int("d", d)
    s = _check_nonneg_int("s", s)
    horizon = _check_nonneg_int("horizon", horizon)
    if horizon < 1:
        raise ValueError("horizon must be >= 1")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    w = np.zeros(horizon, dtype=np.float64)
    if n_real is not None:
        n_real = _check_nonneg_int("n_real", n_real)
        if n_real == 0:
            return w
    d = min(d, horizon)
    end = max(0, horizon - s)
    if n_real is not None:
        end = min(end, n_real)
    end = max(end, d)  # the frozen region always stays 1
    if schedule == "zeros":
        return w
    w[:d] = 1.0
    if schedule == "hard":
        return w
    if schedule == "ones":
        w[:end] = 1.0
        return w
    i = np.arange(d, end, dtype=np.float64)
    c = (end - i) / (end - d + 1)
    if schedule == "linear":
        w[d:end] = c
    else:  # exp
        w[d:end] = c * np.expm1(c) / (math.e - 1.0)
    return w


@dataclass(frozen=True)
class Guidance:
    """What a request carries for the sampler."""

    weights: np.ndarray  # (H,) in [0, 1]
    n_frozen: int  # leading prefix actions the sampler must hold fixed
    beta: float | None = None  # RTC guidance clip for this request (None: the policy's default)


class MergeStrategy(abc.ABC):
    """Base class; one instance per scheduler (some strategies keep state)."""

    name: str = "base"
    sampler: ClassVar[str] = "vanilla"

    def reset(self) -> None:
        """Forget any internal state (start of an episode)."""

    # -- request policy -------------------------------------------------------------------
    def execution_horizon(self, d: int, s_min: int, horizon: int) -> int:
        """s: actions of the current chunk that execute before the next chunk takes over."""
        return max(1, min(max(d, s_min), horizon))

    def request_lead(self, d: int) -> int:
        """Steps before the end of the execution horizon at which the request goes out."""
        return d

    def truncate_plan(self) -> bool:
        """True: only ``s`` actions of a chunk are planned (the robot holds afterwards)."""
        return False

    # -- guidance -------------------------------------------------------------------------
    def guidance(self, n_real: int, d: int, s: int, horizon: int) -> Guidance:
        """Weights over the prefix and frozen count for a request (default: none)."""
        return Guidance(np.zeros(horizon), 0)

    # -- merging --------------------------------------------------------------------------
    def anchor(self, chunk: Chunk, t_now: int, plan_dry: bool) -> int:
        """Step of the chunk's index 0. From standstill (nothing planned at ``t_now - 1`` and
        ``t_now``: see ``ActionTimeline.is_standstill``) the chunk
        starts at its own first action; otherwise index ``k`` belongs to step ``t_obs + k``."""
        return t_now if plan_dry else chunk.t_obs

    def merge(self, timeline: ActionTimeline, chunk: Chunk, t_now: int, anchor: int, s: int) -> int:
        """Write the chunk into the plan from ``t_now`` on; returns the first index used.

        Default (naive switch): actions whose time has passed are skipped, the rest replaces
        the plan. ``s`` is the execution horizon chosen when the request was made.
        """
        k0 = t_now - anchor
        if k0 < 0 or k0 >= chunk.horizon:
            raise ValueError(f"chunk {chunk.chunk_id} has no action for step {t_now} (k={k0})")
        timeline.set_plan_from(t_now, chunk.actions[k0:], chunk.chunk_id, np.arange(k0, chunk.horizon))
        return k0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sampler={self.sampler!r})"


class SyncStrategy(MergeStrategy):
    """Synchronous inference: execute ``s`` actions, then request and hold (stand still) for the
    d steps of inference; the new chunk starts at its index 0 when it arrives.

    ``s=None`` executes the whole chunk (``s = H``).
    """

    name = "sync"
    sampler = "vanilla"

    def __init__(self, s: int | None = None) -> None:
        if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise ValueError(f"sync: s must be a positive int or None, got {s!r}")
        self.s = s

    def execution_horizon(self, d: int, s_min: int, horizon: int) -> int:
        return horizon if self.s is None else min(self.s, horizon)

    def request_lead(self, d: int) -> int:
        return 0

    def truncate_plan(self) -> bool:
        return True

    def anchor(self, chunk: Chunk, t_now: int, plan_dry: bool) -> int:
        return t_now

    def merge(self, timeline: ActionTimeline, chunk: Chunk, t_now: int, anchor: int, s: int) -> int:
        n = min(s, chunk.horizon)
        timeline.set_plan_from(t_now, chunk.actions[:n], chunk.chunk_id, np.arange(n))
        return 0


class NaiveStrategy(MergeStrategy):
    """Naive async: switch to the new chunk as soon as it arrives, skipping the actions whose
    time has passed (index ``t_now - t_obs`` on)."""

    name = "naive"
    sampler = "vanilla"


class TemporalEnsembleStrategy(MergeStrategy):
    """ACT temporal ensembling (Zhao et al. 2023): the action for step t is the weighted mean of
    every received chunk that predicts step t, with weights ``exp(-m * i)``, ``i = 0`` the
    oldest prediction (ACT's ``k = 0.01``: older predictions weigh slightly more).

    ACT queries every step; use the scheduler's ``s_min = 1`` for that. Plan entries carry the
    newest contributing chunk's id and index.
    """

    name = "te"
    sampler = "vanilla"

    def __init__(self, m: float = 0.01) -> None:
        if not (isinstance(m, (int, float)) and math.isfinite(m) and m >= 0):
            raise ValueError(f"te: m must be a finite number >= 0, got {m!r}")
        self.m = float(m)
        self._chunks: list[tuple[int, int, np.ndarray]] = []  # (anchor, chunk_id, actions)

    def reset(self) -> None:
        self._chunks = []

    def merge(self, timeline: ActionTimeline, chunk: Chunk, t_now: int, anchor: int, s: int) -> int:
        k0 = t_now - anchor
        if k0 < 0 or k0 >= chunk.horizon:
            raise ValueError(f"chunk {chunk.chunk_id} has no action for step {t_now} (k={k0})")
        if timeline.is_standstill(t_now):
            self._chunks = []  # the robot stood still: old predictions describe a past motion
        # keep chunks (arrival order = age) that still cover a step >= t_now
        self._chunks = [c for c in self._chunks if c[0] + c[2].shape[0] > t_now]
        self._chunks.append((anchor, chunk.chunk_id, chunk.actions))
        t_end = max(a + acts.shape[0] for a, _, acts in self._chunks)
        n = t_end - t_now
        out = np.empty((n, chunk.action_dim))
        cids = np.empty(n, dtype=np.int64)
        ks = np.empty(n, dtype=np.int64)
        for j in range(n):
            t = t_now + j
            cover = [(a, cid, acts) for a, cid, acts in self._chunks if a <= t < a + acts.shape[0]]
            w = np.exp(-self.m * np.arange(len(cover)))
            preds = np.stack([acts[t - a] for a, _, acts in cover])
            out[j] = (w[:, None] * preds).sum(0) / w.sum()
            a_new, cid_new, _ = cover[-1]
            cids[j] = cid_new
            ks[j] = t - a_new
        timeline.set_plan_from(t_now, out, cids, ks)
        return k0


class RTCStrategy(NaiveStrategy):
    """Real-Time Chunking (Black, Galliker, Levine 2025): the request carries the prefix ``Y``
    and soft-mask weights ``W`` (see :func:`prefix_weights`); the policy runs the RTC-guided
    sampler; the arriving chunk replaces the plan like naive async (its first d actions were
    guided to match what executed meanwhile)."""

    name = "rtc"
    sampler = "rtc"

    def __init__(self, schedule: str = "exp", beta: float | None = None) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"{self.name}: unknown schedule {schedule!r}; choose one of {SCHEDULES}")
        self.schedule = schedule
        self.beta = check_beta(beta, self.name)
        if schedule == "hard" and self.name == "rtc":
            self.name = "rtc_hard"

    def guidance(self, n_real: int, d: int, s: int, horizon: int) -> Guidance:
        w = prefix_weights(d, s, horizon, self.schedule, n_real=n_real)
        return Guidance(w, min(d, horizon) if n_real > 0 else 0, self.beta)


class RTCLeRobotStrategy(RTCStrategy):
    """RTC as LeRobot runs it (its ``RTCProcessor``: Jacobian-free guidance), for the lerobot
    backend: the same request as ``rtc`` with the exp schedule (LeRobot's ``execution_horizon``
    is our soft region's end, ``H - s``), the policy runs the ``rtc_lerobot`` sampler with
    ``inference_delay = n_frozen = d``; merged like naive async."""

    name = "rtc_lerobot"
    sampler = "rtc_lerobot"

    def __init__(self) -> None:
        super().__init__("exp")


class RTCJFStrategy(RTCStrategy):
    """RTC with Jacobian-free guidance (``J = I``, as LeRobot computes it): the same request
    (prefix, soft-mask weights) answered by the ``rtc_jf`` sampler."""

    name = "rtc_jf"
    sampler = "rtc_jf"


class REMACCleanStrategy(NaiveStrategy):
    """REMAC, our clean-prefix reading (``remac_clean``): the prefix is the plan's remaining
    actions and its first ``n_frozen = d`` rows are held fixed at every integration step by the
    ``prefix`` sampler (noise elsewhere); merged like naive async."""

    name = "remac_clean"
    sampler = "prefix"

    def guidance(self, n_real: int, d: int, s: int, horizon: int) -> Guidance:
        if n_real == 0:
            return Guidance(np.zeros(horizon), 0)
        n = min(d, horizon)
        w = np.zeros(horizon)
        w[:n] = 1.0
        return Guidance(w, n)


class REMACStrategy(NaiveStrategy):
    """REMAC as its authors run it (hatchetProject/REMAC): the ``remac`` sampler starts from the
    plan's remaining actions followed by zeros (no noise), passes the mask ``k >= d`` to the
    network and clamps the first ``d`` rows after every step. The weights mark the rows of the
    prefix that hold real planned actions (1 for ``i < n_real``); merged like naive async."""

    name = "remac"
    sampler = "remac"

    def guidance(self, n_real: int, d: int, s: int, horizon: int) -> Guidance:
        w = np.zeros(horizon)
        n = min(n_real, horizon)
        w[:n] = 1.0
        return Guidance(w, min(d, n))


class BIDStrategy(NaiveStrategy):
    """Bidirectional decoding (Liu et al. 2024): the policy draws N candidates and keeps the one
    chosen by :func:`async_vla_ros.core.bid.bid_select`; the request's weights are the backward
    coherence weights ``rho ** i`` over the plan's real overlap (``i < n_real``), 0 after (the
    reference implementation's decay, default 0.99). Merged like naive async."""

    name = "bid"
    sampler = "bid"

    def __init__(self, rho: float = 0.99) -> None:
        if not (isinstance(rho, (int, float)) and 0.0 < rho <= 1.0):
            raise ValueError(f"bid: rho must be in (0, 1], got {rho!r}")
        self.rho = float(rho)

    def guidance(self, n_real: int, d: int, s: int, horizon: int) -> Guidance:
        w = np.zeros(horizon)
        n = min(n_real, horizon)
        w[:n] = self.rho ** np.arange(n)
        return Guidance(w, 0)


STRATEGIES: dict[str, tuple[type[MergeStrategy], dict[str, Any]]] = {
    "sync": (SyncStrategy, {}),
    "naive": (NaiveStrategy, {}),
    "te": (TemporalEnsembleStrategy, {}),
    "rtc": (RTCStrategy, {}),
    "rtc_hard": (RTCStrategy, {"schedule": "hard"}),
    "rtc_jf": (RTCJFStrategy, {}),
    "rtc_lerobot": (RTCLeRobotStrategy, {}),
    "remac": (REMACStrategy, {}),
    "remac_clean": (REMACCleanStrategy, {}),
    "bid": (BIDStrategy, {}),
}


def make_strategy(name: str, **kwargs: Any) -> MergeStrategy:
    """A fresh strategy by name; unknown names raise ``ValueError`` with a "did you mean"."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(str(name), list(STRATEGIES), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown merge strategy {name!r}{hint} (known: {', '.join(STRATEGIES)})")
    cls, defaults = STRATEGIES[name]
    merged = {**defaults, **kwargs}
    if name == "rtc_hard" and merged.get("schedule") != "hard":
        raise ValueError("rtc_hard always uses schedule='hard'; use 'rtc' for other schedules")
    try:
        return cls(**merged)
    except TypeError as exc:
        raise ValueError(f"bad options for strategy {name!r}: {exc}") from exc


def strategy_sampler(name: str) -> str:
    """The sampler the policy runs for merge strategy ``name`` (decided by the strategy alone)."""
    if name not in STRATEGIES:
        make_strategy(name)  # raises with a did-you-mean
    return STRATEGIES[name][0].sampler
