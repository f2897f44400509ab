"""``async-vla-ros bench pipeline --remote openpi|lerobot-grpc``: remote inference over loopback, measured.

Two parts, both against a policy server started here on 127.0.0.1 (a subprocess, one torch
thread; :mod:`async_vla_ros.eval.policy_servers`):

* ``openpi``: ``async-vla-ros serve`` with the task's shipped flow checkpoint (or
  ``--remote-policy``, any spec ``serve`` takes);
* ``lerobot-grpc``: LeRobot's stock ``policy_server`` (``--inference_latency=0``) with a LeRobot
  policy folder: ``--remote-policy DIR``, default a tiny random SmolVLA built here (two 64x64
  cameras ``front``, ``wrist``; for the graph part a one-camera ``scene`` twin, the camera the
  sim renders).

1. **Round trip** at the control rate (20 Hz pacing), one observation = state + two 64x64 rgb8
   cameras (``front``, ``wrist``): in-process ``infer`` time (the same policy loaded here) vs the
   remote round trip (request out -> reply in), the server's own inference time and the rest
   (network: serialisation, transport, loopback, injected delay), for each added one-way delay
   (injected in the client, both ways: the ``delay_ms`` option of both backends). openpi's server
   reports its time in each reply; LeRobot's stock server only logs it (``Observation N | Total
   time: X ms``), so here it is read from the server's output, matched by timestep.
2. **Absorption in lockstep** (``--lockstep-episodes``): the round trips measured at each added
   delay become a delay trace (``latency_s``, one per call, written as json: ``--trace-dir``), and
   ``async-vla-ros eval`` replays it per chunk (``--delay-trace``: d = ceil(latency / dt), the
   forecast from the scheduler's delay estimator) on the task with the shipped checkpoints for
   each of ``--lockstep-methods``: success with its Wilson interval, switch jumps and how often the
   forecast was under / over the delay, against the added delay, with enough episodes per cell to
   compare methods. The policy is ours in-process; the delays are the protocol's, measured.
3. **Absorption in the graph**: the Franka graph (MuJoCo sim) with
   ``policy:=<backend>://...?delay_ms=D`` for each added delay and each method the backend can
   serve, ``--remote-duration`` s each: measured and forecast delay d, switch jumps
   (``ChunkReport.boundary_jump`` of accepted chunks), hold steps, episodes and their success.

Not a timed test: numbers depend on the machine and its load (printed with the run).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from async_vla_ros.eval.policy_servers import ServerProcess, free_port, start_lerobot_grpc, start_serve

CAMERAS = ("front", "wrist")  # the round trip's two 64x64 cameras
# LeRobot's stock server logs, per observation: "Observation N | [...] Total time: X ms"
_GRPC_SERVER_TIME = re.compile(r"Observation (\d+) \|.*Total time: ([0-9.]+) ?ms")


def _pct(x) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    return float(np.median(a)), float(np.quantile(a, 0.99))


class Remote:
    """One protocol's server and client for the bench: how to start the server, which policy
    runs in-process for comparison, the client spec for an added delay, the server's time."""

    def __init__(self, protocol: str, task: str, policy: str = "", graph_policy: str = "") -> None:
        self.protocol, self.task = protocol, task
        self.port = free_port()
        self.server: ServerProcess | None = None
        if protocol == "openpi":
            self.served = policy or "default"  # a policy spec serve takes
            self.local_spec = self.served
        else:
            self.folder = policy  # a LeRobot policy folder
            self.graph_folder = graph_policy or policy
            self.local_spec = f"lerobot:{policy}"

    def start(self) -> None:
        if self.protocol == "openpi":
            self.server = start_serve(self.task, self.port, policy=self.served)
        else:
            self.server = start_lerobot_grpc(self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def spec(self, delay_ms: float, graph: bool = False) -> str:
        """The client spec; reply timeout 2 s in the graph, 10 s for the round trips (a first
        LeRobot call on a loaded machine can take seconds: a timeout there would end the bench)."""
        timeout = 2 if graph else 10
        if self.protocol == "openpi":
            return f"openpi://127.0.0.1:{self.port}?delay_ms={delay_ms:g}&timeout={timeout}"
        folder = self.graph_folder if graph else self.folder
        return f"lerobot-grpc://127.0.0.1:{self.port}?policy={folder}&delay_ms={delay_ms:g}&timeout={timeout}"

    def server_times(self) -> dict[int, float]:
        """LeRobot: timestep -> the server's logged time (s) for it; openpi: {} (in each reply)."""
        if self.protocol == "openpi" or self.server is None:
            return {}
        out = {}
        for line in list(self.server.lines):
            m = _GRPC_SERVER_TIME.search(line)
            if m:
                out[int(m.group(1))] = float(m.group(2)) / 1e3
        return out


def round_trips(remote: Remote, delays_ms, n: int, hz: float = 20.0) -> dict:
    """Part 1 (module docstring): per delay, medians / p99 in s."""
    import torch

    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

    torch.set_num_threads(1)
    local = load_policy_spec(remote.local_spec, BackendRequest(remote.task, num_threads=1))
    rng = np.random.default_rng(0)
    state = rng.normal(size=(1, local.obs_dim)) * 0.1
    cams = {c: rng.integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8) for c in CAMERAS}
    obs = {"state": state, "images": cams}
    local_obs = obs if getattr(local, "cameras", None) or getattr(local, "needs_image", False) else state
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

    res = {"in_process": _pct([dt for dt, _ in paced(lambda i: local.infer(local_obs, seed=i))])}
    for d in delays_ms:
        client = load_policy_spec(remote.spec(d), BackendRequest(remote.task, num_threads=1))
        grpc = remote.protocol != "openpi"
        # openpi: our server honours the seed; LeRobot's stock server has its own noise (no seed field)
        call = (lambda i, c=client: c.infer(obs)) if grpc else (lambda i, c=client: c.infer(obs, seed=i))

        def one(i, c=client, call=call):
            call(i)
            return dict(c.last_info, step=getattr(c, "_step", -1))

        rows = paced(one)
        client.close()
        infos = [i for _, i in rows]
        if grpc:
            time.sleep(0.5)  # the server's last log lines
            logged = remote.server_times()
            for i in infos:
                i["server_infer_s"] = logged.get(i["step"], float("nan"))
                i["network_s"] = i["round_trip_s"] - i["server_infer_s"]
            infos = [i for i in infos if np.isfinite(i["server_infer_s"])]
        res[d] = {
            "round_trips_s": [float(i["round_trip_s"]) for i in infos],  # the trace of part 2
            "round_trip": _pct([i["round_trip_s"] for i in infos]),
            "server_infer": _pct([i["server_infer_s"] for i in infos]),
            "network": _pct([i["network_s"] for i in infos]),
            "n": len(infos),
        }
    return res


def write_traces(rt: dict, delays_ms, protocol: str, out_dir: Path) -> dict[float, Path]:
    """Part 2's input: one json delay trace per added delay (``{"latency_s": [...]}``, the
    measured round trips in call order; ``eval --delay-trace`` reads it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for d in delays_ms:
        p = out_dir / f"remote_{protocol}_plus{d:g}ms.json"
        p.write_text(
            json.dumps(
                {
                    "latency_s": rt[d]["round_trips_s"],
                    "protocol": protocol,
                    "added_one_way_ms": d,
                    "what": "request out -> chunk in of each paced round trip (bench pipeline --remote)",
                }
            )
        )
        paths[d] = p
    return paths


def lockstep_absorption(
    traces: dict[float, Path],
    task: str,
    methods,
    episodes: int,
    policy: str = "default",
    batch: int = 50,
    seed: int = 0,
    json_out: Path | None = None,
) -> list[dict]:
    """Part 2 (module docstring): ``async-vla-ros eval`` on every trace, one row per
    (added delay, method): the trace's delays in steps, success and its Wilson interval, jumps,
    the forecast's under / over rates."""
    import argparse

    from async_vla_ros.eval import eval_cmd

    ns = eval_cmd.add_arguments(argparse.ArgumentParser()).parse_args(
        ["--task", task, "--policy", policy, "--episodes", str(episodes), "--batch", str(batch)]
        + ["--seed", str(seed), "--delay-trace", *map(str, traces.values())]
        + ["--method", *methods]
    )
    ns.delay = []  # the traces only
    summaries, specs = eval_cmd.evaluate(ns)
    # eval loads the traces in the order given: the same order as the added delays
    by_label = {spec.label: (d, np.asarray(spec.trace)) for d, spec in zip(traces, specs, strict=True)}
    rows = []
    for s in summaries:
        d, steps = by_label[s["delay_label"]]
        fc = s.get("forecast") or {}
        rows.append(
            {
                "added_one_way_ms": d,
                "method": s["preset"],
                "d_steps_median": float(np.median(steps)),
                "d_steps_p90": float(np.quantile(steps, 0.9)),
                "d_steps_max": int(steps.max()),
                "successes": s["successes"],
                "n": s["n"],
                "success_ci95": s["success_ci95"],
                "switch_jump_max": s["switch_jump_max"],
                "forecast_under": fc.get("under_rate"),
                "forecast_over": fc.get("over_rate"),
            }
        )
    rows.sort(key=lambda r: (r["added_one_way_ms"], list(methods).index(r["method"])))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(rows, indent=2))
    return rows


def format_absorption(rows: list[dict]) -> list[str]:
    """Part 2's table: success vs added delay, one line per (delay, method)."""
    out = ["  delay  d steps med/p90/max  method      success [95% Wilson]      jump_max rad  forecast under/over"]
    for r in rows:
        lo, hi = r["success_ci95"]
        fc = "-" if r["forecast_under"] is None else f"{r['forecast_under']:.2f} / {r['forecast_over']:.2f}"
        out.append(
            f"  +{r['added_one_way_ms']:<4g}  {r['d_steps_median']:>3.0f} / {r['d_steps_p90']:.0f} / {r['d_steps_max']:<6d}"
            f"  {r['method']:<10}  {r['successes'] / r['n']:.2f} [{lo:.2f}, {hi:.2f}] ({r['successes']}/{r['n']})"
            f"  {r['switch_jump_max']:>8.3f}      {fc}"
        )
    return out


def graph_run(remote: Remote, delay_ms: float, method: str, duration: float, warmup: float) -> dict:
    """Part 2 for one (delay, method): the graph against the server for ``duration`` s."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.bringup.monitor import GraphMonitor
    from async_vla_ros.nodes.common import SpinThread, stamp_to_ns, stop_spin

    task = remote.task
    camera = "false" if remote.protocol == "openpi" else "true"  # the LeRobot policy reads the sim's camera
    graph = build_graph(
        "franka", {"task": task, "method": method, "policy": remote.spec(delay_ms, graph=True), "camera": camera}
    )
    log: list[str] = []
    launcher = Launcher(graph, echo=log.append)
    rclpy.init(args=[])
    mon = GraphMonitor()
    ex = SingleThreadedExecutor()
    ex.add_node(mon)
    spin = SpinThread(ex, name="bench-remote-monitor")
    spin.start()
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
        stop_spin(ex, spin)  # before the node goes (see stop_spin)
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


def _tiny_folders(root: Path, task: str) -> tuple[str, str]:
    """Two tiny random SmolVLA folders (state 24, action 8, chunk 8): cameras front + wrist (round
    trip), and scene (the camera the sim renders: graph runs)."""
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    kw = dict(state_dim=24, action_dim=8, chunk=8, n_steps=10, task=task)
    two = build_tiny_smolvla(
        root / "two_cams", TinySmolVLASpec(cameras={c: f"observation.images.{c}" for c in CAMERAS}, **kw)
    )
    one = build_tiny_smolvla(root / "scene", TinySmolVLASpec(cameras={"scene": "observation.images.scene"}, **kw))
    return str(two), str(one)


def run_remote(ns) -> int:
    """The ``--remote`` part of ``bench pipeline`` (arguments: bench_pipeline.add_arguments)."""
    import platform

    from async_vla_ros.policy.registry import get_backend
    from async_vla_ros.presets import get_preset

    delays = [float(d) for d in ns.delays_ms]
    if any(d < 0 or d > 1000 for d in delays):
        print("bench pipeline: --delays-ms must lie in [0, 1000]", file=sys.stderr)
        return 2
    proto = ns.remote
    tmp = None
    if proto == "lerobot-grpc" and not ns.remote_policy:
        tmp = tempfile.TemporaryDirectory(prefix="bench_remote_smolvla_")
        folder, graph_folder = _tiny_folders(Path(tmp.name), ns.task)
        what = "tiny random SmolVLA (built here; 2 cameras for the round trip, 'scene' for the graph)"
    else:
        folder = graph_folder = ns.remote_policy
        what = ns.remote_policy or "default"
    remote = Remote(proto, ns.task, folder, graph_folder)
    print(
        f"bench pipeline --remote {proto}: task {ns.task}, {what} on 127.0.0.1:{remote.port}; "
        f"{platform.node()}, {os.cpu_count()} CPUs, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    remote.start()
    try:
        rt = round_trips(remote, delays, ns.rt_calls)
        ms = lambda x: f"{1e3 * x:.2f}"  # noqa: E731
        print(
            f"\nround trip at 20 Hz, state + 2 x 64x64 rgb8 cameras, {ns.rt_calls} calls each (median / p99 ms); "
            f"load avg now {os.getloadavg()[0]:.2f}:"
        )
        ip = rt["in_process"]
        print(f"  in-process infer:          {ms(ip[0])} / {ms(ip[1])}")
        for d in delays:
            r = rt[d]
            over = r["round_trip"][0] - ip[0]
            print(
                f"  {proto}, +{d:g} ms one-way:  round trip {ms(r['round_trip'][0])} / {ms(r['round_trip'][1])}, "
                f"server infer {ms(r['server_infer'][0])}, network {ms(r['network'][0])} / {ms(r['network'][1])}, "
                f"overhead vs in-process {ms(over)} ({r['n']} calls matched)"
            )
        if ns.lockstep_episodes > 0:
            trace_dir = Path(ns.trace_dir) if ns.trace_dir else Path(tempfile.mkdtemp(prefix="bench_remote_traces_"))
            traces = write_traces(rt, delays, proto, trace_dir)
            print(
                f"\nabsorption in lockstep: the round trips above as delay traces ({trace_dir}), replayed by "
                f"`async-vla-ros eval --task {ns.task} --policy default --delay-trace ...` "
                f"({ns.lockstep_episodes} episodes per cell):",
                flush=True,
            )
            rows = lockstep_absorption(
                traces,
                ns.task,
                ns.lockstep_methods,
                ns.lockstep_episodes,
                json_out=Path(ns.lockstep_json) if ns.lockstep_json else None,
            )
            print("\n".join(format_absorption(rows)), flush=True)
        if ns.remote_duration > 0:
            backend = get_backend(proto)
            methods = []
            for m in ns.remote_methods:
                why = backend.cannot_serve(get_preset(m))
                if why:
                    print(f"  (method {m} skipped: {why})")
                else:
                    methods.append(m)
            print(
                f"\ngraph runs against the server ({ns.remote_duration:g} s each after {ns.warmup:g} s warm-up):",
                flush=True,
            )
            print(
                "  delay  method  chunks  latency med/p99 ms  network med ms  d meas/pred  "
                "jump med/max rad  episodes ok/n  rejected  load"
            )
            for d in delays:
                for method in methods:
                    g = graph_run(remote, d, method, ns.remote_duration, ns.warmup)
                    print(
                        f"  +{d:<4g}  {method:<6}  {g['chunks']:>6}  {ms(g['total_latency'][0])}/{ms(g['total_latency'][1])}"
                        f"  {ms(g['network'][0])}  {g['d_measured']:.0f}/{g['d_predicted']:.0f}"
                        f"  {g['jump'][0]:.4f}/{g['jump'][1]:.4f}  {g['successes']}/{g['episodes']}"
                        f"  {g['rejected']}  {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    finally:
        remote.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0
