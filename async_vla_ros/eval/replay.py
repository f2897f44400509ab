"""``async-vla-ros replay BAG``: evaluate chunking methods on a recorded observation stream.

Re-runs the core :class:`~async_vla_ros.core.scheduler.ChunkScheduler` with a policy (a
checkpoint, or the task's scripted expert as a ``ChunkPolicy``) on the ``/observation`` messages of
a bag, in simulated control steps, with either a fixed simulated delay ``d`` or the delays the
scheduler measured while recording (``/scheduler/chunk_report`` ``measured_delay_steps`` of the
accepted chunks, replayed in order and cycled). Open loop: the recorded observations do not react
to the replayed actions, so this compares how methods *stitch* chunks on identical inputs, not
task success (use ``async-vla-ros eval`` in simulation for that).

Step grid: ``t0`` = first observation stamp, step ``t`` covers ``[t0 + t*dt, t0 + (t+1)*dt)``;
the observation of step ``t`` is the latest one stamped before the step ends. A request at step
``t`` is answered at step ``t + d`` (d = 0: same step), exactly as in the lockstep runner.

Metrics per (method, delay) condition, on the arm joints (the first 7 action dimensions when
``A >= 7``, all of them otherwise):

* boundary discontinuity at each switch to a new chunk (step ``t_s``): jump ``||a[t_s] -
  a[t_s-1]||`` (rad), acceleration ``||a[t_s+1] - 2a[t_s] + a[t_s-1]|| / dt^2`` and jerk (third
  difference centred on the switch, ``/ dt^3``); mean and max over switches; RMS acceleration and
  jerk over the whole trajectory for reference;
* intra-chunk staleness: for each executed step, its time minus the stamp of the observation its
  chunk was computed from (s): mean, p95, max;
* deviation from the recorded execution (the recorded ``/scheduler/action_plan`` sampled at each
  step, else the recorded command topic): RMS and max joint difference (rad);
* inference latency of the replayed policy (measured, ms) and of the recording (ChunkReport).

Everything but the latency is deterministic (seeded policy noise): two runs give equal metrics.
Outputs under ``--out``: ``replay.json`` (metrics and per-step series), ``report.md`` and PNG
plots (see :mod:`async_vla_ros.eval.report`).

``--republish`` instead plays the bag into the running ROS graph at its original timing (the
robot's topics by default, stamps shifted to now; :mod:`async_vla_ros.eval.republish`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.bags import BagError, bag_info, read_messages
from async_vla_ros.core.clock import stamp_to_ns
from async_vla_ros.policy.checks import policy_state

__all__ = ["RecordedRun", "ReplayConfig", "ReplayResult", "load_recording", "replay", "add_arguments", "run"]

OBS_TOPIC = N.absolute(N.OBSERVATION)
REPORT_TOPIC = N.absolute(N.CHUNK_REPORT)
PLAN_TOPIC = N.absolute(N.ACTION_PLAN)
REQUEST_TOPIC = N.absolute(N.CHUNK_REQUEST)
CHUNK_TOPIC = N.absolute(N.ACTION_CHUNK)
COMMAND_TOPICS = tuple(N.absolute(t) for t in N.COMMAND_TOPICS)
ARM_DIMS = 7


@dataclass
class RecordedRun:
    """What replay needs from a bag, as arrays.

    obs_t_ns: (N,) observation stamps (ns); obs: (N, obs_dim); episode: (N,) episode ids;
    delays: recorded measured delays (steps) of accepted chunks, in arrival order;
    inference_s: recorded model times (s); plans: list of (stamp_ns, dt, actions (L, A));
    commands: (M,) stamps and (M, A_cmd) command positions; images: camera -> (N, h, w, 3) uint8
    (cameras every observation carried; a policy that takes cameras is fed these); instructions:
    (N,) the observations' instructions.
    """

    path: Path
    obs_t_ns: np.ndarray
    obs: np.ndarray
    episode: np.ndarray
    task: str
    dt: float | None
    delays: list[int] = field(default_factory=list)
    inference_s: list[float] = field(default_factory=list)
    plans: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    cmd_t_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cmd: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    merge_strategy: str = ""
    policy_name: str = ""  # ActionChunk.policy_name of the recording ("<backend>/<task>[/<spec>]")
    images: dict[str, np.ndarray] = field(default_factory=dict)
    instructions: list[str] = field(default_factory=list)

    def policy_input(self, j: int, cameras, policy: Any = None) -> np.ndarray | dict:
        """The policy's input for observation ``j``: the state (the part ``policy`` reads), plus the
        recorded images and instruction for a policy that takes ``cameras`` (BagError when the bag
        lacks one)."""
        state = self.obs[j][None] if policy is None else policy_state(policy, self.obs[j][None])
        if not cameras:
            return state
        missing = sorted(set(cameras) - set(self.images))
        if missing:
            raise BagError(
                f"bag {self.path}: the policy takes cameras {sorted(cameras)}, the recorded observations "
                f"carry {sorted(self.images)} in every message (missing {missing})"
            )
        return {
            "state": state,
            "images": {c: self.images[c][j][None] for c in cameras},
            "instruction": self.instructions[j] if self.instructions else "",
        }


def load_recording(path: str | Path) -> RecordedRun:
    """Read the topics replay uses; BagError if the bag lacks usable observations."""
    info = bag_info(path)
    if OBS_TOPIC not in info.topics:
        raise BagError(
            f"bag {path} has no {OBS_TOPIC} topic (topics: {', '.join(sorted(info.topics)) or 'none'}); "
            "record the observation stream to replay it"
        )
    topics = [
        t
        for t in (OBS_TOPIC, REPORT_TOPIC, PLAN_TOPIC, REQUEST_TOPIC, CHUNK_TOPIC, *COMMAND_TOPICS)
        if t in info.topics
    ]
    stamps, states, episodes, tasks, instructions = [], [], [], [], []
    frames: list[dict[str, np.ndarray]] = []
    delays, inf_s, plans, cmd_t, cmd = [], [], [], [], []
    dt = None
    strategy = policy_name = ""
    for m in read_messages(path, topics):
        msg = m.msg
        if m.topic == OBS_TOPIC:
            st = np.asarray(msg.state, dtype=np.float64)
            if st.ndim != 1 or st.size == 0 or (states and st.size != states[0].size):
                raise BagError(
                    f"bag {path}: observation {msg.obs_id} has state of size {st.size}, "
                    f"expected {states[0].size if states else '> 0'}"
                )
            if not np.isfinite(st).all():
                continue  # the live graph drops these too
            stamps.append(stamp_to_ns(msg.header.stamp))
            states.append(st)
            episodes.append(int(msg.episode_id))
            tasks.append(msg.task)
            instructions.append(str(msg.instruction))
            frames.append(observation_frames(msg))
        elif m.topic == REPORT_TOPIC:
            if msg.accepted and msg.measured_delay_steps >= 0:
                delays.append(int(msg.measured_delay_steps))
            if msg.inference_s >= 0:
                inf_s.append(float(msg.inference_s))
            strategy = strategy or msg.merge_strategy
        elif m.topic == PLAN_TOPIC:
            if msg.length and msg.action_dim:
                a = np.asarray(msg.actions, dtype=np.float64).reshape(msg.length, msg.action_dim)
                plans.append((stamp_to_ns(msg.header.stamp), float(msg.dt), a))
            if msg.dt > 0:
                dt = dt or float(msg.dt)
            strategy = strategy or msg.merge_strategy
        elif m.topic == CHUNK_TOPIC:
            if not policy_name and msg.error_code == 0:
                policy_name = str(msg.policy_name)
        elif m.topic == REQUEST_TOPIC:
            if msg.dt > 0:
                dt = dt or float(msg.dt)
        elif m.topic == COMMAND_TOPICS[0]:
            cmd_t.append(m.t_ns)
            cmd.append(np.asarray(msg.data, dtype=np.float64))
        elif m.topic == COMMAND_TOPICS[1] and len(msg.points):
            cmd_t.append(m.t_ns)
            cmd.append(np.asarray(msg.points[0].positions, dtype=np.float64))
    if len(states) < 2:
        raise BagError(f"bag {path} has {len(states)} usable observation(s) on {OBS_TOPIC}; replay needs at least 2")
    order = np.argsort(np.asarray(stamps), kind="stable")
    n_cmd = min((c.size for c in cmd), default=0)
    # cameras present (same size) in every observation: what an image policy can be replayed on
    common = set.intersection(*(set(f) for f in frames)) if frames else set()
    images = {}
    for c in sorted(common):
        shapes = {frames[i][c].shape for i in range(len(frames))}
        if len(shapes) == 1:
            images[c] = np.stack([frames[i][c] for i in order])
    return RecordedRun(
        path=Path(path),
        obs_t_ns=np.asarray(stamps, dtype=np.int64)[order],
        obs=np.stack(states)[order],
        episode=np.asarray(episodes, dtype=np.int64)[order],
        task=next((t for t in tasks if t), ""),
        dt=dt,
        delays=delays,
        inference_s=inf_s,
        plans=sorted(plans, key=lambda p: p[0]),
        cmd_t_ns=np.asarray(cmd_t, dtype=np.int64),
        cmd=np.stack([c[:n_cmd] for c in cmd]) if cmd and n_cmd else np.zeros((0, 0)),
        merge_strategy=strategy,
        policy_name=policy_name,
        images=images,
        instructions=[instructions[i] for i in order],
    )


def observation_frames(msg) -> dict[str, np.ndarray]:
    """An Observation's camera images (name -> (h, w, 3) uint8); empty slots left out."""
    out = {}
    for name, im in zip(msg.camera_names, msg.images):
        if im.height and im.width and im.encoding == "rgb8" and len(im.data) == im.height * im.width * 3:
            out[str(name)] = np.frombuffer(bytearray(im.data), np.uint8).reshape(im.height, im.width, 3)
    return out


@dataclass(frozen=True)
class ReplayConfig:
    """One replay condition."""

    strategy: str  # merge strategy (core.strategies.STRATEGIES)
    delay: int | None  # simulated delay d in steps; None: the recorded delays
    dt: float  # control period (s)
    horizon: int  # H (the policy's)
    s_min: int = 1  # execution horizon floor
    seed: int = 0  # policy seed base (request r uses seed + r)
    preset: str = ""  # method preset shown in labels ('' : the strategy's name)
    # the preset's make_strategy options (presets.Preset.strategy_options: RTC schedule, guidance
    # clip beta), as the scheduler node and the lockstep runner get them
    strategy_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from async_vla_ros.core.strategies import STRATEGIES
        from async_vla_ros.policy.base import did_you_mean

        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown merge strategy {self.strategy!r}{did_you_mean(self.strategy, STRATEGIES)}; "
                f"known: {', '.join(STRATEGIES)}"
            )
        if self.delay is not None and (
            isinstance(self.delay, bool) or not isinstance(self.delay, int) or not 0 <= self.delay < self.horizon
        ):
            raise ValueError(
                f"delay must be an int in [0, H-1={self.horizon - 1}] or None (recorded), got {self.delay!r}"
            )
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be > 0, got {self.dt!r}")
        if not 1 <= self.s_min <= self.horizon:
            raise ValueError(f"s_min must be in [1, H={self.horizon}], got {self.s_min}")

    @property
    def label(self) -> str:
        return f"{self.preset or self.strategy} d={'rec' if self.delay is None else self.delay}"


@dataclass
class ReplayResult:
    """Per-step series and metrics of one condition.

    executed: (T, A) actions (NaN where nothing was planned: hold); staleness_s: (T,);
    recorded: (T, A_rec) recorded actions (NaN where unknown); switches: steps of chunk switches.
    """

    config: ReplayConfig
    t: np.ndarray
    executed: np.ndarray
    staleness_s: np.ndarray
    recorded: np.ndarray
    switches: list[int]
    latency_ms: list[float]
    delays_used: list[int]
    metrics: dict[str, Any]
    timing: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        def arr(x):
            return [[None if not np.isfinite(v) else round(float(v), 9) for v in row] for row in x]

        return {
            "label": self.config.label,
            "method": self.config.preset or self.config.strategy,
            "strategy": self.config.strategy,
            "strategy_options": dict(self.config.strategy_options),
            "delay": self.config.delay,
            "dt": self.config.dt,
            "horizon": self.config.horizon,
            "s_min": self.config.s_min,
            "seed": self.config.seed,
            "metrics": self.metrics,
            "timing": self.timing,
            "switches": self.switches,
            "delays_used": self.delays_used,
            "series": {
                "t": self.t.tolist(),
                "executed": arr(self.executed),
                "staleness_s": [None if not np.isfinite(v) else float(v) for v in self.staleness_s],
                "recorded": arr(self.recorded),
            },
        }


def _stats(x: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": None, "p95": None, "max": None}
    return {"n": int(a.size), "mean": float(a.mean()), "p95": float(np.quantile(a, 0.95)), "max": float(a.max())}


def _recorded_actions(run: RecordedRun, t0_ns: int, n_steps: int, dt: float) -> np.ndarray:
    """(T, A_rec) recorded executed action per step from the plans, else the commands; NaN unknown."""
    dt_ns = dt * 1e9
    times = t0_ns + np.arange(n_steps) * dt_ns
    if run.plans:
        a_dim = run.plans[0][2].shape[1]
        out = np.full((n_steps, a_dim), np.nan)
        p_stamps = np.asarray([p[0] for p in run.plans], dtype=np.float64)
        for i, tau in enumerate(times):
            j = int(np.searchsorted(p_stamps, tau + dt_ns / 2, side="right")) - 1
            if j < 0:
                continue
            stamp, pdt, acts = run.plans[j]
            k = int(round((tau - stamp) / (pdt * 1e9)))
            if 0 <= k < len(acts) and acts.shape[1] == a_dim:
                out[i] = acts[k]
        return out
    if run.cmd.size:
        out = np.full((n_steps, run.cmd.shape[1]), np.nan)
        for i, tau in enumerate(times):
            j = int(np.searchsorted(run.cmd_t_ns, tau + dt_ns, side="left")) - 1  # last command before step end
            if j >= 0:
                out[i] = run.cmd[j]
        return out
    return np.full((n_steps, 0), np.nan)


def _diffs(x: np.ndarray, i: int, dt: float) -> tuple[float, float, float]:
    """jump, acceleration, jerk norms at switch step i of trajectory x (T, D) (NaN out of range)."""

    def ok(*idx):
        return all(0 <= j < len(x) and np.isfinite(x[j]).all() for j in idx)

    jump = float(np.linalg.norm(x[i] - x[i - 1])) if ok(i - 1, i) else math.nan
    acc = float(np.linalg.norm(x[i + 1] - 2 * x[i] + x[i - 1]) / dt**2) if ok(i - 1, i, i + 1) else math.nan
    jerk = (
        float(np.linalg.norm(x[i + 1] - 3 * x[i] + 3 * x[i - 1] - x[i - 2]) / dt**3)
        if ok(i - 2, i - 1, i, i + 1)
        else math.nan
    )
    return jump, acc, jerk


def _rms_deriv(x: np.ndarray, order: int, dt: float) -> float | None:
    d = np.diff(x, n=order, axis=0)
    d = d[np.isfinite(d).all(axis=1)]
    if d.size == 0:
        return None
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))) / dt**order)


def replay(run: RecordedRun, policy, config: ReplayConfig, correction=None) -> ReplayResult:
    """Replay ``run`` with ``policy`` (a ChunkPolicy) under ``config``; see the module docstring.

    ``correction``: an A2C2 head (``residual(obs, base, k, H, latent=None)``): the executed action
    is ``base + residual`` on the recorded observation of the step, as the correction node does.
    """
    from async_vla_ros.core.delay import DelayConfig, DelayEstimator
    from async_vla_ros.core.delivery import DelayedDelivery, constant_delay, cycled_delays
    from async_vla_ros.core.requests import infer_specs
    from async_vla_ros.core.scheduler import ChunkScheduler, SchedulerConfig

    H, A = int(policy.horizon), int(policy.action_dim)
    if H != config.horizon:
        raise ValueError(f"config.horizon {config.horizon} != policy horizon {H}")
    try:
        policy_state(policy, run.obs[:1])
    except ValueError as exc:
        raise ValueError(
            f"the bag's observations do not fit the policy ({exc}): wrong policy/task for this recording"
        ) from None
    if config.delay is None and not run.delays:
        raise BagError(
            f"bag {run.path} has no accepted chunk reports on {REPORT_TOPIC}: "
            "no recorded delays to replay (use --delay D)"
        )
    cameras = list(getattr(policy, "camera_hw", None) or {})
    if cameras:
        run.policy_input(0, cameras, policy)  # BagError now when the bag lacks a camera the policy takes
    dt, dt_ns = config.dt, config.dt * 1e9
    t0 = int(run.obs_t_ns[0])
    obs_step = np.floor((run.obs_t_ns - t0) / dt_ns).astype(np.int64)
    n_steps = int(obs_step[-1]) + 1
    d_max = H - 1
    sched = ChunkScheduler(
        SchedulerConfig(horizon=H, action_dim=A, s_min=config.s_min),
        config.strategy,
        DelayEstimator(DelayConfig(d_init=0 if config.delay is None else config.delay, d_max=d_max)),
        **dict(config.strategy_options),
    )
    delay = constant_delay(config.delay) if config.delay is not None else cycled_delays(run.delays, d_max)
    link = DelayedDelivery(sched, delay)
    chunk_obs_ns: dict[int, int] = {}
    latency_ms: list[float] = []
    executed = np.full((n_steps, A), np.nan)
    staleness = np.full(n_steps, np.nan)
    j = -1  # index of the current observation
    episode = None
    for t in range(n_steps):
        while j + 1 < len(obs_step) and obs_step[j + 1] <= t:
            j += 1
        if episode is not None and run.episode[j] != episode:
            sched.reset(keep_delay_stats=True)
            link.clear()
        episode = run.episode[j]
        link.arrive(t)
        spec = link.request(t)
        if spec is not None:
            t_start = time.perf_counter()
            obs_in = run.policy_input(j, cameras, policy)
            acts = infer_specs(policy, obs_in, [spec], seed=config.seed + spec.request_id)
            latency_ms.append((time.perf_counter() - t_start) * 1e3)
            chunk_obs_ns[link.next_chunk_id] = int(run.obs_t_ns[j])
            link.send(spec, acts[0], t)
        a = sched.action_at(t)
        if a is not None:
            last = sched.timeline.last_executed()
            if correction is not None:
                o = run.obs[j][None]
                lat = policy.latent(o) if getattr(correction.config, "latent_dim", 0) else None
                a = a + np.asarray(correction.residual(o, a[None], np.array([last.k]), H, latent=lat))[0]
            executed[t] = a
            src = chunk_obs_ns.get(last.chunk_id) if last is not None and last.t == t else None
            if src is not None:
                staleness[t] = (t0 + (t + 1) * dt_ns - src) / 1e9  # age at the end of the step it executes in
    delays_used = link.delays_used
    switches = [sp.t for sp in sched.timeline.switch_points if sp.from_chunk is not None]
    arm = executed[:, : min(ARM_DIMS, A)]
    at_switch = [_diffs(arm, s, dt) for s in switches]
    recorded = _recorded_actions(run, t0, n_steps, dt)
    dims = min(arm.shape[1], recorded.shape[1])
    dev = np.linalg.norm(arm[:, :dims] - recorded[:, :dims], axis=1) if dims else np.zeros(0)
    dev = dev[np.isfinite(dev)]
    metrics = {
        "steps": n_steps,
        "executed_steps": int(np.isfinite(executed).all(axis=1).sum()),
        "chunks": sched.n_accepted,
        "requests": sched.n_requests,
        "rejected": dict(sched.reject_counts),
        "switches": len(switches),
        "jump": _stats([s[0] for s in at_switch]),
        "accel_at_switch": _stats([s[1] for s in at_switch]),
        "jerk_at_switch": _stats([s[2] for s in at_switch]),
        "accel_rms": _rms_deriv(arm, 2, dt),
        "jerk_rms": _rms_deriv(arm, 3, dt),
        "staleness_s": _stats(staleness.tolist()),
        "deviation_rms": float(np.sqrt(np.mean(dev**2))) if dev.size else None,
        "deviation_max": float(dev.max()) if dev.size else None,
        "deviation_steps": int(dev.size),
        "delay_mean": float(np.mean(delays_used)) if delays_used else None,
    }
    timing = {
        "replay_inference_ms": _stats(latency_ms),
        "recorded_inference_ms": _stats([1e3 * v for v in run.inference_s]),
    }
    return ReplayResult(
        config, np.arange(n_steps), executed, staleness, recorded, switches, latency_ms, delays_used, metrics, timing
    )


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("bag", help="rosbag2 directory (MCAP) with /observation (and optionally chunk reports, plans)")
    parser.add_argument(
        "--method",
        nargs="+",
        default=["naive", "rtc"],
        metavar="M",
        help="method presets to compare (config/methods.yaml; default: naive rtc)",
    )
    parser.add_argument(
        "--delay",
        nargs="+",
        default=["recorded"],
        metavar="D",
        help="simulated delay(s) in steps, or 'recorded' for the bag's measured delays (default)",
    )
    parser.add_argument(
        "--policy",
        default="recorded",
        help="policy spec: recorded (default: the policy the bag was recorded with), default (the task's shipped "
        "checkpoints for each preset), expert, a checkpoint path, NAME:TARGET",
    )
    parser.add_argument(
        "--a2c2", default="default", metavar="HEAD", help="A2C2 head for *_a2c2 presets: default (shipped) or a path"
    )
    parser.add_argument("--task", default=None, help="task of the expert (default: the bag's Observation.task)")
    parser.add_argument("--horizon", type=int, default=8, help="H of the expert (checkpoints carry theirs; default 8)")
    parser.add_argument(
        "--dt", type=float, default=None, help="control period (default: from the bag's plans/requests)"
    )
    parser.add_argument("--s-min", type=int, default=1, help="execution horizon floor (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="policy seed base (default 0)")
    parser.add_argument("--out", default=None, help="output folder (default: <bag>_replay)")
    parser.add_argument("--no-plots", action="store_true", help="write metrics only (no PNG/markdown)")
    g = parser.add_argument_group("republishing into a live graph (instead of the evaluation)")
    g.add_argument(
        "--republish",
        action="store_true",
        help="publish the bag's messages at their original timing into the running ROS graph",
    )
    g.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="TOPIC",
        help="topics to republish (default: the robot's: /joint_states, /camera/<name>/image_raw and "
        "camera_info of the sim cameras, /sim/task_state; 'all': every topic of the bag)",
    )
    g.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    g.add_argument(
        "--keep-stamps",
        action="store_true",
        help="publish the recorded header stamps (default: shifted to now, as live data)",
    )
    g.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish a bag topic under another name")
    g.add_argument(
        "--wait-subscribers",
        type=float,
        default=5.0,
        help="wait up to this long for subscribers before playing (default 5 s)",
    )
    return parser


def recorded_policy(run: RecordedRun) -> str:
    """The policy spec the bag was recorded with, from ``ActionChunk.policy_name``
    (``<backend>/<task>[/<spec>]``): ``expert``, ``default`` for the task's shipped checkpoints (so
    each preset gets its own: REMAC for ``remac`` ...), a checkpoint path, or a backend spec."""
    from async_vla_ros.checkpoints import DIR

    if not run.policy_name:
        raise ValueError(
            f"bag {run.path} does not say which policy recorded it (no {CHUNK_TOPIC} chunk): "
            "pass --policy default | expert | PATH"
        )
    backend, _, rest = run.policy_name.partition("/")
    _task, _, spec = rest.partition("/")
    if not spec:
        return backend  # e.g. "expert"
    if backend == "flow":
        path = Path(spec).expanduser()
        if path.parent.resolve() == DIR.resolve() and path.name.startswith(f"{_task}_"):
            return "default"  # the shipped checkpoints of the task
        if not path.is_file():
            raise ValueError(
                f"bag {run.path} was recorded with checkpoint {path}, which is not on this machine: pass --policy"
            )
    return spec


def _load_models(ns: argparse.Namespace, run: RecordedRun, task: str) -> tuple[str, dict[str, Any]]:
    """(policy spec used, preset -> PresetModels); ValueError saying why a preset cannot be served."""
    from async_vla_ros.policy.registry import BackendRequest, load_models
    from async_vla_ros.presets import get_preset
    from async_vla_ros.sim.tasks import TASKS

    if not task:
        raise ValueError("the bag's observations name no task: pass --task")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    spec = recorded_policy(run) if ns.policy == "recorded" else ns.policy
    cache: dict = {}
    models = {}
    for m in ns.method:
        preset = get_preset(m)
        req = BackendRequest(task, horizon=ns.horizon)
        models[m] = load_models(task, preset, spec, a2c2=ns.a2c2, request=req, cache=cache)
    return spec, models


def _parse_delays(values: Sequence[str]) -> list[int | None]:
    out: list[int | None] = []
    for v in values:
        if v in ("recorded", "rec"):
            out.append(None)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise ValueError(f"--delay takes integers (steps) or 'recorded', got {v!r}") from None
    return out


def _run_republish(ns: argparse.Namespace) -> int:
    from async_vla_ros.eval.republish import ROBOT_TOPICS, parse_remaps, republish
    from async_vla_ros.rosenv import apply_ros_defaults

    apply_ros_defaults()
    import rclpy

    topics = None if ns.topics == ["all"] else (ns.topics or list(ROBOT_TOPICS))
    try:
        remap = parse_remaps(ns.remap)
    except ValueError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    rclpy.init(args=[])
    node = rclpy.create_node("bag_player")
    try:
        res = republish(node, ns.bag, topics, ns.rate, not ns.keep_stamps, remap, ns.wait_subscribers)
    except (BagError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("replay: interrupted", file=sys.stderr)
        return 130
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    for topic, n in res.counts.items():
        print(f"  {topic:<40} {n:8d} messages")
    print(
        f"republished {sum(res.counts.values())} messages in {res.duration_s:.1f} s; publish time after schedule: "
        f"median {res.lateness_ms['median']:.2f} ms, p99 {res.lateness_ms['p99']:.2f} ms, "
        f"max {res.lateness_ms['max']:.2f} ms"
    )
    return 0


def run(ns: argparse.Namespace) -> int:
    if getattr(ns, "republish", False):
        return _run_republish(ns)
    try:
        rec = load_recording(ns.bag)
        delays = _parse_delays(ns.delay)
        task = ns.task or rec.task
        spec, models = _load_models(ns, rec, task)
        dt = ns.dt or rec.dt
        if dt is None:
            gaps = np.diff(rec.obs_t_ns) / 1e9
            dt = float(np.median(gaps))
            print(f"note: no dt in the bag (no plans/requests): using the median observation period {dt:.4f} s")
        configs = [
            (
                m,
                ReplayConfig(
                    lm.preset.strategy,
                    d,
                    dt,
                    int(lm.policy.horizon),
                    ns.s_min,
                    ns.seed,
                    preset=m,
                    strategy_options=lm.preset.strategy_options,
                ),
            )
            for m, lm in models.items()
            for d in delays
        ]
    except (BagError, ValueError, FileNotFoundError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print(f"replay: policy {spec}" + (" (as recorded)" if ns.policy == "recorded" else "") + f", task {task}")
    results = []
    for m, cfg in configs:
        try:
            results.append(replay(rec, models[m].policy, cfg, correction=models[m].head))
        except (BagError, ValueError) as exc:
            print(f"replay: {cfg.label}: {exc}", file=sys.stderr)
            return 2
        r = results[-1].metrics
        print(
            f"{cfg.label:16s} switches {r['switches']:4d}  jump mean {_fmt(r['jump']['mean'])} rad  "
            f"staleness mean {_fmt(r['staleness_s']['mean'])} s  deviation rms {_fmt(r['deviation_rms'])} rad"
        )
    out = Path(ns.out) if ns.out else Path(str(Path(ns.bag).resolve()) + "_replay")
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "bag": str(Path(ns.bag).resolve()),
        "task": task,
        "policy": spec,
        "recorded_policy": rec.policy_name,
        "models": {m: lm.files for m, lm in models.items()},
        "dt": dt,
        "recorded_strategy": rec.merge_strategy,
        "results": [r.to_json() for r in results],
    }
    (out / "replay.json").write_text(json.dumps(doc, indent=1))
    if not ns.no_plots:
        from async_vla_ros.eval.report import write_replay_report

        md = write_replay_report(doc, out)
        print(f"report: {md}")
    print(f"results: {out / 'replay.json'}")
    return 0


def _fmt(v) -> str:
    return "   n/a" if v is None else f"{v:6.4f}"
