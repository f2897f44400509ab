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
import sys
import tempfile
from collections.abc import MutableMapping

DEFAULT_DOMAIN_ID = 42
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


def free_session_domain_id(seed: int | None = None, tries: int = 5, wait_s: float = 3.0) -> int:
    """:func:`session_domain_id`, moved on to the next ids while another process (a test session of
    another checkout, a graph started by hand on the same id) already uses it: on a shared machine
    two sessions on one domain see each other's nodes (a probe then counts a foreign correction
    node's commands and counters). After ``tries`` busy ids the last one is used."""
    first = session_domain_id(seed)
    start = _TEST_DOMAIN_RANGE.index(first)
    candidate = first
    for k in range(tries):
        candidate = _TEST_DOMAIN_RANGE[(start + k) % len(_TEST_DOMAIN_RANGE)]
        if not domain_in_use(candidate, wait_s):
            return candidate
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
