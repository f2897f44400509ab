"""The main job: ``async-vla-ros demo`` (``make demo``).

Starts the whole ROS 2 graph headless with the built-in launcher -- MuJoCo sim node, camera
ingestion, policy (by default the shipped multi-task VLA from the cameras and an instruction; `--policy
state` the privileged-state baseline), scheduler, correction -- for a bounded
time, prints a live one-line status (task, successes, chunk rate, measured latency and delay d,
command-loop jitter), then a summary, and exits 0 when the graph ran and data flowed end to end
(non-zero if a node died or nothing flowed). Node logs go to a file (its path is printed);
warnings and errors are echoed. ``--record BAG_DIR`` adds the recorder node to the graph (a
rosbag2 MCAP of the graph's topics) and checks at the end that no message was lost.

Every number printed comes from the nodes' own measurements (``/diagnostics``, chunk reports,
episode results), collected by :class:`async_vla_ros.bringup.monitor.GraphMonitor`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from async_vla_ros.bringup.graph import TASKS, GraphError, build_graph, resolve_policy
from async_vla_ros.presets import preset_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    methods = preset_names(ablations=True)
    # intercept: the task on which the VLA does in the running graph what it does in lockstep (about
    # half the episodes; docs/ros.md, "The VLA in the graph"); on track it fails in both
    parser.add_argument("--task", default="intercept", choices=TASKS, help="task (default: intercept)")
    parser.add_argument("--method", default="rtc", choices=methods, help="method preset (default: rtc)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds to run the graph, loading included (default: 60)"
    )
    parser.add_argument(
        "--policy",
        default="vla",
        help="vla (default: the shipped multi-task VLA, from the cameras, an instruction and proprioception; "
        "with its own REMAC and A2C2 head), state (the labelled baseline: the task's shipped privileged-state "
        "checkpoint, which reads the simulator's object state), expert, a checkpoint path, or NAME:TARGET of a "
        "registered backend (lerobot:DIR, openpi://HOST:PORT ...)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency injected into every chunk")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument(
        "--no-camera",
        action="store_true",
        help="render no camera even for a policy that takes cameras (a state policy gets none anyway)",
    )
    parser.add_argument(
        "--instruction",
        default="",
        help="language instruction sent with the observations (default: the task's first paraphrase; "
        "change it live with `ros2 param set /camera_ingestion instruction ...`)",
    )
    parser.add_argument("--log-dir", default=None, help="where node logs go (default: a temp folder)")
    parser.add_argument(
        "--record",
        default=None,
        metavar="BAG_DIR",
        help="also run the recorder node: a rosbag2 (MCAP) of the graph's topics into this new "
        "directory (per-topic counts in BAG_DIR.counts.json; docs/observability.md)",
    )


def run(ns: argparse.Namespace) -> int:
    if ns.duration <= 0:
        print("demo: --duration must be > 0", file=sys.stderr)
        return 2
    policy, note = resolve_policy(ns.task, ns.method, ns.policy)
    args = {
        "task": ns.task,
        "method": ns.method,
        "policy": policy,
        "latency_ms": str(ns.latency_ms),
        "seed": str(ns.seed),
        "camera": "false" if ns.no_camera else "auto",
        "instruction": ns.instruction,
    }
    if ns.record:
        args["record"] = ns.record
    try:
        graph = build_graph("franka", args)
    except GraphError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note)
    log_dir = Path(ns.log_dir or tempfile.mkdtemp(prefix="async_vla_ros_demo_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "nodes.log"
    print(
        f"demo: task {ns.task}, method {ns.method}, policy {graph.node('policy').parameters.get('policy')},"
        f" {ns.duration:.0f} s; node logs: {log_path}"
    )

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.bringup.monitor import GraphMonitor
    from async_vla_ros.nodes.common import SpinThread, stop_spin

    log_file = open(log_path, "w", buffering=1)
    tty = sys.stdout.isatty()
    print_lock = threading.Lock()

    def echo(line: str) -> None:
        log_file.write(line + "\n")
        if "[ERROR]" in line or "Traceback" in line or "died" in line or "cannot start" in line:
            with print_lock:
                print(("\r\033[K" if tty else "") + line, flush=True)

    rclpy.init(args=[])
    monitor = GraphMonitor()
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    spin = SpinThread(executor, name="demo-monitor")
    spin.start()
    launcher = Launcher(graph, echo=echo)
    t_start = time.monotonic()
    stop_reason = "duration reached"
    try:
        import signal

        stop = threading.Event()
        old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        launcher.start()
        next_print = time.monotonic() + 1.0
        while time.monotonic() - t_start < ns.duration:
            if stop.wait(0.1):
                stop_reason = "interrupted"
                break
            if not launcher.check():
                stop_reason = "a node exited"
                break
            if time.monotonic() >= next_print:
                next_print += 1.0 if tty else 5.0
                line = f"[{time.monotonic() - t_start:5.1f}s] {monitor.status_line()}"
                with print_lock:
                    print(("\r\033[K" + line) if tty else line, end="" if tty else "\n", flush=True)
        for s, h in old.items():
            signal.signal(s, h)
    finally:
        status = monitor.status_line()
        codes = launcher.stop()
        stop_spin(executor, spin)  # before the node goes (see stop_spin)
        summary = _summary(monitor, graph, time.monotonic() - t_start)
        monitor.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        log_file.close()
    if tty:
        print()
    print(f"stopped: {stop_reason}; last status: {status}")
    print(summary["text"])
    bad = [f"{n} ({c})" for n, c in launcher.failed]
    if bad:
        print(f"demo: FAILED, node(s) died: {', '.join(bad)}; see {log_path}", file=sys.stderr)
        return 1
    if not summary["flowed"]:
        print(f"demo: FAILED, no chunks / commands flowed end to end; see {log_path}", file=sys.stderr)
        return 1
    if ns.record:
        return _report_recording(graph.node("recorder").parameters["output"])
    del codes
    return 0


def _report_recording(bag: str) -> int:
    """Counts of the recorded bag (recorder vs publishers); non-zero when a message was lost."""
    from async_vla_ros.bags import BagError
    from async_vla_ros.eval.bench_record import check_recording

    try:
        check = check_recording(bag)
    except BagError as exc:
        print(f"demo: FAILED, the recording is not usable: {exc}", file=sys.stderr)
        return 1
    print(
        f"  recording: {bag} ({check.total_in_bag} messages on {sum(t.in_bag > 0 for t in check.topics)} topics, "
        f"{check.duration_s:.1f} s, {check.total_lost} lost); replay: async-vla-ros replay {bag}; "
        f"report: async-vla-ros report {bag}"
    )
    if check.total_lost:
        print(check.table())
        print(f"demo: FAILED, {check.total_lost} message(s) lost in the recording", file=sys.stderr)
        return 1
    return 0


def _summary(monitor, graph, elapsed: float) -> dict:
    eps = monitor.episode_results()
    lat = monitor.latency_stats()
    corr = monitor.diag("correction")
    sched = monitor.diag("scheduler")
    pol = monitor.diag("policy")
    lines = [f"summary ({elapsed:.1f} s, method {graph.args['method']}, task {graph.args['task']}):"]
    lines.append(
        f"  episodes: {len(eps)} finished, {sum(e.success for e in eps)} succeeded"
        + (f" ({100.0 * sum(e.success for e in eps) / len(eps):.0f} %)" if eps else "")
    )
    if lat:
        lines.append(
            f"  chunks accepted: {int(lat['n'])}; latency obs->chunk median {1e3 * lat['latency_median_s']:.1f} ms, "
            f"p99 {1e3 * lat['latency_p99_s']:.1f} ms; model median {1e3 * lat['inference_median_s']:.1f} ms; "
            f"pipeline overhead median {1e3 * lat['overhead_median_s']:.2f} ms, p99 {1e3 * lat['overhead_p99_s']:.2f} ms"
        )
        lines.append(
            f"  delay d (steps): measured median {lat['d_measured_median']:.0f}, max {lat['d_measured_max']:.0f}; "
            f"forecast median {lat['d_predicted_median']:.0f}"
        )
    else:
        lines.append("  chunks accepted: 0")
    if sched:
        rej = {k.split(".", 1)[1]: v for k, v in sched.items() if k.startswith("rejected.")}
        lines.append(
            f"  scheduler: {sched.get('requests', 0)} requests, {sched.get('accepted', 0)} merged, "
            f"{sched.get('timeouts', 0)} timeouts, {sched.get('hold_steps', 0)} hold steps, rejected {rej or 0}"
        )
    if corr:
        jit = ""
        if "period_error_median_s" in corr:
            jit = (
                f"; period error median {1e3 * corr['period_error_median_s']:.3f} ms, p99 "
                f"{1e3 * corr['period_error_p99_s']:.3f} ms, max {1e3 * corr['period_error_max_s']:.3f} ms"
            )
        lines.append(
            f"  commands: {corr.get('commands', 0)} at {corr.get('rate_hz', '?')} Hz "
            f"({'SCHED_FIFO' if corr.get('sched_fifo') else 'default scheduler'}){jit}; "
            f"plan ran dry {corr.get('holds', 0)} ticks"
        )
    if pol:
        lines.append(
            f"  policy {pol.get('policy', '?')}: {pol.get('chunks', 0)} chunks, "
            f"{pol.get('superseded', 0)} superseded requests"
        )
    ing = monitor.diag("camera_ingestion")
    if ing.get("cameras"):
        lat_img = ing.get("image_latency_median_s")
        lines.append(
            f"  cameras {ing['cameras']}: {ing.get('images_attached', 0)} observations with every frame"
            + (
                f"; image pipeline latency (frame stamp -> observation out) median {1e3 * lat_img:.1f} ms, "
                f"p95 {1e3 * ing['image_latency_p95_s']:.1f} ms"
                if lat_img is not None
                else ""
            )
        )
    if pol.get("instruction") or ing.get("instruction"):
        lines.append(f"  instruction: {pol.get('instruction') or ing.get('instruction')!r}")
    flowed = bool(lat) and int(corr.get("commands", 0) or 0) > 0 and monitor.n_plans > 0
    return {"text": "\n".join(lines), "flowed": flowed}


def main(argv: list[str] | None = None) -> int:
    from async_vla_ros.rosenv import apply_ros_defaults

    apply_ros_defaults()
    parser = argparse.ArgumentParser(prog="async-vla-ros demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    raise SystemExit(main())
