"""``async-vla-ros eval``: simulated-delay evaluation of a chunk policy on a MuJoCo task.

Runs :class:`async_vla_ros.sim.lockstep.LockstepRunner` for every (method preset, delay) pair given
(presets: ``config/methods.yaml``; each preset's models load through
:func:`async_vla_ros.policy.registry.load_models`) and
prints, per condition, the success rate with its 95 % Wilson interval, time to success,
smoothness of the executed command stream (RMS / max joint acceleration and jerk, largest jump
at a chunk switch), inference time per batched call and episodes per second (all and without
inference). ``--json PATH`` also writes the summaries (one object per condition);
``--steps-out PATH`` every episode's observations and commands step by step (``.npz``,
:func:`save_steps`), for looking at what a failure looks like (``eval.failures``).

Examples::

    async-vla-ros eval --task track --method naive --delay 2 --episodes 100
    async-vla-ros eval --task intercept --method naive rtc remac --delay 0 1 2 3 4 --policy default
    async-vla-ros eval --task track --policy ckpt.pt --a2c2 head.pt --method a2c2 --delay 3

``--policy`` is a policy spec (``policy/registry.py``): ``expert`` (the default: the task's
scripted expert as a chunk policy, so the command works before any checkpoint exists; it serves
the presets of the base policy only), ``default`` (the task's shipped checkpoints: base, REMAC,
A2C2 head as each preset needs), a checkpoint path, or any registered backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros.eval.stats import format_rate, wilson_interval


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from async_vla_ros.presets import preset_names
    from async_vla_ros.sim.tasks import TASKS

    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="simulation task")
    parser.add_argument(
        "--instruction",
        default="",
        help="language instruction for policies that take one (default: the task's first paraphrase; "
        "names.HELD_OUT lists the paraphrases held out of training data)",
    )
    parser.add_argument(
        "--safety-filter",
        action="store_true",
        help="drive the arm as the running graph does: every step's command ramped at 100 Hz through the FR3 "
        "safety filter (velocity, acceleration, jerk limits) before the servos (default: the command as is)",
    )
    parser.add_argument(
        "--method",
        nargs="+",
        default=["naive"],
        metavar="M",
        help=f"method preset(s) (config/methods.yaml): {', '.join(preset_names(ablations=True))}; "
        f"with --policy lerobot:DIR also "
        f"{', '.join(sorted(set(preset_names(True, backend='lerobot')) - set(preset_names(True))))} (default naive)",
    )
    parser.add_argument(
        "--delay",
        nargs="+",
        default=["0"],
        metavar="D",
        help="simulated inference delay(s) in control steps: d (fixed) or LO:HI (uniform per chunk, e.g. 2:4; the "
        "forecast then comes from the node's delay estimator) (default 0)",
    )
    parser.add_argument(
        "--delay-trace",
        nargs="+",
        default=[],
        metavar="FILE",
        help="recorded latency trace(s) replayed per chunk: a bag (/scheduler/chunk_report total_latency_s), a json "
        "list / {latency_s: [...]} / {delay_steps: [...]}, or one latency per line; converted at the control period",
    )
    parser.add_argument("--trace-unit", default="s", choices=("s", "ms", "steps"), help="unit of a trace's numbers")
    parser.add_argument(
        "--beta", type=float, default=0.0, help="RTC guidance clip for rtc / rtc_jf presets (<= 0: the preset's)"
    )
    parser.add_argument(
        "--horizon",
        type=int,
        default=1,
        metavar="S",
        help="execution horizon floor s_min: s = max(d, S); sync executes S actions per chunk (default 1)",
    )
    parser.add_argument("--episodes", type=int, default=100, help="episodes per condition (default 100)")
    parser.add_argument(
        "--policy",
        default="expert",
        help="policy spec: expert (scripted, default), default (shipped checkpoints), a checkpoint path, NAME:TARGET",
    )
    parser.add_argument(
        "--a2c2", default="default", metavar="HEAD", help="A2C2 head for presets that use one: default or a path"
    )
    parser.add_argument("--batch", type=int, default=50, help="environments stepped in lockstep (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (episode and policy seeds derive from it)")
    parser.add_argument("--threads", type=int, default=None, help="physics threads (default min(2, cpus))")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the summaries as JSON")
    parser.add_argument(
        "--steps-out",
        default=None,
        metavar="PATH",
        help="also write every episode's observations and commands, step by step, as .npz (read it with "
        "async_vla_ros.eval.eval_cmd.load_steps; python -m async_vla_ros.eval.failures)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _load(ns: argparse.Namespace) -> dict[str, Any]:
    """preset name -> PresetModels (one load per distinct model; SystemExit with the reason)."""
    from async_vla_ros.policy.registry import BackendError, BackendRequest, load_models
    from async_vla_ros.presets import get_preset

    cache: dict = {}
    out = {}
    for m in ns.method:
        try:
            req = BackendRequest(ns.task, beta=float(ns.beta))
            out[m] = load_models(ns.task, get_preset(m), ns.policy, a2c2=ns.a2c2, cache=cache, request=req)
        except (BackendError, ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"--method {m} / --policy {ns.policy}: {exc}") from None
    return out


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def run(ns: argparse.Namespace) -> int:
    evaluate(ns)
    return 0


def evaluate(ns: argparse.Namespace) -> tuple[list[dict], list[Any]]:
    """What ``eval`` runs and prints (and writes with ``--json``): returns the per-condition
    summaries and the delay specs they ran (``DelaySpec``; a summary's ``delay_label`` names its
    spec), for callers that go on with them (``bench pipeline --remote``)."""
    from async_vla_ros.presets import PresetError, get_preset
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner

    for m in ns.method:
        try:
            get_preset(m)
        except PresetError as exc:
            raise SystemExit(f"--method: {exc}") from None
    for name in ("episodes", "batch", "horizon"):
        if getattr(ns, name) < 1:
            raise SystemExit(f"--{name} must be >= 1")
    from async_vla_ros.core.delay import load_delay_trace, parse_delay
    from async_vla_ros.sim.tasks import make_task

    try:
        delays = [parse_delay(d) for d in ns.delay]
        dt = make_task(ns.task).dt
        delays += [load_delay_trace(f, dt, ns.trace_unit) for f in ns.delay_trace]
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"--delay / --delay-trace: {exc}") from None
    models = _load(ns)
    h = min(int(lm.policy.horizon) for lm in models.values())
    if any(spec.trace is None and spec.hi >= h for spec in delays):
        raise SystemExit(f"--delay must be < H = {h}")

    bar = None
    if not ns.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ns.method) * len(delays) * ns.episodes, unit="ep", file=sys.stderr, leave=False)
    done_before = 0

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done_before + done
            bar.refresh()

    print(
        f"task {ns.task}  policy {ns.policy}  s = max(d, {ns.horizon})  episodes {ns.episodes}  batch {ns.batch}  "
        f"seed {ns.seed}"
    )
    header = (
        f"{'method':<11}{'d':>9}{'s':>3}  {'success [95% Wilson]':<32}{'t_succ':>7}{'acc_rms':>9}{'acc_max':>9}"
        f"{'jerk_rms':>10}{'jump_max':>9}{'inf_ms':>8}{'ep/s':>7}{'sim_ep/s':>9}{'under':>7}{'over':>7}"
    )
    summaries = []
    rows = []
    results = []
    try:
        for m in ns.method:
            lm = models[m]
            runner = LockstepRunner(lm.policy, lm.head, progress=progress, keep_steps=bool(ns.steps_out))
            for spec in delays:
                d = spec.fixed if spec.fixed is not None else spec.hi
                cfg = LockstepConfig(
                    task=ns.task,
                    strategy=lm.preset.strategy,
                    delay=d,
                    s_min=ns.horizon,
                    episodes=ns.episodes,
                    batch=ns.batch,
                    seed=ns.seed,
                    threads=ns.threads,
                    strategy_options=lm.preset.strategy_options,
                    delay_spec=spec,
                    instruction=ns.instruction,
                    safety_filter=ns.safety_filter,
                )
                res = runner.run(cfg)
                results.append(res)
                done_before += ns.episodes
                s = res.summary()
                lo, hi = wilson_interval(res.successes, res.n)
                s.update(
                    preset=m,
                    success_ci95=[lo, hi],
                    s=max(d, ns.horizon) if lm.preset.strategy != "sync" else ns.horizon,
                    beta=lm.preset.beta
                    if lm.preset.beta is not None
                    else getattr(getattr(lm.policy, "settings", None), "beta", None),
                    policy=lm.label,
                    files=lm.files,
                )
                summaries.append(s)
                fc = res.forecast
                under = f"{fc['under_rate']:.2f}" if fc else "-"
                over = f"{fc['over_rate']:.2f}" if fc else "-"
                rows.append(
                    f"{m:<11}{spec.label[:9]:>9}{s['s']:>3}  {format_rate(res.successes, res.n):<32}"
                    f"{_fmt(s['time_to_success_s'], '.2f'):>7}{s['acc_rms']:>9.1f}{s['acc_max']:>9.1f}"
                    f"{s['jerk_rms']:>10.0f}{s['switch_jump_max']:>9.3f}{_fmt(s['infer_ms_per_call'], '.2f'):>8}"
                    f"{res.episodes_per_s:>7.1f}{res.sim_episodes_per_s:>9.1f}{under:>7}{over:>7}"
                )
    finally:
        if bar is not None:
            bar.close()
    print(header)
    for r in rows:
        print(r)
    print(
        "units: t_succ s; acc rad/s^2; jerk rad/s^3; jump rad (||c_t - c_t-1|| at chunk switches); "
        "inf_ms per batched policy call; sim_ep/s excludes policy inference; under/over: share of requests whose "
        "delay forecast was below/above the delay their chunk had (varying delays only; s is for the largest d)"
    )
    if ns.json:
        out = Path(ns.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summaries, indent=2))
        print(f"wrote {out}")
    if ns.steps_out:
        out = save_steps(ns.steps_out, results, summaries)
        print(f"wrote {out} (every episode step by step)")
    return summaries, delays


def save_steps(path: str | Path, results: Sequence[Any], summaries: Sequence[dict]) -> Path:
    """Every episode of every condition, step by step, in one ``.npz``: per condition ``c`` (in the
    order of ``conditions``) ``c{c}_seed`` (E,), ``c{c}_success`` (E,), ``c{c}_steps`` (E,),
    ``c{c}_obs`` (E, T + 1, obs_dim) and ``c{c}_commands`` (E, T, 8), NaN past an episode's last
    step (an episode stops once its outcome is decided); ``conditions`` (JSON: the summaries) and
    ``obs_fields`` (JSON: the observation's [name, size] pairs, in order)."""
    from async_vla_ros.sim.tasks import make_task

    arrays: dict[str, np.ndarray] = {}
    for c, res in enumerate(results):
        eps = res.episodes
        if any(e.obs is None for e in eps):
            raise ValueError("save_steps needs results of a LockstepRunner(keep_steps=True)")
        t_max = max(len(e.commands) for e in eps)
        obs = np.full((len(eps), t_max + 1, eps[0].obs.shape[1]), np.nan)
        cmd = np.full((len(eps), t_max, eps[0].commands.shape[1]), np.nan)
        for j, e in enumerate(eps):
            obs[j, : len(e.obs)] = e.obs
            cmd[j, : len(e.commands)] = e.commands
        arrays[f"c{c}_seed"] = np.array([e.seed for e in eps], dtype=np.int64)
        arrays[f"c{c}_success"] = np.array([e.success for e in eps], dtype=bool)
        arrays[f"c{c}_steps"] = np.array([len(e.commands) for e in eps], dtype=np.int64)
        arrays[f"c{c}_obs"], arrays[f"c{c}_commands"] = obs, cmd
    fields = make_task(results[0].config.task).obs_fields if results else ()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:  # np.savez would append .npz to a name without it
        np.savez_compressed(
            f,
            conditions=np.array(json.dumps(list(summaries))),
            obs_fields=np.array(json.dumps([[n, k] for n, k in fields])),
            **arrays,
        )
    return out


def load_steps(path: str | Path) -> tuple[list[dict], dict[str, slice], list[dict[str, np.ndarray]]]:
    """Read what ``save_steps`` wrote: (the conditions' summaries, observation field -> column slice,
    per condition {seed, success, steps, obs, commands})."""
    with np.load(path) as z:
        conditions = json.loads(str(z["conditions"]))
        cols, at = {}, 0
        for name, k in json.loads(str(z["obs_fields"])):
            cols[name] = slice(at, at + k)
            at += k
        per = [
            {k: z[f"c{c}_{k}"] for k in ("seed", "success", "steps", "obs", "commands")} for c in range(len(conditions))
        ]
    return conditions, cols, per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="async-vla-ros eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
