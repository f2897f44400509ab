"""``async-vla-ros bench franka``: every merge strategy streamed over libfranka to franka-sim.

For each case (strategy, simulated delay) a bounded session runs on a franka-sim server with its
limit-violation abort enabled: a :class:`~async_vla_ros.core.scheduler.ChunkScheduler` at 20 Hz,
chunks from the deterministic :class:`~async_vla_ros.robot.stress.StressPolicy` (discontinuous
switches), streamed at 1 kHz by :class:`~async_vla_ros.robot.libfranka_backend.LibfrankaRobot`
with interpolation and the core safety filter. Every case runs with the filter on and, to show
that the robot's checks do fire, with it off. Before each case the arm is brought back to the
home pose (through the filter).

Prints one row per run: aborts and their reason, the largest commanded |v|, |a|, |j| as
fractions of the FR3 limits, late loop iterations, our compute time per cycle. ``--report``
writes the table as markdown (reports/franka_sim.md).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros.core.strategies import STRATEGIES

__all__ = ["Case", "default_cases", "run_bench", "format_table", "add_arguments", "run"]


@dataclass(frozen=True)
class Case:
    """One streamed session."""

    strategy: str
    delay_steps: int
    safety: bool

    def label(self) -> str:
        return f"{self.strategy} d={self.delay_steps} filter={'on' if self.safety else 'off'}"


def default_cases(strategies: list[str], delay: int, high_delay: int | None, unfiltered: bool) -> list[Case]:
    """Every strategy at ``delay``; naive and te also at ``high_delay``; filtered first, then
    (with ``unfiltered``) the same list without the filter."""
    base: list[tuple[str, int]] = [(s, delay) for s in strategies]
    if high_delay is not None:
        base += [(s, high_delay) for s in ("naive", "te") if s in strategies and high_delay != delay]
    cases = [Case(s, d, True) for s, d in base]
    if unfiltered:
        cases += [Case(s, d, False) for s, d in base]
    return cases


# Fractions of the FR3 acceleration and jerk limits the filter uses against franka-sim on a shared,
# non-real-time machine. franka-sim applies an answer that missed its cycle, rewinds the cycles it
# filled in and differences the answer over all of them: that reads a commanded acceleration a as
# up to (k + 1) a / 2 after k cycles, with a jerk of the same order over one cycle (traced with
# `_franka_sim_server.py --trace`, docs/libfranka.md). The filter's own default (0.9) is for a
# robot whose controller keeps time.
FRANKA_SIM_SCALES = (0.25, 0.5)


def sim_streamer(scales: tuple[float, float] = FRANKA_SIM_SCALES, **kw):
    """The StreamerConfig used against franka-sim: the filter at ``scales`` (acceleration, jerk)."""
    from async_vla_ros.robot.streamer import StreamerConfig

    return StreamerConfig(scale_acceleration=scales[0], scale_jerk=scales[1], **kw)


def make_session(
    case: Case,
    interpolation: str = "linear",
    horizon: int = 10,
    jitter: int = 0,
    seed: int = 0,
    scales: tuple[float, float] = FRANKA_SIM_SCALES,
):
    """The streaming session of ``case`` (stress policy, simulated delay); ``scales``: the
    filter's fractions of the acceleration and jerk limits."""
    from async_vla_ros.robot.session import SessionConfig, StreamingSession
    from async_vla_ros.robot.stress import StressConfig, StressPolicy

    policy = StressPolicy(StressConfig(horizon=horizon, seed=seed))
    cfg = SessionConfig(
        strategy=case.strategy,
        delay_steps=case.delay_steps,
        delay_jitter=jitter,
        seed=seed,
        streamer=sim_streamer(scales, interpolation=interpolation, safety=case.safety),
    )
    return StreamingSession(policy, cfg)


def offline_violations(
    case: Case,
    duration_s: float,
    interpolation: str = "linear",
    horizon: int = 10,
    jitter: int = 0,
    seed: int = 0,
    scales: tuple[float, float] = FRANKA_SIM_SCALES,
) -> dict[str, int]:
    """Cycles whose command breaks the FR3 limits over a whole session, replayed without a robot
    (fake 1 ms clock, from rest at home): what the robot would have to reject had it not aborted
    at the first one."""
    from async_vla_ros.robot.streamer import MotionMonitor
    from async_vla_ros.robot.stress import FR3_HOME

    sess = make_session(case, interpolation, horizon, jitter, seed, scales)
    sess.start(np.asarray(FR3_HOME))
    mon = MotionMonitor("fr3")
    mon.reset(FR3_HOME)
    for _ in range(int(round(duration_s / 0.001))):
        mon.update(sess.advance(1).q_cmd)
    return dict(mon.violations)


def _row(case: Case, rep, attempt: int) -> dict[str, Any]:
    mon = rep.monitor
    src = rep.source or {}
    flt = src.get("filter") or {}
    sched = src.get("scheduler") or {}
    return {
        "strategy": case.strategy,
        "delay_steps": case.delay_steps,
        "filter": case.safety,
        "aborted": rep.aborted,
        "reasons": list(rep.reasons),
        "abort_cycle": rep.cycles if rep.aborted else None,
        "cycles": rep.cycles,
        "settled": rep.settled,
        "max_v_frac": mon.get("max_velocity_frac"),
        "max_a_frac": mon.get("max_acceleration_frac"),
        "max_j_frac": mon.get("max_jerk_frac"),
        "max_v": mon.get("max_velocity"),
        "max_a": mon.get("max_acceleration"),
        "max_j": mon.get("max_jerk"),
        "own_violations": mon.get("violations"),
        "late_iterations": rep.late_iterations,
        "max_cycles_per_iteration": rep.max_cycles_per_iteration,
        "diverged": rep.diverged,
        "compute_ms_p99": rep.compute_ms_p99,
        "compute_ms_max": rep.compute_ms_max,
        "wall_s": rep.wall_s,
        "filter_limited_frac": (flt.get("limited", 0) / flt["ticks"]) if flt.get("ticks") else None,
        "chunks_accepted": sched.get("accepted"),
        "max_switch_jump": src.get("max_switch_jump"),
        "attempt": attempt,
    }


def timing_fault(rep) -> bool:
    """The run saw the transport / timing fault a shared machine produces: our loop was late, or
    the robot substituted its own extrapolation for a command of ours."""
    return rep.late_iterations > 0 or rep.diverged > 0


HOMING_TRIES = 6  # moves home before a case is given up (each aborts only on a timing fault)


def run_bench(
    cases: list[Case],
    duration_s: float = 6.0,
    interpolation: str = "linear",
    horizon: int = 10,
    jitter: int = 0,
    seed: int = 0,
    retry_late: bool = True,
    rt_priority: int | None = None,
    pin: bool = True,
    scales: tuple[float, float] = FRANKA_SIM_SCALES,
    log=print,
) -> dict[str, Any]:
    """Start franka-sim (limits enforced), run ``cases``, stop it. Returns ``{"rows": [...],
    "server_log": path}``. A filtered run that aborts after a timing fault (late loop iterations,
    or cycles where the robot reports having executed its own extrapolation instead of our
    command) is retried, at most twice; every attempt is kept. The check is never relaxed."""
    from async_vla_ros.robot.cpus import split_cpus
    from async_vla_ros.robot.franka_sim import FrankaSimServer
    from async_vla_ros.robot.libfranka_backend import LibfrankaConfig, LibfrankaRobot
    from async_vla_ros.robot.stress import FR3_HOME

    rows: list[dict[str, Any]] = []
    homing = sim_streamer(scales)

    server_cpus, loop_cpus = split_cpus() if pin else (None, None)
    if server_cpus:
        log(f"pinned: franka-sim on CPU {list(server_cpus)}, the 1 kHz loop on CPU {list(loop_cpus)}")
    with FrankaSimServer(enforce_motion_limits=True, rt_priority=rt_priority, cpus=server_cpus) as server:
        robot = LibfrankaRobot(
            LibfrankaConfig(host=server.host, realtime="ignore", sched_fifo_priority=rt_priority, cpus=loop_cpus)
        )
        robot.connect()
        try:
            for case in cases:
                for attempt in (1, 2, 3):
                    for _ in range(HOMING_TRIES):
                        home = robot.move_to(np.asarray(FR3_HOME), streamer=homing)
                        if not home.aborted:
                            break
                        log(
                            f"  homing aborted ({', '.join(home.reasons)}; late={home.late_iterations} "
                            f"diverged={home.diverged}); recovering"
                        )
                        robot.recover()
                        time.sleep(0.5)  # let a loaded machine catch up before the next try
                    if home.aborted:  # the case cannot run: an abort in the table, and on to the next
                        row = _row(case, home, attempt)
                        row["reasons"] = ["homing: " + r for r in home.reasons]
                        row["offline_violations"] = None
                        rows.append(row)
                        log(_line(row) + f"  (homing failed {HOMING_TRIES} times)")
                        break
                    rep = robot.run(make_session(case, interpolation, horizon, jitter, seed, scales), duration_s)
                    if rep.aborted:
                        robot.recover()
                    row = _row(case, rep, attempt)
                    row["offline_violations"] = offline_violations(
                        case, duration_s, interpolation, horizon, jitter, seed, scales
                    )
                    rows.append(row)
                    log(_line(row))
                    if not (retry_late and case.safety and rep.aborted and timing_fault(rep)) or attempt == 3:
                        break
                    log(f"  (timing fault: late={rep.late_iterations} diverged={rep.diverged}; retrying)")
        finally:
            robot.close()
        log_path = str(server.log_path)
    return {"rows": rows, "server_log": log_path}


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _line(r: dict[str, Any]) -> str:
    ab = f"ABORT@{r['abort_cycle']} {','.join(r['reasons'])}" if r["aborted"] else "ok"
    return (
        f"{r['strategy']:>8} d={r['delay_steps']} filter={'on ' if r['filter'] else 'off'} {ab:<60} "
        f"v={_fmt(r['max_v_frac'])} a={_fmt(r['max_a_frac'])} j={_fmt(r['max_j_frac'])} (x limit) "
        f"late={r['late_iterations']} diverged={r['diverged']} p99={_fmt(r['compute_ms_p99'])}ms"
    )


def _offline(r: dict[str, Any]) -> str:
    o = r.get("offline_violations")
    return "-" if not o else f"{o['velocity']} / {o['acceleration']} / {o['jerk']}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    head = (
        "| strategy | delay d (steps) | safety filter | aborts | abort reason (cycle) | max \\|v\\| / limit "
        "| max \\|a\\| / limit | max \\|j\\| / limit | robot cycles | late iterations | compute p99 / max (ms) "
        "| chunks merged | largest switch jump (rad) | offline: cycles over a v / a / j limit |"
    )
    sep = "|" + "---|" * 14
    lines = [head, sep]
    for r in rows:
        reason = f"{', '.join(r['reasons'])} ({r['abort_cycle']})" if r["aborted"] else "-"
        lines.append(
            f"| {r['strategy']} | {r['delay_steps']} | {'on' if r['filter'] else 'OFF'} | {int(r['aborted'])} | {reason} "
            f"| {_fmt(r['max_v_frac'])} | {_fmt(r['max_a_frac'], '.3g')} | {_fmt(r['max_j_frac'], '.3g')} | {r['cycles']} "
            f"| {r['late_iterations']} / {r['diverged']} | {_fmt(r['compute_ms_p99'])} / {_fmt(r['compute_ms_max'])} "
            f"| {_fmt(r['chunks_accepted'], 'd') if r['chunks_accepted'] is not None else '-'} | {_fmt(r['max_switch_jump'], '.3f')} "
            f"| {_offline(r)} |"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategies", default="all", help="comma-separated merge strategies, or 'all' (default)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds of robot time per session (default 6)")
    p.add_argument("--delay", type=int, default=4, help="simulated inference delay in 50 ms control steps (default 4)")
    p.add_argument("--high-delay", type=int, default=8, help="extra naive/te runs at this delay (default 8; -1: none)")
    p.add_argument("--jitter", type=int, default=0, help="extra random delay 0..N steps per request (default 0)")
    p.add_argument("--horizon", type=int, default=10, help="chunk length H (default 10)")
    p.add_argument("--interpolation", default="linear", choices=("linear", "cubic", "hold"))
    p.add_argument("--no-unfiltered", action="store_true", help="skip the runs with the safety filter off")
    p.add_argument("--rt-priority", type=int, default=None, help="SCHED_FIFO priority for the loop and the server")
    p.add_argument(
        "--pin",
        choices=("auto", "off"),
        default="auto",
        help="auto (default): the server on the last CPU core, the 1 kHz loop on the others "
        "(needs >= 2 cores); off: let the scheduler place them",
    )
    p.add_argument(
        "--scale-acceleration",
        type=float,
        default=FRANKA_SIM_SCALES[0],
        help=f"the filter's fraction of the acceleration limits (default {FRANKA_SIM_SCALES[0]}: "
        "franka-sim's late-answer artefacts scale with it, see docs/libfranka.md)",
    )
    p.add_argument(
        "--scale-jerk",
        type=float,
        default=FRANKA_SIM_SCALES[1],
        help=f"the filter's fraction of the jerk limits (default {FRANKA_SIM_SCALES[1]})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--report", type=Path, default=None, help="write the markdown table here (e.g. reports/franka_sim.md)"
    )
    p.add_argument("--json", type=Path, default=None, help="write the raw rows as JSON here")


def _strategies(spec: str) -> list[str]:
    if spec == "all":
        return list(STRATEGIES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names:
        raise ValueError(f"unknown strategies {bad} (known: {', '.join(STRATEGIES)})")
    return names


def _write_report(path: Path, result: dict[str, Any], ns: argparse.Namespace, argv: list[str]) -> None:
    rows = result["rows"]
    filt = [r for r in rows if r["filter"]]
    raw = [r for r in rows if not r["filter"]]
    final = {}
    for r in filt:  # last attempt per case decides
        final[(r["strategy"], r["delay_steps"])] = r
    text = [
        "# libfranka backend on franka-sim: aborts per merge strategy",
        "",
        f"Measured {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} on "
        f"{platform.node() or 'this machine'} ({platform.machine()}, Python {platform.python_version()}), with",
        "",
        "```",
        "async-vla-ros bench franka " + " ".join(shlex.quote(a) for a in argv),
        "```",
        "",
        f"Each session: {ns.duration:g} s of robot time, ChunkScheduler at 20 Hz (H={ns.horizon}), deterministic "
        f"stress chunks (sinusoids plus a random offset per chunk, so every switch is a position step), "
        f"simulated inference delay d steps (jitter {ns.jitter}), {ns.interpolation} interpolation to 1 kHz, "
        f"core SafetyFilter (FR3 limits, dt = 1 ms, 95 % of the velocity, {ns.scale_acceleration:.0%} of the acceleration "
        f"and {ns.scale_jerk:.0%} of the jerk limits: franka-sim's handling of late answers scales the commanded "
        "acceleration by up to (k + 1) / 2 after k filled-in cycles, see docs/libfranka.md) on every cycle; "
        "streamed with pylibfranka 0.21.3 (`start_joint_position_control`, readOnce/writeOnce) to franka-sim 1.1.7 "
        "(MuJoCo, `--enforce-motion-limits`, bound to 127.0.0.1). Fractions are of the FR3 datasheet limits "
        "(2.62-5.26 rad/s, 10 rad/s^2, 5000 rad/s^3), measured on the commands sent. 'late iterations': loop "
        "iterations that covered more than one 1 ms robot cycle; 'diverged': cycles where the robot reported a "
        "different last command than we sent (it substituted its own extrapolation because our packet reached it "
        "late: franka-sim runs below real time on this loaded 2-core machine); after missed cycles the loop answers "
        "from the history the robot reports (q_d, dq_d, ddq_d). A filtered session that aborts after "
        "such a timing fault is retried (at most twice); every attempt is listed, the last one per case counts.",
        "",
        f"**With the filter: {sum(int(r['aborted']) for r in final.values())} aborts in {len(final)} sessions.**"
        + (f" **Without it: {sum(int(r['aborted']) for r in raw)} aborts in {len(raw)} sessions.**" if raw else ""),
        "",
        format_table(rows),
        "",
        "Without the filter the raw plan is streamed as interpolated: the first knot already steps the "
        "velocity, so the simulator's FCI checks abort the motion at its first move (after the 200 ms the "
        "first chunk needs to arrive), as the real robot would. The last column replays each whole session "
        "offline (same plan, fake 1 ms clock, no robot) and counts the cycles that break a limit: without the "
        "filter every chunk switch and most knots do; with it none does. 'compute' is our time per cycle to "
        "compute the next command, done ahead of the robot's next state packet.",
        "",
        f"Filtered attempts that aborted and were retried after a timing fault: "
        f"{sum(1 for r in rows if r['filter'] and r['aborted'] and r is not final.get((r['strategy'], r['delay_steps'])))}"
        f" of {sum(1 for r in rows if r['filter'])} (every attempt is a row above). How franka-sim turns a late "
        "answer into an abort, and why the filter runs at reduced acceleration and jerk here: docs/libfranka.md, "
        '"What franka-sim does with a late answer (traced)".',
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


def run(ns: argparse.Namespace) -> int:
    try:
        strategies = _strategies(ns.strategies)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not (ns.duration > 0) or ns.delay < 0 or ns.horizon < 2 or ns.delay >= ns.horizon:
        print("error: need --duration > 0, 0 <= --delay < --horizon, --horizon >= 2", file=sys.stderr)
        return 2
    high = None if ns.high_delay is None or ns.high_delay < 0 else ns.high_delay
    if high is not None and high >= ns.horizon:
        print("error: --high-delay must be < --horizon", file=sys.stderr)
        return 2
    if not (0 < ns.scale_acceleration <= 1 and 0 < ns.scale_jerk <= 1):
        print("error: --scale-acceleration and --scale-jerk must be in (0, 1]", file=sys.stderr)
        return 2
    cases = default_cases(strategies, ns.delay, high, not ns.no_unfiltered)
    from async_vla_ros.robot.franka_sim import FrankaSimUnavailable

    print(f"franka-sim bench: {len(cases)} sessions of {ns.duration:g} s")
    try:
        result = run_bench(
            cases,
            ns.duration,
            ns.interpolation,
            ns.horizon,
            ns.jitter,
            ns.seed,
            rt_priority=ns.rt_priority,
            pin=ns.pin == "auto",
            scales=(ns.scale_acceleration, ns.scale_jerk),
        )
    except FrankaSimUnavailable as exc:
        print(f"error: franka-sim unavailable: {exc}", file=sys.stderr)
        return 3
    rows = result["rows"]
    print()
    print(format_table(rows))
    print(f"\nserver log: {result['server_log']}")
    argv = sys.argv[sys.argv.index("franka") + 1 :] if "franka" in sys.argv else []
    if ns.report:
        _write_report(ns.report, result, ns, argv)
        print(f"wrote {ns.report}")
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=1, default=str))
    final_filtered: dict = {}
    for r in rows:
        if r["filter"]:
            final_filtered[(r["strategy"], r["delay_steps"])] = r
    return 1 if any(r["aborted"] for r in final_filtered.values()) else 0
