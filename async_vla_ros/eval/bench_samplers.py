"""Sampler latency benchmark and prefix adherence on shipped checkpoints.

``async-vla-ros bench samplers --adherence TASK`` measures, instead of latency, how closely each
guided sampler follows the prefix it is given, on the shipped checkpoints of TASK and real
observations from its demonstrations (see :func:`adherence`).

Latency: one chunk per call through ``FlowPolicyBackend.infer``.

``async-vla-ros bench samplers`` (or ``python -m async_vla_ros.eval.bench_samplers``) times,
for a default state network (random init: latency does not depend on the weights), batch 1
and one torch thread: vanilla, RTC-guided, prefix-preserved (REMAC) and BID (N samples), plus
the A2C2 correction head per call. Methods are interleaved within every repetition (in a
shuffled order) so load noise hits all of them alike; ratios to vanilla come from the same
run. Times are ``time.perf_counter_ns`` around the whole ``infer`` call (validation,
normalisation, sampling, numpy conversion included).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead
from async_vla_ros.policy.base import SamplerSettings, make_flow_backend
from async_vla_ros.policy.networks import FlowNetConfig, count_params

METHODS = ("vanilla", "rtc", "rtc_jf", "prefix", "remac", "bid")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of the sampler benchmark (for the CLI's ``bench samplers`` sub-command)."""
    parser.add_argument("--obs-dim", type=int, default=32, help="state observation size (default 32)")
    parser.add_argument("--horizon", type=int, default=8, help="chunk length H (default 8)")
    parser.add_argument("--action-dim", type=int, default=8, help="action size A (default 8)")
    parser.add_argument("--hidden", type=int, default=128, help="mixer width (default 128)")
    parser.add_argument("--depth", type=int, default=3, help="mixer blocks (default 3)")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps n (default 5)")
    parser.add_argument("--bid-n", type=int, default=8, help="BID samples per chunk (default 8)")
    parser.add_argument("--delay", type=int, default=3, help="frozen prefix length d for rtc/prefix (default 3)")
    parser.add_argument("--reps", type=int, default=300, help="timed repetitions per method (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed repetitions per method (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-cache", action="store_true", help="disable the per-chunk conditioning cache")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and interleaving order")
    parser.add_argument(
        "--adherence",
        metavar="TASK",
        default=None,
        help="measure prefix adherence on TASK's shipped checkpoints and demonstrations instead of latency",
    )
    parser.add_argument("--demos", default=None, help="demonstrations for --adherence [data/demos/TASK]")
    parser.add_argument("--ckpt-dir", default=None, help="checkpoint folder for --adherence [shipped]")
    parser.add_argument("--obs", type=int, default=256, help="observations drawn for --adherence (default 256)")
    parser.add_argument(
        "--betas", default="5", help="comma-separated guidance clips beta for rtc/rtc_jf in --adherence (default 5)"
    )
    parser.add_argument(
        "--delays", default="1,2,3,4", help="comma-separated delays d for --adherence (default 1,2,3,4)"
    )
    parser.add_argument("--schedule", default="exp", help="RTC soft-mask schedule for --adherence (default exp)")
    return parser


def _check(ns: argparse.Namespace) -> None:
    for name in ("obs_dim", "horizon", "action_dim", "hidden", "depth", "steps", "bid_n", "reps", "threads"):
        if getattr(ns, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if ns.warmup < 0:
        raise SystemExit("--warmup must be >= 0")
    if not 0 <= ns.delay <= ns.horizon:
        raise SystemExit("--delay must lie in [0, horizon]")


def _stats(ns_samples: list[int]) -> tuple[float, float]:
    arr = np.asarray(ns_samples, dtype=np.float64) / 1e6
    return float(np.median(arr)), float(np.percentile(arr, 99))


def measure(ns: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run the benchmark, print the table, return ``{method: {"median_ms", "p99_ms", "ratio", "paired_ratio"}}``.

    Methods: vanilla, rtc, prefix, bid, a2c2 (correction head per call), "step fwd" and
    "step fwd+vjp" (one Euler step without / with RTC's vector-Jacobian product).
    """
    _check(ns)
    cfg = FlowNetConfig(
        obs_dim=ns.obs_dim, action_dim=ns.action_dim, horizon=ns.horizon, hidden=ns.hidden, depth=ns.depth
    )
    settings = SamplerSettings(
        n_steps=ns.steps, bid_n=ns.bid_n, num_threads=ns.threads, cache_conditioning=not ns.no_cache, seed=ns.seed
    )
    backend = make_flow_backend(cfg, settings=settings, init_seed=ns.seed)
    head = CorrectionHead(
        CorrectionConfig(
            obs_dim=ns.obs_dim, action_dim=ns.action_dim, horizon=ns.horizon, latent_dim=backend.latent_dim
        )
    ).eval()

    rng = np.random.default_rng(ns.seed)
    h, a, d = ns.horizon, ns.action_dim, ns.delay
    obs = rng.normal(size=(1, ns.obs_dim))
    prefix = rng.normal(size=(1, h, a))
    # RTC's "exp" soft mask: 1 on the d frozen actions, then decaying towards 0 at H
    lin = np.clip((d - 1 - np.arange(h)) / (h - d + 1) + 1.0, 0.0, 1.0)
    w = np.clip(lin * np.expm1(lin) / (np.e - 1.0), 0.0, 1.0)[None, :]
    nf = np.array([d])
    remac_backend = make_flow_backend(
        dataclasses.replace(cfg, mask_lora_rank=4), settings=settings, init_seed=ns.seed
    )  # the authors' REMAC runs its mask-gated adapters at inference
    real = np.ones((1, h))
    base_action, k, latent = rng.normal(size=(1, a)), np.array([d]), rng.normal(size=(1, backend.latent_dim))
    calls = {
        "vanilla": lambda: backend.infer(obs, "vanilla"),
        "rtc": lambda: backend.infer(obs, "rtc", prefix=prefix, weights=w),
        "rtc_jf": lambda: backend.infer(obs, "rtc_jf", prefix=prefix, weights=w),
        "prefix": lambda: backend.infer(obs, "prefix", prefix=prefix, n_frozen=nf),
        "remac": lambda: remac_backend.infer(obs, "remac", prefix=prefix, weights=real, n_frozen=nf),
        "bid": lambda: backend.infer(obs, "bid", prefix=prefix, weights=w),
        "a2c2": lambda: head.residual(obs, base_action, k, h, latent=latent),
    }
    # one Euler step alone, to relate RTC's cost to "one extra backward pass per step"
    net = backend.network
    with torch.no_grad():
        cond = net.encode(torch.as_tensor(obs, dtype=torch.float32), cache=settings.cache_conditioning)
        if settings.cache_conditioning:
            net.precompute(cond, [0.4])
    x_step = torch.randn(1, h, a, generator=torch.Generator().manual_seed(ns.seed))
    y_t, w_t = torch.as_tensor(prefix, dtype=torch.float32), torch.as_tensor(w, dtype=torch.float32).unsqueeze(-1)
    v_step = net.velocity_fn(cond)

    def step_forward():
        with torch.no_grad():
            v_step(x_step, 0.4)

    def step_vjp():
        with torch.no_grad():
            S.rtc_guided_velocity(v_step, x_step, 0.4, y_t, w_t, settings.beta)

    calls["step fwd"] = step_forward
    calls["step fwd+vjp"] = step_vjp
    order = list(calls)
    shuffler = random.Random(ns.seed)
    times: dict[str, list[int]] = {m: [] for m in order}
    for rep in range(ns.warmup + ns.reps):
        shuffler.shuffle(order)
        for m in order:
            t0 = time.perf_counter_ns()
            calls[m]()
            dt = time.perf_counter_ns() - t0
            if rep >= ns.warmup:
                times[m].append(dt)

    med_v, _ = _stats(times["vanilla"])
    van = np.asarray(times["vanilla"], dtype=np.float64)
    results: dict[str, dict[str, float]] = {}
    for m in order_sorted(calls):
        med, p99 = _stats(times[m])
        # paired: the same repetition's vanilla call saw the same load
        paired = float(np.median(np.asarray(times[m], dtype=np.float64) / van))
        results[m] = {"median_ms": med, "p99_ms": p99, "ratio": med / med_v, "paired_ratio": paired}

    print(
        f"sampler latency, one chunk per call: B=1, obs_dim={ns.obs_dim}, H={h}, A={a}, n={ns.steps}, "
        f"d={d}, BID N={ns.bid_n}, torch threads={torch.get_num_threads()}, "
        f"cache={'off' if ns.no_cache else 'on'}, params={count_params(backend.network)}, "
        f"A2C2 head params={count_params(head)}, reps={ns.reps} (+{ns.warmup} warm-up), interleaved"
    )
    print(f"{'method':<14}{'median ms':>11}{'p99 ms':>10}{'median/vanilla':>16}{'paired ratio':>14}")
    for m, r in results.items():
        if m in METHODS or m == "a2c2":
            label = "a2c2 head" if m == "a2c2" else m
            print(
                f"{label:<14}{r['median_ms']:>11.3f}{r['p99_ms']:>10.3f}{r['ratio']:>16.2f}{r['paired_ratio']:>14.2f}"
            )
    print("paired ratio: median over repetitions of (method time / vanilla time in the same repetition)")
    fwd, vjp = results["step fwd"]["median_ms"], results["step fwd+vjp"]["median_ms"]
    print(f"one Euler step: forward {fwd:.3f} ms, forward + VJP (RTC) {vjp:.3f} ms, ratio {vjp / fwd:.2f}")
    return results


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError as exc:
        raise SystemExit(f"--{name} must be comma-separated integers, got {text!r}") from exc


def adherence(
    task: str,
    *,
    demos: str | None = None,
    ckpt_dir: str | None = None,
    n_obs: int = 256,
    delays: Sequence[int] = (1, 2, 3, 4),
    betas: Sequence[float] = (5.0,),
    schedule: str = "exp",
    seed: int = 0,
    log=print,
) -> list[dict[str, Any]]:
    """Prefix adherence of every guided sampler on ``task``'s shipped checkpoints.

    Observations: ``n_obs`` steps ``t`` drawn from the demonstrations (``t >= H``). For each delay
    ``d`` (execution horizon ``s = max(d, 1)``), the prefix ``Y`` is what the scheduler would hold:
    the base policy's own vanilla chunk from the observation at ``t - s``, shifted by ``s`` (index
    ``i`` of the new chunk is ``i + s`` of the old one; the last ``s`` rows do not exist, they
    repeat the old chunk's last action with weight 0), RTC's soft-mask weights from
    :func:`async_vla_ros.core.strategies.prefix_weights`. Each sampler gets the observation at
    ``t``; reported: the median and 90th percentile over observations of the largest
    ``|chunk - Y|`` on the frozen rows (``k < d``) and on the soft rows (``k >= d``, weight > 0),
    in normalised action units (the base checkpoint's normaliser), and the mean call time.
    ``vanilla`` (no guidance) is the reference. Samplers whose checkpoint is missing are skipped.
    """
    from async_vla_ros.checkpoints import checkpoint_path
    from async_vla_ros.core.strategies import prefix_weights
    from async_vla_ros.policy.base import load_policy
    from async_vla_ros.train.data import load_episodes

    ds = load_episodes(demos or f"data/demos/{task}")
    base = load_policy(checkpoint_path(task, "base", ckpt_dir))
    h = base.horizon
    rng = np.random.default_rng(seed)
    eps = [e for e in ds.episodes if len(e.obs) > h + 1]
    picks = [(int(i), int(rng.integers(h, len(eps[i].obs)))) for i in rng.integers(0, len(eps), n_obs)]
    policies: dict[str, Any] = {"base": base}
    for kind in ("remac", "remac_clean"):
        try:
            policies[kind] = load_policy(checkpoint_path(task, kind, ckpt_dir))
        except FileNotFoundError as exc:
            log(f"adherence: skipping {kind}: {exc}")
    norm = base.normalizer.action

    def call(name: str, beta: float | None, obs_now, y, w, real, nf) -> np.ndarray:
        if name in ("rtc", "rtc_jf"):
            return base.infer(obs_now, name, prefix=y, weights=w, seed=seed, beta=beta)
        if name == "remac_clean":
            return policies[name].infer(obs_now, "prefix", prefix=y, n_frozen=nf, seed=seed)
        if name == "remac":
            return policies[name].infer(obs_now, "remac", prefix=y, weights=real, n_frozen=nf)
        if name == "bid":
            return base.infer(obs_now, "bid", prefix=y, weights=w, seed=seed)
        return base.infer(obs_now, "vanilla", seed=seed)

    rows: list[dict[str, Any]] = []
    for d in delays:
        s = max(int(d), 1)
        obs_now = np.stack([eps[i].obs[t] for i, t in picks])
        obs_prev = np.stack([eps[i].obs[t - s] for i, t in picks])
        prev = base.infer(obs_prev, "vanilla", seed=seed + 1000 + d)
        idx = np.minimum(np.arange(h) + s, h - 1)
        y = prev[:, idx]
        n_real = h - s
        w1 = prefix_weights(d, s, h, schedule, n_real=n_real)
        w = np.repeat(w1[None], len(picks), axis=0)
        real = np.repeat((np.arange(h) < n_real).astype(float)[None], len(picks), axis=0)
        nf = np.full(len(picks), d)
        specs: list[tuple[str, float | None]] = [("vanilla", None)]
        specs += [(name, float(beta)) for beta in betas for name in ("rtc", "rtc_jf")]
        specs.append(("bid", None))
        specs += [(kind, None) for kind in ("remac_clean", "remac") if kind in policies]

        for name, beta in specs:
            k = min(4, len(picks))  # warm-up call on a few rows (first-call overheads)
            call(name, beta, obs_now[:k], y[:k], w[:k], real[:k], nf[:k])
            t0 = time.perf_counter()
            chunk = call(name, beta, obs_now, y, w, real, nf)
            ms = (time.perf_counter() - t0) * 1e3 / len(picks)
            frozen, soft = S.prefix_adherence(norm.normalize(chunk), norm.normalize(y), nf, w)
            row = {
                "task": task,
                "d": int(d),
                "sampler": name,
                "beta": beta,
                "frozen_median": float(np.nanmedian(frozen)),
                "frozen_p90": float(np.nanpercentile(frozen, 90)),
                "soft_median": float(np.nanmedian(soft)) if np.isfinite(soft).any() else float("nan"),
                "soft_p90": float(np.nanpercentile(soft, 90)) if np.isfinite(soft).any() else float("nan"),
                "ms_per_obs": ms,
            }
            rows.append(row)
    return rows


def print_adherence(rows: list[dict[str, Any]], out=print) -> None:
    out(
        "| d | sampler | beta | frozen rows: median / p90 max abs(chunk - Y) | soft rows: median / p90 | ms per obs (batched) |"
    )
    out("|---|---|---|---|---|---|")
    for r in rows:
        beta = "-" if r["beta"] is None else f"{r['beta']:g}"
        out(
            f"| {r['d']} | {r['sampler']} | {beta} | {r['frozen_median']:.3f} / {r['frozen_p90']:.3f} | "
            f"{r['soft_median']:.3f} / {r['soft_p90']:.3f} | {r['ms_per_obs']:.2f} |"
        )


def run(ns: argparse.Namespace) -> int:
    """CLI entry (``async-vla-ros bench samplers``): print the table, exit status 0."""
    if ns.adherence:
        torch.set_num_threads(ns.threads)
        try:
            betas = [float(v) for v in str(ns.betas).split(",") if v.strip()]
        except ValueError as exc:
            raise SystemExit(f"--betas must be comma-separated numbers, got {ns.betas!r}") from exc
        rows = adherence(
            ns.adherence,
            demos=ns.demos,
            ckpt_dir=ns.ckpt_dir,
            n_obs=ns.obs,
            delays=_ints(ns.delays, "delays"),
            betas=betas,
            schedule=ns.schedule,
            seed=ns.seed,
        )
        print(
            f"prefix adherence on {ns.adherence}: {ns.obs} demonstration observations, normalised action units, "
            f"schedule {ns.schedule}"
        )
        print_adherence(rows)
        return 0
    measure(ns)
    return 0


def order_sorted(calls) -> list[str]:
    return [m for m in (*METHODS, "a2c2", "step fwd", "step fwd+vjp") if m in calls]


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(
        argparse.ArgumentParser(prog="async-vla-ros bench samplers", description=__doc__.split("\n")[0])
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
