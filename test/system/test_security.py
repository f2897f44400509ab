"""Security of the defaults: every server the stack opens listens on loopback only, and every node
runs with DDS discovery limited to this host.

The graph runs with the dashboard (the stack's only network server; the policy serves over ROS,
there is no separate inference server) and the recorder, started by the built-in launcher with
default settings. The sockets of every node process are read from ``/proc/<pid>/fd`` (socket
inodes) and ``/proc/net/tcp{,6}`` / ``udp{,6}``; the environment from ``/proc/<pid>/environ``.
docs/security.md says how to expose the dashboard safely.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

LOOPBACK_V4 = "127."
TCP_LISTEN = "0A"


def _hex_to_addr(hex_addr: str) -> tuple[str, int]:
    """``/proc/net/tcp`` address (``0100007F:1F90``, little-endian words) -> (ip, port)."""
    ip_hex, port_hex = hex_addr.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), port
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # four host-order 32-bit words
    return socket.inet_ntop(socket.AF_INET6, words), port


def _is_loopback(ip: str) -> bool:
    return ip.startswith(LOOPBACK_V4) or ip == "::1" or ip.startswith("::ffff:127.")


def _proc_sockets(pid: int) -> list[tuple[str, str, int, str]]:
    """(proto, local ip, local port, state) of every socket ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[9] in inodes:
                ip, port = _hex_to_addr(f[1])
                out.append((proto, ip, port, f[3]))
    return out


def test_proc_net_parser_known_answers():
    assert _hex_to_addr("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _hex_to_addr("00000000:0050") == ("0.0.0.0", 80)
    assert _hex_to_addr("020200C0:E05D") == ("192.0.2.2", 0xE05D)
    assert _hex_to_addr("00000000000000000000000001000000:1F90") == ("::1", 8080)
    assert _hex_to_addr("00000000000000000000000000000000:0016") == ("::", 22)
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::") and not _is_loopback("192.0.2.2")


def test_own_sockets_are_found():
    """The inspector sees a listening socket of this process with its address (so the graph test
    below cannot pass by finding nothing)."""
    import os

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        socks = _proc_sockets(os.getpid())
        assert ("tcp", "127.0.0.1", port, TCP_LISTEN) in socks


@pytest.mark.system
@pytest.mark.slow
def test_every_server_of_the_graph_binds_loopback_and_dds_stays_local(tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("async_vla_msgs.msg")
    pytest.importorskip("mujoco")
    from async_vla_ros.assets import panda_available

    if not panda_available():
        pytest.skip("MuJoCo Panda model not fetched (make setup)")
    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.bringup.launcher import Launcher
    from async_vla_ros.nodes.dashboard import PARAMS as DASHBOARD_PARAMS

    assert next(p for p in DASHBOARD_PARAMS if p.name == "host").default == "127.0.0.1"
    with socket.socket() as s:  # a free port for the dashboard (its host parameter stays the default)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    graph = build_graph(
        "franka",
        {
            "policy": "expert",
            "camera": "false",
            "dashboard": "true",
            "dashboard_port": str(port),
            "record": str(tmp_path / "bag"),
        },
    )
    assert {n.name for n in graph.nodes} >= {"dashboard", "recorder", "policy", "sim"}
    assert "host" not in graph.node("dashboard").parameters or graph.node("dashboard").parameters["host"] == "127.0.0.1"
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    try:
        deadline = time.monotonic() + 90.0
        page = None
        while time.monotonic() < deadline and page is None:
            assert launcher.check(), "a node exited:\n" + "\n".join(lines[-40:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2.0) as r:
                    page = r.status
            except OSError:
                time.sleep(0.2)
        assert page == 200, "dashboard did not answer:\n" + "\n".join(lines[-40:])
        # every node up and publishing (its diagnostics reached the dashboard): the sockets read
        # below are those of running nodes, and the stop below is a stop, not an interrupted start
        want, health = {"/sim", "/policy", "/scheduler", "/correction"}, set()
        while time.monotonic() < deadline and not want <= health:
            assert launcher.check(), "a node exited:\n" + "\n".join(lines[-40:])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2.0) as r:
                health = set(json.loads(r.read())["health"])
            time.sleep(0.25)
        assert want <= health, (health, lines[-40:])
        found = {}
        for n in launcher.nodes:
            assert n.proc.poll() is None, n.spec.name
            found[n.spec.name] = _proc_sockets(n.pid)
            env = dict(
                kv.split("=", 1)
                for kv in Path(f"/proc/{n.pid}/environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in kv
            )
            assert env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST", (n.spec.name, "DDS discovery not local")
            assert env.get("ROS_DOMAIN_ID"), n.spec.name
    finally:
        codes = launcher.stop()
    listeners = {
        name: [(p, ip, port_) for p, ip, port_, st in socks if p.startswith("tcp") and st == TCP_LISTEN]
        for name, socks in found.items()
    }
    assert ("tcp", "127.0.0.1", port) in listeners["dashboard"], found["dashboard"]
    exposed = {name: [s for s in ls if not _is_loopback(s[1])] for name, ls in listeners.items()}
    assert not any(exposed.values()), f"servers listening beyond loopback: {exposed}"
    assert all(c == 0 for c in codes.values()), f"{codes}\n" + "\n".join(lines[-60:])
