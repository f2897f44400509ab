"""``async-vla-ros bench pipeline``: what the ROS graph itself costs, measured on the running graph.

Runs the Franka graph (built-in launcher, MuJoCo sim) twice for ``--duration`` seconds: once with
the correction loop under SCHED_FIFO (when permitted) and once with the default scheduler, and
prints, from the nodes' own measurements:

* observation-to-chunk-available latency minus model time: ``arrival at the scheduler -
  observation stamp - inference_s - injected delay`` per accepted chunk (target median <= 2 ms,
  p99 <= 5 ms on loopback), and the request-to-chunk part of it (without the observation's trip
  through camera_ingestion to the scheduler);
* command period error of the correction loop: ``|actual tick interval - 1/rate|`` (median, p99,
  max) as measured by the correction node;
* CPU use per node (user + system time of each node process over the measurement window, in % of
  one core), read from ``/proc/<pid>/stat`` of the processes the launcher started;
* the observation -> chunk latency split into stages (image transport, ingestion, observation
  transport, waiting, model, scheduling; ``eval/latency_split.py``), median / p95 / p99 each, and
  the overhead beyond the model (total - model - injected delay; target median <= 3 ms with two
  64 px cameras). With a policy that takes cameras (``--policy vla``: the shipped SmolVLA, scene
  and wrist cameras) the graph runs once per ``--image-sizes`` entry (default 64 and 224 px: the
  sim renders at that size, camera_ingestion resizes to the policy's 64 px) and the tables stand
  side by side.
* ``--layout``: ``fewest`` (the default graph: camera_ingestion in the policy's process, requests
  sent one step ahead of their observation), ``separate`` (one process per node, each request
  sent on its observation: two more hops between observation and chunk), or ``both``, side by side
  in one run.

The first ``--warmup`` seconds after the first accepted chunk are excluded from the CPU figures and
the latency samples (a VLA policy node takes from seconds to a minute, on a loaded machine, to load).
Not a timed test: numbers depend on the machine and its load (printed with the run).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from async_vla_ros.bringup.graph import TASKS, GraphError, build_graph, resolve_policy

DEFAULT_IMAGE_SIZES = (64, 224)  # px, side by side, for a policy that takes cameras
# --layout: launch arguments of each graph layout
LAYOUTS = {
    "fewest": {"compose": "true", "request_ahead": "true"},  # the default graph
    "separate": {"compose": "false", "request_ahead": "false"},  # one process per node, request on the observation
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run (default 20)")
    parser.add_argument(
        "--warmup", type=float, default=4.0, help="seconds excluded after the first accepted chunk (default 4)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=120.0, help="seconds to wait for the first accepted chunk (default 120)"
    )
    parser.add_argument("--task", default="track", choices=TASKS)
    parser.add_argument("--method", default="rtc")
    parser.add_argument(
        "--policy",
        default="default",
        help="default (shipped checkpoint, else the scripted expert), expert, or a checkpoint path",
    )
    parser.add_argument("--command-hz", type=float, default=100.0, help="correction rate (default 100)")
    parser.add_argument(
        "--fifo",
        choices=("both", "on", "off"),
        default="both",
        help="run with SCHED_FIFO on the command loop, without, or both (default)",
    )
    parser.add_argument(
        "--layout",
        choices=("fewest", "separate", "both"),
        default="fewest",
        help="graph layout: fewest hops (the default graph: camera_ingestion in the policy's process, requests "
        "sent ahead of their observation), separate (one process per node, requests on the observation), "
        "or both, side by side",
    )
    parser.add_argument("--no-camera", action="store_true", help="no camera rendering / images")
    parser.add_argument(
        "--image-sizes",
        nargs="+",
        type=int,
        default=None,
        metavar="PX",
        help="camera sizes (px) the sim renders at, one run each, side by side; camera_ingestion resizes to the "
        "policy's size (default: 64 224 for a policy that takes cameras, e.g. --policy vla; else the policy's / "
        "the scene camera's default size)",
    )
    parser.add_argument(
        "--remote",
        choices=("openpi", "lerobot-grpc"),
        default=None,
        help="measure remote inference instead (async-vla-ros serve, or LeRobot's stock gRPC policy_server, on "
        "127.0.0.1): round trip vs in-process with two 64x64 cameras at 20 Hz, and graph runs per added delay "
        "(eval/bench_remote.py)",
    )
    parser.add_argument(
        "--remote-policy",
        default="",
        help="--remote: what the server serves (openpi: a policy spec, default 'default'; lerobot-grpc: a LeRobot "
        "policy folder, default a tiny random SmolVLA built for the run)",
    )
    parser.add_argument(
        "--delays-ms", nargs="+", type=float, default=[0, 20, 50, 100], help="--remote: added one-way delays"
    )
    parser.add_argument("--rt-calls", type=int, default=100, help="--remote: round trips per delay")
    parser.add_argument("--remote-duration", type=float, default=15.0, help="--remote: s per graph run (0: none)")
    parser.add_argument(
        "--remote-methods", nargs="+", default=["rtc", "naive"], help="--remote: methods of the graph runs"
    )
    parser.add_argument(
        "--lockstep-episodes",
        type=int,
        default=100,
        help="--remote: episodes per (added delay, method) of the lockstep replay of the measured round trips "
        "(0: none)",
    )
    parser.add_argument(
        "--lockstep-methods",
        nargs="+",
        default=["naive", "bid", "rtc", "rtc_a2c2"],
        help="--remote: methods of the lockstep replay (shipped checkpoints)",
    )
    parser.add_argument(
        "--trace-dir", default="", help="--remote: keep the measured delay traces (json) here (default: a temp dir)"
    )
    parser.add_argument("--lockstep-json", default="", help="--remote: also write the lockstep rows as JSON")


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
    except (OSError, IndexError, ValueError):
        return None


def _percentiles(x) -> tuple[float, float, float]:
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    return float(np.median(a)), float(np.quantile(a, 0.99)), float(a.max())


def run_once(args: dict, duration: float, warmup: float, start_timeout: float = 120.0) -> dict:
    """One graph run; returns the measurements (see module docstring)."""
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.bringup.monitor import GraphMonitor
    from async_vla_ros.nodes.common import SpinThread, stop_spin

    graph = build_graph("franka", args)
    log: list[str] = []
    launcher = Launcher(graph, echo=log.append)
    rclpy.init(args=[])
    monitor = GraphMonitor()
    ex = SingleThreadedExecutor()
    ex.add_node(monitor)
    spinner = SpinThread(ex, name="bench-monitor")
    spinner.start()
    hz = os.sysconf("SC_CLK_TCK")
    try:
        launcher.start()
        t_start = time.monotonic()
        while not monitor.accepted_reports():  # the graph serves chunks: the warm-up starts
            if not launcher.check():
                raise RuntimeError("a node died: " + "; ".join(log[-20:]))
            if time.monotonic() - t_start > start_timeout:
                raise RuntimeError(f"no chunk was accepted within {start_timeout:g} s of the start")
            time.sleep(0.1)
        t0 = time.monotonic()
        cpu0 = None
        while time.monotonic() - t0 < duration + warmup:
            if not launcher.check():
                raise RuntimeError("a node died: " + "; ".join(log[-20:]))
            if cpu0 is None and time.monotonic() - t0 >= warmup:
                cpu0 = (
                    {"+".join(n.spec.node_names): _cpu_ticks(n.pid) for n in launcher.nodes},
                    time.monotonic(),
                    monitor.get_clock().now().nanoseconds,
                )
            time.sleep(0.1)
        cpu1 = {"+".join(n.spec.node_names): _cpu_ticks(n.pid) for n in launcher.nodes}
        window = time.monotonic() - cpu0[1]
        cpu = {
            k: 100.0 * (cpu1[k] - cpu0[0][k]) / hz / window
            for k in cpu1
            if cpu1[k] is not None and cpu0[0].get(k) is not None
        }
        t_from = cpu0[2]
        from async_vla_ros.core.clock import stamp_to_ns

        reps = [r for r in monitor.accepted_reports() if stamp_to_ns(r.header.stamp) >= t_from]
        corr = monitor.diag("correction")
        diags = {n: monitor.diag(n) for n in ("camera_ingestion", "policy", "scheduler", "sim")}
    finally:
        launcher.stop()
        stop_spin(ex, spinner)  # before the node goes (see stop_spin)
        monitor.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if not reps:
        raise RuntimeError("no chunks were accepted during the measurement window")
    total = np.array([r.total_latency_s for r in reps])
    inf = np.array([r.inference_s for r in reps])
    inj = np.array([r.injected_delay_s for r in reps])
    age = np.array([r.obs_age_s for r in reps])
    from async_vla_ros.eval.latency_split import chunk_columns, stage_table

    return {
        "stages": stage_table(chunk_columns(reps), diags),
        "cameras": str(diags["camera_ingestion"].get("cameras", "")),
        "render_median_s": diags["sim"].get("render_median_s"),
        "n_chunks": len(reps),
        "obs_to_chunk_minus_model": _percentiles(total - inf - inj),
        "request_to_chunk_minus_model": _percentiles(total - age - inf - inj),
        "model": _percentiles(inf),
        "cpu": cpu,
        "period_error": (
            corr.get("period_error_median_s"),
            corr.get("period_error_p99_s"),
            corr.get("period_error_max_s"),
        ),
        "fifo": bool(corr.get("sched_fifo")),
        "rate_hz": corr.get("rate_hz"),
    }


def _size_configs(ns: argparse.Namespace, base: dict) -> list[int]:
    """Camera render sizes, one run each (0: the graph's own size). A policy that takes cameras
    defaults to 64 and 224 px; GraphError for sizes the sim cannot render or with --no-camera."""
    if ns.image_sizes:
        if ns.no_camera:
            raise GraphError("--image-sizes with --no-camera: choose one")
        bad = [px for px in ns.image_sizes if not 16 <= px <= 480]
        if bad:
            raise GraphError(f"--image-sizes {bad}: the sim renders 16 to 480 px")
        return list(dict.fromkeys(ns.image_sizes))
    if ns.no_camera:
        return [0]
    takes = build_graph("franka", dict(base, camera="auto")).node("camera_ingestion").parameters.get("camera_names")
    return list(DEFAULT_IMAGE_SIZES) if takes else [0]


def _images_label(args: dict) -> str:
    """What a run's graph renders: ``scene,wrist 64 px`` (render size), or ``no images``."""
    sim = build_graph("franka", args).node("sim").parameters
    cams = sim.get("cameras") or []
    if not cams:
        return "no images"
    return f"{','.join(cams)} {sim.get('image_width', '?')} px"


def run(ns: argparse.Namespace) -> int:
    if ns.duration <= 0 or ns.warmup < 0:
        print("bench pipeline: --duration must be > 0 and --warmup >= 0", file=sys.stderr)
        return 2
    if ns.remote:
        from async_vla_ros.eval.bench_remote import run_remote

        return run_remote(ns)
    policy, note = resolve_policy(ns.task, ns.method, ns.policy)
    if note:
        print(note)
    base = {
        "task": ns.task,
        "method": ns.method,
        "policy": policy,
        "command_hz": str(ns.command_hz),
        "camera": "false" if ns.no_camera else "true",
    }
    try:
        build_graph("franka", base)
        sizes = _size_configs(ns, base)
        labels = {px: _images_label(dict(base, camera_size=str(px))) for px in sizes}
    except GraphError as exc:
        print(f"bench pipeline: {exc}", file=sys.stderr)
        return 2
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[ns.fifo]
    layouts = {"both": ("fewest", "separate"), "fewest": ("fewest",), "separate": ("separate",)}[ns.layout]
    # (layout, px) -> column label
    cols = {(lay, px): (f"{lay}, " if len(layouts) > 1 else "") + labels[px] for lay in layouts for px in sizes}
    print(
        f"bench pipeline: task {ns.task}, method {ns.method}, policy {policy}, control "
        f"{build_graph('franka', base).args['control_hz']:g} Hz, command {ns.command_hz:g} Hz, images: "
        f"{'; '.join(labels.values())}, layout {', '.join(layouts)}, {ns.duration:g} s per run after "
        f"{ns.warmup:g} s warm-up; {platform.node()}, {os.cpu_count()} CPUs, load avg "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    results = []
    for fifo in modes:
        for lay in layouts:
            for px in sizes:
                print(f"  running with fifo:={'true' if fifo else 'false'}, {cols[lay, px]} ...", flush=True)
                try:
                    res = run_once(
                        dict(base, fifo="true" if fifo else "false", camera_size=str(px), **LAYOUTS[lay]),
                        ns.duration,
                        ns.warmup,
                        ns.start_timeout,
                    )
                except RuntimeError as exc:
                    print(f"bench pipeline: {exc}", file=sys.stderr)
                    return 1
                results.append((fifo, (lay, px), res))

    def ms(x):
        return "n/a" if x is None else f"{1e3 * x:.3f}"

    for fifo, key, r in results:
        label = "SCHED_FIFO" if r["fifo"] else ("default scheduler" + (" (FIFO not permitted)" if fifo else ""))
        m1, m2 = r["obs_to_chunk_minus_model"], r["request_to_chunk_minus_model"]
        md, pe = r["model"], r["period_error"]
        print(f"\ncommand loop: {label}; {cols[key]}; {r['n_chunks']} chunks")
        print(
            f"  obs -> chunk available, minus model time:     median {ms(m1[0])} ms  p99 {ms(m1[1])} ms  max {ms(m1[2])} ms"
            "   (target median <= 2, p99 <= 5)"
        )
        print(
            f"  request -> chunk available, minus model time: median {ms(m2[0])} ms  p99 {ms(m2[1])} ms  max {ms(m2[2])} ms"
        )
        print(f"  model time:                                   median {ms(md[0])} ms  p99 {ms(md[1])} ms")
        print(
            f"  command period error at {r['rate_hz']} Hz:       median {ms(pe[0])} ms  p99 {ms(pe[1])} ms  max {ms(pe[2])} ms"
        )
        if r["render_median_s"] is not None:
            print(f"  camera render at the sim, median per frame:   {ms(r['render_median_s'])} ms")
        print("  CPU per process (% of one core): " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu"].items()))
    from async_vla_ros.eval.latency_split import format_stage_table

    for fifo in modes:
        runs = [(key, r) for f, key, r in results if f == fifo]
        loop = "SCHED_FIFO" if runs[0][1]["fifo"] else "default scheduler"
        print(f"\nobs -> chunk latency split, command loop {loop} (nodes' own timestamps):")
        print(format_stage_table({cols[key]: r["stages"] for key, r in runs}, title="stage"))
        over = []
        for key, r in runs:
            o = next(s for s in r["stages"] if s.key == "overhead")
            over.append(f"{cols[key]} {ms(o.median_s)} ms")
        print(
            "overhead beyond the model (total - model - injected), median: "
            + ", ".join(over)
            + "   (target median <= 3 ms at 64x64)"
        )
    return 0
