"""The chunk scheduler: owns the action timeline, decides when to request the next chunk, what
the request carries, and how an arriving chunk is merged.

It is driven the same way by the lockstep benchmark (simulated steps) and by the scheduler node
(steps from :class:`~async_vla_ros.core.clock.StepClock`). Per control step ``t``:

1. ``on_chunk(chunk, t)`` for every chunk that has arrived (validated; rejects are counted by
   reason and reported in the returned :class:`MergeResult`);
2. ``maybe_request(t)`` -> :class:`RequestSpec` or None;
3. ``action_at(t)`` -> action ``(A,)`` or None (hold the last safe command).

With ``d = 0`` a requested chunk is usable in the same step: deliver it with ``on_chunk(chunk,
t)`` after ``maybe_request(t)`` and before ``action_at(t)``. A chunk that arrives after
``action_at(t)`` was already called is merged from step ``t + 1``.

Request policy (docs/architecture.md): ``s = max(d, s_min)`` (capped to what the current chunk
has planned); a request goes out when the current chunk has executed ``s - d`` of its actions,
so that the new chunk arrives when ``s`` have executed. Only one request is in flight; after
``request_timeout`` steps without an answer it is abandoned (its late answer is rejected as
``stale``) and a new one may go out. Nothing planned (start, or the plan ran dry): request now;
the chunk then starts at its own index 0.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .chunk import Chunk, ChunkError
from .delay import DelayEstimator
from .strategies import MergeStrategy, make_strategy
from .timeline import ActionTimeline

__all__ = ["SchedulerConfig", "RequestSpec", "MergeResult", "RejectReason", "ChunkScheduler"]


class RejectReason(enum.StrEnum):
    """Why an arriving chunk was dropped."""

    BAD_FIELD = "bad_field"  # ids / t_obs not valid ints
    BAD_SHAPE = "bad_shape"  # actions not (H, A)
    NON_FINITE = "non_finite"  # NaN / Inf in the actions
    DUPLICATE = "duplicate"  # chunk id seen before, or its request was already answered
    UNKNOWN_REQUEST = "unknown_request"  # answers a request id never issued
    STALE = "stale"  # answers a request abandoned after its timeout
    OUT_OF_ORDER = "out_of_order"  # older than the last accepted request
    T_OBS_MISMATCH = "t_obs_mismatch"  # t_obs differs from the request's
    EXPIRED = "expired"  # every action of it is already in the past


@dataclass(frozen=True)
class SchedulerConfig:
    """Static scheduler settings."""

    horizon: int  # H, actions per chunk
    action_dim: int  # A, size of one action
    s_min: int = 1  # minimum execution horizon (s = max(d, s_min))
    request_timeout: int | None = None  # steps before an unanswered request is abandoned (None: 4*H)
    history_len: int = 100_000  # executed steps kept in the timeline
    id_memory: int = 4096  # chunk / request ids remembered for duplicate detection

    def __post_init__(self) -> None:
        for name in ("horizon", "action_dim", "s_min", "history_len", "id_memory"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SchedulerConfig.{name} must be a positive int, got {v!r}")
        if self.s_min > self.horizon:
            raise ValueError(f"SchedulerConfig.s_min ({self.s_min}) > horizon ({self.horizon})")
        if self.request_timeout is not None and (
            isinstance(self.request_timeout, bool)
            or not isinstance(self.request_timeout, int)
            or self.request_timeout < 1
        ):
            raise ValueError(
                f"SchedulerConfig.request_timeout must be a positive int or None, got {self.request_timeout!r}"
            )

    @property
    def timeout_steps(self) -> int:
        """Effective request timeout in steps."""
        return self.request_timeout if self.request_timeout is not None else 4 * self.horizon


@dataclass(frozen=True, eq=False)
class RequestSpec:
    """What the policy must compute: a chunk from the observation of step ``t_obs``."""

    request_id: int
    t_obs: int  # observation step; the chunk's action k is for step t_obs + k
    d: int  # forecast delay (steps) used for this request
    s: int  # execution horizon of the current chunk
    sampler: str  # "vanilla" | "rtc" | "prefix" | "bid"
    prefix: np.ndarray  # (H, A): plan for steps t_obs + i, padded with the last planned action
    weights: np.ndarray  # (H,): guidance (rtc) / coherence (bid) weights, zeros otherwise
    n_frozen: int  # leading prefix rows the prefix sampler holds fixed
    n_real: int  # prefix rows that are planned actions (the rest is padding)
    strategy: str  # name of the merge strategy
    beta: float | None = None  # RTC guidance clip of this request (None: the policy's default)

    def __post_init__(self) -> None:
        for name in ("prefix", "weights"):
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)


@dataclass(frozen=True)
class MergeResult:
    """Outcome of ``on_chunk``."""

    accepted: bool
    reason: str | None  # a RejectReason value when rejected
    chunk_id: int | None
    request_id: int | None
    measured_d: int | None = None  # t_switch - t_obs, the delay actually experienced
    t_switch: int | None = None  # first step planned from this chunk
    k_start: int | None = None  # index of the chunk executed at t_switch
    boundary_jump: float | None = None  # ||new action at t_switch - last executed action||
    n_frozen: int = 0  # request weights == 1
    n_soft: int = 0  # request weights in (0, 1)
    n_free: int = 0  # request weights == 0


def _weight_counts(w: np.ndarray) -> tuple[int, int, int]:
    frozen = int(np.count_nonzero(w >= 1.0))
    free = int(np.count_nonzero(w <= 0.0))
    return frozen, len(w) - frozen - free, free


class ChunkScheduler:
    """Ties a merge strategy, the action timeline, the delay estimator and the request policy."""

    def __init__(
        self,
        config: SchedulerConfig,
        strategy: MergeStrategy | str = "naive",
        delay: DelayEstimator | None = None,
        **strategy_kwargs: Any,
    ) -> None:
        if not isinstance(config, SchedulerConfig):
            raise TypeError("config must be a SchedulerConfig")
        self.config = config
        if isinstance(strategy, str):
            strategy = make_strategy(strategy, **strategy_kwargs)
        elif strategy_kwargs:
            raise ValueError("strategy options are only accepted together with a strategy name")
        if not isinstance(strategy, MergeStrategy):
            raise TypeError(f"strategy must be a MergeStrategy or a name, got {type(strategy).__name__}")
        self.strategy = strategy
        self.delay = delay if delay is not None else DelayEstimator()
        self.timeline = ActionTimeline(config.action_dim, history_len=config.history_len)
        self.reject_counts: Counter[str] = Counter()
        # counters and request ids run across episodes (a late chunk from a previous episode
        # answers an id that is no longer in flight and is rejected)
        self._next_request_id = 0
        self.n_requests = 0
        self.n_accepted = 0
        self.n_timeouts = 0
        self.n_unanswerable = 0
        self.n_holds = 0
        self.reset(keep_delay_stats=True)

    # ------------------------------------------------------------------ lifecycle
    def reset(self, keep_delay_stats: bool = True) -> None:
        """Start a new episode: empty plan, no request in flight, step counter restarts (the
        next call may use any step, e.g. 0 again); counters and the delay window are kept
        unless ``keep_delay_stats=False``."""
        self.timeline.clear()
        self.strategy.reset()
        if not keep_delay_stats:
            self.delay.reset()
        self._outstanding: RequestSpec | None = None
        self._issued: OrderedDict[int, RequestSpec] = OrderedDict()
        self._answered: set[int] = set()
        self._abandoned: set[int] = set()
        self._seen_chunks: OrderedDict[int, None] = OrderedDict()
        self._last_accepted_request: int | None = None
        self._t_start: int | None = None  # step the current chunk started executing
        self._k_start: int | None = None
        self._t_now: int | None = None
        self._last_exec_t: int | None = None

    # ------------------------------------------------------------------ helpers
    def _advance(self, t: int) -> None:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"step must be an int, got {type(t).__name__}")
        if self._t_now is not None and t < self._t_now:
            raise ValueError(f"time went backwards: step {t} after step {self._t_now}")
        self._t_now = int(t)

    def _reject(self, reason: RejectReason, chunk_id: int | None, request_id: int | None) -> MergeResult:
        self.reject_counts[reason.value] += 1
        return MergeResult(False, reason.value, chunk_id, request_id)

    def _remember(self, store: OrderedDict, key: int) -> None:
        store[key] = None
        while len(store) > self.config.id_memory:
            store.popitem(last=False)

    @property
    def outstanding(self) -> RequestSpec | None:
        """The request in flight, if any."""
        return self._outstanding

    # ------------------------------------------------------------------ 1. arrivals
    def on_message(
        self, chunk_id: Any, request_id: Any, t_obs: Any, actions: Any, t_now: int, latency_s: float | None = None
    ) -> MergeResult:
        """Like :meth:`on_chunk` for raw fields (a node's message): construction errors become
        rejects with their reason instead of exceptions."""
        try:
            chunk = Chunk(chunk_id, request_id, t_obs, actions, latency_s)
        except ChunkError as exc:
            self._advance(t_now)
            reason = RejectReason(exc.reason)
            cid = chunk_id if isinstance(chunk_id, int) else None
            rid = request_id if isinstance(request_id, int) else None
            return self._reject(reason, cid, rid)
        return self.on_chunk(chunk, t_now)

    def on_chunk(self, chunk: Chunk, t_now: int) -> MergeResult:
        """Validate and merge a chunk that is available at step ``t_now``."""
        if not isinstance(chunk, Chunk):
            raise TypeError(f"on_chunk expects a Chunk, got {type(chunk).__name__} (use on_message for raw fields)")
        self._advance(t_now)
        cid, rid = chunk.chunk_id, chunk.request_id
        h, a = self.config.horizon, self.config.action_dim
        if chunk.actions.shape != (h, a):
            return self._reject(RejectReason.BAD_SHAPE, cid, rid)
        if not np.all(np.isfinite(chunk.actions)):
            return self._reject(RejectReason.NON_FINITE, cid, rid)
        if cid in self._seen_chunks:
            return self._reject(RejectReason.DUPLICATE, cid, rid)
        self._remember(self._seen_chunks, cid)
        spec = self._issued.get(rid)
        if spec is None:
            if (
                rid < self._next_request_id
                and self._last_accepted_request is not None
                and rid < self._last_accepted_request
            ):
                return self._reject(RejectReason.OUT_OF_ORDER, cid, rid)
            return self._reject(RejectReason.UNKNOWN_REQUEST, cid, rid)
        if rid in self._answered:
            return self._reject(RejectReason.DUPLICATE, cid, rid)
        if self._last_accepted_request is not None and rid < self._last_accepted_request:
            return self._reject(RejectReason.OUT_OF_ORDER, cid, rid)
        if rid in self._abandoned:
            return self._reject(RejectReason.STALE, cid, rid)
        if chunk.t_obs != spec.t_obs:
            return self._reject(RejectReason.T_OBS_MISMATCH, cid, rid)
        # a step already handed to the robot cannot change: merge from the next one
        t_switch = t_now if self._last_exec_t is None else max(t_now, self._last_exec_t + 1)
        plan_dry = self.timeline.is_standstill(t_switch)
        anchor = self.strategy.anchor(chunk, t_switch, plan_dry)
        k0 = t_switch - anchor
        if k0 >= h:
            self._answered.add(rid)
            if self._outstanding is not None and self._outstanding.request_id == rid:
                self._outstanding = None
            return self._reject(RejectReason.EXPIRED, cid, rid)
        measured_d = t_switch - chunk.t_obs
        self.delay.observe_steps(measured_d)
        last = self.timeline.last_executed()
        self.strategy.merge(self.timeline, chunk, t_switch, anchor, spec.s)
        new = self.timeline.planned(t_switch)
        jump = None
        if last is not None and new is not None:
            jump = float(np.linalg.norm(new.action - last.action))
        self._answered.add(rid)
        if self._outstanding is not None and self._outstanding.request_id == rid:
            self._outstanding = None
        self._last_accepted_request = rid
        self._t_start, self._k_start = t_switch, k0
        self.n_accepted += 1
        nf, ns, nfree = _weight_counts(spec.weights)
        return MergeResult(True, None, cid, rid, measured_d, t_switch, k0, jump, nf, ns, nfree)

    # ------------------------------------------------------------------ 2. requests
    def maybe_request(self, t: int, ahead: int = 0) -> RequestSpec | None:
        """Issue the next request if the request policy says so (at most one in flight).

        ``ahead`` > 0 issues now, at step ``t``, the request that step ``t + ahead`` would issue
        (``t_obs = t + ahead``: the chunk is still conditioned on that step's observation, which
        does not exist yet). What a request carries depends only on the plan from ``t_obs`` on and
        the delay forecast, which nothing but a chunk's arrival changes, and no chunk can arrive
        while no request is in flight: sent one step early, the request is the one step
        ``t + ahead`` would send, and the policy can start the moment that observation arrives
        instead of waiting for the request's round trip (``nodes/scheduler_node.py``,
        ``request_ahead``)."""
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self._advance(t)
        if self._outstanding is not None:
            if t - self._outstanding.t_obs >= self.config.timeout_steps:
                self._abandoned.add(self._outstanding.request_id)
                self._outstanding = None
                self.n_timeouts += 1
            else:
                return None
        t = t + ahead
        h = self.config.horizon
        d = min(self.delay.forecast(), h)
        s = self.strategy.execution_horizon(d, self.config.s_min, h)
        if self.timeline.planned(t) is not None and self._t_start is not None:
            executed = t - self._t_start
            planned_len = executed + self.timeline.contiguous_from(t)
            s_eff = max(1, min(s, planned_len))
            if executed < s_eff - self.strategy.request_lead(d):
                return None
            s = s_eff
        return self._issue(t, d, s)

    def _issue(self, t: int, d: int, s: int) -> RequestSpec:
        h = self.config.horizon
        y, n_real = self.timeline.prefix(t, h)
        g = self.strategy.guidance(n_real, d, s, h)
        spec = RequestSpec(
            request_id=self._next_request_id,
            t_obs=t,
            d=d,
            s=s,
            sampler=self.strategy.sampler,
            prefix=y,
            weights=g.weights,
            n_frozen=g.n_frozen,
            n_real=n_real,
            strategy=self.strategy.name,
            beta=g.beta,
        )
        self._next_request_id += 1
        self._issued[spec.request_id] = spec
        while len(self._issued) > self.config.id_memory:
            self._issued.popitem(last=False)
        self._outstanding = spec
        self.n_requests += 1
        return spec

    def unanswerable(self, request_id: int) -> bool:
        """The policy answered request ``request_id`` with an error that no waiting can mend (its
        observation never came): when it is the one in flight it is abandoned now instead of at
        the timeout, so the next step can request again. Returns whether it was in flight."""
        if self._outstanding is None or self._outstanding.request_id != request_id:
            return False
        self._abandoned.add(request_id)
        self._outstanding = None
        self.n_unanswerable += 1
        return True

    # ------------------------------------------------------------------ 3. execution
    def action_at(self, t: int) -> np.ndarray | None:
        """The action for step ``t`` (a copy), or None: nothing planned, hold the last command."""
        self._advance(t)
        entry = self.timeline.execute(t)
        if self._last_exec_t != t:
            self._last_exec_t = t
            if entry is None:
                self.n_holds += 1
        self.timeline.prune_before(t)
        return None if entry is None else entry.action

    # ------------------------------------------------------------------ report
    def stats(self) -> dict[str, Any]:
        """Counters: requests, accepted, rejects by reason, timeouts, hold steps, delay samples."""
        return {
            "requests": self.n_requests,
            "accepted": self.n_accepted,
            "rejected": dict(self.reject_counts),
            "timeouts": self.n_timeouts,
            "unanswerable": self.n_unanswerable,
            "hold_steps": self.n_holds,
            "delay_forecast": self.delay.forecast(),
            "delay_samples": self.delay.samples,
            "strategy": self.strategy.name,
        }
