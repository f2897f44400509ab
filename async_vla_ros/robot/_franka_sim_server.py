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
    parser.add_argument(
        "--trace",
        default=None,
        help="write every limit-checker event (published state, received command, "
        "extrapolated cycle) as JSON lines to this file when the server stops",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from franka_sim import FrankaSimServer  # imported here: slow, and only in the sim venv

    events = _install_trace() if args.trace else None

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
        if events is not None:
            _dump_trace(events, args.trace)
    return 0


def _install_trace() -> list:
    """Record what franka-sim's limit checker sees and decides, per event, in memory.

    Wraps three methods of ``MotionLimitChecker`` (the object whose verdicts abort motions):
    ``note_published`` (a state goes out), ``absorb_command`` (a client datagram: fresh or not,
    rewound or not, the interval it was differenced over, the violation) and ``extrapolate``
    (a missed cycle filled in). Times are ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, the same
    clock as the client's ``RunReport.trace``). A list append per event; dumped at stop.
    """
    import time

    from franka_sim.limits.checker import MotionLimitChecker

    events: list = []
    now = time.perf_counter_ns

    def joint(checker) -> list:
        j = checker._joint
        return [list(j.value), list(j.first), list(j.second)]

    def violation(v) -> list | None:
        return None if v is None else [v.signal, v.axis, float(v.value), float(v.limit)]

    orig_pub, orig_absorb, orig_extra = (
        MotionLimitChecker.note_published,
        MotionLimitChecker.absorb_command,
        MotionLimitChecker.extrapolate,
    )

    def note_published(self, published_id):
        events.append({"t": now(), "ev": "pub", "id": int(published_id)})
        return orig_pub(self, published_id)

    def absorb_command(self, command, joint_positions=None, *, fresh, enforce=False):
        t, before = now(), self._applied_id
        out = orig_absorb(self, command, joint_positions, fresh=fresh, enforce=enforce)
        events.append(
            {
                "t": t,
                "t_done": now(),
                "ev": "cmd",
                "id": int(command.get("message_id", 0)),
                "fresh": bool(fresh),
                "applied_before": before,
                "applied_after": self._applied_id,
                "rewound": bool(out.rewound),
                "recorded": bool(out.recorded),
                "accepted": bool(out.accepted),
                "q_c": list(command["q_c"]),
                "violation": violation(out.violation),
                "history": joint(self),
            }
        )
        return out

    def extrapolate(self, message_id):
        t = now()
        out = orig_extra(self, message_id)
        if out is not None:
            cmd, v = out
            events.append(
                {
                    "t": t,
                    "ev": "extra",
                    "id": int(message_id),
                    "applied_after": self._applied_id,
                    "q_c": list(cmd["q_c"]),
                    "violation": violation(v),
                    "history": joint(self),
                }
            )
        return out

    MotionLimitChecker.note_published = note_published
    MotionLimitChecker.absorb_command = absorb_command
    MotionLimitChecker.extrapolate = extrapolate
    return events


def _dump_trace(events: list, path: str) -> None:
    import json

    with open(path, "w") as f:
        for e in list(events):
            f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    sys.exit(main())
