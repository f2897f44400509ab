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


# ---------------------------------------------------------------------- latency
def measure_latencies(
    calls: Mapping[str, tuple[Any, Any | None, MethodPreset]], obs: np.ndarray, reps: int, d: int = 2
) -> dict[str, dict[str, float]]:
    """B = 1 chunk latency (ms) per method on ``obs`` (1, obs_dim), and the head's per-step time.

    ``calls``: preset name -> (policy, head or None, preset). Each method is timed in short blocks of
    consecutive calls (warm caches, as when one model serves a robot; the first call of a block
    is discarded), and the blocks of all methods are interleaved over 5 rounds so that load from
    other processes hits every method alike. (Strict one-call round-robin over 11 methods and two
    networks measured cache effects instead: the same vanilla call took 1.4 ms alone, 2.0-2.5 ms
    interleaved.)
    The prefix is a real chunk of the same policy; weights/frozen count are those of the method's
    strategy for delay ``d`` and s = d (the numbers barely depend on them).
    """
    from async_vla_ros.core.requests import sampler_call
    from async_vla_ros.core.strategies import make_strategy

    prepared = {}
    for m, (policy, head, spec) in calls.items():
        h = int(policy.horizon)
        chunk = policy.infer(obs, seed=0)
        g = make_strategy(spec.strategy).guidance(h, d, max(d, 1), h)
        _, kw = sampler_call(spec.sampler, chunk, g.weights[None], np.array([g.n_frozen]))
        del kw["seed"]
        lat = policy.latent(obs) if head is not None and getattr(head.config, "latent_dim", 0) else None
        prepared[m] = (policy, head, spec, kw, chunk, lat, h)
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
                    head.residual(obs, chunk[:, 0], np.array([j % h]), h, latent=lat)
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

    def counts(self, task: str | None = None) -> dict[str, dict[int, tuple[int, int]]]:
        """method -> d -> (successes, n), one task or pooled over tasks."""
        out: dict[str, dict[int, tuple[int, int]]] = {}
        for s in self.summaries:
            if task is not None and s["task"] != task:
                continue
            k0, n0 = out.setdefault(s["preset"], {}).get(s["delay"], (0, 0))
            out[s["preset"]][s["delay"]] = (k0 + s["successes"], n0 + s["n"])
        return out

    def metric(self, method: str, name: str, delays: Sequence[int] | None = None) -> list[float]:
        """Per-episode values of a metric of ``method`` pooled over tasks (and ``delays``)."""
        vals: list[float] = []
        for s in self.summaries:
            if s["preset"] == method and (delays is None or s["delay"] in delays):
                vals.extend(s["per_episode"][name])
        return vals


def run_bench(config: BenchConfig, progress: bool = True, log: Callable[[str], None] = print) -> BenchResults:
    """Run the sweep; returns the results (no files written)."""
    import torch

    from async_vla_ros.sim.env import BatchedPandaEnv
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner

    torch.set_num_threads(1)
    res = BenchResults(config)
    t0 = time.perf_counter()
    total = len(config.tasks) * len(config.methods) * len(config.delays) * config.episodes
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
                if spec.ablation:  # ablation checkpoints are optional per task: skipped (and reported) when absent
                    try:
                        checkpoint_file(task, spec.checkpoint, config.ckpt_dir)
                    except BackendError:
                        res.skipped.append(f"{m} on {task} (no {task}_{spec.checkpoint}.pt)")
                        total -= len(config.delays) * config.episodes
                        if bar is not None:
                            bar.total = total
                        continue
                loaded[m] = load_models(task, spec, "default", checkpoint_dir=config.ckpt_dir, cache=cache)
            res.files[task] = {k: v for lm in loaded.values() for k, v in lm.files.items()}
            env = BatchedPandaEnv(task, 1, threads=1)
            obs1 = env.reset([config.seed])
            env.close()
            res.latency[task] = measure_latencies(
                {m: (lm.policy, lm.head, lm.preset) for m, lm in loaded.items()}, obs1, config.latency_reps
            )
            for m, lm in loaded.items():
                spec, pol = lm.preset, lm.policy
                runner = LockstepRunner(pol, lm.head)
                for d in config.delays:
                    if d >= pol.horizon:
                        raise ValueError(f"delay {d} must be < H = {pol.horizon}")
                    s_exec = max(d, config.s_min)
                    lc = LockstepConfig(
                        task=task,
                        strategy=spec.strategy,
                        delay=d,
                        s_min=config.s_min,
                        episodes=config.episodes,
                        batch=config.batch,
                        seed=config.seed,
                        strategy_options=(("s", s_exec),) if spec.strategy == "sync" else (),
                    )
                    r = runner.run(lc)
                    s = r.summary()
                    s.update(
                        preset=m,
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
                    if bar is not None:
                        bar.update(config.episodes)
                        bar.set_postfix(task=task, method=m, d=d, succ=f"{r.success_rate:.2f}")
    finally:
        if bar is not None:
            bar.close()
    res.wall_s = time.perf_counter() - t0
    log(f"bench paper: {done} episodes in {res.wall_s:.0f} s")
    return res


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
        v, ev = _verdict_rates(_pooled(counts[a], da), _pooled(counts[b], db if db is not None else da))
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
    cmp_rates("REMAC", f"REMAC beats naive async ({dl})", "remac", "naive", delayed)
    cmp_rates("REMAC", f"REMAC beats RTC ({dl})", "remac", "rtc", delayed)
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
            cmp_rates("REMAC", f"full REMAC beats the ablation {abl} ({dl})", "remac", abl, delayed)
    cmp_rates("A2C2", f"naive + A2C2 head beats naive async ({dl})", "a2c2", "naive", delayed)
    cmp_rates("A2C2", f"naive + A2C2 beats RTC ({dl})", "a2c2", "rtc", delayed)
    cmp_rates("A2C2", f"RTC + A2C2 beats RTC ({dl})", "rtc_a2c2", "rtc", delayed)
    cmp_rates(
        "ours", f"REMAC + A2C2 beats REMAC ({dl}; a combination the papers do not test)", "remac_a2c2", "remac", delayed
    )

    # smoothness: largest command jump at chunk switches (per-episode values, mean +- sem)
    def cmp_jump(src: str, text: str, a: str, b: str) -> None:
        va, vb = res.metric(a, "switch_jump_max", delayed), res.metric(b, "switch_jump_max", delayed)
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

    base_ms, rtc_ms, remac_ms = mean_lat("naive"), mean_lat("rtc"), mean_lat("remac")
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
                "REMAC's prefix-preserved sampling adds no inference latency",
                f"B=1 chunk: remac {remac_ms:.2f} ms vs vanilla {base_ms:.2f} ms (x{r:.2f})",
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


def _rate_cell(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]"


def write_report(res: BenchResults, path: str | Path, command: str, plots: Mapping[str, str], notes: str = "") -> Path:
    """Markdown report of ``res``."""
    cfg = res.config
    info = machine_info()
    L: list[str] = []
    L.append("# Paper-style benchmark: success vs inference delay (lockstep simulation)\n")
    L.append(
        f"Generated by `{command}` on {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"the sweep took {res.wall_s / 60:.1f} min.\n"
    )
    L.append(
        f"- Machine: {info['cpu']}, {info['cores']} cores (shared with other jobs during the run), "
        f"{info['os']}; Python {info['python']}, torch {info['torch']} ({info['torch_threads']} thread), "
        f"mujoco {info['mujoco']}, numpy {info['numpy']}; git {info['git']}."
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
        L.append("- Not run (ablation checkpoint not trained for that task): " + "; ".join(res.skipped) + ".")
    L.append("- Checkpoints:")
    for task, files in res.files.items():
        L.append(f"  - {task}: " + "; ".join(f"{k}: `{v}`" for k, v in sorted(files.items())))
    L.append("")
    # pooled
    pooled = res.counts()
    L.append("## All tasks pooled\n")
    L.append(_success_table(pooled, cfg))
    for task in cfg.tasks:
        c = res.counts(task)
        L.append(f"\n## {task}\n")
        if task in plots:
            L.append(f"![{task} success vs delay]({plots[task]})\n")
        L.append("Success rate [95 % Wilson CI]:\n")
        L.append(_success_table(c, cfg))
        L.append("\nSmoothness (switch jump rad / RMS jerk rad/s^3), mean over episodes:\n")
        L.append(_smooth_table(res, task))
    L.append("\n## Inference latency per method (measured in this run)\n")
    L.append(_latency_table(res))
    L.append("\n## The papers' claims against these numbers\n")
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
    if notes:
        L.append("\n## Notes\n")
        L.append(notes.strip() + "\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")
    return path


PER_TASK_PAIRS = (
    ("rtc", "naive"),
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


def _success_table(counts: Mapping[str, Mapping[int, tuple[int, int]]], cfg: BenchConfig) -> str:
    ds = list(cfg.delays)
    rows = ["| method | " + " | ".join(f"d={d}" for d in ds) + " | mean d>=1 |", "|---|" + "---|" * (len(ds) + 1)]
    for m in cfg.methods:
        if m not in counts:
            continue
        cells = [_rate_cell(*counts[m][d]) if d in counts[m] else "-" for d in ds]
        k, n = _pooled(counts[m], [d for d in ds if d >= 1])
        cells.append(f"{k / n:.3f}" if n else "-")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


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
TINY = dict(tasks=("track",), delays=(2, 4), episodes=2, batch=2, latency_reps=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=None, help=f"tasks [{' '.join(TASKS_DEFAULT)}]")
    from async_vla_ros.presets import preset_names

    main, abl = preset_names(), [p for p in preset_names(ablations=True) if p not in preset_names()]
    parser.add_argument("--methods", nargs="+", default=None, help=f"presets (config/methods.yaml) [{' '.join(main)}]")
    parser.add_argument("--ablations", action="store_true", help=f"also run {' '.join(abl)}")
    parser.add_argument("--delays", nargs="+", type=int, default=None, help="delays d [0 1 2 3 4]")
    parser.add_argument("--s-min", type=int, default=None, help="s = max(d, S_MIN) [1]")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per cell [80]")
    parser.add_argument("--batch", type=int, default=None, help="envs in lockstep [40]")
    parser.add_argument("--seed", type=int, default=None, help="run seed [0]")
    parser.add_argument("--latency-reps", type=int, default=None, help="timed B=1 calls per method [100]")
    parser.add_argument("--ckpt-dir", default=None, help="checkpoint folder [the shipped async_vla_ros/checkpoints]")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke configuration: track, d in {2, 4}, 2 episodes (seconds, for tests)"
    )
    parser.add_argument("--out", default="reports/benchmark.md", help="report path [reports/benchmark.md]")
    parser.add_argument("--plots-dir", default=None, help="PNG folder [the report's folder]")
    parser.add_argument("--json", default=None, help="also write every summary as JSON")
    parser.add_argument("--notes", default=None, help="markdown file appended to the report as 'Notes'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    return BenchConfig(**vals)


def run(ns: argparse.Namespace) -> int:
    try:
        cfg = config_from_ns(ns)
    except ValueError as exc:
        print(f"bench paper: {exc}", file=sys.stderr)
        return 2
    command = "async-vla-ros bench paper" + (
        " " + " ".join(shlex.quote(a) for a in sys.argv[3:])
        if len(sys.argv) > 3 and sys.argv[1:3] == ["bench", "paper"]
        else _argv_from_ns(ns)
    )
    try:
        res = run_bench(cfg, progress=not ns.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"bench paper: {exc}", file=sys.stderr)
        return 2
    out = Path(ns.out)
    if ns.json:  # first, so that the measurements survive any later failure
        jp = Path(ns.json)
        jp.parent.mkdir(parents=True, exist_ok=True)
        jp.write_text(
            json.dumps(
                {
                    "config": cfg.__dict__,
                    "summaries": res.summaries,
                    "latency": res.latency,
                    "files": res.files,
                    "wall_s": res.wall_s,
                },
                indent=1,
                default=str,
            )
        )
    plots_dir = Path(ns.plots_dir) if ns.plots_dir else out.parent
    from async_vla_ros.eval.plots import success_vs_delay

    plots = {}
    for task in cfg.tasks:
        p = success_vs_delay(
            res.counts(task),
            task,
            plots_dir / f"benchmark_{task}.png",
            methods=cfg.methods,
            title_suffix=f" (N={cfg.episodes}, H=8, s=max(d,{cfg.s_min}))",
        )
        plots[task] = os.path.relpath(p, out.parent)
    notes = Path(ns.notes).read_text() if ns.notes else ""
    write_report(res, out, command, plots, notes)
    print(f"wrote {out} and {len(plots)} plot(s) in {plots_dir} ({res.wall_s:.0f} s)")
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
        elif not (k == "out" and v == "reports/benchmark.md"):
            parts.append(f"{flag} {v}")
    return (" " + " ".join(parts)) if parts else ""
