"""Chaos case ``remote_faults``: the graph against a remote policy server whose faults we inject.

Runs on its own (after the shared chaos graph has stopped), once per protocol:

* openpi: the Franka graph with ``policy:=openpi://127.0.0.1:PORT?horizon=H&action_dim=A&obs_dim=N``
  (method rtc) and ``async-vla-ros serve`` (``--latency-ms``, ``--fault``);
* lerobot-grpc: the graph (camera on, method naive: the server does no guidance) with
  ``policy:=lerobot-grpc://127.0.0.1:PORT?policy=DIR`` (a tiny random SmolVLA built for the case)
  and LeRobot's stock ``policy_server`` (slow: its ``--inference_latency``; malformed replies: the
  same server class with corrupted chunks, :mod:`async_vla_ros.eval.grpc_fault_server`),

each server a subprocess on 127.0.0.1 that this case starts, kills and restarts. Phases, each
bounded (the whole case ~2-5 min):

1. ``down_at_start``: the graph starts with no server: the policy node comes up, answers every
   request BACKEND_UNAVAILABLE (diagnostic ``backend_unavailable``), nothing merges, every node stays up;
2. ``server_up``: the server starts: the node connects, chunks merge (recovery time measured);
3. ``killed_mid_chunk``: the server answers after 150 ms and is killed (SIGKILL) while requests are
   in flight: BACKEND_UNAVAILABLE ("connection lost"), the robot holds; restarted: chunks merge again;
4. ``slow``: the server answers after 1.5 s, past the client's 1 s reply timeout: BACKEND_UNAVAILABLE
   ("no reply within"), the scheduler abandons and re-requests (``timeouts``); back to normal after;
5. ``malformed``: every 2nd reply has NaN actions, then every 2nd a row short: each rejected
   (ERROR_INFERENCE_FAILED, "reply actions ..."), the others merge, the node stays up.

``res`` is the chaos runner's CaseResult (``fail``, ``observed``, ``details``, ``recovery_s``);
``details["phases"]`` are openpi's, ``details["grpc_phases"]`` LeRobot gRPC's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from async_vla_ros.eval.policy_servers import ServerProcess, free_port, start_lerobot_grpc, start_serve

EXPECTED = (
    "remote policy servers (openpi `serve`, and LeRobot's stock gRPC policy_server, loopback): down at start, "
    "killed mid-chunk, slow (past the reply timeout), malformed replies (NaN, shape): each gives a clear "
    "diagnostic (BACKEND_UNAVAILABLE / INFERENCE_FAILED with the reason), the policy node stays up, the "
    "scheduler times out and re-requests, the robot holds; after each fault the client reconnects and chunks "
    "merge again"
)


class _Server:
    """The protocol's server subprocess on 127.0.0.1 (started / killed by this case only).

    ``start(latency_ms, fault, fault_every)``: openpi: ``async-vla-ros serve --latency-ms --fault``;
    lerobot-grpc: LeRobot's stock server (``--inference_latency``), or its fault twin for a fault."""

    def __init__(self, protocol: str, task: str, port: int) -> None:
        self.protocol, self.task, self.port = protocol, task, port
        self.proc: ServerProcess | None = None

    def start(self, latency_ms: float = 0.0, fault: str = "none", fault_every: int = 1) -> None:
        if self.protocol == "openpi":
            extra = ["--latency-ms", f"{latency_ms:g}", "--fault", fault, "--fault-every", str(fault_every)]
            self.proc = start_serve(self.task, self.port, *extra, wait=False)
        else:
            self.proc = start_lerobot_grpc(
                self.port, latency_s=latency_ms / 1e3, fault=fault, fault_every=fault_every, wait=False
            )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # a process this case started
        self.proc = None

    def listening(self, timeout: float = 180.0) -> str | None:
        """Wait until the started server listens; None, or why not. Its start-up (LeRobot's server
        imports lerobot: 25-70 s at load average ~8) is not the client's recovery, so the phases'
        windows open once it listens."""
        try:
            if self.proc is not None:
                self.proc.wait_listening(timeout)
        except RuntimeError as exc:
            return str(exc).splitlines()[0]
        return None


def _graph_params(protocol: str, task: str, port: int, folder: str) -> dict[str, str]:
    common = "timeout=1&retry=0.5&connect_timeout=1"
    if protocol == "openpi":
        from async_vla_ros.policy.base import load_checkpoint
        from async_vla_ros.policy.registry import checkpoint_file

        ck = load_checkpoint(checkpoint_file(task, "base"))
        spec = (
            f"openpi://127.0.0.1:{port}?horizon={ck['horizon']}&action_dim={ck['action_dim']}"
            f"&obs_dim={ck['obs_dim']}&{common}"
        )
        return {"policy": spec, "method": "rtc", "task": task, "camera": "false"}
    # LeRobot's server does no guidance: a vanilla method; the SmolVLA reads the sim's camera
    spec = f"lerobot-grpc://127.0.0.1:{port}?policy={folder}&{common}"
    return {"policy": spec, "method": "naive", "task": task, "camera": "true"}


def _tiny_scene_smolvla(root: Path, task: str) -> str:
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    spec = TinySmolVLASpec(
        cameras={"scene": "observation.images.scene"}, state_dim=24, action_dim=8, chunk=8, n_steps=10, task=task
    )
    return str(build_tiny_smolvla(root, spec))


def remote_faults(res: Any, task: str = "track", echo: Callable[[str], None] = print) -> None:
    """The case (module docstring), once per protocol; problems go to ``res.fail``."""
    details: dict[str, Any] = {}
    recoveries: list[float] = []
    observed = []
    for protocol, key in (("openpi", "phases"), ("lerobot-grpc", "grpc_phases")):
        with tempfile.TemporaryDirectory(prefix="chaos_remote_") as tmp:
            folder = _tiny_scene_smolvla(Path(tmp), task) if protocol == "lerobot-grpc" else ""
            phases, drops = _faults(protocol, res, task, folder, echo)
        details[key] = phases
        details[f"{key}_policy_drops"] = drops
        recoveries += [p["recovery_s"] for p in phases.values() if p.get("recovery_s") is not None]
        observed.append(
            f"[{protocol}] "
            + "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in vals.items()) for name, vals in phases.items())
        )
    details["policy_drops"] = details.get("phases_policy_drops", {})
    res.details.update(details)
    res.recovery_s = max(recoveries) if recoveries else None
    res.recovery_note = "server process (re)started -> 3 chunks merged, worst phase (includes the server's start-up)"
    res.observed = " ".join(observed)


def _faults(protocol: str, res: Any, task: str, folder: str, echo: Callable[[str], None]) -> tuple[dict, dict]:
    """The phases against one protocol's server; returns (phases, the policy node's drop counts)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.bringup.monitor import GraphMonitor
    from async_vla_ros.nodes.common import SpinThread, stop_spin

    port = free_port()
    graph = build_graph("franka", _graph_params(protocol, task, port, folder))
    server = _Server(protocol, task, port)
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    own_rclpy = not rclpy.ok()
    if own_rclpy:
        rclpy.init(args=[])
    mon = GraphMonitor(name="chaos_remote_monitor")
    ex = SingleThreadedExecutor()
    ex.add_node(mon)
    spin = SpinThread(ex, name="chaos-remote-monitor")
    spin.start()
    phases: dict[str, dict[str, Any]] = {}
    drops: dict[str, Any] = {}
    tag = f"[{protocol}] "

    def fail(why: str) -> None:
        res.fail(tag + why)

    def alive() -> bool:
        return launcher.check()

    def wait(cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            if not alive():
                return False
            time.sleep(0.05)
        return cond()

    def pol(key: str) -> int:
        return int(mon.diag("policy").get(key, 0) or 0)

    def n_acc() -> int:
        return len(mon.accepted_reports())

    def recover(phase: str, timeout: float = 90.0) -> None:
        n0, t0 = n_acc(), time.monotonic()  # recovery_s counts from the restart, server start-up included
        why = server.listening()
        if why:
            fail(f"{phase}: the server did not come up: {why}")
            return
        if wait(lambda: n_acc() >= n0 + 3, timeout):
            phases[phase]["recovery_s"] = round(time.monotonic() - t0, 2)
        else:
            fail(f"{phase}: no chunk merged within {timeout:.0f} s after the server came back")

    codes: dict[str, Any] = {}
    try:
        # 1. down at start
        launcher.start()
        phases["down_at_start"] = {}
        # the graph is up once the scheduler has sent requests (node start-up is slow on a loaded machine)
        if not wait(lambda: int(mon.diag("scheduler").get("requests", 0) or 0) > 0, 180.0):
            fail("down_at_start: the graph did not start requesting within 180 s")
        if not wait(lambda: pol("backend_unavailable") >= 3, 30.0):
            fail("down_at_start: the policy node did not answer BACKEND_UNAVAILABLE")
        phases["down_at_start"].update(unavailable=pol("backend_unavailable"), accepted=n_acc())
        if n_acc():
            fail("down_at_start: a chunk merged with no server")
        # 2. server up (150 ms per reply, so phase 3 kills mid-chunk)
        phases["server_up"] = {}
        server.start(latency_ms=150)
        recover("server_up")
        # 3. killed mid-chunk
        u0, h0 = pol("backend_unavailable"), int(mon.diag("correction").get("holds", 0) or 0)
        phases["killed_mid_chunk"] = {}
        time.sleep(0.07)
        server.kill()
        n_kill = n_acc()
        if not wait(lambda: pol("backend_unavailable") >= u0 + 2, 20.0):
            fail("killed_mid_chunk: no BACKEND_UNAVAILABLE after the kill")
        phases["killed_mid_chunk"].update(
            unavailable=pol("backend_unavailable") - u0,
            merged_while_down=n_acc() - n_kill,
            holds=int(mon.diag("correction").get("holds", 0) or 0) - h0,
        )
        if n_acc() - n_kill > 1:  # one reply may have been on its way when the kill landed
            fail("killed_mid_chunk: chunks merged with the server dead")
        server.start()
        recover("killed_mid_chunk")
        # 4. slow: past the 1 s reply timeout
        phases["slow"] = {}
        s0, u0 = int(mon.diag("scheduler").get("timeouts", 0) or 0), pol("backend_unavailable")
        server.kill()
        server.start(latency_ms=1500)
        if why := server.listening():
            fail(f"slow: the server did not come up: {why}")
        if not wait(lambda: pol("backend_unavailable") >= u0 + 3, 60.0):
            fail("slow: no BACKEND_UNAVAILABLE for replies past the timeout")
        wait(lambda: int(mon.diag("scheduler").get("timeouts", 0) or 0) > s0, 10.0)
        phases["slow"].update(
            unavailable=pol("backend_unavailable") - u0,
            scheduler_timeouts=int(mon.diag("scheduler").get("timeouts", 0) or 0) - s0,
        )
        server.kill()
        server.start()
        recover("slow")
        # 5. malformed replies
        for fault in ("nan", "shape"):
            key = f"malformed_{fault}"
            phases[key] = {}
            f0, n0 = pol("errors.3"), n_acc()
            server.kill()
            server.start(fault=fault, fault_every=2)
            if why := server.listening():
                fail(f"{key}: the server did not come up: {why}")
            if not wait(lambda f0=f0, n0=n0: pol("errors.3") >= f0 + 3 and n_acc() >= n0 + 3, 60.0):
                fail(f"{key}: expected rejected replies (INFERENCE_FAILED) and merged good ones")
            phases[key].update(inference_failed=pol("errors.3") - f0, merged=n_acc() - n0)
        server.kill()
        server.start()
        phases["final"] = {}
        recover("final")
        if not alive():
            dead = sorted({n.name for n in graph.nodes} - set(launcher.alive()))
            fail(f"node(s) exited: {', '.join(dead)}: " + " | ".join(lines[-10:]))
        drops = {k: v for k, v in mon.diag("policy").items() if k.startswith("dropped.inference")}
    finally:
        server.kill()
        codes = launcher.stop()
        stop_spin(ex, spin)  # before the node goes (see stop_spin)
        mon.destroy_node()
        if own_rclpy and rclpy.ok():
            rclpy.shutdown()
    if any(c not in (0, None) for c in codes.values()):
        fail(f"nodes did not stop cleanly: {codes}")
    echo(f"remote_faults {protocol}: " + ", ".join(f"{k} {v}" for k, v in phases.items()))
    return phases, drops
