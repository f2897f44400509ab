"""``async-vla-ros soak --duration 600``: the full graph + bag recorder under CPU stress, bounded.

Starts the Franka graph (MuJoCo sim with camera, ingestion, policy, scheduler, correction; the
scripted expert by default) plus the recorder node, and one CPU stress process per ``--stress``
(a Python busy loop that ends by itself after the run, and is killed by its pid at the end
anyway), runs for ``duration`` seconds and reports, all measured:

* **memory per node**: resident set size (``VmRSS`` of ``/proc/<pid>/status``) sampled every
  ``sample_s``; growth from the first sample after ``warmup_s`` (imports, caches and queues fill
  first) to the end, and its least-squares slope (MB/min);
* **CPU per node**: ``utime + stime`` of ``/proc/<pid>/stat`` over the run, in % of one core (and
  the stress process's, to show it really took a core);
* **command period error**: ``|interval - period|`` of the command stream: from the command stamps
  the probe received over the whole run, and the correction node's own figures (diagnostics);
  the command stream is also checked against the joint limits (``eval.stream_check.check_command_stream``);
* **dropped inputs**: every node's ``dropped.*`` counters (diagnostics), the recorder's queue drops;
* **bag counts vs published counts**: for the topics whose publisher counts what it publishes
  (commands, observations, requests, chunks), the bag's messages received up to the publisher's
  last diagnostics stamp against the publisher's counter at that stamp (the difference is the
  messages in flight at that instant, a few at most), plus the recorder's received / written /
  dropped per topic.

The result prints as markdown (``--out FILE`` writes it, with the command and date).
``test/system/test_soak.py`` runs a reduced form (about 30 s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.core.safety import ROBOT_LIMITS
from async_vla_ros.eval.graph_probe import make_probe_class
from async_vla_ros.eval.stream_check import NS, StreamCheck, check_command_stream
from async_vla_ros.rosenv import apply_ros_defaults

__all__ = ["SoakConfig", "SoakResult", "run_soak", "format_report", "read_rss_kb", "read_cpu_s", "add_arguments", "run"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# topic -> (publishing node, diagnostics counter keys summed for "published")
PUBLISHED_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    N.absolute(N.TRAJECTORY_COMMAND): ("correction", ("commands",)),
    N.absolute(N.OBSERVATION): ("camera_ingestion", ("observations",)),
    N.absolute(N.CHUNK_REQUEST): ("scheduler", ("requests",)),
    N.absolute(N.ACTION_CHUNK): ("policy", ("chunks", "errors.*")),
}


def read_rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in kB (``VmRSS``), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def read_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, s) used by ``pid`` so far, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15 of stat)


@dataclass(frozen=True)
class SoakConfig:
    """Settings of one soak run."""

    duration_s: float = 600.0  # how long the graph runs under stress (after it serves chunks)
    stress: int = 1  # CPU busy-loop processes (0: none)
    method: str = "rtc"
    policy: str = "expert"  # expert | default | checkpoint path
    task: str = "track"
    command_hz: float = 100.0
    sample_s: float = 5.0  # memory / CPU sampling period
    warmup_s: float = 30.0  # memory growth is measured from the first sample after this
    start_timeout_s: float = 120.0
    workdir: str = ""  # bag, params, stats ('' : a new temp folder)

    def __post_init__(self) -> None:
        for name in ("duration_s", "command_hz", "sample_s", "start_timeout_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"SoakConfig.{name} must be a positive number, got {v!r}")
        if self.duration_s > 4 * 3600:
            raise ValueError(f"SoakConfig.duration_s is bounded to 4 h, got {self.duration_s}")
        if not (0 <= self.warmup_s < self.duration_s):
            raise ValueError(f"SoakConfig.warmup_s must be in [0, duration_s), got {self.warmup_s}")
        if not (isinstance(self.stress, int) and 0 <= self.stress <= 8):
            raise ValueError(f"SoakConfig.stress must be an int in [0, 8], got {self.stress!r}")


@dataclass
class SoakResult:
    """Everything measured (see the module docstring); ``problems`` empty when healthy."""

    config: SoakConfig
    elapsed_s: float = 0.0
    memory: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> start/end/growth MB, slope MB/min
    cpu_pct: dict[str, float] = field(default_factory=dict)  # node (and "stress") -> % of one core
    period: dict[str, float] = field(default_factory=dict)  # probe / node period-error figures (s)
    safety: StreamCheck | None = None
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> reason -> count
    bag: dict[str, dict[str, Any]] = field(default_factory=dict)  # topic -> published / in bag / diff
    recorder: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> received / written / dropped
    chunks: dict[str, int] = field(default_factory=dict)  # accepted / rejected reports
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    alive_to_end: bool = True
    problems: list[str] = field(default_factory=list)


def _stress_cmd(seconds: float) -> list[str]:
    """A bounded busy loop on one core: it ends by itself after ``seconds``."""
    code = f"import time\nend = time.monotonic() + {seconds:.1f}\nwhile time.monotonic() < end:\n    pass\n"
    return [sys.executable, "-c", code]


def run_soak(config: SoakConfig | None = None, echo: Callable[[str], None] | None = None) -> SoakResult:
    """Run the soak (see the module docstring)."""
    config = config or SoakConfig()
    echo = echo or (lambda line: print(line, flush=True))
    apply_ros_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.nodes.common import SpinThread, stop_spin

    res = SoakResult(config)
    work = Path(config.workdir or tempfile.mkdtemp(prefix="async_vla_ros_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    bag = work / "bag"
    graph = build_graph(
        "franka",
        {
            "policy": config.policy,
            "method": config.method,
            "task": config.task,
            "camera": "true",
            "command_hz": str(config.command_hz),
            "record": str(bag),
        },
    )
    stats_file = Path(graph.node("recorder").parameters["stats_file"])
    robot = graph.node("correction").parameters.get("robot", "fr3")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    probe = make_probe_class()(ctx, graph.node("correction").parameters.get("command_interface", "trajectory"))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(probe)
    spin = SpinThread(executor, name="soak-probe")
    spin.start()
    lines: list[str] = []
    (work / "launch").mkdir(exist_ok=True)
    launcher = Launcher(graph, echo=lines.append, workdir=str(work / "launch"))
    stress: list[subprocess.Popen] = []
    samples: dict[str, list[tuple[float, int]]] = {n.name: [] for n in graph.nodes}
    cpu0: dict[str, float] = {}
    diag_end: dict[str, tuple[int, dict]] = {}
    t_cmd0 = t_cmd1 = 0
    t_start = time.monotonic()
    try:
        launcher.start()
        deadline = time.monotonic() + config.start_timeout_s
        while time.monotonic() < deadline and probe.first_accept_after(probe.now() - NS) is None:
            if sorted(launcher.alive()) != sorted(n.name for n in graph.nodes):
                break
            time.sleep(0.05)
        if probe.first_accept_after(probe.now() - NS) is None:
            raise RuntimeError("the graph did not serve chunks:\n" + "\n".join(lines[-40:]))
        echo(
            f"[soak] graph serving after {time.monotonic() - t_start:.1f} s; running {config.duration_s:.0f} s "
            f"with {config.stress} stress process(es)"
        )
        for _ in range(config.stress):
            stress.append(subprocess.Popen(_stress_cmd(config.duration_s + 60.0), stdin=subprocess.DEVNULL))
        pids = {n.spec.name: n.pid for n in launcher.nodes}
        pids.update({f"stress{i}" if config.stress > 1 else "stress": p.pid for i, p in enumerate(stress)})
        cpu0 = {k: read_cpu_s(p) or 0.0 for k, p in pids.items()}
        t_run0 = time.monotonic()
        t_cmd0 = probe.now()
        stop = threading.Event()
        next_report = t_run0 + 60.0
        while True:
            now = time.monotonic() - t_run0
            for name, pid in pids.items():
                if name in samples:
                    rss = read_rss_kb(pid)
                    if rss is not None:
                        samples[name].append((now, rss))
            if sorted(launcher.alive()) != sorted(n.name for n in graph.nodes):
                res.alive_to_end = False
                res.problems.append(
                    "a node exited during the soak: "
                    + ", ".join(sorted({n.name for n in graph.nodes} - set(launcher.alive())))
                )
                break
            if now >= config.duration_s:
                break
            if time.monotonic() >= next_report:
                next_report += 60.0
                echo(
                    f"[soak] {now:.0f}/{config.duration_s:.0f} s: "
                    + ", ".join(f"{k} {v[-1][1] / 1024:.0f} MB" for k, v in samples.items() if v)
                )
            stop.wait(min(config.sample_s, max(0.01, config.duration_s - now)))
        elapsed_run = time.monotonic() - t_run0
        cpu1 = {k: read_cpu_s(p) for k, p in pids.items()}
        res.cpu_pct = {
            k: 100.0 * ((cpu1[k] or 0.0) - cpu0.get(k, 0.0)) / elapsed_run for k in pids if cpu1.get(k) is not None
        }
        # counters, aligned on each publisher's last diagnostics (before anything stops)
        diag_end = {name: probe.diag_stamped(name) for n in graph.nodes for name in n.node_names}
        t_cmd1 = probe.now()
    finally:
        for p in stress:  # processes this run started, by pid
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        res.exit_codes = launcher.stop()
        stop_spin(executor, spin)  # before the probe goes (see stop_spin)
        probe.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
        res.elapsed_s = time.monotonic() - t_start
    bad = {k: v for k, v in res.exit_codes.items() if v not in (0,)}
    if bad:
        res.problems.append(f"nodes did not stop cleanly: {bad}")
    _memory(res, samples, config.warmup_s)
    _commands(res, probe, t_cmd0, t_cmd1, 1.0 / config.command_hz, robot, diag_end.get("correction", (0, {}))[1])
    _drops(res, diag_end)
    _bag_counts(res, bag, stats_file, diag_end)
    reps = probe.reports_since(t_cmd0)
    res.chunks = {"accepted": sum(r[2] for r in reps), "rejected": sum(not r[2] for r in reps)}
    if res.chunks["accepted"] == 0:
        res.problems.append("no chunk was merged during the soak")
    return res


def _memory(res: SoakResult, samples: dict[str, list[tuple[float, int]]], warmup_s: float) -> None:
    for name, s in samples.items():
        after = [(t, kb) for t, kb in s if t >= warmup_s] or s[-1:]
        if not after:
            continue
        t = np.array([a[0] for a in after])
        mb = np.array([a[1] for a in after]) / 1024.0
        slope = float(np.polyfit(t / 60.0, mb, 1)[0]) if len(t) >= 3 and np.ptp(t) > 0 else float("nan")
        res.memory[name] = {
            "start_mb": float(mb[0]),
            "end_mb": float(mb[-1]),
            "growth_mb": float(mb[-1] - mb[0]),
            "peak_mb": float(max(kb for _, kb in s) / 1024.0),
            "slope_mb_per_min": slope,
            "samples": float(len(s)),
        }


def _commands(res: SoakResult, probe, t0: int, t1: int, dt: float, robot: str, corr_diag: dict) -> None:
    t, q, sq = probe.commands(t0, t1)
    if t.size < 2:
        res.problems.append("no command stream during the soak")
        return
    segs = probe.segment_starts()
    res.safety = check_command_stream(t, q, dt, ROBOT_LIMITS[robot], segs, seq=sq)
    if not res.safety.ok:
        res.problems.append("command limits violated: " + "; ".join(res.safety.violations))
    # period error from stamps, excluding the gaps at filter restarts (episode changes) and
    # around commands the probe did not receive
    iv = np.diff(t) / NS
    seg_id = np.searchsorted(np.asarray(sorted(segs), dtype=np.int64), t, side="right")
    keep = np.diff(seg_id) == 0
    if sq is not None:
        keep &= np.diff(sq) == 1
    iv = iv[keep]
    err = np.abs(iv - dt)
    res.period = {
        "n": float(err.size),
        "median_s": float(np.median(err)),
        "p99_s": float(np.quantile(err, 0.99)),
        "max_s": float(err.max()),
        "late_over_1ms": float(np.mean(err > 1e-3)),
        "rate_hz": float(1.0 / np.mean(iv)) if iv.size else float("nan"),
    }
    for k in ("period_error_median_s", "period_error_p99_s", "period_error_max_s", "overruns", "missed_ticks"):
        if k in corr_diag:
            res.period[f"node_{k}"] = float(corr_diag[k])


def _drops(res: SoakResult, diag_end: dict[str, tuple[int, dict]]) -> None:
    for node, (_t, vals) in diag_end.items():
        d = {
            k[len("dropped.") :]: int(v)
            for k, v in vals.items()
            if k.startswith("dropped.") and isinstance(v, int) and not isinstance(v, bool)
        }
        d.update({k: int(v) for k, v in vals.items() if k.endswith(" dropped") and isinstance(v, int) and v})
        res.dropped[node] = d


def _bag_counts(res: SoakResult, bag: Path, stats_file: Path, diag_end: dict[str, tuple[int, dict]]) -> None:
    from async_vla_ros.bags import BagError, bag_info, read_messages

    if stats_file.is_file():
        res.recorder = json.loads(stats_file.read_text()).get("topics", {})
        dropped = {t: v["dropped"] for t, v in res.recorder.items() if v.get("dropped")}
        if dropped:
            res.problems.append(f"the recorder dropped messages: {dropped}")
        unwritten = {t: (v["received"], v["written"]) for t, v in res.recorder.items() if v["received"] != v["written"]}
        if unwritten:
            res.problems.append(f"received but not written: {unwritten}")
    else:
        res.problems.append("the recorder wrote no stats file (did it stop cleanly?)")
    try:
        info = bag_info(bag)
    except BagError as exc:
        res.problems.append(f"bag unreadable: {exc}")
        return
    cut = {topic: diag_end.get(node, (0, {}))[0] for topic, (node, _k) in PUBLISHED_COUNTERS.items()}
    upto = {t: 0 for t in cut}
    try:
        for m in read_messages(bag, [t for t in cut if t in info.topics], raw=True):
            if m.t_ns <= cut[m.topic]:
                upto[m.topic] += 1
    except BagError as exc:
        res.problems.append(f"bag unreadable: {exc}")
        return
    for topic, (node, keys) in PUBLISHED_COUNTERS.items():
        vals = diag_end.get(node, (0, {}))[1]
        total, known = 0, False
        for k in keys:
            if k.endswith(".*"):
                pre = k[:-1]
                total += sum(int(v) for kk, v in vals.items() if kk.startswith(pre) and isinstance(v, int))
            elif isinstance(vals.get(k), int):
                total += int(vals[k])
                known = True
        entry: dict[str, Any] = {"in_bag_total": int(info.counts.get(topic, 0))}
        if known and cut[topic] > 0:
            entry.update(published=total, in_bag=upto[topic], missing=total - upto[topic])
        else:
            entry.update(published=None, in_bag=upto[topic], missing=None)
        res.bag[topic] = entry


# ====================================================================== report
def format_report(res: SoakResult, command: str = "") -> str:
    c = res.config
    out = ["# Soak test", ""]
    if command:
        out += [
            f"Command: `{command}`, finished {time.strftime('%Y-%m-%d %H:%M %Z')}; {res.elapsed_s:.0f} s in total "
            f"(graph start and shutdown included).",
            "",
        ]
    out += [
        f"Graph `franka` (MuJoCo sim + camera, task `{c.task}`, method `{c.method}`, policy `{c.policy}`, commands at "
        f"{c.command_hz:.0f} Hz) + recorder, {c.duration_s:.0f} s under {c.stress} CPU stress process(es) "
        f"(Python busy loop). Result: " + ("healthy" if not res.problems else "PROBLEMS: " + "; ".join(res.problems)),
        "",
        "## Memory (RSS) and CPU per node",
        "",
        f"| node | RSS after warm-up ({c.warmup_s:.0f} s) | RSS at end | growth | slope | peak | CPU (% of a core) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in res.memory.items():
        out.append(
            f"| {name} | {m['start_mb']:.1f} MB | {m['end_mb']:.1f} MB | {m['growth_mb']:+.1f} MB | "
            f"{m['slope_mb_per_min']:+.2f} MB/min | {m['peak_mb']:.1f} MB | {res.cpu_pct.get(name, float('nan')):.0f} |"
        )
    for k, v in res.cpu_pct.items():
        if k.startswith("stress"):
            out.append(f"| {k} (busy loop) | - | - | - | - | - | {v:.0f} |")
    p = res.period
    out += ["", "## Command stream", ""]
    if p:
        out.append(
            f"- period error from the command stamps ({int(p['n'])} intervals, rate {p['rate_hz']:.2f} Hz): "
            f"median {1e3 * p['median_s']:.3f} ms, p99 {1e3 * p['p99_s']:.3f} ms, max {1e3 * p['max_s']:.2f} ms; "
            f"{100 * p['late_over_1ms']:.2f} % off by more than 1 ms"
        )
        if "node_period_error_p99_s" in p:
            out.append(
                f"- the correction node's own figures (last 5000 ticks): median "
                f"{1e3 * p.get('node_period_error_median_s', float('nan')):.3f} ms, p99 "
                f"{1e3 * p['node_period_error_p99_s']:.3f} ms, max {1e3 * p.get('node_period_error_max_s', float('nan')):.2f} ms"
                + (
                    f", overruns {int(p['node_overruns'])}, missed ticks {int(p['node_missed_ticks'])}"
                    if "node_overruns" in p
                    else ""
                )
            )
    if res.safety is not None:
        out.append(
            f"- joint limits ({'ok' if res.safety.ok else 'VIOLATED'}): {res.safety.summary()}, "
            f"{res.safety.n_segments} segments (filter restarts at episode changes)"
        )
    out.append(f"- chunk reports: {res.chunks.get('accepted', 0)} merged, {res.chunks.get('rejected', 0)} rejected")
    out += ["", "## Dropped inputs (node counters at the end)", ""]
    for node, d in res.dropped.items():
        out.append(f"- {node}: " + (", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"))
    out += [
        "",
        "## Bag vs published",
        "",
        "Published: the publisher's own counter in its last diagnostics before shutdown; in bag: messages the "
        "recorder received up to that diagnostics stamp (the difference is what was in flight at that instant; "
        "negative when the counter was read between a publish and its increment).",
        "",
        "| topic | published | in bag (same instant) | missing | in bag (whole run) |",
        "|---|---|---|---|---|",
    ]
    for topic, b in res.bag.items():
        pub = "n/a" if b["published"] is None else str(b["published"])
        miss = "n/a" if b["missing"] is None else str(b["missing"])
        out.append(f"| {topic} | {pub} | {b['in_bag']} | {miss} | {b['in_bag_total']} |")
    if res.recorder:
        tot = {k: sum(v[k] for v in res.recorder.values()) for k in ("received", "written", "dropped")}
        out += [
            "",
            f"Recorder: {len(res.recorder)} topics, {tot['received']} received, {tot['written']} written, "
            f"{tot['dropped']} dropped.",
        ]
    return "\n".join(out) + "\n"


# ====================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--duration", type=float, default=600.0, help="seconds under stress (default 600; max 4 h)")
    parser.add_argument("--stress", type=int, default=1, help="CPU busy-loop processes (default 1; 0: none)")
    parser.add_argument("--method", default="rtc", help="method preset (default rtc)")
    parser.add_argument("--policy", default="expert", help="expert (default), default (shipped checkpoint) or a path")
    parser.add_argument("--task", default="track", help="task (default track)")
    parser.add_argument(
        "--warmup", type=float, default=None, help="memory baseline after this many s (default: min(30, duration/4))"
    )
    parser.add_argument("--sample", type=float, default=5.0, help="memory / CPU sampling period (s, default 5)")
    parser.add_argument("--workdir", default="", help="folder for the bag and logs (default: a temp folder)")
    parser.add_argument("--out", default="", help="also write the report (markdown) here")
    return parser


def run(ns: argparse.Namespace) -> int:
    try:
        warm = ns.warmup if ns.warmup is not None else min(30.0, ns.duration / 4)
        cfg = SoakConfig(
            duration_s=ns.duration,
            stress=ns.stress,
            method=ns.method,
            policy=ns.policy,
            task=ns.task,
            sample_s=ns.sample,
            warmup_s=warm,
            workdir=ns.workdir,
        )
    except ValueError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    try:
        res = run_soak(cfg)
    except RuntimeError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    command = (
        f"async-vla-ros soak --duration {ns.duration:g}"
        + (f" --stress {ns.stress}" if ns.stress != 1 else "")
        + (f" --policy {ns.policy}" if ns.policy != "expert" else "")
        + (f" --method {ns.method}" if ns.method != "rtc" else "")
    )
    text = format_report(res, command)
    print(text)
    if ns.out:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(text)
        print(f"report: {ns.out}")
    return 0 if not res.problems else 1
