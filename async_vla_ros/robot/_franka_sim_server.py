"""Standalone launcher for the franka-sim server, run by the franka-sim venv's own Python.

Not imported by the package (that venv has numpy 1.26 / mujoco 3.2 and no async_vla_ros):
:mod:`async_vla_ros.robot.franka_sim` runs ``<sim venv>/bin/python <this file> ...``.

Differences from ``run-franka-sim-server``: the TCP command listener binds ``--host`` (default
127.0.0.1, never all interfaces), SIGTERM stops the server cleanly, and a line ``READY`` is
printed once the listener is bound and the physics is about to run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

# Run as a script, this file's folder is sys.path[0]; it holds async_vla_ros.robot.franka_sim,
# which would shadow the franka_sim package. Drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def main() -> int:
    parser = argparse.ArgumentParser(description="franka-sim server bound to one address")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1337)
    parser.add_argument("--enforce-motion-limits", action="store_true")
    parser.add_argument("--enforce-comm-constraints", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from franka_sim import FrankaSimServer  # imported here: slow, and only in the sim venv

    server = FrankaSimServer(
        host=args.host,
        port=args.port,
        enable_vis=False,
        enable_gripper=False,
        enforce_motion_limits=bool(args.enforce_motion_limits),
        enforce_comm_constraints=bool(args.enforce_comm_constraints),
    )

    def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # start() binds the listener, initialises physics, then blocks stepping it; announce
    # readiness from a watcher once the listener exists
    def _announce() -> None:
        import time

        for _ in range(600):
            if server.server_socket is not None and getattr(server.physics_sim, "model", None) is not None:
                print("READY", flush=True)
                return
            time.sleep(0.05)

    threading.Thread(target=_announce, daemon=True).start()
    try:
        server.start()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
