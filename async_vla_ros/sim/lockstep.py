"""Lockstep (simulated-delay) benchmark runner: B envs, one batched policy call per inference.

Timing (RTC Kinetix evaluation semantics, docs/architecture.md). Per control step t, for every
env of the batch:

1. chunks whose simulated arrival step is t are handed to the env's ``ChunkScheduler``
   (``on_chunk(chunk, t)``);
2. ``maybe_request(t)``: the envs that request (all at the same step: the delay is simulated and
   identical) are answered by ONE batched ``policy.infer`` on their observations of step t; the
   chunks become available at ``t + d``; with d = 0 they are delivered at once, before step t's
   action is chosen;
3. ``action_at(t)`` gives the base action (None = nothing planned: hold the last command, e.g.
   while ``sync`` waits for inference or before the first chunk arrives); with a
   ``CorrectionHead`` the executed action is ``base + residual(obs_t, base, k)`` (A2C2), k being
   the base action's index in its chunk;
4. the envs step.

With a fixed delay the scheduler's delay estimator is pinned to the simulated d (its forecast is
always d), so it is exact, as in the paper's simulated evaluation. With a delay that varies
(``delay_spec``: ``U{lo..hi}`` drawn per chunk, or a recorded trace replayed in order; see
:class:`~async_vla_ros.core.delay.DelaySpec`) every chunk gets its own delay, and the forecast
comes from a real :class:`~async_vla_ros.core.delay.DelayEstimator` with the scheduler node's
defaults (window 20, quantile 1 = max, warm-up 1, d_init 0, d_max H - 1) fed, as in the nodes, by
the scheduler with the delays that happened (``t_arrive - t_obs`` of each merged chunk). The run
counts how often the forecast a request used under- or over-shot the delay its chunk then had
(``LockstepResult.forecast``); a chunk arriving too late to be used is dropped and counted. ``s = max(d, s_min)``
(``sync``: executes ``s_min`` actions per chunk, then holds for d steps; ``s_min = H`` runs
whole chunks).

Envs whose outcome is decided (success or failure known) stop simulating (``stop_when_decided``);
their metrics cover the steps up to the decision.

Determinism: episode ``i`` of a run with seed ``seed`` uses env seed ``episode_seeds(seed, n)[i]``
(SeedSequence-derived, so eval seeds do not coincide with the small integers used for
demonstrations); policy call ``j`` of batch ``b`` uses seed ``SeedSequence([seed, b, j])``.
Results do not depend on wall time; ``infer_s`` and ``wall_s`` are measured (``perf_counter``).

Per-episode smoothness is computed on the executed command stream ``c_t`` (7 joint targets, rad),
with the two commands before t = 0 equal to the initial (resting) command:
acceleration ``(c_t - 2 c_{t-1} + c_{t-2}) / dt^2``, jerk = third difference / dt^3 (max over
joints and steps, and RMS over all entries); ``switch_jump_max`` is the largest
``||c_t - c_{t-1}||_2`` at a step whose action comes from a different chunk than the step
before, or the first step of a chunk after a hold (every chunk start except the first chunk's).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.core.chunk import Chunk
from async_vla_ros.core.delay import DelayConfig, DelayEstimator, DelaySpec, ForecastTally
from async_vla_ros.core.delivery import DelayedDelivery, constant_delay, step_requests
from async_vla_ros.core.requests import infer_specs
from async_vla_ros.core.scheduler import ChunkScheduler, MergeResult, SchedulerConfig
from async_vla_ros.core.strategies import STRATEGIES, make_strategy
from async_vla_ros.policy.checks import policy_state
from async_vla_ros.sim.env import BatchedPandaEnv
from async_vla_ros.sim.tasks import TASKS, make_task

EVAL_SEED_SALT = 0x5EED_E7A1


def episode_seeds(seed: int, n: int) -> list[int]:
    """Env seeds of a lockstep run: n distinct 32-bit ints derived from ``seed``."""
    return [int(x) for x in np.random.SeedSequence([int(seed), EVAL_SEED_SALT]).generate_state(n)]


class _FixedDelay(DelayEstimator):
    """The simulated delay is known exactly: forecast d (measured delays are still recorded)."""

    def __init__(self, d: int):
        super().__init__(DelayConfig(warmup=0, d_init=d, d_min=d, d_max=d))
        self._d = int(d)

    def forecast(self) -> int:
        return self._d


def _call_seed(seed: int, batch: int, call: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(batch), int(call)]).generate_state(1)[0])


@dataclass(frozen=True)
class LockstepConfig:
    """One evaluation condition."""

    task: str  # track | intercept | bifurcate | pick_moving
    strategy: str = "naive"  # merge strategy (core.strategies): sync naive te rtc rtc_hard remac bid
    delay: int = 0  # simulated inference delay d, control steps
    s_min: int = 1  # execution horizon floor, s = max(d, s_min) (sync: actions per chunk)
    episodes: int = 50  # number of episodes
    batch: int = 50  # envs stepped in lockstep (one batched infer per inference step)
    seed: int = 0  # run seed (episode and policy seeds derive from it)
    strategy_options: tuple[tuple[str, Any], ...] = ()  # extra kwargs of make_strategy
    stop_when_decided: bool = True  # stop simulating an env once its outcome is known
    threads: int | None = None  # physics threads (None: min(2, cpus))
    delay_spec: DelaySpec | None = None  # delays that vary per chunk (overrides ``delay``; module doc)
    instruction: str = ""  # language instruction for policies that take cameras ('' : the task's first paraphrase)
    # drive the arm as the graph does: 100 Hz ramped commands through the FR3 safety filter (sim/env.py)
    safety_filter: bool = False

    @property
    def delay_label(self) -> str:
        return str(self.delay) if self.delay_spec is None else self.delay_spec.label

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            make_task(self.task)  # raises with a did-you-mean
        if self.strategy not in STRATEGIES:
            make_strategy(self.strategy)  # raises with a did-you-mean
        for name in ("delay", "s_min", "episodes", "batch", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"LockstepConfig.{name} must be an int, got {v!r}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.s_min < 1 or self.episodes < 1 or self.batch < 1:
            raise ValueError("s_min, episodes and batch must be >= 1")
        if self.delay_spec is not None and not isinstance(self.delay_spec, DelaySpec):
            raise ValueError(f"delay_spec must be a DelaySpec or None, got {type(self.delay_spec).__name__}")
        if self.delay_spec is not None and self.delay_spec.fixed is not None:  # a fixed d is the plain case
            object.__setattr__(self, "delay", self.delay_spec.fixed)
            object.__setattr__(self, "delay_spec", None)


@dataclass(frozen=True)
class EpisodeRecord:
    """Outcome and metrics of one episode."""

    seed: int
    success: bool
    success_step: int  # -1 if not successful
    time_to_success_s: float | None  # (success_step + 1) * dt
    steps: int  # control steps simulated
    acc_max: float  # rad/s^2, executed joint command stream
    acc_rms: float
    jerk_max: float  # rad/s^3
    jerk_rms: float
    switch_jump_max: float  # rad, largest ||c_t - c_{t-1}|| at a chunk switch (0 if none)
    n_switches: int
    hold_steps: int  # steps with nothing planned (held the last command)
    infer_s: float  # this episode's share of the batch's inference wall time (batch time / B)
    task_info: dict[str, Any] = field(default_factory=dict)
    # with LockstepRunner(keep_steps=True): the task observation before every step and after the last
    # (steps + 1, obs_dim) and the command sent at every step (steps, 8; with the safety filter on, what
    # went into it); None otherwise
    obs: np.ndarray | None = field(default=None, repr=False)
    commands: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LockstepResult:
    config: LockstepConfig
    episodes: tuple[EpisodeRecord, ...]
    wall_s: float  # total wall time of the run
    infer_s: float  # wall time inside policy.infer
    correction_s: float  # wall time inside the correction head
    infer_calls: int
    horizon: int
    dt: float
    forecast: dict[str, Any] = field(default_factory=dict)  # ForecastTally.as_dict() (varying delays only)

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / max(1, self.n)

    @property
    def episodes_per_s(self) -> float:
        return self.n / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def sim_episodes_per_s(self) -> float:
        """Episodes per second of everything except policy inference and correction."""
        rest = self.wall_s - self.infer_s - self.correction_s
        return self.n / rest if rest > 0 else float("inf")

    def mean(self, name: str) -> float:
        vals = [getattr(e, name) for e in self.episodes if getattr(e, name) is not None]
        return float(np.mean(vals)) if vals else float("nan")

    def summary(self) -> dict[str, Any]:
        ts = [e.time_to_success_s for e in self.episodes if e.time_to_success_s is not None]
        return {
            **{k: v for k, v in asdict(self.config).items() if k not in ("strategy_options", "delay_spec")},
            "strategy_options": dict(self.config.strategy_options),
            "delay_label": self.config.delay_label,
            "forecast": dict(self.forecast),
            "n": self.n,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "time_to_success_s": float(np.mean(ts)) if ts else None,
            "acc_max": self.mean("acc_max"),
            "acc_rms": self.mean("acc_rms"),
            "jerk_max": self.mean("jerk_max"),
            "jerk_rms": self.mean("jerk_rms"),
            "switch_jump_max": self.mean("switch_jump_max"),
            "wall_s": self.wall_s,
            "infer_s": self.infer_s,
            "correction_s": self.correction_s,
            "infer_calls": self.infer_calls,
            "infer_ms_per_call": 1e3 * self.infer_s / self.infer_calls if self.infer_calls else None,
            "episodes_per_s": self.episodes_per_s,
            "sim_episodes_per_s": self.sim_episodes_per_s,
        }


def smoothness(commands: np.ndarray, dt: float) -> tuple[float, float, float, float]:
    """(acc_max, acc_rms, jerk_max, jerk_rms) of a command stream (T, J) whose first two rows
    are the resting command before the first step."""
    c = np.asarray(commands, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 4:
        return 0.0, 0.0, 0.0, 0.0
    acc = np.diff(c, n=2, axis=0) / dt**2
    jerk = np.diff(c, n=3, axis=0) / dt**3
    return (
        float(np.abs(acc).max()),
        float(np.sqrt((acc**2).mean())),
        float(np.abs(jerk).max()),
        float(np.sqrt((jerk**2).mean())),
    )


class LockstepRunner:
    """Runs :class:`LockstepConfig` conditions for one policy (and optional correction head).

    ``policy``: any ChunkPolicy (``infer(obs (B, obs_dim), sampler, prefix (B,H,A), weights
    (B,H), n_frozen (B,), seed) -> (B,H,A)``). ``correction``: object with
    ``residual(obs (B,obs_dim), base (B,A), k (B,), H, latent=None) -> (B,A)``; if its config has
    ``latent_dim > 0`` the policy must offer ``latent(obs) -> (B, latent_dim)``.
    ``progress``: optional callback ``(episodes_done, episodes_total)``. ``env_factory(task,
    num_envs, threads)`` builds the batched environment (default :class:`BatchedPandaEnv`; tests
    pass a physics-free fake with the same interface). ``keep_steps``: every episode's record also
    holds its observations and executed commands, step by step (``eval --steps-out``).
    """

    def __init__(
        self,
        policy: Any,
        correction: Any | None = None,
        progress: Callable[[int, int], None] | None = None,
        env_factory: Callable[..., Any] | None = None,
        keep_steps: bool = False,
    ):
        for attr in ("horizon", "action_dim", "obs_dim", "infer"):
            if not hasattr(policy, attr):
                raise TypeError(f"policy lacks {attr!r}: not a ChunkPolicy")
        if correction is not None and not hasattr(correction, "residual"):
            raise TypeError("correction must have residual(obs, base_action, k, H, latent=None)")
        self.policy = policy
        self.correction = correction
        self.progress = progress
        self.env_factory = env_factory or BatchedPandaEnv
        self.keep_steps = bool(keep_steps)
        cfg = getattr(correction, "config", None)
        self._latent = bool(cfg is not None and getattr(cfg, "latent_dim", 0) > 0)
        if self._latent and not hasattr(policy, "latent"):
            raise TypeError("the correction head takes a latent but the policy has no latent(obs)")

    def run(self, config: LockstepConfig) -> LockstepResult:
        task = make_task(config.task)
        try:  # the one rule of what a policy reads of a state (policy.checks.policy_state)
            policy_state(self.policy, np.zeros(task.obs_dim))
            fits = True
        except ValueError:
            fits = False
        if not fits or self.policy.action_dim != 8:
            raise ValueError(
                f"policy dims (obs {self.policy.obs_dim}, action {self.policy.action_dim}) do not "
                f"match task {config.task!r} (obs {task.obs_dim}, action 8)"
            )
        seeds = episode_seeds(config.seed, config.episodes)
        records: list[EpisodeRecord] = []
        t0 = time.perf_counter()
        timers = {"infer": 0.0, "corr": 0.0, "calls": 0}
        tallies: list[ForecastTally] = []
        batch = min(config.batch, config.episodes)
        env = self.env_factory(task, batch, threads=config.threads, **self._env_kw(config))
        try:
            for b, start in enumerate(range(0, config.episodes, batch)):
                part = seeds[start : start + batch]
                if len(part) < batch:
                    env.close()
                    env = self.env_factory(task, len(part), threads=config.threads, **self._env_kw(config))
                records.extend(self._run_batch(env, config, part, b, timers, tallies))
                if self.progress is not None:
                    self.progress(len(records), config.episodes)
        finally:
            env.close()
        return LockstepResult(
            config,
            tuple(records),
            time.perf_counter() - t0,
            timers["infer"],
            timers["corr"],
            timers["calls"],
            int(self.policy.horizon),
            task.dt,
            ForecastTally().merge(tallies).as_dict() if config.delay_spec is not None else {},
        )

    # ------------------------------------------------------------------ one batch
    @staticmethod
    def _env_kw(config: LockstepConfig) -> dict[str, Any]:
        if not config.safety_filter:
            return {}
        from async_vla_ros.core.safety import SafetyConfig

        return {"safety": SafetyConfig(robot="fr3")}  # the correction node's default (robot:=fr3, scales 1.0)

    def _make_scheduler(self, config: LockstepConfig) -> ChunkScheduler:
        h = int(self.policy.horizon)
        opts = dict(config.strategy_options)
        if config.strategy == "sync" and "s" not in opts:
            opts["s"] = min(config.s_min, h)
        if config.delay_spec is None:
            delay = _FixedDelay(config.delay)
        else:  # the scheduler node's estimator defaults, fed by the scheduler with the delays that happened
            delay = DelayEstimator(DelayConfig(window=20, quantile=1.0, warmup=1, d_init=0, d_max=h - 1))
        cfg = SchedulerConfig(horizon=h, action_dim=int(self.policy.action_dim), s_min=min(config.s_min, h))
        return ChunkScheduler(cfg, config.strategy, delay=delay, **opts)

    def _render(self, env: BatchedPandaEnv, rows: Sequence[int]) -> dict[str, np.ndarray]:
        """This step's frame of every camera the policy's cameras come from, for ``rows``."""
        cams = getattr(self.policy, "camera_hw", None) or {}
        groups = N.IMAGE_STYLES[getattr(self.policy, "image_style", N.IMAGE_STYLE)]  # what its training frames drew
        shots: dict[str, tuple[int, int]] = {}
        for name, hw in cams.items():
            shots.setdefault(N.frame_source(name)[0], tuple(hw))
        return {
            cam: np.stack([env.render(int(i), camera=cam, width=w, height=h, geom_groups=groups) for i in rows])
            for cam, (h, w) in shots.items()
        }

    def _policy_obs(
        self,
        env: BatchedPandaEnv,
        obs: np.ndarray,
        rows: Sequence[int],
        config: LockstepConfig,
        frames: Sequence[dict[str, np.ndarray]] | None = None,
    ):
        """The policy's input for ``rows``: the state, plus camera images rendered at this step and
        the instruction (as camera_ingestion sends them) for a policy that names its cameras
        (``camera_hw``: MuJoCo camera -> (h, w), e.g. a LeRobot VLA). ``frames[k]``: every env's
        frames k steps ago (policies with ``<camera>_prev`` / ``<camera>_prev<k>`` cameras)."""
        cams = getattr(self.policy, "camera_hw", None)
        state = policy_state(self.policy, obs[rows])
        if not cams:
            return state
        if frames is None:
            now = self._render(env, rows)
            images = {name: now[N.frame_source(name)[0]] for name in cams}
        else:
            idx = np.asarray(rows, dtype=int)
            images = {name: frames[N.frame_source(name)[1]][N.frame_source(name)[0]][idx] for name in cams}
        return {
            "state": state,
            "images": images,
            "instruction": config.instruction or N.default_instruction(config.task),
        }

    def _run_batch(
        self,
        env: BatchedPandaEnv,
        config: LockstepConfig,
        seeds: Sequence[int],
        b_idx: int,
        timers: dict,
        tallies: list[ForecastTally] | None = None,
    ) -> list[EpisodeRecord]:
        n, h = len(seeds), int(self.policy.horizon)
        scheds = [self._make_scheduler(config) for _ in range(n)]
        if config.delay_spec is None:
            links = [DelayedDelivery(sc, constant_delay(config.delay), on_merge=_strict) for sc in scheds]
        else:
            links = []
            for i, sc in enumerate(scheds):
                tally = ForecastTally()
                if tallies is not None:
                    tallies.append(tally)
                # the episode's seed picks its delays: every method sees the same draws per episode
                links.append(
                    DelayedDelivery(
                        sc, _tallied(config.delay_spec.source(config.seed, int(seeds[i])), tally), _counted(tally)
                    )
                )
        obs = env.reset(seeds)
        kept_obs: list[list[np.ndarray]] = [[obs[i].copy()] for i in range(n)] if self.keep_steps else []
        kept_cmd: list[list[np.ndarray]] = [[] for _ in range(n)] if self.keep_steps else []
        last_cmd = env.command.copy()
        cmds = [[last_cmd[i, :7].copy(), last_cmd[i, :7].copy()] for i in range(n)]
        active = np.ones(n, dtype=bool)
        holds = np.zeros(n, dtype=int)
        steps = np.zeros(n, dtype=int)
        infer_batch = 0.0
        call = 0
        # a policy that takes previous frames: every env's cameras rendered every step
        back = max((N.frame_source(c)[1] for c in (getattr(self.policy, "camera_hw", None) or {})), default=0)
        every_step = back > 0
        frames = None
        history: deque[dict[str, np.ndarray]] = deque(maxlen=back + 1)  # newest first
        for t in range(env.episode_steps):
            if config.stop_when_decided:
                active &= ~env.decided()
            if not active.any():
                break
            if every_step:
                history.appendleft(self._render(env, range(n)))
                # before the episode has k frames, "k back" is its first frame (as training's t - k)
                frames = [history[min(k, len(history) - 1)] for k in range(back + 1)]
            # 1. arrivals
            for i in np.flatnonzero(active):
                links[i].arrive(t)
            # 2. requests: one batched call
            req, specs = step_requests(((i, links[i]) for i in np.flatnonzero(active)), t)
            if req:
                tic = time.perf_counter()
                chunks = infer_specs(
                    self.policy,
                    self._policy_obs(env, obs, req, config, frames),
                    specs,
                    seed=_call_seed(config.seed, b_idx, call),
                )
                dt_inf = time.perf_counter() - tic
                timers["infer"] += dt_inf
                timers["calls"] += 1
                infer_batch += dt_inf
                call += 1
                for j, i in enumerate(req):
                    links[i].send(specs[j], chunks[j], t)
            # 3. actions
            base = last_cmd.copy()
            ks = np.full(n, -1, dtype=int)
            for i in np.flatnonzero(active):
                a = scheds[i].action_at(t)
                if a is None:
                    holds[i] += 1
                else:
                    base[i] = a
                    ks[i] = scheds[i].timeline.last_executed().k
            executed = base
            if self.correction is not None:
                sel = np.flatnonzero(active & (ks >= 0))
                if len(sel):
                    # the head reads what the policy reads of the state (a VLA: proprioception) and,
                    # with a latent, the policy's features of this step's observation (a VLA: its cameras)
                    pobs = self._policy_obs(env, obs, sel, config, frames) if self._latent else None
                    tic = time.perf_counter()
                    lat = self.policy.latent(pobs) if self._latent else None
                    res = self.correction.residual(
                        policy_state(self.policy, obs[sel]), base[sel], ks[sel], h, latent=lat
                    )
                    timers["corr"] += time.perf_counter() - tic
                    executed = base.copy()
                    executed[sel] = base[sel] + np.asarray(res, dtype=np.float64)
            obs = env.step(executed, active=active)
            last_cmd = env.command.copy()
            for i in np.flatnonzero(active):
                cmds[i].append(last_cmd[i, :7].copy())
                steps[i] += 1
                if self.keep_steps:
                    kept_obs[i].append(obs[i].copy())
                    kept_cmd[i].append(np.asarray(executed[i], dtype=np.float64).copy())
        out = []
        succ, sstep = env.success(), env.success_step()
        for i in range(n):
            c = np.array(cmds[i])
            acc_max, acc_rms, jerk_max, jerk_rms = smoothness(c, env.dt)
            sw = scheds[i].timeline.switch_points
            jumps = [float(np.linalg.norm(c[p.t + 2, :] - c[p.t + 1, :])) for p in sw[1:] if p.t + 2 < len(c)]
            info = {k: v for k, v in env.states[i].info.items() if k != "errors"}
            out.append(
                EpisodeRecord(
                    seed=int(seeds[i]),
                    success=bool(succ[i]),
                    success_step=int(sstep[i]),
                    time_to_success_s=float((sstep[i] + 1) * env.dt) if succ[i] else None,
                    steps=int(steps[i]),
                    acc_max=acc_max,
                    acc_rms=acc_rms,
                    jerk_max=jerk_max,
                    jerk_rms=jerk_rms,
                    switch_jump_max=max(jumps) if jumps else 0.0,
                    n_switches=len(jumps),
                    hold_steps=int(holds[i]),
                    infer_s=infer_batch / n,
                    task_info=_jsonable(info),
                    obs=np.array(kept_obs[i]) if self.keep_steps else None,
                    commands=np.array(kept_cmd[i]).reshape(-1, last_cmd.shape[1]) if self.keep_steps else None,
                )
            )
        return out


def _tallied(source: Callable[[Any], int], tally: ForecastTally) -> Callable[[Any], int]:
    """A delay source that records (forecast the request used, delay drawn) in ``tally``."""

    def delay(spec) -> int:
        d = int(source(spec))
        tally.add(int(spec.d), d)
        return d

    return delay


def _counted(tally: ForecastTally) -> Callable[[Chunk, MergeResult, int], None]:
    """With varying delays a chunk may arrive too late to be used (expired): counted, not an error."""

    def on_merge(chunk: Chunk, res: MergeResult, t: int) -> None:
        if not res.accepted:
            tally.dropped += 1

    return on_merge


def _strict(chunk: Chunk, res: MergeResult, t: int) -> None:
    """In lockstep every chunk answers its request on time, so a reject is a bug."""
    if not res.accepted:
        raise RuntimeError(
            f"lockstep: chunk {chunk.chunk_id} (request {chunk.request_id}, t_obs {chunk.t_obs}) "
            f"rejected at step {t}: {res.reason}"
        )


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            out[k] = float(v)
        elif isinstance(v, (np.integer, int, bool, str)) or v is None:
            out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def run_lockstep(
    policy: Any,
    config: LockstepConfig,
    correction: Any | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LockstepResult:
    """Convenience: ``LockstepRunner(policy, correction, progress).run(config)``."""
    return LockstepRunner(policy, correction, progress).run(config)
