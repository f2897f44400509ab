"""Command sources for a 1 kHz robot backend, pure (no libfranka, no clock reads).

A *command source* is ticked by the backend once per command period with the number of periods
that passed (``advance(n)``, n > 1 after missed cycles) and returns the command to send:

* :class:`StreamingSession` -- the stack's plan: a core :class:`~async_vla_ros.core.scheduler.ChunkScheduler`
  stepped at the control rate, chunks from any :class:`~async_vla_ros.policy.base.ChunkPolicy`
  delivered after a simulated inference delay, streamed by a :class:`~.streamer.PlanStreamer`
  (interpolation + safety filter on every tick).
* :class:`TargetStream` -- targets handed in by a caller's own control loop through
  ``Robot.command`` (any thread), one knot per control step, streamed the same way.

Per control step ``t`` the session follows docs/architecture.md: chunks that have arrived
(requested at ``t_req``, available from ``t_req + d``) go to ``on_chunk``, then ``maybe_request``,
then ``action_at(t)`` becomes the knot of step ``t`` (None: hold). With ``cubic`` interpolation the
planned action of ``t + 1`` is passed as look-ahead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from async_vla_ros.core.chunk import Chunk
from async_vla_ros.core.delay import DelayConfig, DelayEstimator
from async_vla_ros.core.delivery import DelayedDelivery
from async_vla_ros.core.requests import infer_specs
from async_vla_ros.core.scheduler import ChunkScheduler, MergeResult, RequestSpec, SchedulerConfig
from async_vla_ros.core.strategies import STRATEGIES

from .streamer import CommandTick, PlanStreamer, StreamerConfig

__all__ = ["CommandSource", "SessionConfig", "StreamingSession", "TargetStream"]


class CommandSource(Protocol):
    """What a 1 kHz backend ticks."""

    def start(self, q_init: np.ndarray, gripper: float | None = None) -> None: ...

    def advance(self, n_ticks: int = 1) -> CommandTick: ...

    def resync(self, missed: int, robot=None) -> None:
        """The last command was never sent; the robot extrapolated ``missed`` cycles
        (:meth:`PlanStreamer.resync`; ``robot``: its differencing history after the last of them)."""

    def stop(self) -> None: ...

    def settled(self) -> bool: ...

    def stats(self) -> dict[str, Any]: ...


def _check_ticks(n_ticks: Any) -> int:
    if isinstance(n_ticks, bool) or not isinstance(n_ticks, (int, np.integer)) or n_ticks < 1:
        raise ValueError(f"n_ticks must be an int >= 1, got {n_ticks!r}")
    return int(n_ticks)


def _advance(streamer: PlanStreamer, n: int, on_step_start) -> CommandTick:
    """``n`` ticks (the filter runs on each); returns the last."""
    out = None
    for _ in range(n):
        if streamer.at_step_start:
            on_step_start()
        out = streamer.tick()
    return out


@dataclass(frozen=True)
class SessionConfig:
    """A streaming session: merge strategy, simulated delay, streaming."""

    strategy: str = "naive"  # merge strategy of core.strategies (sync naive te rtc rtc_hard remac bid)
    delay_steps: int = 2  # simulated inference delay d: a chunk requested at step t is usable from t + d
    delay_jitter: int = 0  # extra delay drawn uniformly from 0..delay_jitter steps per request (seeded)
    s_min: int = 1  # minimum execution horizon of the scheduler
    seed: int = 0  # seed of the delay jitter
    streamer: StreamerConfig = field(default_factory=StreamerConfig)  # interpolation + safety filter

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r} (known: {', '.join(STRATEGIES)})")
        for name in ("delay_steps", "delay_jitter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"SessionConfig.{name} must be an int >= 0, got {v!r}")
        if isinstance(self.s_min, bool) or not isinstance(self.s_min, int) or self.s_min < 1:
            raise ValueError(f"SessionConfig.s_min must be an int >= 1, got {self.s_min!r}")
        if not isinstance(self.streamer, StreamerConfig):
            raise TypeError("SessionConfig.streamer must be a StreamerConfig")


class StreamingSession:
    """ChunkScheduler + ChunkPolicy with simulated delay + PlanStreamer (module docstring).

    ``obs_fn(t) -> (obs_dim,)`` builds the policy observation of control step ``t``; the default
    is ``[t]`` (what :class:`~.stress.StressPolicy` expects).
    """

    def __init__(
        self, policy, config: SessionConfig | None = None, obs_fn: Callable[[int], np.ndarray] | None = None
    ) -> None:
        self.config = config or SessionConfig()
        for attr in ("horizon", "action_dim", "infer"):
            if not hasattr(policy, attr):
                raise TypeError(f"policy must be a ChunkPolicy (missing {attr!r})")
        if policy.action_dim not in (7, 8):
            raise ValueError(f"policy.action_dim must be 7 (joints) or 8 (joints + gripper), got {policy.action_dim}")
        self.policy = policy
        self.obs_fn = obs_fn or (lambda t: np.array([float(t)]))
        h = int(policy.horizon)
        if self.config.s_min > h:
            raise ValueError(f"s_min ({self.config.s_min}) > policy horizon ({h})")
        d_max = max(h - 1, 0)
        self.scheduler = ChunkScheduler(
            SchedulerConfig(horizon=h, action_dim=int(policy.action_dim), s_min=self.config.s_min),
            self.config.strategy,
            delay=DelayEstimator(DelayConfig(warmup=0, d_init=min(self.config.delay_steps, d_max), d_max=d_max)),
        )
        self.streamer = PlanStreamer(self.config.streamer)
        self._rng = np.random.default_rng(self.config.seed)
        self._started = False

    def start(self, q_init, gripper: float | None = None) -> None:
        """Begin at rest at the measured ``q_init (7,)``; the next tick is step 0's first."""
        self.streamer.reset(q_init, gripper, start_step=0)
        self.scheduler.reset(keep_delay_stats=True)
        self._link = DelayedDelivery(self.scheduler, self._delay, on_merge=self._record_merge)
        self.n_steps = 0
        self.n_ticks = 0
        self.merges: list[dict[str, Any]] = []
        self._started = True

    def _record_merge(self, chunk: Chunk, res: MergeResult, t: int) -> None:
        self.merges.append(
            {
                "t": t,
                "accepted": res.accepted,
                "reason": res.reason,
                "jump": res.boundary_jump,
                "measured_d": res.measured_d,
            }
        )

    def _delay(self, spec: RequestSpec) -> int:
        """Simulated delay of one chunk: ``delay_steps`` plus the seeded jitter."""
        d = self.config.delay_steps
        if self.config.delay_jitter:
            d += int(self._rng.integers(0, self.config.delay_jitter + 1))
        return d

    def _control_step(self, t: int) -> None:
        self._link.arrive(t)
        spec = self._link.request(t)
        if spec is not None:
            obs = np.asarray(self.obs_fn(t), dtype=np.float64).reshape(1, -1)
            acts = infer_specs(self.policy, obs, [spec], seed=spec.request_id)
            self._link.send(spec, acts[0], t)
        action = self.scheduler.action_at(t)
        self.streamer.set_knot(t, action)
        if self.config.streamer.interpolation == "cubic":
            nxt = self.scheduler.timeline.planned(t + 1)
            self.streamer.set_knot(t + 1, None if nxt is None else nxt.action)
        self.n_steps += 1

    def advance(self, n_ticks: int = 1) -> CommandTick:
        """Run ``n_ticks`` command ticks (control steps run as their first tick comes up);
        returns the last one (what to send now)."""
        if not self._started:
            raise RuntimeError("StreamingSession.start(q_init) must be called first")
        n = _check_ticks(n_ticks)
        out = _advance(self.streamer, n, lambda: self._control_step(self.streamer.step))
        self.n_ticks += n
        return out

    def resync(self, missed: int, robot=None) -> None:
        """The last command computed was never sent and the robot extrapolated ``missed`` cycles:
        continue from there (:meth:`PlanStreamer.resync`; control steps crossed still run)."""
        if not self._started:
            raise RuntimeError("StreamingSession.start(q_init) must be called first")
        self.streamer.resync(_check_ticks(missed), lambda: self._control_step(self.streamer.step), robot)
        self.n_ticks += int(missed) - 1

    def stop(self) -> None:
        """Stop following the plan: hold the last command; the filter brings the arm to rest."""
        self.streamer.freeze()

    def settled(self) -> bool:
        """At rest after :meth:`stop`."""
        return self.streamer.frozen and self.streamer.settled()

    def stats(self) -> dict[str, Any]:
        """Scheduler counters, filter interventions, steps and ticks run, largest switch jump."""
        jumps = [m["jump"] for m in getattr(self, "merges", []) if m["jump"] is not None]
        f = self.streamer.filter
        return {
            "strategy": self.config.strategy,
            "steps": getattr(self, "n_steps", 0),
            "ticks": getattr(self, "n_ticks", 0),
            "scheduler": self.scheduler.stats(),
            "filter": None if f is None else dict(f.counts),
            "max_switch_jump": max(jumps) if jumps else 0.0,
        }


class TargetStream:
    """Targets from a caller's control loop (``submit``, any thread), one knot per control step.

    At the start of each control step the latest target submitted since the previous step
    becomes that step's knot; with nothing new, the step holds the previous knot.
    """

    def __init__(self, config: StreamerConfig | None = None) -> None:
        self.streamer = PlanStreamer(config or StreamerConfig())
        self._lock = threading.Lock()
        self._latest: np.ndarray | None = None
        self._started = False
        self.n_submitted = 0
        self.n_used = 0

    def submit(self, q_target, gripper: float | None = None) -> None:
        """Target for the next control step: ``q_target (7,)`` rad, optional gripper width (m)."""
        q = np.array(q_target, dtype=np.float64, copy=True).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_target must be 7 finite joint positions, got {q_target!r}")
        if gripper is not None:
            g = float(gripper)
            if not np.isfinite(g):
                raise ValueError(f"gripper must be finite, got {gripper!r}")
            q = np.append(q, g)
        with self._lock:
            self._latest = q
            self.n_submitted += 1

    def start(self, q_init, gripper: float | None = None) -> None:
        self.streamer.reset(q_init, gripper, start_step=0)
        with self._lock:
            self._latest = None
        self._started = True

    def advance(self, n_ticks: int = 1) -> CommandTick:
        if not self._started:
            raise RuntimeError("TargetStream.start(q_init) must be called first")
        return _advance(self.streamer, _check_ticks(n_ticks), self._take_latest)

    def resync(self, missed: int, robot=None) -> None:
        if not self._started:
            raise RuntimeError("TargetStream.start(q_init) must be called first")
        self.streamer.resync(_check_ticks(missed), self._take_latest, robot)

    def _take_latest(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            self.n_used += 1
        self.streamer.set_knot(self.streamer.step, latest)

    def stop(self) -> None:
        self.streamer.freeze()

    def settled(self) -> bool:
        return self.streamer.frozen and self.streamer.settled()

    def stats(self) -> dict[str, Any]:
        f = self.streamer.filter
        return {"submitted": self.n_submitted, "used": self.n_used, "filter": None if f is None else dict(f.counts)}
