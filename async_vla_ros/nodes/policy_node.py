"""policy node: serves ``ChunkRequest``s with a chunk policy backend, off the executor thread.

Subscribes ``/observation`` (latest observations by id) and ``/policy/chunk_request``; publishes
``/policy/action_chunk``. A policy that takes cameras (``camera_hw`` of the backend, e.g. a LeRobot
VLA) gets ``{"state": (1, obs_dim), "images": {name: (1, h, w, 3) uint8}, "instruction": str}``
from the observation's named cameras and instruction; the observation's camera names must be
exactly the policy's (else every observation is dropped as ``observation.camera_mismatch``, the
message naming both sets, and requests are answered ``ERROR_NO_OBSERVATION`` with it). A state
policy gets the state only. Each valid request goes to a single-slot worker thread
(:class:`~async_vla_ros.nodes.worker.InferenceWorker`): one inference at a time, a request still
waiting when a newer one arrives is answered with ``ERROR_STALE_REQUEST`` and never runs, so the
executor never blocks and the model always works on the newest request. The backend runs with
one torch thread (``torch.set_num_threads(1)``: two threads beside a real-time loop on a small
machine give latency spikes).

The request's ``sampler`` picks the sampler: ``vanilla``; ``rtc`` (guided towards the sent prefix
with the sent weights); ``prefix`` (REMAC prefix-preserved: the first ``n_frozen`` actions held
to the prefix); ``bid``. Without a prefix (first chunk) rtc/prefix fall back to vanilla and bid
scores without backward coherence; the chunk's ``sampler`` says what ran.

Every chunk carries the observation stamp (``header.stamp``), the ids and measured
``ChunkTiming`` (received, inference start/end, queue and model time, injected delay).
/diagnostics adds two timings of the observation's way (rolling median / p95 / p99):
``obs_age_in`` (an observation's stamp -> its callback here) and ``obs_wait`` (an observation's
callback -> the model starting on it, per chunk: waiting for the scheduler's request and the worker).
``injected_latency_s`` adds latency after the model (as the RTC/REMAC papers' +100/+200 ms
experiments did); it is included in the timing and waits on the stop event (interruptible). It
can be changed at runtime (``set_parameters``; fault injection: latency spikes).

A request sent ahead of its observation (``obs_after`` set: the scheduler's ``request_ahead``)
names the next observation's id and waits in the worker for it; the model starts on it the moment
it arrives (until ``obs_after + max(dt + obs_wait_s, max_obs_age_s)``; an observation of another
episode, a later one instead, or none is answered ``ERROR_NO_OBSERVATION``). In one process with camera_ingestion and the scheduler
(``policy_container``) observations come in by a call (:meth:`hand_over`; their copies from the
topic are skipped) and every chunk goes to the scheduler by a call before it is published.

Requests are taken in stamp order (a repeated id, an older stamp or one from the future is
dropped as stale), not id order, so a restarted scheduler (ids from 1 again) or one stray
request with a huge id cannot block the stream. Chunk ids start at the node's start time in
microseconds: strictly increasing, and unique across restarts of the node.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from async_vla_msgs.msg import ActionChunk, ChunkRequest, Observation
from async_vla_ros import names as N
from async_vla_ros.core.requests import SAMPLERS, sampler_call, takes_beta
from async_vla_ros.core.sequence import SeqEvent, SequenceTracker
from async_vla_ros.nodes.common import NS_PER_S, DropCounter, EchoFilter, ns_to_stamp, run_node, stamp_to_ns
from async_vla_ros.nodes.health import Threshold
from async_vla_ros.nodes.ingest import InputError
from async_vla_ros.nodes.metrics import Telemetry, quantile_values, telemetry_params
from async_vla_ros.nodes.params import Param, declare_params, enable_runtime_updates
from async_vla_ros.nodes.worker import InferenceWorker
from async_vla_ros.policy.checks import policy_state
from async_vla_ros.policy.registry import BackendUnavailable

NODE_NAME = "policy"
DEFAULT_ACTION_NAMES = list(N.ACTION_NAMES)
# /diagnostics levels (limits: parameters diag.<key>.warn / .error; docs/observability.md)
THRESHOLDS = (
    Threshold("inference_p95_s", 0.1, 0.3, description="model time per chunk, p95 of the last 200"),
    Threshold(
        "failed_per_s",
        0.2,
        1.0,
        description="failed chunks per s (no observation, invalid request, inference error; superseded requests excluded)",
    ),
    Threshold("dropped_per_s", 1.0, 10.0, description="inputs dropped per s (all reasons)"),
)

PARAMS = (
    Param(
        "policy",
        "default",
        "policy spec: 'default' (the task's shipped checkpoint of `checkpoint_kind`), a checkpoint path, "
        "'expert' (scripted), or NAME[:TARGET] / SCHEME://ADDRESS of any registered backend (policy/registry.py)",
    ),
    Param("checkpoint_kind", "base", "checkpoint kind for policy 'default' (base, remac, ...: <task>_<kind>.pt)"),
    Param("weak_checkpoint", "", "BID forward contrast: weaker flow checkpoint of the same task ('' : none)"),
    Param(
        "task",
        "track",
        "task of the policy (expert choice; default checkpoint)",
        choices=N.TASK_NAMES,
    ),
    Param("horizon", 8, "H for the expert backend (flow checkpoints carry their own)", min=1, max=256),
    Param("n_steps", 0, "denoising steps (0: the checkpoint's setting)", min=0, max=100),
    Param("bid_n", 0, "BID samples per chunk (0: the checkpoint's setting)", min=0, max=64),
    Param(
        "guidance_beta",
        0.0,
        "RTC guidance clip beta (<= 0: the checkpoint's); a request's guidance_beta > 0 overrides it per call",
        min=0.0,
        max=100.0,
    ),
    Param("seed", 0, "backend noise seed", min=0),
    Param(
        "injected_latency_s",
        0.0,
        "extra latency added to every chunk (experiments, fault injection)",
        min=0.0,
        max=5.0,
        dynamic=True,
    ),
    Param(
        "max_future_s",
        0.5,
        "drop a request stamped further in the future than this (clock jump, rogue)",
        min=0.0,
        max=60.0,
    ),
    Param(
        "max_obs_age_s", 0.5, "answer ERROR_NO_OBSERVATION when the newest observation is older", min=0.001, max=60.0
    ),
    Param(
        "obs_wait_s",
        0.05,
        "how long a request naming an obs_id not yet received waits for it (a request sent ahead: this long "
        "past its step's window)",
        min=0.0,
        max=5.0,
    ),
    Param(
        "rewind_after",
        10,
        "follow an older obs_id after this many in a row (camera ingestion restarted, "
        "or a bad message carried a huge id; core/sequence.py)",
        min=1,
        max=100000,
    ),
    Param("obs_memory", 64, "observations remembered for requests that name an obs_id", min=1, max=10000),
    Param("action_names", DEFAULT_ACTION_NAMES, "names of the A action dimensions"),
    Param("warmup", True, "run one inference at start so the first real chunk is not slowed by warm-up"),
    Param(
        "max_consecutive_errors",
        5,
        "stop the node (exit 1) after this many failed inferences in a row",
        min=1,
        max=1000,
    ),
    Param("torch_threads", 1, "torch intra-op threads (keep 1 beside a real-time loop)", min=1, max=64),
    *telemetry_params(THRESHOLDS),
)


@dataclass(frozen=True)
class Job:
    """One validated request, converted to numpy at the edge."""

    request_id: int
    episode_id: int
    obs_id: int
    sampler: str  # the request's sampler (ChunkRequest.sampler)
    dt: float
    prefix: np.ndarray | None  # (H, A) or None
    weights: np.ndarray | None  # (H,) or None
    n_frozen: int
    beta: float
    seed: int | None
    request_ns: int
    received_ns: int
    warmup: bool = False
    obs_after_ns: int = 0  # > 0: sent ahead; the observation stamped in [obs_after_ns, + dt)


class PolicyNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        # "in-process": a camera_ingestion in this process hands observations over (policy_container);
        # their copies from the topic are then skipped (other publishers' still count)
        self.observation_source = "topic"
        self.echoes = EchoFilter(64)  # observations handed over in process, by (obs_id, stamp)
        # in-process consumers of every chunk sent (policy_container: the scheduler), before it is published
        self.local_chunk_sinks: list = []
        import torch

        torch.set_num_threads(p["torch_threads"])
        from async_vla_ros.policy.registry import BackendRequest, load_policy_spec, parse_policy_spec

        spec = parse_policy_spec(p["policy"])
        request = BackendRequest(
            p["task"],
            kind=p["checkpoint_kind"],
            horizon=p["horizon"],
            n_steps=p["n_steps"],
            bid_n=p["bid_n"],
            beta=p["guidance_beta"],
            seed=p["seed"],
            num_threads=1,
            weak=p["weak_checkpoint"],
        )
        self.backend = load_policy_spec(spec, request)
        self._takes_beta = takes_beta(self.backend)
        torch.set_num_threads(p["torch_threads"])  # a backend may have set its own
        self.H, self.A, self.obs_dim = (
            int(self.backend.horizon),
            int(self.backend.action_dim),
            int(self.backend.obs_dim),
        )
        if len(p["action_names"]) != self.A:
            raise ValueError(f"action_names has {len(p['action_names'])} names, the policy has A = {self.A}")
        if hasattr(self.backend, "check_names"):  # a backend that knows its joint names checks them (and order)
            self.backend.check_names(action_names=p["action_names"])
        # "<backend>/<task>[/<policy spec>]": replay reads the recorded policy back from it
        self.policy_name = f"{spec.backend}/{p['task']}" + (f"/{spec.text}" if spec.target else "")
        # remote and LeRobot backends say; a flow checkpoint carries its config
        self.needs_image = bool(getattr(self.backend, "needs_image", False)) or (
            getattr(getattr(self.backend, "config", None), "encoder", "") == "image"
        )
        # the policy's cameras (name -> (h, w), or names with unknown sizes; None: not known)
        self.camera_hw = policy_cameras(self.backend)
        self.wants_mapping = self.needs_image or bool(getattr(self.backend, "takes_instruction", False))
        self.obs_problem = ""  # why the last observation was dropped (named in NO_OBSERVATION answers)
        self.n_unavailable = 0
        self.drops = DropCounter(self.get_logger())
        self._obs_cond = threading.Condition()
        # obs_id -> (stamp, state, {camera: image | None}, episode, instruction, received ns)
        self._obs: OrderedDict[int, tuple[int, np.ndarray, dict[str, np.ndarray | None], int, str, int]] = OrderedDict()
        # stage timing (s): observation stamp -> received here; received -> model starts on it
        self.obs_age_in: deque[float] = deque(maxlen=400)
        self.obs_wait: deque[float] = deque(maxlen=400)
        self.obs_ids = SequenceTracker("obs_id", p["rewind_after"])
        self._last_request_id = 0
        self._last_request_ns = 0  # stamp of the last request taken
        self._chunk_lock = threading.Lock()
        # chunk ids: strictly increasing, and unique across restarts of this node (a restarted
        # policy that counted from 1 again would have its chunks rejected as duplicates by the
        # scheduler): the counter starts at the start time in microseconds
        self.chunk_id = self.get_clock().now().nanoseconds // 1000
        self.n_chunks_ok = 0
        self.n_errors_by_code: dict[int, int] = {}
        self.inference_s: list[float] = []
        self.exit_code = 0
        self.shutdown_requested = False
        self.pub = self.create_publisher(ActionChunk, N.ACTION_CHUNK, 10)
        group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Observation, N.OBSERVATION, self._on_observation, 10, callback_group=group)
        self.create_subscription(ChunkRequest, N.CHUNK_REQUEST, self._on_request, 10, callback_group=group)
        self.worker: InferenceWorker[Job] = InferenceWorker(
            self._run,
            self._on_worker_error,
            name="policy-inference",
            max_consecutive_errors=p["max_consecutive_errors"],
        )
        self.diag = Telemetry(
            self,
            self._diag_values,
            THRESHOLDS,
            p,
            rate_keys=("dropped", "failed"),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.create_timer(0.5, self._watch_worker, callback_group=MutuallyExclusiveCallbackGroup())
        self.worker.start()
        enable_runtime_updates(self, PARAMS, self.p)
        if p["warmup"]:
            self.worker.submit(Job(0, 0, 0, "vanilla", 0.0, None, None, 0, 0.0, 0, 0, 0, warmup=True))
        self.get_logger().info(f"serving {self.policy_name}: H={self.H} A={self.A} obs_dim={self.obs_dim}")

    # ------------------------------------------------------------------ inputs (edge)
    def _on_observation(self, msg: Observation) -> None:
        # (no message-info callback for the source timestamp: rclpy's EventsExecutor fails on them)
        received = self.get_clock().now().nanoseconds
        if self.echoes.is_echo((int(msg.obs_id), stamp_to_ns(msg.header.stamp))):
            return  # the published copy of one camera_ingestion handed over
        self.take_observation(msg, received)

    def hand_over(self, msg: Observation, received: int) -> None:
        """An observation from a camera_ingestion in this process (``policy_container``): taken at
        once, with the same checks; its copy from the topic is skipped."""
        self.observation_source = "in-process"
        self.echoes.taken((int(msg.obs_id), stamp_to_ns(msg.header.stamp)))
        self.take_observation(msg, received)

    def take_observation(self, msg: Observation, received: int) -> None:
        """One observation in (the subscription, or :meth:`hand_over`)."""
        try:
            state = np.asarray(msg.state, dtype=np.float64)
            if state.ndim != 1 or msg.state_dim != state.size:
                raise InputError("bad_shape", f"state has {state.size} values, state_dim says {msg.state_dim}")
            try:  # a proprioception-only policy (the multi-task VLA) reads the head of any task's state
                state = policy_state(self.backend, state)
            except ValueError as exc:
                raise InputError("bad_shape", str(exc)) from None
            if not np.all(np.isfinite(state)):
                raise InputError("non_finite", "observation state contains NaN or Inf")
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp <= 0:
                raise InputError("no_stamp", "observation without a header stamp")
            self.obs_age_in.append((received - stamp) / NS_PER_S)
            images = observation_images(msg) if self.needs_image else {}
            if self.camera_hw is not None and set(images) != set(self.camera_hw):
                raise InputError(
                    "camera_mismatch",
                    f"camera names differ: the graph sends {sorted(images)}, "
                    f"the policy takes {sorted(self.camera_hw)} (camera_ingestion parameter camera_names)",
                )
        except InputError as exc:
            self.obs_problem = str(exc)
            return self.drops.drop(f"observation.{exc.reason}", str(exc))
        with self._obs_cond:
            order = self.obs_ids.update(int(msg.obs_id))  # core/sequence.py: restarts and rogue ids
            if order.accepted:
                self._obs.pop(msg.obs_id, None)  # a reused id (sender restarted) goes to the newest end
                self._obs[msg.obs_id] = (stamp, state, images, int(msg.episode_id), str(msg.instruction), received)
                while len(self._obs) > self.p["obs_memory"]:
                    self._obs.popitem(last=False)
                self._obs_cond.notify_all()
        if not order.accepted:
            return self.drops.drop(
                "observation.duplicate" if order.kind is SeqEvent.DUPLICATE else "observation.out_of_order",
                order.describe(),
            )
        if order.kind is SeqEvent.REWIND:
            self.get_logger().warning(order.describe())

    def _on_request(self, msg: ChunkRequest) -> None:
        received = self.get_clock().now().nanoseconds
        stamp = stamp_to_ns(msg.header.stamp)
        # order by stamp, not by id: a restarted scheduler counts ids from 1 again, and one
        # stray request with a huge id must not block every later one; a repeated id, an older
        # stamp, or a stamp from the future (a clock jump, a rogue publisher) is dropped
        if msg.request_id == 0 or msg.request_id == self._last_request_id or stamp <= self._last_request_ns:
            return self.drops.drop(
                "request.stale_id",
                f"request_id {msg.request_id} (stamp {stamp}) after "
                f"{self._last_request_id} (stamp {self._last_request_ns})",
            )
        if stamp > received + self.p["max_future_s"] * NS_PER_S:
            return self.drops.drop(
                "request.future_stamp",
                f"request {msg.request_id} stamped {(stamp - received) / 1e9:.3f} s in the future",
            )
        self._last_request_id = msg.request_id
        self._last_request_ns = stamp
        try:
            job = self._validate(msg, received)
        except InputError as exc:
            self.drops.drop(f"request.{exc.reason}", str(exc))
            return self._publish_error(
                msg.request_id,
                msg.episode_id,
                msg.obs_id,
                msg.sampler,
                msg.dt,
                ActionChunk.ERROR_INVALID_REQUEST,
                str(exc),
                received,
            )
        old = self.worker.submit(job)
        if old is not None and not old.warmup:
            self._publish_error(
                old.request_id,
                old.episode_id,
                old.obs_id,
                old.sampler,
                old.dt,
                ActionChunk.ERROR_STALE_REQUEST,
                f"superseded by request {job.request_id}",
                old.received_ns,
                old.request_ns,
            )

    def _validate(self, msg: ChunkRequest, received: int) -> Job:
        H, A = self.H, self.A
        if msg.sampler not in SAMPLERS:
            raise InputError("bad_sampler", f"unknown sampler {msg.sampler!r}; known: {', '.join(SAMPLERS)}")
        if msg.horizon != H or msg.action_dim != A:
            raise InputError(
                "bad_shape", f"request for H={msg.horizon} A={msg.action_dim}; this policy has H={H} A={A}"
            )
        if not (np.isfinite(msg.dt) and msg.dt > 0):
            raise InputError("bad_dt", f"dt must be > 0, got {msg.dt}")
        prefix = weights = None
        if len(msg.prefix):
            prefix = np.asarray(msg.prefix, dtype=np.float64)
            if prefix.size != H * A:
                raise InputError("bad_shape", f"prefix has {prefix.size} values, expected H*A = {H * A}")
            prefix = prefix.reshape(H, A)
            if not np.all(np.isfinite(prefix)):
                raise InputError("non_finite", "prefix contains NaN or Inf")
        if len(msg.weights):
            weights = np.asarray(msg.weights, dtype=np.float64)
            if (
                weights.shape != (H,)
                or not np.all(np.isfinite(weights))
                or (weights < 0).any()
                or (weights > 1 + 1e-9).any()
            ):
                raise InputError("bad_weights", f"weights must be H = {H} values in [0, 1]")
        if not (np.isfinite(msg.guidance_beta) and msg.guidance_beta <= 1e6):
            raise InputError("bad_beta", f"guidance_beta must be finite, got {msg.guidance_beta}")
        if msg.n_frozen > H:
            raise InputError("bad_n_frozen", f"n_frozen {msg.n_frozen} > H = {H}")
        obs_after = stamp_to_ns(msg.obs_after)
        if obs_after and not msg.obs_id:
            raise InputError("bad_obs", "a request sent ahead (obs_after) must name the observation it waits for")
        if msg.sampler in ("rtc", "rtc_jf", "remac") and prefix is not None and weights is None:
            raise InputError("bad_weights", f"{msg.sampler} with a prefix needs weights")
        if msg.sampler == "bid" and (prefix is None) != (weights is None):
            raise InputError("bad_weights", "bid needs both prefix and weights, or neither")
        return Job(
            int(msg.request_id),
            int(msg.episode_id),
            int(msg.obs_id),
            msg.sampler,
            float(msg.dt),
            prefix,
            weights,
            int(msg.n_frozen),
            float(msg.guidance_beta),
            int(msg.seed) if msg.seed >= 0 else None,
            stamp_to_ns(msg.header.stamp),
            received,
            obs_after_ns=obs_after,
        )

    # ------------------------------------------------------------------ worker thread
    def _observation_for(self, job: Job):
        """(stamp_ns, state, images, episode_id, instruction, received_ns, obs_id) of the requested (or
        newest) observation, or (None, why)."""
        if job.obs_after_ns:
            return self._observation_after(job)
        with self._obs_cond:
            if job.obs_id:
                oid = job.obs_id
                # the request may overtake its observation on the way here: wait for it briefly
                if oid not in self._obs and oid > self.obs_ids.current:
                    self._obs_cond.wait_for(
                        lambda: oid in self._obs or self.obs_ids.current >= oid, timeout=self.p["obs_wait_s"]
                    )
                entry = self._obs.get(oid)
                if entry is None:
                    return None, f"observation {oid} is not (or no longer) available" + self._why_dropped()
            elif self._obs:
                oid = next(reversed(self._obs))
                entry = self._obs[oid]
            else:
                return None, "no observation received yet" + self._why_dropped()
        return (*entry, oid), ""

    def _observation_after(self, job: Job):
        """A request sent ahead: observation ``obs_id`` (the one after the sender's last), waiting
        for it until ``obs_after + max(dt + obs_wait_s, max_obs_age_s)``; an error when a later one
        came instead."""
        oid = job.obs_id
        # as long as an observation may be old and still be served (max_obs_age_s), at least a step
        deadline = job.obs_after_ns + int(max(job.dt + self.p["obs_wait_s"], self.p["max_obs_age_s"]) * NS_PER_S)
        with self._obs_cond:
            while oid not in self._obs and self.obs_ids.current < oid and not self.worker.stop_event.is_set():
                left = (deadline - self.get_clock().now().nanoseconds) / NS_PER_S
                if left <= 0:
                    break
                self._obs_cond.wait(timeout=min(left, 0.1))
            entry = self._obs.get(oid)
            current = self.obs_ids.current
        if entry is None:
            if current > oid:
                return None, f"observation {oid} (request sent ahead) was not received; the next is {current}" + (
                    self._why_dropped()
                )
            return None, f"observation {oid} (request sent ahead) did not arrive in time" + self._why_dropped()
        if entry[3] != job.episode_id:
            return None, f"observation {oid} is of episode {entry[3]}, the request of episode {job.episode_id}"
        return (*entry, oid), ""

    def _why_dropped(self) -> str:
        return f" (the last one was dropped: {self.obs_problem})" if self.obs_problem else ""

    def _run(self, job: Job) -> None:
        if job.warmup:
            self._warmup()
            return
        start = self.get_clock().now().nanoseconds
        entry, why = self._observation_for(job)
        if entry is None:
            return self._publish_error(
                job.request_id,
                job.episode_id,
                job.obs_id,
                job.sampler,
                job.dt,
                ActionChunk.ERROR_NO_OBSERVATION,
                why,
                job.received_ns,
                job.request_ns,
            )
        obs_ns, state, images, _episode, instruction, obs_received_ns, obs_id = entry
        if start - obs_ns > self.p["max_obs_age_s"] * NS_PER_S:
            return self._publish_error(
                job.request_id,
                job.episode_id,
                obs_id,
                job.sampler,
                job.dt,
                ActionChunk.ERROR_NO_OBSERVATION,
                f"newest observation is {(start - obs_ns) / 1e6:.0f} ms old",
                job.received_ns,
                job.request_ns,
            )
        missing = sorted(n for n, img in images.items() if img is None)
        if self.needs_image and (missing or not images):
            return self._publish_error(
                job.request_id,
                job.episode_id,
                obs_id,
                job.sampler,
                job.dt,
                ActionChunk.ERROR_NO_OBSERVATION,
                f"image policy: observation {obs_id} lacks camera(s) {missing or 'all'} (image missing or stale)",
                job.received_ns,
                job.request_ns,
            )
        sampler, kwargs = self._sampler_args(job)
        obs = state[None]
        if self.wants_mapping:
            obs = {"state": obs, "images": {n: img[None] for n, img in images.items()}, "instruction": instruction}
        t0 = self.get_clock().now().nanoseconds
        self.obs_wait.append((t0 - obs_received_ns) / NS_PER_S)
        try:
            actions = np.asarray(self.backend.infer(obs, sampler, **kwargs), dtype=np.float64)
        except BackendUnavailable as exc:
            # a remote backend is down or slow: answer, keep serving (the scheduler re-requests
            # after its timeout and the robot holds); not counted towards the fatal-error limit
            self.n_unavailable += 1
            self.drops.drop("inference.backend_unavailable", str(exc))
            return self._publish_error(
                job.request_id,
                job.episode_id,
                obs_id,
                job.sampler,
                job.dt,
                ActionChunk.ERROR_BACKEND_UNAVAILABLE,
                str(exc),
                job.received_ns,
                job.request_ns,
            )
        t1 = self.get_clock().now().nanoseconds
        if actions.shape != (1, self.H, self.A) or not np.all(np.isfinite(actions)):
            raise FloatingPointError(f"backend returned shape {actions.shape} or non-finite actions")
        injected = self.p["injected_latency_s"]  # read once: may change at runtime
        if injected > 0:
            # experiment latency, after the model: interruptible by shutdown
            if self.worker.stop_event.wait(injected):
                return
        remote = getattr(self.backend, "last_info", None) or {}
        network_s = float(remote.get("network_s", -1.0))
        self.inference_s.append((t1 - t0) / NS_PER_S)
        del self.inference_s[:-1000]
        self._publish_chunk(job, obs_id, obs_ns, sampler, actions[0], t0, t1, injected, network_s)

    def _sampler_args(self, job: Job) -> tuple[str, dict]:
        """The one request -> infer conversion (core/requests.py), first-chunk fallback included;
        the request's guidance clip (``guidance_beta`` > 0) goes to ``infer(beta=)``."""
        sampler, kw = sampler_call(
            job.sampler,
            None if job.prefix is None else job.prefix[None],
            None if job.weights is None else job.weights[None],
            np.array([job.n_frozen]),
            job.seed,
            beta=job.beta if job.beta > 0 else None,
        )
        if "beta" in kw and not self._takes_beta:
            # the backend has no per-request clip: it runs the one it was loaded with (guidance_beta)
            del kw["beta"]
            if job.beta != self.p["guidance_beta"]:
                self.drops.drop(
                    "request.guidance_beta_not_applied",
                    f"backend {type(self.backend).__name__} takes no per-request guidance clip: the request's "
                    f"{job.beta:g} is not applied, its load-time one is ({self.p['guidance_beta']:g}; 0: its default)",
                )
        return sampler, kw

    def _warmup(self) -> None:
        t0 = time.perf_counter()
        obs = np.zeros((1, self.obs_dim))
        if self.wants_mapping:
            hw = self.camera_hw or {}
            obs = {
                "state": obs,
                "images": {n: np.zeros((1, *size, 3), np.uint8) for n, size in hw.items() if size is not None},
                "instruction": "",
            }
        try:
            self.backend.infer(obs, "vanilla", seed=0)
        except Exception as exc:  # noqa: BLE001 - an expert may reject an all-zero state; not fatal
            self.get_logger().info(f"warm-up inference skipped: {exc}")
            return
        self.get_logger().info(f"warm-up inference took {1e3 * (time.perf_counter() - t0):.1f} ms")

    def _on_worker_error(self, job: Job, exc: BaseException) -> None:
        if not self.context.ok():
            return  # shutting down: the publisher is gone, nothing to answer
        self.drops.drop(f"inference.{type(exc).__name__}", str(exc))
        if not job.warmup:
            self._publish_error(
                job.request_id,
                job.episode_id,
                job.obs_id,
                job.sampler,
                job.dt,
                ActionChunk.ERROR_INFERENCE_FAILED,
                f"{type(exc).__name__}: {exc}",
                job.received_ns,
                job.request_ns,
            )

    def _watch_worker(self) -> None:
        if self.worker.fatal is not None and not self.shutdown_requested:
            self.get_logger().error(
                f"inference failed {self.p['max_consecutive_errors']} times in a row "
                f"(last: {self.worker.fatal!r}); stopping"
            )
            self.exit_code = 1
            self.shutdown_requested = True

    # ------------------------------------------------------------------ output
    def _next_chunk_id(self) -> int:
        with self._chunk_lock:
            self.chunk_id += 1
            return self.chunk_id

    def _base_chunk(self, request_id: int, episode_id: int, obs_id: int, sampler: str, dt: float) -> ActionChunk:
        msg = ActionChunk()
        msg.chunk_id = self._next_chunk_id()
        msg.request_id = request_id
        msg.episode_id = episode_id
        msg.obs_id = obs_id
        msg.sampler = sampler
        msg.policy_name = self.policy_name
        msg.horizon = self.H
        msg.action_dim = self.A
        msg.dt = dt
        msg.action_names = list(self.p["action_names"])
        return msg

    def _publish_chunk(
        self,
        job: Job,
        obs_id: int,
        obs_ns: int,
        sampler: str,
        actions: np.ndarray,
        t0: int,
        t1: int,
        injected_s: float = 0.0,
        network_s: float = -1.0,
    ) -> None:
        msg = self._base_chunk(job.request_id, job.episode_id, obs_id, sampler, job.dt)
        msg.header.stamp = ns_to_stamp(obs_ns)
        msg.actions = actions.reshape(-1).tolist()
        msg.error_code = ActionChunk.ERROR_NONE
        tm = msg.timing
        tm.obs_stamp = ns_to_stamp(obs_ns)
        tm.request_stamp = ns_to_stamp(job.request_ns)
        tm.received_stamp = ns_to_stamp(job.received_ns)
        tm.inference_start = ns_to_stamp(t0)
        tm.inference_end = ns_to_stamp(t1)
        tm.queue_s = (t0 - job.received_ns) / NS_PER_S
        tm.inference_s = (t1 - t0) / NS_PER_S
        tm.network_s = float(network_s)
        if network_s >= 0:  # remote: the server's model time; the rest of the call is network
            tm.inference_s = max(tm.inference_s - network_s, 0.0)
        tm.injected_delay_s = float(injected_s)
        tm.obs_age_at_start_s = (t0 - obs_ns) / NS_PER_S
        tm.header.stamp = self.get_clock().now().to_msg()
        if self.context.ok():
            self._hand_chunk(msg)  # the scheduler in this process first (policy_container)
            self.pub.publish(msg)
            self.n_chunks_ok += 1

    def _hand_chunk(self, msg: ActionChunk) -> None:
        """To the in-process consumers (the scheduler): a failure there is theirs, counted and
        logged here, and never stops the chunk from being published."""
        for sink in self.local_chunk_sinks:
            try:
                sink(msg)
            except Exception as exc:  # noqa: BLE001 - the consumer's bug must not become an inference error
                self.drops.drop("chunk.handover_failed", f"chunk {msg.chunk_id}: {type(exc).__name__}: {exc}")

    def _publish_error(
        self,
        request_id: int,
        episode_id: int,
        obs_id: int,
        sampler: str,
        dt: float,
        code: int,
        message: str,
        received_ns: int,
        request_ns: int = 0,
    ) -> None:
        msg = self._base_chunk(request_id, episode_id, obs_id, sampler, dt if np.isfinite(dt) else 0.0)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.error_code = code
        msg.error_message = message
        msg.timing.request_stamp = ns_to_stamp(max(0, request_ns))
        msg.timing.received_stamp = ns_to_stamp(max(0, received_ns))
        msg.timing.header.stamp = msg.header.stamp
        if not self.context.ok():
            return
        self._hand_chunk(msg)
        self.pub.publish(msg)
        self.n_errors_by_code[code] = self.n_errors_by_code.get(code, 0) + 1

    # ------------------------------------------------------------------ report / lifecycle
    def _diag_values(self) -> dict:
        inf = np.asarray(self.inference_s[-200:]) if self.inference_s else None
        vals = {
            "chunks": self.n_chunks_ok,
            "superseded": self.worker.superseded,
            "dropped": self.drops.total(),
            "rewinds": self.obs_ids.rewinds,
            "inference_median_s": float(np.median(inf)) if inf is not None else -1.0,
            "inference_p95_s": float(np.quantile(inf, 0.95)) if inf is not None else -1.0,
            "inference_p99_s": float(np.quantile(inf, 0.99)) if inf is not None else -1.0,
            "failed": sum(
                n for code, n in dict(self.n_errors_by_code).items() if code != ActionChunk.ERROR_STALE_REQUEST
            ),
            "injected_latency_s": float(self.p["injected_latency_s"]),
            "backend_unavailable": self.n_unavailable,
            "policy": self.policy_name,
            "cameras": ",".join(sorted(self.camera_hw or ())),
            "observation_source": self.observation_source,
            "observation_echoes_skipped": self.echoes.n_echoes,
        }
        vals.update(quantile_values("obs_age_in", self.obs_age_in))
        vals.update(quantile_values("obs_wait", self.obs_wait))
        info = getattr(self.backend, "last_info", None) or {}
        if "instruction" in info:  # what the backend last used (LeRobot: the observation's, else its folder's)
            vals["instruction"] = str(info["instruction"])
        if "cameras" in info:
            vals["cameras_fed"] = ",".join(info["cameras"])
        vals.update({f"errors.{k}": v for k, v in self.n_errors_by_code.items()})
        vals.update({f"dropped.{k}": v for k, v in self.drops.as_dict().items()})
        return vals

    def close(self) -> None:
        self.worker.stop()


def policy_cameras(backend) -> dict[str, tuple[int, int] | None] | None:
    """The cameras a backend takes: ``camera_hw`` (name -> (h, w)), else its ``cameras`` names
    (sizes unknown), else None (a backend that does not say: no name check)."""
    hw = getattr(backend, "camera_hw", None)
    if hw:
        return {str(n): tuple(int(v) for v in size) for n, size in dict(hw).items()}
    names = getattr(backend, "cameras", None)
    if isinstance(names, (list, tuple, dict)) and names and all(isinstance(n, str) for n in names):
        return {str(n): None for n in names}
    return None


def observation_images(msg: Observation) -> dict[str, np.ndarray | None]:
    """The observation's cameras: name -> (h, w, 3) uint8, or None for an empty slot (the
    camera's image was missing or stale). InputError for malformed camera fields."""
    names = list(msg.camera_names)
    if len(names) != len(msg.images):
        raise InputError("bad_image", f"{len(names)} camera names for {len(msg.images)} images")
    if len(set(names)) != len(names):
        raise InputError("bad_image", f"duplicate camera names {names}")
    out: dict[str, np.ndarray | None] = {}
    for name, img in zip(names, msg.images):
        if not (img.height and img.width):
            out[name] = None
            continue
        if img.encoding != "rgb8" or len(img.data) != img.height * img.width * 3:
            raise InputError("bad_image", f"camera {name!r}: image must be packed rgb8")
        out[name] = np.frombuffer(bytearray(img.data), np.uint8).reshape(img.height, img.width, 3)
    return out


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
