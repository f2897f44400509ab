"""Start and stop a ``franka-sim`` server (the libfranka protocol over MuJoCo) for tests and benches.

franka-sim pins numpy 1.26 / mujoco < 3.3, so it runs from its own venv, created on first use by
``scripts/setup_franka_sim.sh`` (idempotent; ``FRANKA_SIM_VENV`` overrides where). Offline it
loads the Menagerie Panda (``FR3_MJCF=<panda>/panda_nohand.xml``, from
:func:`async_vla_ros.assets.require_panda`).

The server is started through :mod:`._franka_sim_server`, which binds the TCP listener to
127.0.0.1 (franka-sim's own CLI listens on all interfaces). libfranka always uses TCP port 1337,
so only one server can run per host: a lock file serialises users, and a port already taken is
reported instead of connected to. The process is stopped by its pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .cpus import check_cpus

__all__ = ["FrankaSimUnavailable", "ensure_franka_sim_venv", "FrankaSimServer", "FRANKA_PORT"]

FRANKA_PORT = 1337  # libfranka's command port (not configurable on the client side)
_HOST = "127.0.0.1"
_REPO = Path(__file__).resolve().parents[2]
_SETUP = _REPO / "scripts" / "setup_franka_sim.sh"
_LAUNCHER = Path(__file__).resolve().parent / "_franka_sim_server.py"
_LOCK = Path(tempfile.gettempdir()) / "async_vla_ros-franka-sim.lock"


class FrankaSimUnavailable(RuntimeError):
    """franka-sim cannot be installed or started here; the message says why."""


def ensure_franka_sim_venv(timeout_s: float = 900.0) -> Path:
    """Create the franka-sim venv if needed (scripts/setup_franka_sim.sh) and return its path."""
    if not _SETUP.is_file():
        raise FrankaSimUnavailable(f"{_SETUP} not found (run from a source checkout)")
    try:
        out = subprocess.run(["bash", str(_SETUP)], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FrankaSimUnavailable(f"setup_franka_sim.sh did not finish within {timeout_s:.0f} s") from exc
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise FrankaSimUnavailable("setup_franka_sim.sh failed: " + " | ".join(tail))
    lines = out.stdout.strip().splitlines()
    venv = Path(lines[-1]) if lines else Path()
    if not (venv / "bin" / "python").exists():
        raise FrankaSimUnavailable(f"setup_franka_sim.sh reported no usable venv ({venv})")
    return venv


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class FrankaSimServer:
    """A franka-sim server process on 127.0.0.1:1337 (context manager).

    ``enforce_motion_limits``: abort motions that break the FCI's joint position / velocity /
    acceleration / jerk limits, like the real robot (on by default here; franka-sim's own
    default is off). ``enforce_comm_constraints``: abort after 20 consecutive lost cycles.
    ``rt_priority``: run the server under SCHED_FIFO with this priority (``chrt``), where allowed.
    ``cpus``: CPU cores the server may run on (its own core(s), away from the client's 1 kHz
    loop, see :attr:`LibfrankaConfig.cpus`); None: any. ``trace_path``: the server writes every
    limit-checker event (state published, command received with its verdict, cycle
    extrapolated) there as JSON lines when it stops (``_franka_sim_server.py --trace``).
    """

    def __init__(
        self,
        enforce_motion_limits: bool = True,
        enforce_comm_constraints: bool = False,
        venv: Path | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 90.0,
        lock_timeout_s: float = 600.0,
        rt_priority: int | None = None,
        cpus: tuple[int, ...] | None = None,
        trace_path: Path | None = None,
    ) -> None:
        self.enforce_motion_limits = bool(enforce_motion_limits)
        self.enforce_comm_constraints = bool(enforce_comm_constraints)
        self.venv = venv
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"franka-sim-{os.getpid()}.log"
        self.startup_timeout_s = float(startup_timeout_s)
        self.lock_timeout_s = float(lock_timeout_s)
        if rt_priority is not None and not (isinstance(rt_priority, int) and 1 <= rt_priority <= 99):
            raise ValueError(f"rt_priority must be None or 1..99, got {rt_priority!r}")
        self.rt_priority = rt_priority
        self.cpus = check_cpus(cpus, "cpus")
        self.trace_path = Path(trace_path) if trace_path else None
        self.proc: subprocess.Popen | None = None
        self._lock_fd: int | None = None
        self.host = _HOST

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _acquire_lock(self) -> None:
        fd = os.open(_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return
            except BlockingIOError as err:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise FrankaSimUnavailable(
                        f"another franka-sim user holds {_LOCK} for over {self.lock_timeout_s:.0f} s"
                    ) from err
                time.sleep(0.5)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def start(self) -> FrankaSimServer:
        """Install if needed, start, and wait until the server accepts connections."""
        from async_vla_ros.assets import require_panda

        venv = self.venv or ensure_franka_sim_venv()
        try:
            panda = require_panda()
        except Exception as exc:  # noqa: BLE001 - report any reason the model is missing
            raise FrankaSimUnavailable(f"the Panda MJCF is not available: {exc}") from exc
        self._acquire_lock()
        try:
            if _port_open(_HOST, FRANKA_PORT):
                raise FrankaSimUnavailable(f"{_HOST}:{FRANKA_PORT} is already in use by another process")
            cmd = [str(venv / "bin" / "python"), str(_LAUNCHER), "--host", _HOST, "--port", str(FRANKA_PORT)]
            if self.enforce_motion_limits:
                cmd.append("--enforce-motion-limits")
            if self.enforce_comm_constraints:
                cmd.append("--enforce-comm-constraints")
            if self.trace_path is not None:
                cmd += ["--trace", str(self.trace_path)]
            if self.rt_priority is not None and os.geteuid() == 0:
                cmd = ["chrt", "-f", str(self.rt_priority)] + cmd
            env = dict(os.environ)
            env["FR3_MJCF"] = str(Path(panda) / "panda_nohand.xml")
            for var in ("FRANKA_SIM_ENFORCE_MOTION_LIMITS", "FRANKA_SIM_ENFORCE_COMM_CONSTRAINTS"):
                env.pop(var, None)  # the flags above decide
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "w")
            try:
                cpus = self.cpus
                self.proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
                )
            finally:
                log.close()
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise FrankaSimUnavailable(f"franka-sim exited with {self.proc.returncode}: {self.log_tail()}")
                if "READY" in self.log_path.read_text(errors="replace") and _port_open(_HOST, FRANKA_PORT):
                    return self
                time.sleep(0.1)
            raise FrankaSimUnavailable(
                f"franka-sim did not become ready within {self.startup_timeout_s:.0f} s: {self.log_tail()}"
            )
        except BaseException:
            self.stop()
            raise

    def log_tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server process by its pid (SIGTERM, SIGKILL after 10 s) and release the lock."""
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        finally:
            self._release_lock()

    def __enter__(self) -> FrankaSimServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
