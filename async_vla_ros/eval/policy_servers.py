"""Policy server subprocesses on 127.0.0.1, started and stopped one way for the bench
(``bench pipeline --remote``), the chaos case ``remote_faults`` and the tests.

* :func:`start_serve`: ``async-vla-ros serve`` (openpi websocket protocol), run from the repo root;
* :func:`start_lerobot_grpc`: LeRobot's stock ``lerobot.async_inference.policy_server`` (or, with
  a fault, :mod:`async_vla_ros.eval.grpc_fault_server`: the same stock server class with
  corrupted replies), run in a fresh temporary folder (the server writes ``./logs/``), Hugging
  Face libraries offline, ``--inference_latency`` 0 unless a slow server is asked for.

Every server binds 127.0.0.1. :class:`ServerProcess` keeps the last output lines (the drain
thread also stops a full pipe from blocking the server) and is stopped only through its own pid.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ROOT", "ServerProcess", "free_port", "start_lerobot_grpc", "start_serve"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """A server subprocess on 127.0.0.1:``port``; ``wait``: return once it listens (or raise with its output)."""

    def __init__(
        self,
        cmd: Sequence[str],
        port: int,
        *,
        cwd: str | Path = ROOT,
        env: dict[str, str] | None = None,
        wait: bool = True,
        ready_timeout: float = 90.0,
        tmpdir: str | None = None,
    ) -> None:
        self.cmd, self.port, self.cwd, self._tmpdir = list(cmd), int(port), Path(cwd), tmpdir
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        if wait:
            self.wait_listening(ready_timeout)

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, last: int = 30) -> str:
        return "\n".join(list(self.lines)[-last:])

    def wait_listening(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.cmd[2:4]} exited with {self.proc.returncode}:\n{self.output()}")
            if _listening(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed or closed)."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._cleanup()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def start_serve(task: str, port: int, *extra: str, policy: str = "default", wait: bool = True) -> ServerProcess:
    """``async-vla-ros serve --task TASK --policy POLICY --port PORT [extra]`` (binds 127.0.0.1)."""
    cmd = [sys.executable, "-m", "async_vla_ros.cli", "serve", "--task", task, "--policy", policy, "--port", str(port)]
    return ServerProcess([*cmd, *extra], port, wait=wait)


def start_lerobot_grpc(
    port: int,
    *,
    latency_s: float = 0.0,
    fault: str = "none",
    fault_every: int = 1,
    fps: int = 20,
    wait: bool = True,
) -> ServerProcess:
    """LeRobot's stock policy server on 127.0.0.1:PORT in a temporary folder (module docstring).

    ``latency_s``: the stock ``--inference_latency`` (every GetActions takes at least this long);
    ``fault`` (``nan`` | ``shape`` | ``error``, every ``fault_every``-th reply): the fault server."""
    from async_vla_ros.hfenv import OFFLINE_VARS, default_hf_home

    if fault == "none":
        cmd = [sys.executable, "-m", "lerobot.async_inference.policy_server"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "async_vla_ros.eval.grpc_fault_server",
            f"--fault={fault}",
            f"--fault_every={fault_every}",
        ]
    cmd += ["--host=127.0.0.1", f"--port={port}", f"--fps={fps}", f"--inference_latency={latency_s:g}"]
    tmp = tempfile.mkdtemp(prefix="async_vla_ros_grpc_server_")
    env = {var: "1" for var in OFFLINE_VARS}
    env["HF_HOME"] = os.environ.get("HF_HOME") or str(default_hf_home())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"  # one torch thread, like our own servers
    return ServerProcess(cmd, port, cwd=tmp, env=env, wait=wait, tmpdir=tmp)
