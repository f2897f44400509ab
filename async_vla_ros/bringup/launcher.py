"""The built-in launcher: the graph's nodes as separate processes, without ROS launch tools.

:class:`Launcher` writes the graph's parameters into one params file (keyed by node name), starts
every node as ``python -m MODULE --ros-args -r __node:=NAME [-r __ns:=NS] --params-file FILE
[-r from:=to ...]`` in its own session (a terminal Ctrl-C reaches only the launcher, which then
stops the nodes in order), prefixes each output line with ``[node]``, and watches them:

* a node that exits with a non-zero status (or is killed) stops the others, and :meth:`run`
  returns 1 -- the graph is broken;
* a node that exits with status 0 on its own (e.g. the sim after ``episodes:=N``) ends the run:
  the others are stopped and :meth:`run` returns 0;
* Ctrl-C / SIGTERM (or the ``duration`` running out, or ``stop_event``) stops every node:
  SIGINT (rclpy shuts down cleanly), then SIGTERM after ``grace_s``, then SIGKILL -- always by
  the pid this launcher started.

:meth:`Launcher.restart` kills one node by its pid and starts it again (supervised restart; the
fault-injection suite's "policy node killed mid-chunk" case); that death is not a failure.

The environment of the children is this process's, after
:func:`async_vla_ros.rosenv.apply_ros_defaults` (localhost discovery, own domain, temp log dir).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from async_vla_ros.bringup.graph import Graph, NodeLaunch
from async_vla_ros.rosenv import STACK_DUMP_SIGNAL, apply_ros_defaults

__all__ = ["Launcher", "NodeProcess"]


@dataclass
class NodeProcess:
    """One started node."""

    spec: NodeLaunch
    proc: subprocess.Popen
    reader: threading.Thread
    tail: deque  # last output lines (for error reports)
    started_ns: int

    @property
    def pid(self) -> int:
        return self.proc.pid


class Launcher:
    """Starts, watches and stops the nodes of a :class:`~async_vla_ros.bringup.graph.Graph`."""

    def __init__(
        self,
        graph: Graph,
        *,
        echo: Callable[[str], None] | None = None,
        python: str | None = None,
        grace_s: float = 8.0,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
    ) -> None:
        self.graph = graph
        self._echo = echo if echo is not None else self._print
        self._print_lock = threading.Lock()
        self.python = python or sys.executable
        self.grace_s = float(grace_s)
        self.env = dict(os.environ if env is None else env)
        apply_ros_defaults(self.env)
        self._workdir = workdir or tempfile.mkdtemp(prefix="async_vla_ros_launch_")
        self.params_file = str(Path(self._workdir) / "params.yaml")
        self.nodes: list[NodeProcess] = []
        self.stop_event = threading.Event()
        self.failed: list[tuple[str, int]] = []  # (node, exit status) of nodes that died
        self.finished: list[str] = []  # nodes that exited 0 on their own
        self._stopping = False

    def _print(self, line: str) -> None:
        with self._print_lock:
            print(line, flush=True)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Write the params file and start every node (in graph order)."""
        with open(self.params_file, "w") as f:
            yaml.safe_dump(self.graph.params_file_content(), f, sort_keys=False)
        for spec in self.graph.nodes:
            self.nodes.append(self._spawn(spec))

    def _spawn(self, spec: NodeLaunch) -> NodeProcess:
        cmd = spec.command(self.params_file, self.python)
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        tail: deque = deque(maxlen=40)
        reader = threading.Thread(target=self._pump, args=(spec.name, proc, tail), daemon=True, name=f"log-{spec.name}")
        reader.start()
        hosts = f" (also {', '.join(h.name for h in spec.hosted)}, in the same process)" if spec.hosted else ""
        self._echo(f"[launcher] started {spec.name} (pid {proc.pid}): python -m {spec.module}{hosts}")
        return NodeProcess(spec, proc, reader, tail, time.monotonic_ns())

    def restart(self, name: str, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> NodeProcess:
        """Kill node ``name`` (by the pid this launcher started; SIGKILL by default: a crash) and
        start it again with the same command. Fault injection and supervised restarts: the
        node's death is not counted in ``failed``. Returns the new process record."""
        if self._stopping:
            raise RuntimeError("the launcher is stopping")
        idx = next((i for i, n in enumerate(self.nodes) if n.spec.name == name), None)
        if idx is None:
            raise KeyError(f"no node {name!r} in this launch (nodes: {', '.join(n.spec.name for n in self.nodes)})")
        old = self.nodes[idx]
        if old.proc.poll() is None:
            self._signal(old, sig)
            old.proc.wait(timeout=timeout_s)
        old.reader.join(timeout=2.0)
        self._echo(f"[launcher] {name} (pid {old.pid}) ended with {old.proc.returncode}; restarting it")
        self.nodes[idx] = self._spawn(old.spec)
        return self.nodes[idx]

    def _pump(self, name: str, proc: subprocess.Popen, tail: deque) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            self._echo(f"[{name}] {line}")

    # ------------------------------------------------------------------ watch
    def check(self) -> bool:
        """Look at the children once; returns False when the run must end (a node exited)."""
        ended = False
        for n in self.nodes:
            rc = n.proc.poll()
            if rc is None or self._stopping:
                continue
            if any(f[0] == n.spec.name for f in self.failed) or n.spec.name in self.finished:
                continue
            if rc == 0:
                self.finished.append(n.spec.name)
                self._echo(f"[launcher] {n.spec.name} finished (exit 0); stopping the graph")
            else:
                self.failed.append((n.spec.name, rc))
                why = f"signal {-rc}" if rc < 0 else f"exit status {rc}"
                self._echo(f"[launcher] node {n.spec.name} died ({why}); stopping the others")
            ended = True
        return not ended

    def alive(self) -> list[str]:
        return [n.spec.name for n in self.nodes if n.proc.poll() is None]

    def run(self, duration_s: float | None = None, install_signals: bool = True) -> int:
        """Start (if not yet), watch until a node exits, ``duration_s`` passes, Ctrl-C/SIGTERM, or
        ``stop_event``; stop everything. Returns 1 if a node died, else 0."""
        old = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda s, f: self.stop_event.set())
        try:
            if not self.nodes:
                self.start()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not self.stop_event.is_set():
                if not self.check():
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.stop_event.wait(0.1)
        finally:
            self.stop()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return 1 if self.failed else 0

    # ------------------------------------------------------------------ stop
    def stop(self) -> dict[str, int | None]:
        """SIGINT every running node, then SIGTERM after ``grace_s``, then SIGKILL; returns exit
        statuses by node. Only the pids this launcher started are signalled."""
        self._stopping = True
        for n in reversed(self.nodes):  # commands first, robot last
            if n.proc.poll() is None:
                self._signal(n, signal.SIGINT)
        self._wait_all(self.grace_s)
        for n in self.nodes:
            if n.proc.poll() is None:
                self._echo(f"[launcher] {n.spec.name} ignored SIGINT; sending SIGTERM")
                self._signal(n, signal.SIGTERM)
        self._wait_all(3.0)
        hung = [n for n in self.nodes if n.proc.poll() is None]
        for n in hung:  # where it hangs, before it is killed (run_node registers the dump)
            self._echo(f"[launcher] {n.spec.name} still running; its threads' stacks follow (SIGUSR1)")
            self._signal(n, STACK_DUMP_SIGNAL)
        if hung:
            time.sleep(1.0)  # the dump is written by a C handler at once; its reader echoes it
        for n in hung:
            if n.proc.poll() is None:
                self._echo(f"[launcher] {n.spec.name} still running; sending SIGKILL")
                self._signal(n, signal.SIGKILL)
                n.proc.wait(timeout=5.0)
        for n in self.nodes:
            n.reader.join(timeout=2.0)
        return {n.spec.name: n.proc.returncode for n in self.nodes}

    @staticmethod
    def _signal(n: NodeProcess, sig: int) -> None:
        try:
            os.kill(n.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                n.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                pass
