"""``async-vla-ros bench paper``: the papers' comparison, re-run on our tasks in lockstep.

For every task, method and delay d the lockstep runner (:mod:`async_vla_ros.sim.lockstep`) runs
N seeded episodes (the same episode seeds for every method: paired conditions) with H = 8 and
``s = max(d, s_min)``. The methods are the presets of ``config/methods.yaml``
(:mod:`async_vla_ros.presets`: merge strategy, checkpoint kind, A2C2 head; the strategy picks the
sampler), their models loaded by :func:`async_vla_ros.policy.registry.load_models`.
``--ablations`` adds the ablation presets (``remac_nomask``, ``remac_nocurriculum``,
``remac_noalign``: the ablation checkpoints, run like ``remac``; skipped and reported for a task
without the file). The A2C2 head is the one trained on the base policy's chunks; it is reused on
top of REMAC.

Latency is measured in the same run: for every method, the wall time of one chunk for ONE
observation (B = 1; median and p90 over ``--latency-reps`` calls after warm-up, this process's
single torch thread) plus the head's per-step time, and the per-call time of the batched
lockstep calls. Writes ``reports/benchmark.md`` (tables, claims check, command, machine) and
``reports/benchmark_<task>.png`` (success vs delay); ``--json`` also dumps every summary.

Delays that vary (``--jitter 1:4``, ``--delay-trace FILE``): extra columns in which every chunk
gets its own delay (uniform per chunk, or a recorded latency trace replayed in order) and the
scheduler's forecast comes from the nodes' delay estimator fed with the delays that happened
(:mod:`async_vla_ros.sim.lockstep`); the report adds how often that forecast under- or
over-shoots and what the jitter costs each method against the fixed-delay columns.

Prefix adherence (``--adherence-obs``): :func:`async_vla_ros.eval.bench_samplers.adherence` on
every task. Beta sweep (``--beta-sweep TASK``): ``rtc`` and ``rtc_jf`` at several guidance clips.

``--tiny``: one task, two delays, a few episodes (the end-to-end test of the command).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.eval.stats import mean_sem, wilson_interval
from async_vla_ros.policy.registry import BackendError, PresetModels, checkpoint_file, load_models
from async_vla_ros.presets import MethodPreset, get_preset

TASKS_DEFAULT = N.TASK_NAMES


def _main_presets() -> tuple[str, ...]:
    from async_vla_ros.presets import preset_names

    return preset_names()


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    tasks: tuple[str, ...] = TASKS_DEFAULT  # tasks to run
    methods: tuple[str, ...] = field(default_factory=_main_presets)  # presets (config/methods.yaml)
    delays: tuple[int, ...] = (0, 1, 2, 3, 4)  # simulated delays d
    s_min: int = 1  # s = max(d, s_min)
    episodes: int = 80  # N per (task, method, delay): the default run took 10.7 min on the 2-core dev machine
    batch: int = 40  # envs in lockstep
    seed: int = 0  # run seed (same episode seeds for every method)
    latency_reps: int = 100  # timed B = 1 inference calls per method
    ckpt_dir: str = ""  # checkpoint folder ("": the shipped async_vla_ros/checkpoints)
    jitter: tuple[str, ...] = ("1:4",)  # delays drawn per chunk, LO:HI (uniform); estimator forecast
    traces: tuple[str, ...] = ()  # recorded latency traces (core.delay.load_delay_trace), one column each
    trace_unit: str = "s"  # unit of a text / json list trace
    adherence_obs: int = 128  # demonstration observations per task for the prefix-adherence table (0: none)
    beta_sweep_task: str = ""  # task of the beta sweep of rtc / rtc_jf ("": none)
    betas: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)  # guidance clips of the sweep
    # whose policies: "default" (each task's privileged-state checkpoints) or a policy spec such as
    # "vla" (the multi-task VLA: cameras, instruction, proprioception; its own REMAC and A2C2 head)
    policy: str = "default"
    safety_filter: bool = False  # commands through the FR3 safety filter at 100 Hz, as in the graph (sim/env.py)

    def __post_init__(self) -> None:
        from async_vla_ros.sim.tasks import TASKS

        if not self.tasks or not self.methods or not self.delays:
            raise ValueError("tasks, methods and delays must be non-empty")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"unknown task(s) {bad}; known: {', '.join(sorted(TASKS))}")
        from async_vla_ros.presets import get_preset

        for m in self.methods:
            get_preset(m)  # PresetError (a ValueError) with a did-you-mean
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in self.delays):
            raise ValueError(f"delays must be ints >= 0, got {self.delays}")
        for name in ("s_min", "episodes", "batch", "latency_reps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"BenchConfig.{name} must be an int >= 1, got {v!r}")
        from async_vla_ros.core.delay import parse_delay

        for j in self.jitter:
            if parse_delay(j).fixed is not None:
                raise ValueError(f"jitter {j!r} is a fixed delay; use --delays for those")
        for t in self.traces:
            if not Path(t).exists():
                raise ValueError(f"delay trace {t} not found")
        if self.beta_sweep_task and self.beta_sweep_task not in TASKS:
            raise ValueError(f"unknown beta-sweep task {self.beta_sweep_task!r}")
        if any(not (b > 0) for b in self.betas):
            raise ValueError(f"betas must be > 0, got {self.betas}")

    def delay_specs(self) -> list:
        """The varying-delay conditions (DelaySpec), in column order."""
        from async_vla_ros.core.delay import load_delay_trace, parse_delay

        specs = [parse_delay(j) for j in self.jitter]
        specs += [load_delay_trace(t, 0.05, self.trace_unit) for t in self.traces]
        return specs


# ---------------------------------------------------------------------- latency
def measure_latencies(
    calls: Mapping[str, tuple[Any, Any | None, MethodPreset]], obs: Any, reps: int, d: int = 2
) -> dict[str, dict[str, float]]:
    """B = 1 chunk latency (ms) per method on ``obs`` (1, obs_dim) (a VLA: its input mapping, see
    ``_policy_input``), and the head's per-step time (with the VLA's features of the observation).

    ``calls``: preset name -> (policy, head or None, preset). Each method is timed in short blocks of
    consecutive calls (warm caches, as when one model serves a robot; the first call of a block
    is discarded), and the blocks of all methods are interleaved over 5 rounds so that load from
    other processes hits every method alike. (Strict one-call round-robin over 11 methods and two
    networks measured cache effects instead: the same vanilla call took 1.4 ms alone, 2.0-2.5 ms
    interleaved.)
    The prefix is a real chunk of the same policy; weights/frozen count are those of the method's
    strategy for delay ``d`` and s = d (the numbers barely depend on them).
    """
    from async_vla_ros.core.requests import sampler_call, takes_beta
    from async_vla_ros.core.strategies import make_strategy

    prepared = {}
    for m, (policy, head, spec) in calls.items():
        h = int(policy.horizon)
        chunk = policy.infer(obs, seed=0)
        g = make_strategy(spec.strategy, **dict(spec.strategy_options)).guidance(h, d, max(d, 1), h)
        _, kw = sampler_call(spec.sampler, chunk, g.weights[None], np.array([g.n_frozen]), beta=g.beta)
        del kw["seed"]
        if "beta" in kw and not takes_beta(policy):
            del kw["beta"]
        lat = policy.latent(obs) if head is not None and getattr(head.config, "latent_dim", 0) else None
        prepared[m] = (policy, head, spec, kw, chunk, lat, h)
    head_obs = obs["state"] if isinstance(obs, Mapping) else obs  # what a head reads of the state
    times: dict[str, list[float]] = {m: [] for m in calls}
    htimes: dict[str, list[float]] = {m: [] for m in calls}
    rounds = 5
    block = -(-reps // rounds) + 1  # the first call of every block warms the caches and is not kept
    for r in range(rounds):
        for m, (policy, head, spec, kw, chunk, lat, h) in prepared.items():
            for j in range(block):
                tic = time.perf_counter()
                policy.infer(obs, sampler=spec.sampler, seed=r * block + j, **kw)
                t_chunk = (time.perf_counter() - tic) * 1e3
                if head is not None:
                    tic = time.perf_counter()
                    # a head with features computes them from the latest observation every step
                    feats = policy.latent(obs) if lat is not None else None
                    head.residual(head_obs, chunk[:, 0], np.array([j % h]), h, latent=feats)
                    t_head = (time.perf_counter() - tic) * 1e3
                if j > 0:
                    times[m].append(t_chunk)
                    if head is not None:
                        htimes[m].append(t_head)
    out: dict[str, dict[str, float]] = {}
    for m in calls:
        out[m] = {"chunk_ms_median": float(np.median(times[m])), "chunk_ms_p90": float(np.percentile(times[m], 90))}
        if htimes[m]:
            out[m]["head_ms_median"] = float(np.median(htimes[m]))
    return out


# ---------------------------------------------------------------------- the sweep
@dataclass
class BenchResults:
    """Everything the report needs."""

    config: BenchConfig
    summaries: list[dict[str, Any]] = field(default_factory=list)  # one per (task, method, d)
    latency: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # task -> method -> numbers
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> kind -> path (sha)
    skipped: list[str] = field(default_factory=list)  # ablation conditions without a checkpoint
    wall_s: float = 0.0
    adherence: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task -> rows
    beta_sweep: list[dict[str, Any]] = field(default_factory=list)  # one per (variant, beta, d)
    trace_info: dict[str, str] = field(default_factory=dict)  # label -> description
    # machine_info() where it was measured (recorded in the --json dump; empty in older dumps)
    machine: dict[str, str] = field(default_factory=dict)

    def counts(self, task: str | None = None) -> dict[str, dict[Any, tuple[int, int]]]:
        """method -> d (int, or the label of a varying delay) -> (successes, n), one task or pooled."""
        out: dict[str, dict[int, tuple[int, int]]] = {}
        for s in self.summaries:
            if task is not None and s["task"] != task:
                continue
            k0, n0 = out.setdefault(s["preset"], {}).get(s["delay"], (0, 0))
            out[s["preset"]][s["delay"]] = (k0 + s["successes"], n0 + s["n"])
        return out

    def metric(
        self, method: str, name: str, delays: Sequence[int] | None = None, tasks: Sequence[str] | None = None
    ) -> list[float]:
        """Per-episode values of a metric of ``method`` pooled over tasks (and ``delays``)."""
        vals: list[float] = []
        for s in self.summaries:
            if tasks is not None and s["task"] not in tasks:
                continue
            if s["preset"] == method and (delays is None or s["delay"] in delays):
                vals.extend(s["per_episode"][name])
        return vals


def _why_not_run(config: BenchConfig, task: str, spec: MethodPreset) -> str:
    """Why a preset is left out of a task's sweep ('' : it runs). REMAC variants and ablations are
    trained per task as time allows (skipped and reported when absent); a backend says which presets
    it cannot serve (the VLA: the authors' REMAC). A missing base or A2C2 file stays an error."""
    if config.policy != "default":
        from async_vla_ros.policy.registry import get_backend, parse_policy_spec

        parsed = parse_policy_spec(config.policy)
        return get_backend(parsed.backend).cannot_serve(spec, parsed.target) or ""
    try:
        checkpoint_file(task, spec.checkpoint, config.ckpt_dir)
    except BackendError:
        if not (spec.ablation or spec.checkpoint.startswith("remac")):
            raise
        return f"no {task}_{spec.checkpoint}.pt"
    return ""


def _policy_input(policy: Any, env: Any, obs: np.ndarray, task: str) -> Any:
    """What ``policy`` is given for the env's current state ``obs`` (1, obs_dim): the state, or for a
    policy that takes cameras its cameras rendered now (in its training style), the state it reads
    and the task's instruction (as camera_ingestion sends them)."""
    from async_vla_ros.policy.checks import policy_state

    cams = getattr(policy, "camera_hw", None)
    if not cams:
        return obs
    groups = N.IMAGE_STYLES[getattr(policy, "image_style", N.IMAGE_STYLE)]
    images = {}
    for name, (h, w) in cams.items():
        images[name] = env.render(0, camera=N.frame_source(name)[0], width=w, height=h, geom_groups=groups)[None]
    return {"state": policy_state(policy, obs), "images": images, "instruction": N.default_instruction(task)}


def run_bench(
    config: BenchConfig, progress: bool = True, log: Callable[[str], None] = print, cell_log: bool = False
) -> BenchResults:
    """Run the sweep; returns the results (no files written). ``cell_log``: a line per finished cell."""
    import torch

    from async_vla_ros.sim.env import BatchedPandaEnv
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner

    torch.set_num_threads(1)
    res = BenchResults(config)
    t0 = time.perf_counter()
    dspecs = config.delay_specs()
    for sp in dspecs:
        if sp.trace is not None:
            vals, cnt = np.unique(sp.trace, return_counts=True)
            hist = ", ".join(f"d={int(v)}: {c}" for v, c in zip(vals, cnt))
            res.trace_info[sp.label] = f"{len(sp.trace)} chunks ({hist}), mean {sp.mean:.2f} steps"
    total = len(config.tasks) * len(config.methods) * (len(config.delays) + len(dspecs)) * config.episodes
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="ep", desc="bench paper", file=sys.stderr, dynamic_ncols=True)
    done = 0
    try:
        for task in config.tasks:
            specs = {m: get_preset(m) for m in config.methods}
            cache: dict = {}  # models shared by the presets of this task
            loaded: dict[str, PresetModels] = {}
            for m, spec in specs.items():
                why = _why_not_run(config, task, spec)
                if why:
                    res.skipped.append(f"{m} on {task} ({why})")
                    total -= (len(config.delays) + len(dspecs)) * config.episodes
                    if bar is not None:
                        bar.total = total
                    continue
                loaded[m] = load_models(task, spec, config.policy, checkpoint_dir=config.ckpt_dir, cache=cache)
            res.files[task] = {k: v for lm in loaded.values() for k, v in lm.files.items()}
            env = BatchedPandaEnv(task, 1, threads=1)
            obs1 = env.reset([config.seed])
            if loaded:
                obs1 = _policy_input(next(iter(loaded.values())).policy, env, obs1, task)
            env.close()
            res.latency[task] = measure_latencies(
                {m: (lm.policy, lm.head, lm.preset) for m, lm in loaded.items()}, obs1, config.latency_reps
            )
            for m, lm in loaded.items():
                spec, pol = lm.preset, lm.policy
                runner = LockstepRunner(pol, lm.head)
                for cond in [*config.delays, *dspecs]:
                    fixed = isinstance(cond, int)
                    d = cond if fixed else cond.hi
                    if fixed and d >= pol.horizon:
                        raise ValueError(f"delay {d} must be < H = {pol.horizon}")
                    s_exec = max(d, config.s_min)
                    lc = LockstepConfig(
                        task=task,
                        strategy=spec.strategy,
                        delay=d if fixed else 0,
                        s_min=config.s_min,
                        episodes=config.episodes,
                        batch=config.batch,
                        seed=config.seed,
                        strategy_options=(("s", s_exec),) if spec.strategy == "sync" else spec.strategy_options,
                        delay_spec=None if fixed else cond,
                        safety_filter=config.safety_filter,
                    )
                    r = runner.run(lc)
                    s = r.summary()
                    s.update(
                        preset=m,
                        delay=d if fixed else cond.label,
                        checkpoint=spec.checkpoint,
                        a2c2=spec.a2c2,
                        s=s_exec,
                        per_episode={
                            k: [getattr(e, k) for e in r.episodes]
                            for k in ("success", "switch_jump_max", "jerk_rms", "acc_rms", "hold_steps")
                        },
                    )
                    res.summaries.append(s)
                    done += config.episodes
                    if cell_log:
                        log(f"{m} d={s['delay']}: {r.successes}/{r.n} ({time.perf_counter() - t0:.0f} s)")
                    if bar is not None:
                        bar.update(config.episodes)
                        bar.set_postfix(task=task, method=m, d=s["delay"], succ=f"{r.success_rate:.2f}")
            if config.adherence_obs and config.policy == "default":  # on the state checkpoints and their demos
                from async_vla_ros.eval.bench_samplers import adherence

                try:
                    res.adherence[task] = adherence(
                        task, ckpt_dir=config.ckpt_dir or None, n_obs=config.adherence_obs, seed=config.seed, log=log
                    )
                except FileNotFoundError as exc:  # no demonstrations for the task: said in the report
                    log(f"bench paper: no adherence table for {task}: {exc}")
        if config.beta_sweep_task and config.policy == "default":
            res.beta_sweep = run_beta_sweep(config, log=log)
    finally:
        if bar is not None:
            bar.close()
    res.wall_s = time.perf_counter() - t0
    log(f"bench paper: {done} episodes in {res.wall_s:.0f} s")
    return res


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Worker initializer: the worker ends itself once the process that started it is gone. A
    SIGTERM (or SIGKILL) to ``bench paper`` ends the parent without a pool shutdown; its workers
    then kept simulating, orphaned, until their share of the sweep was done."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_part(config: BenchConfig) -> dict[str, Any]:
    """One worker's share of a parallel sweep (a process of its own: one torch thread)."""
    task = ",".join(config.tasks)

    def log(line: str) -> None:
        print(f"bench paper [{task}] {line}", file=sys.stderr, flush=True)

    return dump(run_bench(config, progress=False, log=log, cell_log=True))


def run_parallel(
    config: BenchConfig, jobs: int, progress: bool = True, log: Callable[[str], None] = print
) -> BenchResults:
    """:func:`run_bench` with the tasks spread over ``jobs`` processes (one torch thread each; the
    same episodes and seeds as one process: every cell is seeded by the run seed alone), merged."""
    if jobs <= 1 or len(config.tasks) == 1:
        return run_bench(config, progress=progress, log=log)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    t0 = time.perf_counter()
    sweep = config.beta_sweep_task if config.beta_sweep_task in config.tasks else ""
    parts_cfg = []
    for i, task in enumerate(config.tasks):
        owns_sweep = task == sweep or (config.beta_sweep_task and not sweep and i == 0)
        parts_cfg.append(replace(config, tasks=(task,), beta_sweep_task=config.beta_sweep_task if owns_sweep else ""))
    log(f"bench paper: {len(parts_cfg)} tasks on {jobs} processes (a line per finished cell)")
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        dumps = list(pool.map(_run_part, parts_cfg))
    res = merge_dumps(dumps)
    res.config = config
    res.wall_s = time.perf_counter() - t0  # elapsed, not the sum over the processes
    log(f"bench paper: {sum(s['n'] for s in res.summaries)} episodes in {res.wall_s:.0f} s ({jobs} processes)")
    return res


def run_beta_sweep(config: BenchConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """``rtc`` and ``rtc_jf`` on ``config.beta_sweep_task`` at every beta of ``config.betas`` and
    every delay d >= 1 of the run (same episodes and seeds as the main table), plus the prefix
    adherence at each beta when the task's demonstrations are there."""
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner

    task = config.beta_sweep_task
    out: list[dict[str, Any]] = []
    delayed = [d for d in config.delays if d >= 1]
    cache: dict = {}
    for m in ("rtc", "rtc_jf"):
        spec = get_preset(m)
        # one loaded policy for every beta: the clip is a request parameter (the strategy's option)
        lm = load_models(task, spec, "default", checkpoint_dir=config.ckpt_dir, cache=cache)
        runner = LockstepRunner(lm.policy, lm.head)
        for beta in config.betas:
            options = tuple((k, v) for k, v in spec.strategy_options if k != "beta") + (("beta", float(beta)),)
            for d in delayed:
                r = runner.run(
                    LockstepConfig(
                        task=task,
                        strategy=spec.strategy,
                        delay=d,
                        s_min=config.s_min,
                        episodes=config.episodes,
                        batch=config.batch,
                        seed=config.seed,
                        strategy_options=options,
                    )
                )
                out.append(
                    {
                        "preset": m,
                        "beta": float(beta),
                        "delay": d,
                        "successes": r.successes,
                        "n": r.n,
                        "kind": "success",
                    }
                )
    if config.adherence_obs:
        from async_vla_ros.eval.bench_samplers import adherence

        try:
            rows = adherence(
                task,
                ckpt_dir=config.ckpt_dir or None,
                n_obs=config.adherence_obs,
                betas=config.betas,
                seed=config.seed,
                log=log,
            )
        except FileNotFoundError as exc:
            log(f"bench paper: no adherence for the beta sweep: {exc}")
        else:
            out += [{**r, "kind": "adherence"} for r in rows if r["sampler"] in ("rtc", "rtc_jf")]
    return out


# ---------------------------------------------------------------------- claims
def _two_prop(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a pooled two-proportion z-test (1.0 when undefined)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return 2 * (1 - NormalDist().cdf(abs(z)))


def _counts_over(res: BenchResults, method: str, tasks) -> dict[Any, tuple[int, int]]:
    """d -> (successes, n) of ``method`` pooled over ``tasks``."""
    out: dict[Any, tuple[int, int]] = {}
    for s in res.summaries:
        if s["preset"] == method and s["task"] in tasks:
            k0, n0 = out.get(s["delay"], (0, 0))
            out[s["delay"]] = (k0 + s["successes"], n0 + s["n"])
    return out


def _pooled(counts: Mapping[int, tuple[int, int]], delays: Sequence[int]) -> tuple[int, int]:
    k = sum(counts[d][0] for d in delays if d in counts)
    n = sum(counts[d][1] for d in delays if d in counts)
    return k, n


@dataclass(frozen=True)
class Claim:
    """A claim from a paper and what our numbers say about it."""

    source: str
    text: str
    evidence: str
    verdict: str  # "supported" | "not supported (opposite, significant)" | "not resolved (...)" | "not run"


def _verdict_rates(a: tuple[int, int], b: tuple[int, int]) -> tuple[str, str]:
    (k1, n1), (k2, n2) = a, b
    if n1 == 0 or n2 == 0:
        return "not run", "-"
    p = _two_prop(k1, n1, k2, n2)
    ev = f"{k1}/{n1} = {k1 / n1:.3f} vs {k2}/{n2} = {k2 / n2:.3f} (two-proportion z-test p = {p:.3g})"
    if p < 0.05:
        return ("supported" if k1 / n1 > k2 / n2 else "not supported (significantly the opposite)"), ev
    return "not resolved (difference not significant at 5 %)", ev


def check_claims(res: BenchResults) -> list[Claim]:
    """Compare pooled numbers against the papers' headline claims (pooled over tasks)."""
    cfg = res.config
    counts = res.counts()
    delayed = [d for d in cfg.delays if d >= 1]
    claims: list[Claim] = []

    def have(*ms: str) -> bool:
        return all(m in counts for m in ms)

    def cmp_rates(src: str, text: str, a: str, b: str, da: Sequence[int], db: Sequence[int] | None = None) -> None:
        if not have(a, b) or not da:
            claims.append(Claim(src, text, "-", "not run"))
            return
        # pooled over the tasks both methods ran on (a REMAC variant may exist for some tasks only)
        ta = {s["task"] for s in res.summaries if s["preset"] == a}
        tb = {s["task"] for s in res.summaries if s["preset"] == b}
        common = ta & tb
        ca = _counts_over(res, a, common)
        cb = _counts_over(res, b, common)
        v, ev = _verdict_rates(_pooled(ca, da), _pooled(cb, db if db is not None else da))
        if common != set(cfg.tasks) and v != "not run":
            ev += f" [tasks both ran: {', '.join(t for t in cfg.tasks if t in common)}]"
        if v == "not run":  # e.g. a varying-delay column this run did not have
            claims.append(Claim(src, text, "-", v))
            return
        claims.append(Claim(src, text, f"{a} {ev.split(' vs ')[0]} vs {b} {ev.split(' vs ')[1]}", v))

    dl = f"d in {delayed}"
    if "naive" in counts and 0 in counts["naive"] and max(cfg.delays) > 0:
        dmax = max(cfg.delays)
        v, ev = _verdict_rates(counts["naive"][0], counts["naive"][dmax])
        claims.append(
            Claim(
                "RTC",
                f"naive async success drops as the delay grows (d=0 vs d={dmax})",
                f"naive d=0 {ev.split(' vs ')[0]} vs d={dmax} {ev.split(' vs ')[1]}",
                v,
            )
        )
    cmp_rates("RTC", f"RTC (soft mask) beats naive async under delay ({dl})", "rtc", "naive", delayed)
    cmp_rates("RTC", f"the soft mask beats the hard mask ({dl})", "rtc", "rtc_hard", delayed)
    cmp_rates("RTC", f"RTC beats BID ({dl})", "rtc", "bid", delayed)
    cmp_rates("RTC", f"RTC beats temporal ensembling ({dl})", "rtc", "te", delayed)
    cmp_rates("RTC", f"RTC beats synchronous inference ({dl})", "rtc", "sync", delayed)
    cmp_rates("RTC/LeRobot", f"exact RTC guidance beats Jacobian-free guidance, J = I ({dl})", "rtc", "rtc_jf", delayed)
    cmp_rates("RTC/LeRobot", f"Jacobian-free RTC (J = I) beats naive async ({dl})", "rtc_jf", "naive", delayed)
    jit = [sp.label for sp in cfg.delay_specs()]
    for lab in jit:
        cmp_rates(
            "RTC", f"RTC beats naive async under jittered delay ({lab}, estimator forecast)", "rtc", "naive", [lab]
        )
        cmp_rates("RTC/LeRobot", f"exact RTC beats J = I RTC under jittered delay ({lab})", "rtc", "rtc_jf", [lab])
        cmp_rates("REMAC", f"REMAC beats RTC under jittered delay ({lab})", "remac", "rtc", [lab])
    cmp_rates("REMAC", f"REMAC beats naive async ({dl})", "remac", "naive", delayed)
    cmp_rates("REMAC", f"REMAC beats RTC ({dl})", "remac", "rtc", delayed)
    cmp_rates(
        "ours",
        f"REMAC as its authors run it beats our earlier reading remac_clean ({dl})",
        "remac",
        "remac_clean",
        delayed,
    )
    cmp_rates("REMAC", f"remac_clean (our earlier reading) beats naive async ({dl})", "remac_clean", "naive", delayed)
    cmp_rates(
        "REMAC", f"temporal ensembling can be worse than naive async ({dl}; claim = TE < naive)", "naive", "te", delayed
    )
    cmp_rates(
        "ours",
        f"REMAC + RTC beats REMAC alone ({dl}; a combination the papers do not test)",
        "remac_rtc",
        "remac",
        delayed,
    )
    for abl in [p for p in cfg.methods if get_preset(p).ablation]:
        if abl in counts:
            full = "remac_clean" if abl.startswith("remac_clean") else "remac"
            cmp_rates("REMAC", f"full {full} beats the ablation {abl} ({dl})", full, abl, delayed)
    cmp_rates("A2C2", f"naive + A2C2 head beats naive async ({dl})", "a2c2", "naive", delayed)
    cmp_rates("A2C2", f"naive + A2C2 beats RTC ({dl})", "a2c2", "rtc", delayed)
    cmp_rates("A2C2", f"RTC + A2C2 beats RTC ({dl})", "rtc_a2c2", "rtc", delayed)
    cmp_rates(
        "ours", f"REMAC + A2C2 beats REMAC ({dl}; a combination the papers do not test)", "remac_a2c2", "remac", delayed
    )

    # smoothness: largest command jump at chunk switches (per-episode values, mean +- sem)
    def cmp_jump(src: str, text: str, a: str, b: str) -> None:
        common = {x["task"] for x in res.summaries if x["preset"] == a} & {
            x["task"] for x in res.summaries if x["preset"] == b
        }
        va = res.metric(a, "switch_jump_max", delayed, tasks=common)
        vb = res.metric(b, "switch_jump_max", delayed, tasks=common)
        if not va or not vb:
            claims.append(Claim(src, text, "-", "not run"))
            return
        (ma, sa), (mb, sb) = mean_sem(va), mean_sem(vb)
        se = math.hypot(sa, sb)
        z = (mb - ma) / se if se > 0 else 0.0
        p = 2 * (1 - NormalDist().cdf(abs(z)))
        ev = f"{a} {ma:.4f} +- {sa:.4f} rad vs {b} {mb:.4f} +- {sb:.4f} rad (Welch z p = {p:.3g})"
        v = (
            ("supported" if ma < mb else "not supported (significantly the opposite)")
            if p < 0.05
            else "not resolved (difference not significant at 5 %)"
        )
        claims.append(Claim(src, text, ev, v))

    cmp_jump("RTC", f"RTC gives smaller jumps at chunk switches than naive async ({dl})", "rtc", "naive")
    cmp_jump("REMAC", f"REMAC gives smaller jumps at chunk switches than naive async ({dl})", "remac", "naive")

    # latency
    lat = res.latency

    def mean_lat(m: str, key: str = "chunk_ms_median") -> float | None:
        vals = [lat[t][m][key] for t in lat if m in lat[t] and key in lat[t][m]]
        return float(np.mean(vals)) if vals else None

    base_ms, rtc_ms, remac_ms = mean_lat("naive"), mean_lat("rtc"), mean_lat("remac_clean")
    jf_ms, authors_ms = mean_lat("rtc_jf"), mean_lat("remac")
    if rtc_ms and jf_ms:
        claims.append(
            Claim(
                "RTC/LeRobot",
                "J = I guidance is cheaper than the exact vector-Jacobian product",
                f"B=1 chunk: rtc_jf {jf_ms:.2f} ms vs rtc {rtc_ms:.2f} ms (x{jf_ms / rtc_ms:.2f})",
                "supported" if jf_ms < 0.85 * rtc_ms else "not supported (ratio >= 0.85)",
            )
        )
    if base_ms and authors_ms:
        claims.append(
            Claim(
                "REMAC",
                "REMAC as its authors run it (unmerged mask-gated adapters) adds no inference latency",
                f"B=1 chunk: remac {authors_ms:.2f} ms vs vanilla {base_ms:.2f} ms (x{authors_ms / base_ms:.2f})",
                "supported" if authors_ms / base_ms <= 1.15 else "not supported (ratio > 1.15)",
            )
        )
    if base_ms and rtc_ms:
        r = rtc_ms / base_ms
        claims.append(
            Claim(
                "RTC/REMAC",
                "RTC guidance costs extra inference time over vanilla sampling",
                f"B=1 chunk: rtc {rtc_ms:.2f} ms vs vanilla {base_ms:.2f} ms (x{r:.2f})",
                "supported" if r > 1.2 else "not supported (ratio <= 1.2)",
            )
        )
    if base_ms and remac_ms:
        r = remac_ms / base_ms
        claims.append(
            Claim(
                "REMAC",
                "remac_clean's prefix-preserved sampling (merged LoRA) adds no inference latency",
                f"B=1 chunk: remac_clean {remac_ms:.2f} ms vs vanilla {base_ms:.2f} ms (x{r:.2f})",
                "supported" if r <= 1.15 else "not supported (ratio > 1.15)",
            )
        )
    head_ms = mean_lat("a2c2", "head_ms_median")
    if head_ms is not None and base_ms:
        claims.append(
            Claim(
                "A2C2",
                "the A2C2 head is cheap next to chunk inference",
                f"head {head_ms:.3f} ms per step vs chunk {base_ms:.2f} ms",
                "supported" if head_ms < 0.25 * base_ms else "not supported (head >= 25 % of a chunk)",
            )
        )
    return claims


# ---------------------------------------------------------------------- report
def machine_info() -> dict[str, str]:
    import mujoco
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from async_vla_ros.train.common import git_commit

    return {
        "cpu": cpu or "unknown",
        "cores": str(os.cpu_count()),
        "torch": str(torch.__version__),
        "torch_threads": str(torch.get_num_threads()),
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "git": git_commit() or "unknown",
    }


REPO_ROOT = Path(__file__).resolve().parents[2]


def display_path(entry: str) -> str:
    """A loaded file as the report shows it: ``"PATH (sha)"`` with PATH relative to the repository
    (the shipped checkpoints: ``async_vla_ros/checkpoints/NAME``, also when the run used another
    checkout or worktree of the project), never a machine-specific absolute path when avoidable."""
    path, sep, rest = entry.partition(" (")
    p = Path(path)
    if p.is_absolute():
        parts = p.parts
        for i in range(len(parts) - 1):
            if parts[i] == "async_vla_ros" and parts[i + 1] == "checkpoints":
                p = Path(*parts[i:])
                break
        else:
            for root in (REPO_ROOT, Path.cwd()):
                try:
                    p = p.resolve().relative_to(root.resolve())
                    break
                except ValueError:
                    continue
    return f"{p.as_posix()}{sep}{rest}"


def _rate_cell(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]"


def write_report(res: BenchResults, path: str | Path, command: str, plots: Mapping[str, str], notes: str = "") -> Path:
    """Markdown report of ``res`` (one condition)."""
    return write_reports([("", res, plots)], path, command, notes)


CONDITION_TITLES = {
    "vla": "The VLA: cameras, an instruction and proprioception in, chunks out",
    "state": "Privileged state: one MLP per task reading the simulator's object state (the baseline condition)",
}


def write_reports(
    conditions: Sequence[tuple[str, BenchResults, Mapping[str, str]]], path: str | Path, command: str, notes: str = ""
) -> Path:
    """Markdown report of one or more conditions (label, results, plots); with several, each is a
    section of its own, in the order given."""
    info = machine_info()
    total = sum(r.wall_s for _, r, _ in conditions)
    several = len(conditions) > 1
    L: list[str] = ["# Paper-style benchmark: success vs inference delay (lockstep simulation)\n"]
    L.append(
        f"Generated by `{command}` on {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"the sweep took {total / 60:.1f} min"
        + (
            " (" + ", ".join(f"{_cond_name(r.config)} {r.wall_s / 60:.1f} min" for _, r, _ in conditions) + ")"
            if len(conditions) > 1
            else ""
        )
        + ".\n"
    )
    # where each condition was measured (a merged report may join runs of different machines and
    # commits); a dump from before runs recorded it says so, and the writer's machine is named
    where = []
    for _, res, _ in conditions:
        name = f" ({_cond_name(res.config)})" if several else ""
        recorded = (
            _machine_line(res.machine) if res.machine else "not recorded in its dump (the run predates that record)"
        )
        where.append(f"- Machine{name}: {recorded}")
    if several or not all(r.machine for _, r, _ in conditions):
        where.append(f"- This report written on: {_machine_line(info)}")
    L.append("\n".join(where) + "\n")
    for i, (label, res, plots) in enumerate(conditions):
        if several:
            L.append(f"\n# {i + 1}. {label or CONDITION_TITLES.get(_cond_name(res.config), res.config.policy)}\n")
        L += _report_lines(res, plots, "##")
    if notes:
        L.append("\n# Notes\n" if several else "\n## Notes\n")
        L.append(notes.strip() + "\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")
    return path


def _machine_line(info: Mapping[str, str]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores (shared with other jobs during the run), "
        f"{info['os']}; Python {info['python']}, torch {info['torch']} ({info['torch_threads']} thread), "
        f"mujoco {info['mujoco']}, numpy {info['numpy']}; git {info['git']}."
    )


def _cond_name(cfg: BenchConfig) -> str:
    return (
        "vla"
        if cfg.policy in ("vla", "vla:") or cfg.policy.startswith("vla:")
        else ("state" if cfg.policy == "default" else cfg.policy)
    )


def _grouped_skips(skipped: Sequence[str]) -> list[str]:
    """``"M on TASK (why)"`` entries with the same method and reason as one ``"M on T1, T2 (why)"``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for entry in skipped:
        head, sep, why = entry.partition(" (")
        method, _, task = head.partition(" on ")
        groups.setdefault((method, sep + why), []).append(task)
    return [f"{m} on {', '.join(tasks)}{why}" for (m, why), tasks in groups.items()]


def _report_lines(res: BenchResults, plots: Mapping[str, str], h: str) -> list[str]:
    """One condition's sections (headings at level ``h``)."""
    cfg = res.config
    L: list[str] = []
    what = (
        "each task's privileged-state checkpoints (`async_vla_ros/checkpoints/<task>_*.pt`)"
        if cfg.policy == "default"
        else f"`--policy {cfg.policy}` for every task (one multi-task model; the instruction names the task)"
    )
    L.append(f"- Policies: {what}.")
    if cfg.safety_filter:
        L.append(
            "- Commands: ramped at 100 Hz through the FR3 safety filter (velocity, acceleration, jerk limits), as "
            "the graph's correction node sends them (`--safety-filter`)."
        )
    L.append(
        f"- Setting: H = 8, s = max(d, {cfg.s_min}) for every method (sync executes s actions of a chunk, "
        f"then stands still for the d steps of inference), dt = 50 ms, delays d = {list(cfg.delays)}, N = {cfg.episodes} episodes per cell "
        f"(same {cfg.episodes} episode seeds for every method), run seed {cfg.seed}, {cfg.batch} envs in "
        "lockstep, one batched policy call per inference."
    )
    L.append(
        "- Success: rate [95 % Wilson interval]. Smoothness: mean over episodes of the largest joint-command "
        "jump at a chunk switch (rad) and RMS jerk of the command stream (rad/s^3). Latency: one chunk for "
        "one observation (B = 1), median / p90 over "
        f"{cfg.latency_reps} calls, measured in this run."
    )
    if res.skipped:
        L.append("- Not run: " + "; ".join(_grouped_skips(res.skipped)) + ".")
    L.append("- Checkpoints:")
    for task, files in res.files.items():
        L.append(f"  - {task}: " + "; ".join(f"{k}: `{display_path(v)}`" for k, v in sorted(files.items())))
    L.append("")
    # pooled
    pooled = res.counts()
    L.append(f"{h} All tasks pooled\n")
    L.append(_success_table(pooled, cfg))
    for task in cfg.tasks:
        c = res.counts(task)
        L.append(f"\n{h} {task}\n")
        if task in plots:
            L.append(f"![{task} success vs delay]({plots[task]})\n")
        L.append("Success rate [95 % Wilson CI]:\n")
        L.append(_success_table(c, cfg))
        L.append("\nSmoothness (switch jump rad / RMS jerk rad/s^3), mean over episodes:\n")
        L.append(_smooth_table(res, task))
    if cfg.delay_specs():
        L.append(f"\n{h} Delays that vary: the forecast and what its misses cost\n")
        L.append(
            "Each chunk's delay is drawn (uniform) or replayed from the trace; the request's d (frozen prefix, s) is "
            "the forecast of the scheduler node's delay estimator (max over the last 20 measured delays, first one "
            "ignored, 0 before any) fed with the delays that happened. Under-shoot: the chunk came later than "
            "forecast, so its frozen prefix covers steps that already ran with other actions. 'jitter cost': success "
            "under jitter minus the method's success at the fixed delays weighted as they are drawn (pooled over "
            "tasks).\n"
        )
        L.append(_forecast_table(res))
    if res.adherence:
        L.append(f"\n{h} Prefix adherence of the guided samplers (shipped checkpoints, demonstration observations)\n")
        L.append(
            f"{cfg.adherence_obs} observations per task drawn from its demonstrations; the prefix Y is the base "
            "policy's own chunk from the observation s = max(d, 1) steps earlier, shifted by s (what the scheduler "
            "holds); RTC weights: exp schedule, beta 5. Largest |chunk - Y| in normalised action units over the "
            "frozen rows (k < d) and the soft rows (k >= d, weight > 0), median / p90 over observations "
            "(`async-vla-ros bench samplers --adherence TASK`). vanilla is the unguided reference; remac_clean and "
            "remac clamp the frozen rows by construction.\n"
        )
        L.append(_adherence_tables(res))
    if res.beta_sweep:
        L.append(f"\n{h} Guidance clip beta: rtc and rtc_jf on {cfg.beta_sweep_task}\n")
        L.append(
            f"Success [95 % Wilson] with N = {cfg.episodes} episodes per cell (same seeds as above), and prefix "
            "adherence (as in the previous section, mean over d = 1..4 of the medians).\n"
        )
        L.append(_beta_sweep_table(res))
    L.append(f"\n{h} Inference latency per method (measured in this run)\n")
    L.append(_latency_table(res))
    L.append(f"\n{h} The papers' claims against these numbers\n")
    L.append(
        "Pooled over tasks; 'under delay' pools d >= 1. Verdicts come from the numbers by a fixed rule "
        "(two-sided test at 5 %), not from expectations.\n"
    )
    L.append("| source | claim | our numbers | verdict |")
    L.append("|---|---|---|---|")
    for c in check_claims(res):
        L.append(f"| {c.source} | {c.text} | {c.evidence} | **{c.verdict}** |")
    if len(cfg.tasks) > 1:
        L.append("\nPer task (d >= 1 pooled; same rule):\n")
        L.append(_per_task_claims(res))
    return L


PER_TASK_PAIRS = (
    ("rtc", "naive"),
    ("rtc_jf", "naive"),
    ("rtc", "rtc_jf"),
    ("remac", "remac_clean"),
    ("rtc", "rtc_hard"),
    ("bid", "naive"),
    ("remac", "naive"),
    ("remac", "rtc"),
    ("a2c2", "naive"),
)


def _per_task_claims(res: BenchResults) -> str:
    """``A beats B`` verdicts per task for the main pairs (cells: rates and verdict)."""
    cfg = res.config
    delayed = [d for d in cfg.delays if d >= 1]
    pairs = [(a, b) for a, b in PER_TASK_PAIRS if a in cfg.methods and b in cfg.methods]
    rows = ["| claim | " + " | ".join(cfg.tasks) + " |", "|---|" + "---|" * len(cfg.tasks)]
    short = {
        "supported": "supported",
        "not resolved (difference not significant at 5 %)": "n.s.",
        "not supported (significantly the opposite)": "opposite",
        "not run": "not run",
    }
    for a, b in pairs:
        cells = []
        for task in cfg.tasks:
            c = res.counts(task)
            if a not in c or b not in c or not delayed:
                cells.append("-")
                continue
            ka, na = _pooled(c[a], delayed)
            kb, nb = _pooled(c[b], delayed)
            v, _ = _verdict_rates((ka, na), (kb, nb))
            cells.append(f"{ka / na:.2f} vs {kb / nb:.2f}: {short.get(v, v)}")
        rows.append(f"| {a} beats {b} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _success_table(counts: Mapping[str, Mapping[Any, tuple[int, int]]], cfg: BenchConfig) -> str:
    ds = list(cfg.delays)
    jit = [sp.label for sp in cfg.delay_specs()]
    head = " | ".join(f"d={d}" for d in ds) + " | mean d>=1 |" + "".join(f" d ~ {j} |" for j in jit)
    rows = ["| method | " + head, "|---|" + "---|" * (len(ds) + 1 + len(jit))]
    for m in cfg.methods:
        if m not in counts:
            continue
        cells = [_rate_cell(*counts[m][d]) if d in counts[m] else "-" for d in ds]
        k, n = _pooled(counts[m], [d for d in ds if d >= 1])
        cells.append(f"{k / n:.3f}" if n else "-")
        cells += [_rate_cell(*counts[m][j]) if j in counts[m] else "-" for j in jit]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _forecast_table(res: BenchResults) -> str:
    """Per varying-delay condition and method (pooled over tasks): success, how often the
    estimator's forecast under-/over-shot, chunks dropped, and the success of the same method at
    the fixed delays the condition draws from (their mean, weighted by how often each d occurs)."""
    cfg = res.config
    out = []
    counts = res.counts()
    for sp in cfg.delay_specs():
        lab = sp.label
        if sp.trace is not None:
            vals, cnt = np.unique(sp.trace, return_counts=True)
            weights = {int(v): c / len(sp.trace) for v, c in zip(vals, cnt)}
        else:
            weights = {d: 1.0 / (sp.hi - sp.lo + 1) for d in range(sp.lo, sp.hi + 1)}
        out.append(f"\n### d ~ {lab}\n")
        if lab in res.trace_info:
            out.append(f"Trace: {res.trace_info[lab]}.\n")
        out.append(
            "| method | success (jittered) | forecast under / over / exact (share of requests) | mean under-shoot "
            "steps | chunks dropped | success at the fixed d (weighted as drawn) | jitter cost |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for m in cfg.methods:
            rows = [s for s in res.summaries if s["preset"] == m and s["delay"] == lab]
            if not rows:
                continue
            req = sum(s["forecast"].get("requests", 0) for s in rows)
            under = sum(s["forecast"].get("under", 0) for s in rows)
            over = sum(s["forecast"].get("over", 0) for s in rows)
            dropped = sum(s["forecast"].get("dropped", 0) for s in rows)
            u_steps = sum(s["forecast"].get("mean_under_steps", 0) * s["forecast"].get("under", 0) for s in rows)
            k, n = counts[m][lab]
            ref, cover = 0.0, 0.0
            for d, w in weights.items():
                if d in counts[m] and counts[m][d][1]:
                    ref += w * counts[m][d][0] / counts[m][d][1]
                    cover += w
            ref_txt = f"{ref / cover:.3f}" + ("" if cover > 0.9999 else f" (d in the table: {cover:.1%} of draws)")
            cost = (k / n - ref / cover) if cover > 0 and n else float("nan")
            out.append(
                f"| {m} | {_rate_cell(k, n)} | {under / max(req, 1):.2f} / {over / max(req, 1):.2f} / "
                f"{(req - under - over) / max(req, 1):.2f} | {u_steps / max(under, 1):.2f} | {dropped} | "
                f"{ref_txt if cover > 0 else '-'} | {cost:+.3f} |"
            )
    return "\n".join(out)


def _adherence_tables(res: BenchResults) -> str:
    from async_vla_ros.eval.bench_samplers import print_adherence

    out: list[str] = []
    for task, rows in res.adherence.items():
        out.append(f"\n### {task}\n")
        print_adherence(rows, out=out.append)
    return "\n".join(out)


def _beta_sweep_table(res: BenchResults) -> str:
    cfg = res.config
    succ = [r for r in res.beta_sweep if r["kind"] == "success"]
    adh = [r for r in res.beta_sweep if r["kind"] == "adherence"]
    ds = sorted({r["delay"] for r in succ})
    out = [
        "| sampler | beta | " + " | ".join(f"d={d}" for d in ds) + " | mean d>=1 | frozen rows max abs err (median, "
        "mean over d) | soft rows (median, mean over d) |",
        "|---|---|" + "---|" * (len(ds) + 3),
    ]
    for m in ("rtc", "rtc_jf"):
        for beta in cfg.betas:
            rs = {r["delay"]: r for r in succ if r["preset"] == m and r["beta"] == float(beta)}
            if not rs:
                continue
            cells = [_rate_cell(rs[d]["successes"], rs[d]["n"]) if d in rs else "-" for d in ds]
            k = sum(r["successes"] for r in rs.values())
            n = sum(r["n"] for r in rs.values())
            a = [r for r in adh if r["sampler"] == m and r["beta"] == float(beta)]
            fz = f"{np.mean([r['frozen_median'] for r in a]):.3f}" if a else "-"
            sf = f"{np.nanmean([r['soft_median'] for r in a]):.3f}" if a else "-"
            out.append(f"| {m} | {beta:g} | " + " | ".join(cells) + f" | {k / max(n, 1):.3f} | {fz} | {sf} |")
    return "\n".join(out)


def _smooth_table(res: BenchResults, task: str) -> str:
    ds = list(res.config.delays)
    rows = ["| method | " + " | ".join(f"d={d}" for d in ds) + " |", "|---|" + "---|" * len(ds)]
    by = {(s["preset"], s["delay"]): s for s in res.summaries if s["task"] == task}
    for m in res.config.methods:
        cells = []
        for d in ds:
            s = by.get((m, d))
            cells.append("-" if s is None else f"{s['switch_jump_max']:.3f} / {s['jerk_rms']:.0f}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _latency_table(res: BenchResults) -> str:
    rows = [
        "| method | sampler | B=1 chunk ms (median / p90), mean over tasks | head ms/step | "
        "batched lockstep call ms (mean over cells) |",
        "|---|---|---|---|---|",
    ]
    for m in res.config.methods:
        spec = get_preset(m)
        ls = [res.latency[t][m] for t in res.latency if m in res.latency[t]]
        if not ls:
            continue
        med = np.mean([x["chunk_ms_median"] for x in ls])
        p90 = np.mean([x["chunk_ms_p90"] for x in ls])
        head = np.mean([x["head_ms_median"] for x in ls]) if "head_ms_median" in ls[0] else None
        calls = [s["infer_ms_per_call"] for s in res.summaries if s["preset"] == m and s["infer_ms_per_call"]]
        rows.append(
            f"| {m} | {spec.sampler} | {med:.2f} / {p90:.2f} | "
            f"{'-' if head is None else f'{head:.3f}'} | {np.mean(calls) if calls else float('nan'):.1f} |"
        )
    return "\n".join(rows)


# ---------------------------------------------------------------------- CLI
TINY = dict(tasks=("track",), delays=(2, 4), episodes=2, batch=2, latency_reps=2, jitter=("1:3",), adherence_obs=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=None, help=f"tasks [{' '.join(TASKS_DEFAULT)}]")
    from async_vla_ros.presets import preset_names

    main, abl = preset_names(), [p for p in preset_names(ablations=True) if p not in preset_names()]
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"presets (config/methods.yaml) [state: {' '.join(main)}; vla: those it serves, with rtc_lerobot]",
    )
    parser.add_argument("--ablations", action="store_true", help=f"also run {' '.join(abl)}")
    parser.add_argument("--delays", nargs="+", type=int, default=None, help="delays d [0 1 2 3 4]")
    parser.add_argument("--s-min", type=int, default=None, help="s = max(d, S_MIN) [1]")
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"episodes per cell [vla {CONDITION_EPISODES['vla']}, state {CONDITION_EPISODES['state']}]",
    )
    parser.add_argument("--batch", type=int, default=None, help="envs in lockstep [40]")
    parser.add_argument("--seed", type=int, default=None, help="run seed [0]")
    parser.add_argument("--latency-reps", type=int, default=None, help="timed B=1 calls per method [100]")
    parser.add_argument("--ckpt-dir", default=None, help="checkpoint folder [the shipped async_vla_ros/checkpoints]")
    parser.add_argument(
        "--jitter", nargs="*", default=None, help="varying delays LO:HI drawn per chunk, one column each [1:4]"
    )
    parser.add_argument("--delay-trace", nargs="*", default=None, help="recorded latency trace(s), one column each")
    parser.add_argument(
        "--trace-unit", default=None, choices=("s", "ms", "steps"), help="unit of a trace's numbers [s]"
    )
    parser.add_argument("--adherence-obs", type=int, default=None, help="observations for the adherence table [128]")
    parser.add_argument("--beta-sweep", default=None, metavar="TASK", help="beta sweep of rtc / rtc_jf on TASK")
    parser.add_argument("--betas", nargs="+", type=float, default=None, help="betas of the sweep [1 2 5 10 20]")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke configuration: track, d in {2, 4}, 2 episodes (seconds, for tests)"
    )
    parser.add_argument(
        "--condition",
        nargs="+",
        choices=("vla", "state"),
        default=None,
        help="whose policies: vla (the multi-task VLA from cameras + instruction; its REMAC and A2C2 head) and/or "
        "state (each task's privileged-state checkpoints), one report section each, in this order [vla state]",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"processes the tasks are spread over (one torch thread each) [min(4, CPUs) = {min(4, os.cpu_count() or 1)}]",
    )
    parser.add_argument(
        "--safety-filter",
        action="store_true",
        help="every command through the FR3 safety filter at 100 Hz, as the graph's correction node does",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"report path [{DEFAULT_OUT}; with --safety-filter {DEFAULT_OUT_SAFETY_FILTER}, so a filtered run "
        "never overwrites the unfiltered report]",
    )
    parser.add_argument("--plots-dir", default=None, help="PNG folder [the report's folder]")
    parser.add_argument("--json", default=None, help="also write every summary as JSON")
    parser.add_argument("--notes", default=None, help="markdown file appended to the report as 'Notes'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="write the report from --json dumps of runs over disjoint tasks",
    )


# N per cell of each condition by default: both sections together stay under ~30 min on the
# 2-core development machine (docs/benchmark timings in reports/benchmark.md's header)
CONDITION_EPISODES = {"vla": 20, "state": 80}
CONDITION_POLICY = {"vla": "vla", "state": "default"}


def configs_from_ns(ns: argparse.Namespace) -> list[BenchConfig]:
    """One BenchConfig per condition (``--condition``), in order."""
    from dataclasses import replace

    from async_vla_ros.presets import preset_names

    base = config_from_ns(ns)
    out = []
    for cond in ns.condition or ("vla", "state"):
        vals: dict[str, Any] = {"policy": CONDITION_POLICY[cond]}
        if ns.episodes is None and not ns.tiny:
            vals["episodes"] = CONDITION_EPISODES[cond]
        if cond == "vla":
            if ns.methods is None:
                vals["methods"] = preset_names(ablations=False, backend="vla")
            vals.update(adherence_obs=0, beta_sweep_task="")  # on the state checkpoints and their demos
        out.append(replace(base, **vals))
    return out


def config_from_ns(ns: argparse.Namespace) -> BenchConfig:
    vals: dict[str, Any] = dict(TINY) if ns.tiny else {}
    for name, key in (("tasks", "tasks"), ("methods", "methods"), ("delays", "delays")):
        v = getattr(ns, name)
        if v is not None:
            vals[key] = tuple(v)
    if ns.ablations:
        from async_vla_ros.presets import preset_names

        abl = tuple(p for p in preset_names(ablations=True) if p not in preset_names())
        vals["methods"] = tuple(vals.get("methods", preset_names())) + abl
    for name in ("s_min", "episodes", "batch", "seed", "latency_reps"):
        v = getattr(ns, name)
        if v is not None:
            vals[name] = v
    if ns.ckpt_dir:
        vals["ckpt_dir"] = ns.ckpt_dir
    if ns.jitter is not None:
        vals["jitter"] = tuple(ns.jitter)
    if ns.delay_trace is not None:
        vals["traces"] = tuple(ns.delay_trace)
    if ns.trace_unit is not None:
        vals["trace_unit"] = ns.trace_unit
    if ns.adherence_obs is not None:
        vals["adherence_obs"] = ns.adherence_obs
    if ns.beta_sweep is not None:
        vals["beta_sweep_task"] = ns.beta_sweep
    if ns.betas is not None:
        vals["betas"] = tuple(ns.betas)
    if getattr(ns, "safety_filter", False):
        vals["safety_filter"] = True
    return BenchConfig(**vals)


def merge_results(paths: Sequence[str | Path]) -> BenchResults:
    """One :class:`BenchResults` from the ``--json`` dumps of runs over disjoint (task, method)
    sets with the same settings otherwise: tasks in the order given, methods in first-seen order."""
    return merge_dumps([json.loads(Path(p).read_text()) for p in paths])


def merge_conditions(paths: Sequence[str | Path]) -> list[BenchResults]:
    """:func:`merge_results` per condition (the dumps' ``policy``): the VLA first, then the state
    condition, then any other, each merged from its dumps."""
    by: dict[str, list[dict[str, Any]]] = {}
    for p in paths:
        part = json.loads(Path(p).read_text())
        by.setdefault(str(part["config"].get("policy", "default")), []).append(part)
    order = sorted(by, key=lambda pol: (pol != "vla", pol != "default", pol))
    return [merge_dumps(by[pol]) for pol in order]


def dump(res: BenchResults) -> dict[str, Any]:
    """JSON-compatible form of a result (what ``--json`` writes and :func:`merge_dumps` reads)."""
    return json.loads(
        json.dumps(
            {
                "config": res.config.__dict__,
                "summaries": res.summaries,
                "latency": res.latency,
                "files": res.files,
                "wall_s": res.wall_s,
                "adherence": res.adherence,
                "beta_sweep": res.beta_sweep,
                "trace_info": res.trace_info,
                "skipped": res.skipped,
                "machine": res.machine,
            },
            default=str,
        )
    )


def merge_dumps(parts: Sequence[Mapping[str, Any]]) -> BenchResults:
    """:func:`merge_results` on loaded dumps."""
    if not parts:
        raise ValueError("nothing to merge")
    cfg0 = dict(parts[0]["config"])
    tasks: list[str] = []
    methods: list[str] = []
    for part in parts:
        c = part["config"]
        for key in ("delays", "episodes", "seed", "s_min", "jitter", "traces", "policy", "safety_filter"):
            if c.get(key, "default") != cfg0.get(key, "default"):
                raise ValueError(f"cannot merge runs with different {key}: {c[key]} vs {cfg0[key]}")
        tasks += [t for t in c["tasks"] if t not in tasks]
        methods += [m for m in c["methods"] if m not in methods]
    vals = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg0.items()}
    vals.update(tasks=tuple(tasks), methods=tuple(methods))
    vals["beta_sweep_task"] = next((p["config"]["beta_sweep_task"] for p in parts if p.get("beta_sweep")), "")
    res = BenchResults(BenchConfig(**vals))
    for part in parts:
        res.summaries += part["summaries"]
        for task, lat in part["latency"].items():
            res.latency.setdefault(task, {}).update(lat)
        for task, files in part["files"].items():
            res.files.setdefault(task, {}).update(files)
        for task, rows in part.get("adherence", {}).items():
            res.adherence.setdefault(task, rows)
        res.beta_sweep += part.get("beta_sweep", [])
        res.trace_info.update(part.get("trace_info", {}))
        res.skipped += part.get("skipped", [])
        res.wall_s += float(part["wall_s"])  # summed over the parts (they may have run side by side)
        res.machine = res.machine or dict(part.get("machine") or {})
    done = {(s["task"], s["preset"]) for s in res.summaries}
    res.skipped = [k for k in res.skipped if (k.split(" on ")[1].split(" ")[0], k.split(" on ")[0]) not in done]
    return res


def run(ns: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # as in every run and worker (the report names the thread count)
    if ns.merge:
        try:
            results = merge_conditions(ns.merge)
        except (ValueError, OSError, KeyError) as exc:
            print(f"bench paper --merge: {exc}", file=sys.stderr)
            return 2
        return _write_outputs(results, ns, "async-vla-ros bench paper --merge " + " ".join(ns.merge))
    try:
        cfgs = configs_from_ns(ns)
    except ValueError as exc:
        print(f"bench paper: {exc}", file=sys.stderr)
        return 2
    jobs = ns.jobs if ns.jobs is not None else min(4, os.cpu_count() or 1)
    if jobs < 1:
        print("bench paper: --jobs must be >= 1", file=sys.stderr)
        return 2
    command = "async-vla-ros bench paper" + (
        " " + " ".join(shlex.quote(a) for a in sys.argv[3:])
        if len(sys.argv) > 3 and sys.argv[1:3] == ["bench", "paper"]
        else _argv_from_ns(ns)
    )
    results = []
    for cfg in cfgs:
        print(
            f"bench paper: condition {_cond_name(cfg)}: {len(cfg.tasks)} tasks x {len(cfg.methods)} methods x "
            f"{len(cfg.delays) + len(cfg.jitter) + len(cfg.traces)} delays x N = {cfg.episodes}",
            flush=True,
        )
        try:
            results.append(run_parallel(cfg, jobs, progress=not ns.no_progress))
        except (FileNotFoundError, ValueError, BackendError) as exc:
            print(f"bench paper: {_cond_name(cfg)}: {exc}", file=sys.stderr)
            return 2
        results[-1].machine = machine_info()  # recorded with the results: a later merge names it
        if ns.json:  # at once, so that the measurements survive any later failure
            _write_json(results[-1], _json_path(ns.json, _cond_name(cfg), len(cfgs)))
    return _write_outputs(results, ns, command, wrote_json=True)


def _json_path(path: str, cond: str, n: int) -> Path:
    p = Path(path)
    return p if n == 1 else p.with_name(f"{p.stem}.{cond}{p.suffix}")


DEFAULT_OUT = "reports/benchmark.md"
DEFAULT_OUT_SAFETY_FILTER = "reports/benchmark_safety_filter.md"


def default_out(safety_filter: bool) -> str:
    """The report a run writes without ``--out``: the filtered condition has a report of its own."""
    return DEFAULT_OUT_SAFETY_FILTER if safety_filter else DEFAULT_OUT


def _write_json(res: BenchResults, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dump(res), indent=1))


def _write_outputs(
    results: BenchResults | Sequence[BenchResults], ns: argparse.Namespace, command: str, wrote_json: bool = False
) -> int:
    results = [results] if isinstance(results, BenchResults) else list(results)
    out = Path(ns.out or default_out(any(r.config.safety_filter for r in results)))
    if ns.json and not wrote_json:
        for res in results:
            _write_json(res, _json_path(ns.json, _cond_name(res.config), len(results)))
    plots_dir = Path(ns.plots_dir) if ns.plots_dir else out.parent
    from async_vla_ros.eval.plots import success_vs_delay

    conditions = []
    n_plots = 0
    for res in results:
        cfg = res.config
        cond = _cond_name(cfg)
        # plots named after the report (benchmark.md: benchmark_<task>.png, benchmark_vla_<task>.png)
        prefix = f"{out.stem}_" if cond == "state" else f"{out.stem}_{cond}_"
        plots = {}
        for task in cfg.tasks:
            p = success_vs_delay(
                {m: {d: v for d, v in c.items() if isinstance(d, int)} for m, c in res.counts(task).items()},
                task,
                plots_dir / f"{prefix}{task}.png",
                methods=cfg.methods,
                title_suffix=f" ({cond}{', safety filter' if cfg.safety_filter else ''}, N={cfg.episodes}, H=8, "
                f"s=max(d,{cfg.s_min}))",
            )
            plots[task] = os.path.relpath(p, out.parent)
        n_plots += len(plots)
        conditions.append(("", res, plots))
    notes = Path(ns.notes).read_text() if ns.notes else ""
    write_reports(conditions, out, command, notes)
    print(f"wrote {out} and {n_plots} plot(s) in {plots_dir} ({sum(r.wall_s for r in results):.0f} s)")
    return 0


def _argv_from_ns(ns: argparse.Namespace) -> str:
    parts = []
    for k, v in sorted(vars(ns).items()):
        if k.startswith("_") or k in ("command", "bench_command") or v in (None, False):
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            parts.append(flag)
        elif isinstance(v, (list, tuple)):
            parts.append(flag + " " + " ".join(str(x) for x in v))
        elif not (k == "out" and v in (DEFAULT_OUT, DEFAULT_OUT_SAFETY_FILTER)):
            parts.append(f"{flag} {v}")
    return (" " + " ".join(parts)) if parts else ""
