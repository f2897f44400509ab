"""ROS 2 environment defaults: the one place that keeps every node on this machine.

Fast DDS multicasts discovery on every interface by default. Everything in this project that can
start a ROS node (tests, the CLI, scripts, launch) calls :func:`apply_ros_defaults` first, which
sets, unless the user already set them:

- ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (``ROS_LOCALHOST_ONLY`` is ignored in Kilted),
- ``ROS_DOMAIN_ID`` (``DEFAULT_DOMAIN_ID``, or a per-process one for tests),
- ``ROS_LOG_DIR`` under the system temp folder,
- ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp``,
- ``AMENT_PREFIX_PATH`` including this interpreter's prefix (the venv), so package-name look-ups
  (``get_package_share_directory``) find ``async_vla_ros`` and ``async_vla_msgs``.

It must run before ``rclpy`` is imported in a process: the ROS wheels re-execute the interpreter
on import and child processes inherit ``os.environ``.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import MutableMapping

DEFAULT_DOMAIN_ID = 42
# `kill -USR1 PID` prints every thread's Python stack of a node (nodes.common.register_stack_dump);
# the built-in launcher sends it to a node that ignored SIGINT and SIGTERM, before SIGKILL
STACK_DUMP_SIGNAL = signal.SIGUSR1
# Fast DDS maps a domain id to UDP ports; ids above 101 collide with ephemeral ports on Linux.
_TEST_DOMAIN_RANGE = range(10, 100)


def default_log_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "async_vla_ros", "ros_logs")


def session_domain_id(seed: int | None = None) -> int:
    """A domain id for one test session, derived from the pid so parallel sessions differ."""
    seed = os.getpid() if seed is None else seed
    return _TEST_DOMAIN_RANGE[seed % len(_TEST_DOMAIN_RANGE)]


_PROBE = """
import sys, time
import rclpy
rclpy.init()
node = rclpy.create_node("domain_probe")
deadline = time.monotonic() + float(sys.argv[1])
others = []
while time.monotonic() < deadline and not others:
    rclpy.spin_once(node, timeout_sec=0.1)
    others = [n for n in node.get_node_names() if n != "domain_probe"]
print(len(others))
"""


def domain_in_use(domain_id: int, wait_s: float = 3.0, timeout_s: float = 60.0) -> bool:
    """True when some ROS node on this machine already uses ``domain_id`` (localhost discovery):
    a short-lived probe process lists the nodes it discovers within ``wait_s``. A probe that
    fails counts as in use (pick another id)."""
    import subprocess

    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(int(domain_id)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    apply_ros_defaults(env)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, str(wait_s)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return True
    last = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
    return not (last and last[0] == "0")


_HELD_DOMAINS: dict[int, int] = {}  # domain id -> open file descriptor holding its lock (this process)


def domain_lock_path(domain_id: int) -> str:
    """The lock file of ``domain_id``: one folder per machine (the system temp folder), shared by
    every checkout and session of this project."""
    return os.path.join(tempfile.gettempdir(), "async_vla_ros", "domains", f"{int(domain_id)}.lock")


def reserve_domain(domain_id: int) -> bool:
    """Take the machine-wide lock of ``domain_id`` for the rest of this process's life: an exclusive
    ``flock`` on :func:`domain_lock_path`, which the kernel releases when the process ends, however it
    ends. False when another live process holds it. Holding it twice in one process is fine."""
    import fcntl

    domain_id = int(domain_id)
    if domain_id in _HELD_DOMAINS:
        return True
    path = domain_lock_path(domain_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _HELD_DOMAINS[domain_id] = fd
    return True


def release_domain(domain_id: int) -> None:
    """Give back a domain this process reserved (no-op when it holds none)."""
    fd = _HELD_DOMAINS.pop(int(domain_id), None)
    if fd is not None:
        os.close(fd)


def free_session_domain_id(seed: int | None = None, tries: int = 5, wait_s: float = 3.0) -> int:
    """A domain id for this test session that no other session uses, reserved for this process's
    life: starting at :func:`session_domain_id`, each candidate must (1) take its machine-wide lock
    (:func:`reserve_domain`; a session of this project holds it from here to its end, also between
    its tests while none of its nodes run) and (2) show no ROS node by discovery (a graph started by
    hand, a process that does not take the locks). Discovery alone was not enough on a shared
    machine: it sees a session's domain as free in the gaps between that session's tests, so two
    sessions ended up on one domain and each probe counted the other graph's commands and
    counters. Candidates locked by another process cost nothing; at most ``tries`` are probed by
    discovery; if all of those are busy the last one probed is used (and reserved)."""
    first = session_domain_id(seed)
    start = _TEST_DOMAIN_RANGE.index(first)
    probed = 0
    candidate = first
    for k in range(len(_TEST_DOMAIN_RANGE)):
        candidate = _TEST_DOMAIN_RANGE[(start + k) % len(_TEST_DOMAIN_RANGE)]
        if candidate in _HELD_DOMAINS or not reserve_domain(candidate):
            continue  # this process already gave it out, or another live session holds it
        probed += 1
        if not domain_in_use(candidate, wait_s):
            return candidate
        if probed >= tries:
            return candidate
        release_domain(candidate)
    return candidate


def apply_ros_defaults(
    env: MutableMapping[str, str] | None = None,
    *,
    domain_id: int | None = None,
    log_dir: str | None = None,
    force_domain: bool = False,
) -> dict[str, str]:
    """Fill in the project's ROS environment defaults in ``env`` (default ``os.environ``).

    Values the user already set are kept, except ``ROS_DOMAIN_ID`` when ``force_domain`` is True
    (tests isolate themselves with a unique domain). Returns the values now in force.
    """
    env = os.environ if env is None else env
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if force_domain or "ROS_DOMAIN_ID" not in env:
        env["ROS_DOMAIN_ID"] = str(DEFAULT_DOMAIN_ID if domain_id is None else int(domain_id))
    if "ROS_LOG_DIR" not in env:
        env["ROS_LOG_DIR"] = log_dir or default_log_dir()
    os.makedirs(env["ROS_LOG_DIR"], exist_ok=True)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *prefixes])
    return {k: env[k] for k in ros_env_keys()}


def ros_env_keys() -> tuple[str, ...]:
    return (
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
        "ROS_DOMAIN_ID",
        "ROS_LOG_DIR",
        "RMW_IMPLEMENTATION",
        "AMENT_PREFIX_PATH",
    )


def check_ros_env(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Problems that would send DDS traffic off this machine; empty when the env is safe."""
    env = os.environ if env is None else env
    problems = []
    rng = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if rng != "LOCALHOST":
        problems.append(f"ROS_AUTOMATIC_DISCOVERY_RANGE={rng or '<unset>'}: discovery is not limited to this host")
    if "ROS_DOMAIN_ID" not in env:
        problems.append("ROS_DOMAIN_ID is unset")
    return problems
