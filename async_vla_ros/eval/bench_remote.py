"""``async-vla-ros bench pipeline --remote openpi``: remote inference over loopback, measured.

Two parts, both against ``async-vla-ros serve`` started here on 127.0.0.1 (a subprocess, one
torch thread) with the task's shipped flow checkpoint:

1. **Round trip** at the control rate (20 Hz pacing), one observation = state + two 64x64 rgb8
   cameras (``front``, ``wrist``): in-process ``infer`` time vs the openpi round trip (request out
   -> reply in), the server's own inference time and the rest (network: msgpack, websocket,
   loopback, injected delay), for each added one-way delay (injected in the client, both ways).
2. **Absorption**: the Franka graph (MuJoCo sim) with ``policy:=openpi://...?delay_ms=D`` for each
   added delay and each method, ``--remote-duration`` s each: measured and forecast delay d, switch
   jumps (``ChunkReport.boundary_jump`` of accepted chunks), hold steps, episodes and their success.

Not a timed test: numbers depend on the machine and its load (printed with the run).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(task: str, port: int, policy: str = "default") -> subprocess.Popen:
    """``async-vla-ros serve`` on 127.0.0.1:port; returns once it listens."""
    cmd = [sys.executable, "-m", "async_vla_ros.cli", "serve", "--task", task, "--policy", policy, "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"serve did not start: {line.strip()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
    deadline = time.monotonic() + 30  # "serving" is printed just before the socket is bound
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"serve did not listen on 127.0.0.1:{port} within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pct(x) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    return float(np.median(a)), float(np.quantile(a, 0.99))


def round_trips(task: str, port: int, delays_ms, n: int, hz: float = 20.0) -> dict:
    """Part 1 (module docstring): per delay, medians / p99 in s."""
    import torch

    from async_vla_ros.policy.openpi_backend import OpenpiPolicy
    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

    torch.set_num_threads(1)
    local = load_policy_spec("default", BackendRequest(task, num_threads=1))
    rng = np.random.default_rng(0)
    state = rng.normal(size=(1, local.obs_dim)) * 0.1
    cams = {c: rng.integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8) for c in ("front", "wrist")}
    period = 1.0 / hz

    def paced(fn):
        out = []
        nxt = time.perf_counter()
        for i in range(n + 5):
            nxt += period
            t0 = time.perf_counter()
            info = fn(i)
            if i >= 5:  # warm-up calls excluded
                out.append((time.perf_counter() - t0, info))
            time.sleep(max(0.0, nxt - time.perf_counter()))
        return out

    res = {"in_process": _pct([dt for dt, _ in paced(lambda i: local.infer(state, seed=i))])}
    obs = {"state": state, "images": cams}
    for d in delays_ms:
        remote = OpenpiPolicy(f"127.0.0.1:{port}?delay_ms={d:g}&timeout=2", task)
        rows = paced(lambda i, r=remote: (r.infer(obs, seed=i), r.last_info)[1])
        remote.close()
        res[d] = {
            "round_trip": _pct([i["round_trip_s"] for _, i in rows]),
            "server_infer": _pct([i["server_infer_s"] for _, i in rows]),
            "network": _pct([i["network_s"] for _, i in rows]),
        }
    return res


def graph_run(task: str, port: int, delay_ms: float, method: str, duration: float, warmup: float) -> dict:
    """Part 2 for one (delay, method): the graph against the server for ``duration`` s."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.bringup.monitor import GraphMonitor
    from async_vla_ros.nodes.common import stamp_to_ns

    spec = f"openpi://127.0.0.1:{port}?delay_ms={delay_ms:g}&timeout=2"
    graph = build_graph("franka", {"task": task, "method": method, "policy": spec, "camera": "false"})
    log: list[str] = []
    launcher = Launcher(graph, echo=log.append)
    rclpy.init(args=[])
    mon = GraphMonitor()
    ex = SingleThreadedExecutor()
    ex.add_node(mon)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        launcher.start()
        # serving: wait (bounded) for the first accepted chunk and the first episode end, then warm up
        t_start = time.monotonic()
        while not (mon.accepted_reports() and mon.episode_results()):
            if not launcher.check():
                raise RuntimeError("a node died: " + "; ".join(log[-20:]))
            if time.monotonic() - t_start > 120.0:
                raise RuntimeError("the graph did not serve a chunk and finish an episode within 120 s")
            time.sleep(0.1)
        time.sleep(warmup)
        t_from = mon.get_clock().now().nanoseconds
        n_ep0 = len(mon.episode_results())
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration:
            if not launcher.check():
                raise RuntimeError("a node died: " + "; ".join(log[-20:]))
            time.sleep(0.1)
        window = [r for r in list(mon.reports) if stamp_to_ns(r.header.stamp) >= t_from]
        reps = [r for r in window if r.accepted]
        eps = mon.episode_results()[n_ep0:]
    finally:
        launcher.stop()
        ex.shutdown(timeout_sec=2.0)
        mon.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if not reps:
        raise RuntimeError(f"no chunks accepted (delay {delay_ms} ms, {method})")
    jumps = np.array([r.boundary_jump for r in reps if r.n_frozen + r.n_soft + r.n_free > 0] or [0.0])
    return {
        "chunks": len(reps),
        "total_latency": _pct([r.total_latency_s for r in reps]),
        "network": _pct([r.network_s for r in reps if r.network_s >= 0] or [float("nan")]),
        "d_measured": float(np.median([r.measured_delay_steps for r in reps])),
        "d_predicted": float(np.median([r.predicted_delay_steps for r in reps])),
        "jump": (float(np.median(jumps)), float(jumps.max())),
        "episodes": len(eps),
        "successes": sum(e.success for e in eps),
        "rejected": len(window) - len(reps),  # answers dropped by the scheduler (stale, errors ...)
    }


def run_remote(ns) -> int:
    """The ``--remote`` part of ``bench pipeline`` (arguments: bench_pipeline.add_arguments)."""
    import platform

    delays = [float(d) for d in ns.delays_ms]
    if any(d < 0 or d > 1000 for d in delays):
        print("bench pipeline: --delays-ms must lie in [0, 1000]", file=sys.stderr)
        return 2
    port = free_port()
    print(
        f"bench pipeline --remote openpi: task {ns.task}, serve default on 127.0.0.1:{port}; "
        f"{platform.node()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    server = start_server(ns.task, port)
    try:
        rt = round_trips(ns.task, port, delays, ns.rt_calls)
        ms = lambda x: f"{1e3 * x:.2f}"  # noqa: E731
        print(f"\nround trip at 20 Hz, state + 2 x 64x64 rgb8 cameras, {ns.rt_calls} calls each (median / p99 ms):")
        ip = rt["in_process"]
        print(f"  in-process infer:          {ms(ip[0])} / {ms(ip[1])}")
        for d in delays:
            r = rt[d]
            over = r["round_trip"][0] - ip[0]
            print(
                f"  openpi, +{d:g} ms one-way:  round trip {ms(r['round_trip'][0])} / {ms(r['round_trip'][1])}, "
                f"server infer {ms(r['server_infer'][0])}, network {ms(r['network'][0])} / {ms(r['network'][1])}, "
                f"overhead vs in-process {ms(over)}"
            )
        if ns.remote_duration > 0:
            print(
                f"\ngraph runs against the server ({ns.remote_duration:g} s each after {ns.warmup:g} s warm-up):",
                flush=True,
            )
            print(
                "  delay  method  chunks  latency med/p99 ms  network med ms  d meas/pred  "
                "jump med/max rad  episodes ok/n  rejected"
            )
            for d in delays:
                for method in ns.remote_methods:
                    g = graph_run(ns.task, port, d, method, ns.remote_duration, ns.warmup)
                    print(
                        f"  +{d:<4g}  {method:<6}  {g['chunks']:>6}  {ms(g['total_latency'][0])}/{ms(g['total_latency'][1])}"
                        f"  {ms(g['network'][0])}  {g['d_measured']:.0f}/{g['d_predicted']:.0f}"
                        f"  {g['jump'][0]:.4f}/{g['jump'][1]:.4f}  {g['successes']}/{g['episodes']}"
                        f"  {g['rejected']}",
                        flush=True,
                    )
    finally:
        stop_server(server)
    return 0
