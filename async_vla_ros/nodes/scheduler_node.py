"""scheduler node: the core :class:`~async_vla_ros.core.scheduler.ChunkScheduler` on the ROS clock.

Owns the action timeline and the merge strategy (``method``: sync | naive | te | rtc | rtc_hard |
remac | bid). Control steps come from the node's ROS clock (``t = floor((now - t0) / dt)``: the
clock that stamps every message, so steps and stamps agree across processes); with
``align_to_observations`` the grid is phase-locked to the observation stamps at the start of each
episode, so an observation marks the start of its step.

* ``/observation`` (one per control step): its step ``t_obs`` (stamp rounded to the grid) ->
  ``maybe_request(t_obs)``; a request (prefix Y, weights W, d, s, n_frozen from the core) names
  that observation's ``obs_id``, so the chunk's action k is for step ``t_obs + k`` exactly as in
  the lockstep runner. With ``request_ahead`` (default) the request is sent one step early:
  observation ``t`` also asks the core for the request step ``t + 1`` would issue
  (``maybe_request(t, ahead=1)``: the same request, since nothing but a chunk changes it and none
  is in flight), naming the next observation's id with ``obs_after`` = observation t's stamp, so the policy
  starts the model the moment that observation arrives instead of waiting for the request's round
  trip (one DDS hop less between observation and chunk). At most one request per observation
  (:mod:`async_vla_ros.core.ahead` says which observation a request is for). A new episode id resets the scheduler (delay statistics kept); an older one
  is dropped, unless ``rewind_after`` of them arrive in a row (a restarted source, or a
  bad message that carried a huge id: :mod:`async_vla_ros.core.sequence`).
* timer at ``dt``: ``action_at`` for every step up to now (the executed history), then the plan
  from the current step on -> ``/scheduler/action_plan``.
* ``/policy/action_chunk``: validated at the edge (action names; the observation id and stamp of
  the request it answers: a future or stale stamp is rejected), then merged at once
  (``on_message`` at the current core step; the core
  merges from the next step when the current one was already handed out), the plan republished,
  and a ``/scheduler/chunk_report`` published (measured latency split, predicted vs measured d);
  /diagnostics has ``merge_median_s`` / ``_p95_s`` / ``_p99_s`` (an accepted chunk's arrival -> its
  plan published).

In one process with the policy node (``policy_container``) its chunks come in by a call
(:meth:`take_chunk`, on the policy's worker thread, under the lock every callback here takes; their
copies from the topic are skipped, other publishers' are not). It never blocks: nothing here waits for inference. Ids on the wire start at 1
(``ChunkRequest.request_id``); the core counts from 0: request ``r`` on the wire is core request
``r - 1``.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from async_vla_msgs.msg import ActionChunk, ActionPlan, ChunkReport, ChunkRequest, Observation
from async_vla_ros import names as N
from async_vla_ros.core.ahead import AheadRequests
from async_vla_ros.core.clock import StepClock
from async_vla_ros.core.delay import DelayConfig, DelayEstimator
from async_vla_ros.core.scheduler import ChunkScheduler, SchedulerConfig
from async_vla_ros.core.sequence import SeqEvent, SequenceTracker
from async_vla_ros.core.strategies import SCHEDULES, STRATEGIES
from async_vla_ros.nodes.common import NS_PER_S, DropCounter, EchoFilter, RosClock, ns_to_stamp, run_node, stamp_to_ns
from async_vla_ros.nodes.health import Threshold
from async_vla_ros.nodes.metrics import Telemetry, quantile_values, telemetry_params
from async_vla_ros.nodes.params import Param, declare_params

NODE_NAME = "scheduler"
DEFAULT_ACTION_NAMES = list(N.ACTION_NAMES)
# /diagnostics levels (limits: parameters diag.<key>.warn / .error; docs/observability.md)
THRESHOLDS = (
    Threshold("latency_p95_s", 0.25, 0.5, description="observation -> chunk available, p95 of the last 200 chunks"),
    Threshold(
        "delay_underestimated_fraction",
        0.25,
        0.5,
        description="share of the last 100 merged chunks whose measured d exceeded the forecast d",
    ),
    Threshold("hold_steps_per_s", 1.0, 5.0, description="control steps per s with nothing planned (robot holds)"),
    Threshold("timeouts_per_s", 0.1, 1.0, description="requests abandoned unanswered per s"),
    Threshold("dropped_inputs_per_s", 1.0, 10.0, description="inputs dropped per s (all reasons but no_policy)"),
)

PARAMS = (
    Param(
        "strategy", "rtc", "merge strategy (it decides the sampler it asks the policy for)", choices=tuple(STRATEGIES)
    ),
    Param("rtc_schedule", "exp", "RTC soft-mask schedule (strategies rtc, rtc_jf)", choices=SCHEDULES),
    Param("te_m", 0.01, "temporal ensembling weight decay m (method te)", min=0.0, max=10.0),
    Param("bid_rho", 0.99, "BID backward-coherence decay (method bid)", min=1e-6, max=1.0),
    Param("dt", 0.05, "control period: time between consecutive actions (s)", min=0.001, max=1.0),
    Param("horizon", 8, "H: actions per chunk", min=1, max=256),
    Param("action_dim", 8, "A: size of one action", min=1, max=64),
    Param("s_min", 1, "minimum execution horizon (s = max(d, s_min))", min=1, max=256),
    Param(
        "request_timeout_steps", 0, "abandon an unanswered request after this many steps (0: 2*H)", min=0, max=100000
    ),
    Param("delay_window", 20, "delay forecast: number of recent measured delays", min=1, max=10000),
    Param("delay_quantile", 1.0, "delay forecast: quantile of the window (1: max)", min=0.0, max=1.0),
    Param("delay_warmup", 1, "delay forecast: first samples ignored", min=0, max=1000),
    Param("d_init", 0, "delay forecast before any sample (steps)", min=0, max=256),
    Param("d_max", -1, "upper clamp of the forecast (steps; -1: H - 1)", min=-1, max=256),
    Param(
        "guidance_beta", 0.0, "RTC guidance clip sent with requests (<= 0: the policy's default)", min=0.0, max=100.0
    ),
    Param("action_names", DEFAULT_ACTION_NAMES, "names of the A action dimensions"),
    Param("align_to_observations", True, "phase-lock the step grid to observation stamps (each new episode)"),
    Param(
        "rewind_after",
        10,
        "follow an older episode id after this many in a row (its sender restarted, or a "
        "bad message carried a huge id; core/sequence.py)",
        min=1,
        max=100000,
    ),
    Param(
        "request_ahead",
        True,
        "send each request one control step before its observation (ChunkRequest.obs_after): the policy "
        "starts on the observation without waiting for the request",
    ),
    Param(
        "max_future_s",
        0.2,
        "drop observations stamped further in the future than this (a clock jumped)",
        min=0.0,
        max=60.0,
    ),
    *telemetry_params(THRESHOLDS),
)


class SchedulerNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        H, A = p["horizon"], p["action_dim"]
        if len(p["action_names"]) != A:
            raise ValueError(f"action_names has {len(p['action_names'])} names, action_dim is {A}")
        if p["s_min"] > H:
            raise ValueError(f"s_min ({p['s_min']}) must be <= horizon ({H})")
        kw = {}
        if p["strategy"] in ("rtc", "rtc_jf"):
            kw["schedule"] = p["rtc_schedule"]
            if p["guidance_beta"] > 0:  # travels with every request (RequestSpec.beta)
                kw["beta"] = p["guidance_beta"]
        elif p["strategy"] == "te":
            kw["m"] = p["te_m"]
        elif p["strategy"] == "bid":
            kw["rho"] = p["bid_rho"]
        d_max = H - 1 if p["d_max"] < 0 else p["d_max"]
        delay = DelayEstimator(
            DelayConfig(
                window=p["delay_window"],
                quantile=p["delay_quantile"],
                warmup=p["delay_warmup"],
                d_init=min(p["d_init"], d_max),
                d_max=d_max,
            ),
            dt=p["dt"],
        )
        timeout = p["request_timeout_steps"] or 2 * H
        self.sched = ChunkScheduler(
            SchedulerConfig(horizon=H, action_dim=A, s_min=p["s_min"], request_timeout=timeout),
            p["strategy"],
            delay,
            **kw,
        )
        self.H, self.A = H, A
        self.clock = RosClock(self)
        self.steps = StepClock(self.clock, p["dt"])
        self.drops = DropCounter(self.get_logger())
        self.episodes = SequenceTracker("episode", p["rewind_after"], repeats_ok=True)
        self._aligned = False
        self._ahead = AheadRequests()  # which observation a request is for (core/ahead.py)
        self._last_t: int | None = None  # last step recorded as executed (action_at)
        self._core_t: int | None = None  # latest step handed to the core (never goes back)
        # core request id -> (t_obs, request_ns, d, obs_id, obs_stamp_ns, ahead); a request sent ahead
        # has obs_stamp_ns = the stamp of the observation before its own (obs_after)
        self._requests: dict[int, tuple[int, int, int, int, int, bool]] = {}
        self.plan_id = 0
        self.n_reports = 0
        self.arrivals: deque[tuple[int, float, float, int]] = deque(maxlen=200)  # (arrival_ns, total, overhead, d)
        self.delay_errors: deque[int] = deque(maxlen=100)  # measured - forecast d of merged chunks (steps)
        self.merges: deque[float] = deque(maxlen=400)  # accepted chunk's arrival -> its plan published (s)
        group = MutuallyExclusiveCallbackGroup()  # scheduler state is touched only from this group
        self.pub_req = self.create_publisher(ChunkRequest, N.CHUNK_REQUEST, 10)
        self.pub_plan = self.create_publisher(ActionPlan, N.ACTION_PLAN, 10)
        # Deep queues for chunks and their reports: a burst (rogue or after a stall) must reach the
        # validation and the monitors, not be overwritten in a depth-10 DDS history first.
        self.pub_report = self.create_publisher(ChunkReport, N.CHUNK_REPORT, 100)
        self.create_subscription(ActionChunk, N.ACTION_CHUNK, self._on_topic_chunk, 100, callback_group=group)
        # chunks of a policy node in this process (policy_container) come in on its worker thread
        # (take_chunk; rclpy's EventsExecutor has no guard conditions to move them onto the
        # executor): the scheduler's state is then guarded by this lock, taken by every callback
        # that touches it; their copies from the topic are skipped
        self._lock = threading.RLock()
        # chunk ids taken in process whose published copy has not come back yet (skipped once: a
        # second copy, e.g. a rogue re-send, is taken and checked like any other chunk)
        self.echoes = EchoFilter(256)
        self.create_subscription(
            Observation, N.OBSERVATION, self._locked(self._on_observation), 10, callback_group=group
        )
        self.create_timer(p["dt"], self._locked_tick, callback_group=group)
        self.diag = Telemetry(
            self,
            self._locked(self._diag_values),
            THRESHOLDS,
            p,
            rate_keys=("dropped_inputs", "hold_steps", "timeouts"),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    # ------------------------------------------------------------------ time
    def _core_step(self) -> int:
        """The step the core is at: the last ticked one. A chunk arriving after the tick of step
        t is merged from step t + 1 by the core (step t was already handed out), which is the
        current step unless the timer runs late; the core's steps never go backwards."""
        if self._core_t is not None:
            return self._core_t
        return self._last_t if self._last_t is not None else self.steps.step()

    # ------------------------------------------------------------------ inputs (edge)
    def _on_observation(self, msg: Observation) -> None:
        eid = int(msg.episode_id)
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp <= 0:
            return self.drops.drop("observation.no_stamp", "observation without a header stamp")
        if stamp > self.clock.now_ns() + self.p["max_future_s"] * NS_PER_S:
            # a clock jumped ahead: its step would move the whole timeline into the future
            return self.drops.drop(
                "observation.future_stamp",
                f"observation {msg.obs_id} stamped {(stamp - self.clock.now_ns()) / 1e9:.3f} s in the future",
            )
        episode = self.episodes.update(eid)  # core/sequence.py: new, same, stale, or rewound
        if episode.kind is SeqEvent.STALE:
            return self.drops.drop("observation.old_episode", episode.describe())
        if episode.kind is SeqEvent.REWIND:
            self.get_logger().warning(episode.describe())
        if episode.starts_new or not self._aligned:
            self._new_episode(stamp, announce=episode.starts_new)
        # an observation marks the start of its control step (rounded: stamps jitter around it)
        t_obs = (stamp - self.steps.t0_ns + self.steps.dt_ns // 2) // self.steps.dt_ns
        if self._last_t is not None and t_obs < self._last_t:
            self.drops.drop("observation.late", f"observation of step {t_obs} arrived in step {self._last_t}")
            t_obs = self._last_t  # late: request from it anyway, its chunk is aligned one step late
        self._execute_until(t_obs - 1)
        self._core_t = max(t_obs, self._core_t if self._core_t is not None else t_obs)
        needs_request = self._ahead.observed(t_obs, stamp, int(msg.obs_id))
        if self.pub_req.get_subscription_count() == 0:
            return self.drops.drop("no_policy", "no policy node subscribes to the requests yet")
        # at most one request per observation: one sent ahead for this observation was its request
        spec = self.sched.maybe_request(self._core_t) if needs_request else None
        if spec is not None:
            self._send_request(spec, int(msg.obs_id), stamp)
        else:
            self._request_ahead()

    def _request_ahead(self) -> None:
        """``request_ahead``: send now the request the next step's observation would send, if any
        (after an observation that sent none, and after a chunk freed the request slot)."""
        if not self.p["request_ahead"] or self._core_t is None or self.pub_req.get_subscription_count() == 0:
            return
        # None: no observation yet, the next one has its request already (its chunk came back, in
        # process, before this node took it), or the stream paused (core/ahead.py)
        target = self._ahead.next_target(self._core_t)
        if target is None:
            return
        spec = self.sched.maybe_request(self._core_t, ahead=target.ahead)
        if spec is not None:
            self._ahead.named(target.obs_id)
            self._send_request(spec, target.obs_id, target.after_stamp, ahead=True)

    @property
    def episode_id(self) -> int:
        return self.episodes.current

    def _new_episode(self, stamp: int, announce: bool) -> None:
        if announce:
            self.get_logger().info(f"episode {self.episode_id}: scheduler reset (delay statistics kept)")
        self.sched.reset(keep_delay_stats=True)
        self._requests.clear()
        if self.p["align_to_observations"]:
            # phase-lock the step grid to the observations: this one starts a step
            k = self.steps.step(stamp)
            self.steps = StepClock(self.clock, self.p["dt"], t0_ns=stamp - k * self.steps.dt_ns)
            self._last_t = None  # the core restarts its step bookkeeping after reset()
            self._core_t = None
        self._aligned = True
        if self._last_t is not None:
            self._publish_plan(self._last_t)

    def _locked(self, callback):
        """``callback`` under the scheduler's lock (subscriptions: one message; Telemetry: none)."""

        def run(*args):
            with self._lock:
                return callback(*args)

        return run

    def _locked_tick(self) -> None:  # (no arguments: rclpy hands a timer info to callbacks that take one)
        with self._lock:
            self._tick()

    def take_chunk(self, msg: ActionChunk) -> None:
        """A chunk from a policy node in this process, on the caller's thread (its copy from the
        topic is skipped)."""
        with self._lock:
            self.echoes.taken(int(msg.chunk_id))
            self._on_chunk(msg)

    def _on_topic_chunk(self, msg: ActionChunk) -> None:
        with self._lock:
            if self.echoes.is_echo(int(msg.chunk_id)):
                return  # the published copy of a chunk taken in process
            self._on_chunk(msg)

    def _on_chunk(self, msg: ActionChunk) -> None:
        arrival = self.clock.now_ns()
        if msg.episode_id != self.episode_id:
            return self.drops.drop("chunk.other_episode", f"chunk of episode {msg.episode_id}, now {self.episode_id}")
        if msg.error_code != ActionChunk.ERROR_NONE:
            self.drops.drop(f"chunk.error_{msg.error_code}", msg.error_message)
            if msg.error_code == ActionChunk.ERROR_NO_OBSERVATION and msg.request_id > 0:
                # its observation never came (dropped, late, or the stream paused): the next
                # observation requests again, with its own id (not ahead: a paused stream would
                # otherwise be answered with one such error per step), rather than hold until the timeout
                self.sched.unanswerable(int(msg.request_id) - 1)
            return self._report(msg, arrival, None, None, "error")
        if msg.request_id == 0:
            return self.drops.drop("chunk.bad_request_id", "request_id 0")
        rid = int(msg.request_id) - 1
        info = self._requests.get(rid)
        if list(msg.action_names) != list(self.p["action_names"]):
            self.drops.drop(
                "chunk.bad_action_names",
                f"chunk {msg.chunk_id} names {list(msg.action_names)}, expected {list(self.p['action_names'])}",
            )
            return self._report(msg, arrival, None, info, "bad_action_names")
        if info is not None and not self._answers(msg, info, arrival):
            # a chunk answers a request from the observation the request named (sent ahead: from
            # the observation of its step): its stamp is that observation's stamp; anything else
            # (future / stale stamp) is not that answer
            named = f"obs {info[3]} stamped after {info[4]}" if info[5] else f"obs {info[3]} stamped {info[4]}"
            self.drops.drop(
                "chunk.stamp_mismatch",
                f"chunk {msg.chunk_id}: obs {msg.obs_id} stamped "
                f"{stamp_to_ns(msg.header.stamp)}, request {msg.request_id} named {named}",
            )
            return self._report(msg, arrival, None, info, "stamp_mismatch")
        if info is not None and info[0] > self._core_step():
            # the chunk of a request sent ahead, back before this node took its observation (the
            # policy in this process answered within the step): the clock is past that observation's
            # step, so the core moves there first, as the observation would have moved it
            self._execute_until(info[0] - 1)
            self._core_t = info[0]
        t_now = self._core_step()
        actions = np.asarray(msg.actions, dtype=np.float64)
        if actions.size == self.H * self.A and msg.horizon == self.H and msg.action_dim == self.A:
            actions = actions.reshape(self.H, self.A)
        t_obs = info[0] if info is not None else -1
        latency = max(0.0, (arrival - stamp_to_ns(msg.header.stamp)) / NS_PER_S)
        result = self.sched.on_message(int(msg.chunk_id), rid, t_obs, actions, t_now, latency)
        if not result.accepted:
            self.drops.drop(f"chunk.{result.reason}", f"chunk {msg.chunk_id} for request {msg.request_id}")
        self._report(msg, arrival, result, info, result.reason or "")
        if result.accepted:
            self._publish_plan(t_now)
            self.merges.append((self.clock.now_ns() - arrival) / NS_PER_S)
            self._request_ahead()

    def _answers(self, msg: ActionChunk, info: tuple, arrival: int) -> bool:
        """Whether the chunk's observation (id, stamp) is the one its request named."""
        stamp = stamp_to_ns(msg.header.stamp)
        if info[5]:  # sent ahead: the named observation, stamped after the one before it, not in the future
            return int(msg.obs_id) == info[3] and info[4] < stamp <= arrival
        return int(msg.obs_id) == info[3] and stamp == info[4]

    # ------------------------------------------------------------------ per step
    def _execute_until(self, t: int) -> None:
        """Record steps ``last_t + 1 .. t`` as executed (``action_at``), keeping the history whole
        when a timer tick comes late."""
        start = t if self._last_t is None else self._last_t + 1
        for step in range(start, t + 1):
            self.sched.action_at(step)
        if self._last_t is None or t > self._last_t:
            self._last_t = t
        if self._core_t is None or t > self._core_t:
            self._core_t = t

    def _tick(self) -> None:
        if not self._aligned:
            return  # no observation yet: nothing to plan
        t = self.steps.step()
        if self._last_t is not None and t <= self._last_t:
            return
        self._execute_until(t)
        self._publish_plan(t)

    def _send_request(self, spec, obs_id: int, obs_ns: int, ahead: bool = False) -> None:
        """``ahead``: sent before its observation ``obs_id``; ``obs_ns`` is then the stamp of the
        observation before it (``ChunkRequest.obs_after``)."""
        now = self.clock.now_ns()
        msg = ChunkRequest()
        msg.header.stamp = ns_to_stamp(now)
        msg.request_id = spec.request_id + 1
        msg.episode_id = self.episode_id
        msg.obs_id = obs_id  # the observation of step t_obs (sent ahead: not sent yet)
        if ahead:
            msg.obs_after = ns_to_stamp(obs_ns)
        msg.sampler = spec.sampler
        msg.horizon = self.H
        msg.action_dim = self.A
        msg.dt = self.p["dt"]
        msg.delay_steps = int(spec.d)
        msg.execution_horizon = int(spec.s)
        msg.n_frozen = int(spec.n_frozen)
        if spec.n_real > 0:  # nothing planned (first chunk): no prefix, no guidance
            msg.prefix = spec.prefix.reshape(-1).tolist()
            msg.weights = spec.weights.tolist()
        msg.guidance_beta = 0.0 if spec.beta is None else float(spec.beta)  # 0: the policy's default
        msg.seed = -1
        self._requests[spec.request_id] = (spec.t_obs, now, int(spec.d), obs_id, obs_ns, ahead)
        for old in [r for r in self._requests if r < spec.request_id - 64]:
            del self._requests[old]
        self.pub_req.publish(msg)

    # ------------------------------------------------------------------ output
    def _publish_plan(self, t: int) -> None:
        tl = self.sched.timeline
        acts = tl.remaining(t)
        n = acts.shape[0]
        cids = np.zeros(n, dtype=np.int64)
        ks = np.zeros(n, dtype=np.int64)
        for i in range(n):
            e = tl.planned(t + i)
            cids[i], ks[i] = e.chunk_id, e.k
        self.plan_id += 1
        msg = ActionPlan()
        msg.header.stamp = ns_to_stamp(self.steps.step_start_ns(t))
        msg.plan_id = self.plan_id
        msg.episode_id = self.episode_id
        msg.step = int(t)
        msg.merge_strategy = self.sched.strategy.name
        msg.dt = self.p["dt"]
        msg.length = n
        msg.action_dim = self.A
        msg.action_names = list(self.p["action_names"])
        msg.actions = acts.reshape(-1).tolist()
        msg.chunk_ids = [int(c) for c in cids]
        msg.chunk_index = [int(k) for k in ks]
        msg.horizon = self.H
        self.pub_plan.publish(msg)

    def _report(self, msg: ActionChunk, arrival: int, result, info, reason: str) -> None:
        tm = msg.timing
        obs_ns = stamp_to_ns(msg.header.stamp) if msg.error_code == ActionChunk.ERROR_NONE else 0
        r = ChunkReport()
        r.header.stamp = ns_to_stamp(arrival)
        r.chunk_id = msg.chunk_id
        r.request_id = msg.request_id
        r.sampler = msg.sampler
        r.merge_strategy = self.sched.strategy.name
        r.accepted = bool(result is not None and result.accepted)
        r.reject_reason = "" if r.accepted else reason
        request_ns = info[1] if info is not None else stamp_to_ns(tm.request_stamp)
        end_ns = stamp_to_ns(tm.inference_end)
        if info is not None and info[5]:
            r.obs_age_s = 0.0  # sent ahead: the request waited for its observation, not the other way round
        else:
            r.obs_age_s = (request_ns - obs_ns) / NS_PER_S if obs_ns and request_ns else -1.0
        received_ns = stamp_to_ns(tm.received_stamp)
        r.request_transport_s = (received_ns - request_ns) / NS_PER_S if received_ns and request_ns else -1.0
        r.inference_s = tm.inference_s if msg.error_code == ActionChunk.ERROR_NONE else -1.0
        r.network_s = tm.network_s if msg.error_code == ActionChunk.ERROR_NONE else -1.0
        r.queue_s = tm.queue_s if msg.error_code == ActionChunk.ERROR_NONE else -1.0
        r.injected_delay_s = tm.injected_delay_s
        r.transport_s = (arrival - end_ns) / NS_PER_S - tm.injected_delay_s if end_ns else -1.0
        r.total_latency_s = (arrival - obs_ns) / NS_PER_S if obs_ns else -1.0
        r.predicted_delay_steps = info[2] if info is not None else -1
        if result is not None and result.measured_d is not None:
            r.measured_delay_steps = int(result.measured_d)
        elif info is not None:
            r.measured_delay_steps = int(self.steps.step(arrival) - info[0])
        else:
            r.measured_delay_steps = -1
        if result is not None:
            r.n_frozen, r.n_soft, r.n_free = result.n_frozen, result.n_soft, result.n_free
            r.boundary_jump = float(result.boundary_jump) if result.boundary_jump is not None else 0.0
        self.pub_report.publish(r)
        self.n_reports += 1
        if r.accepted and obs_ns and request_ns:
            # observation-to-chunk-available minus model time, minus the observation's age when
            # the request went out (sampling phase) and the injected latency: the pipeline overhead
            overhead = (arrival - max(request_ns, obs_ns)) / NS_PER_S - r.inference_s - r.injected_delay_s
            self.arrivals.append((arrival, r.total_latency_s, overhead, r.measured_delay_steps))
            if r.predicted_delay_steps >= 0 and r.measured_delay_steps >= 0:
                self.delay_errors.append(r.measured_delay_steps - r.predicted_delay_steps)

    def _diag_values(self) -> dict:
        st = self.sched.stats()
        vals = {
            "strategy": self.sched.strategy.name,
            "episode_id": self.episode_id,
            "rewinds": self.episodes.rewinds,
            "requests": st["requests"],
            "accepted": st["accepted"],
            "timeouts": st["timeouts"],
            "hold_steps": st["hold_steps"],
            "delay_forecast": st["delay_forecast"],
            "dropped": self.drops.total(),
            "chunk_echoes_skipped": self.echoes.n_echoes,
        }
        # waiting for the policy node to subscribe (start-up) is not an input problem
        vals["dropped_inputs"] = vals["dropped"] - self.drops.as_dict().get("no_policy", 0)
        now = self.clock.now_ns()
        recent = [a for a in self.arrivals if now - a[0] <= 5 * NS_PER_S]
        vals["chunk_rate_hz"] = len(recent) / 5.0
        if self.arrivals:
            arr = np.asarray([a[1:] for a in self.arrivals])
            vals["latency_median_s"] = float(np.median(arr[:, 0]))
            vals["overhead_median_s"] = float(np.median(arr[:, 1]))
            vals["overhead_p99_s"] = float(np.quantile(arr[:, 1], 0.99))
            vals["measured_d_median"] = float(np.median(arr[:, 2]))
            vals["latency_p95_s"] = float(np.quantile(arr[:, 0], 0.95))
        vals.update(quantile_values("merge", self.merges))
        if len(self.delay_errors) >= 10:  # a share of fewer chunks is noise (the first chunk alone: 0 or 1)
            err = np.asarray(self.delay_errors)
            vals["delay_underestimated_fraction"] = float(np.mean(err > 0))
            vals["delay_error_mean_steps"] = float(np.mean(err))
        vals.update({f"rejected.{k}": v for k, v in st["rejected"].items()})
        vals.update({f"dropped.{k}": v for k, v in self.drops.as_dict().items()})
        return vals


def main(args=None) -> int:
    return run_node(SchedulerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
