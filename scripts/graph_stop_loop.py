"""Start and stop the Franka graph (expert policy, dashboard, recorder: test_security's graph)
N times with the built-in launcher; print each round's exit statuses and keep the whole output of
every round whose stop was not clean (a node that needed SIGTERM or SIGKILL, a non-zero exit).

    ROS_DOMAIN_ID=77 python scripts/graph_stop_loop.py 25 /tmp/stop_loop

The stop comes 0-3 s after the policy's warm-up inference (uniform, seeded). Bounded: N rounds,
60 s at most each for the graph to come up. Localhost discovery and a temp ROS log folder are set
here when the environment does not set them.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rounds", type=int)
    ap.add_argument("out_dir", help="where the output of unclean rounds is written")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="stop_loop_log_"))
    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.bringup.launcher import Launcher

    out = Path(ns.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(ns.seed)
    bad = 0
    for i in range(ns.rounds):
        bag = tempfile.mkdtemp(prefix="stop_loop_bag_")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        graph = build_graph(
            "franka",
            {
                "policy": "expert",
                "camera": "false",
                "dashboard": "true",
                "dashboard_port": str(port),
                "record": bag + "/bag",
            },
        )
        lines: list[str] = []
        launcher = Launcher(graph, echo=lines.append)
        launcher.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and not any("warm-up inference" in line for line in lines):
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 3.0))
        codes = launcher.stop()
        clean = all(c == 0 for c in codes.values()) and not any("ignored SIGINT" in line for line in lines)
        print(f"round {i}: {'clean' if clean else 'NOT CLEAN'} {codes}", flush=True)
        if not clean:
            bad += 1
            (out / f"round_{i}.log").write_text("\n".join(lines) + "\n")
    print(f"{bad} of {ns.rounds} stops not clean" + (f" (logs in {out})" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
