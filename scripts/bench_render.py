"""Render cost of the sim node's cameras: ``PhysicsDriver.render`` per camera and image size.

Collision geoms (the sim node's default ``render_geoms``), one renderer per (camera, size) as the
sim node keeps them, the scene advanced 5 physics steps between frames. Prints the median and p90
per frame and the load average (the numbers in docs/ros.md come from this script).

    MUJOCO_GL=egl .venv/bin/python scripts/bench_render.py [--frames 100]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per camera and size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 224])
    ns = parser.parse_args()
    from async_vla_ros import names as N
    from async_vla_ros.nodes.sim_driver import PhysicsDriver

    driver = PhysicsDriver("track", seed=0)
    driver.reset(0)
    try:
        for size in ns.sizes:
            for cam in N.CAMERAS:
                driver.render(cam, size, size, (0, 3))  # creates the renderer
                ts = []
                for _ in range(ns.frames):
                    driver.advance(5)
                    t0 = time.perf_counter()
                    driver.render(cam, size, size, (0, 3))
                    ts.append(time.perf_counter() - t0)
                print(
                    f"{cam:6s} {size:4d} px  median {1e3 * np.median(ts):6.2f} ms  "
                    f"p90 {1e3 * np.quantile(ts, 0.9):6.2f} ms"
                )
    finally:
        driver.close()
    print("load average", " ".join(f"{x:.1f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
