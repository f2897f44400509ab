"""Pure real-time chunking library: numpy only, no rclpy, no torch, clock injected.

Modules: ``clock`` (Clock, MonotonicClock, FakeClock, StepClock), ``cycle_timer`` (CycleTimer),
``chunk`` (Chunk), ``timeline`` (ActionTimeline), ``strategies`` (merge strategies,
``make_strategy``, ``prefix_weights``), ``bid`` (bid_scores, bid_select), ``delay``
(DelayEstimator), ``scheduler`` (ChunkScheduler), ``safety`` (SafetyFilter).
"""

from .bid import bid_scores, bid_select
from .chunk import Chunk, ChunkError
from .clock import Clock, FakeClock, MonotonicClock, StepClock
from .cycle_timer import CycleInfo, CycleTimer, TimerStats
from .delay import DelayConfig, DelayEstimator, latency_to_steps
from .safety import FR3_LIMITS, PANDA_LIMITS, JointLimits, SafetyConfig, SafetyFilter, SafetyFlags
from .scheduler import ChunkScheduler, MergeResult, RejectReason, RequestSpec, SchedulerConfig
from .strategies import SCHEDULES, STRATEGIES, MergeStrategy, make_strategy, prefix_weights
from .timeline import ActionTimeline, PlanEntry

__all__ = [
    "ActionTimeline",
    "Chunk",
    "ChunkError",
    "ChunkScheduler",
    "Clock",
    "CycleInfo",
    "CycleTimer",
    "DelayConfig",
    "DelayEstimator",
    "FR3_LIMITS",
    "JointLimits",
    "PANDA_LIMITS",
    "SafetyConfig",
    "SafetyFilter",
    "SafetyFlags",
    "FakeClock",
    "MergeResult",
    "MergeStrategy",
    "MonotonicClock",
    "PlanEntry",
    "RejectReason",
    "RequestSpec",
    "SCHEDULES",
    "STRATEGIES",
    "SchedulerConfig",
    "StepClock",
    "TimerStats",
    "bid_scores",
    "bid_select",
    "latency_to_steps",
    "make_strategy",
    "prefix_weights",
]
