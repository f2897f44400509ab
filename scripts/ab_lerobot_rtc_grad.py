"""A/B of the LeRobot backend's frozen parameters on its samplers (tiny SmolVLA, 1 thread).

The backend sets ``policy.requires_grad_(False)`` (inference only), so our exact RTC's VJP records
only the ops that depend on x. This script times ``infer`` for vanilla, rtc (exact) and rtc_lerobot
with the parameters frozen ("new") and with them requiring grad as before ("old"), interleaved in
one process, in thread CPU time (less sensitive than wall time to other jobs on a shared machine).
Outputs are identical either way (gradients flow to x only); ``test_lerobot_backend.py`` checks
the exactness.

    .venv/bin/python scripts/ab_lerobot_rtc_grad.py [--reps 40]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    ns = parser.parse_args()
    import torch

    import async_vla_ros  # noqa: F401 - offline Hugging Face settings before torch/lerobot
    from async_vla_ros.core.strategies import prefix_weights
    from async_vla_ros.policy.lerobot_backend import LeRobotSettings, load_lerobot_folder
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_smolvla(tmp, TinySmolVLASpec(state_dim=8, action_dim=8, chunk=10, n_steps=10))
        be = load_lerobot_folder(folder, settings=LeRobotSettings(num_threads=1))
        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        o = {
            "state": rng.normal(size=(1, 8)),
            "images": {c: rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8) for c, (h, w) in be.camera_hw.items()},
        }
        h, d, s = be.horizon, 3, 4
        prev = be.infer(o, "vanilla", seed=0)
        y = np.concatenate([prev[:, s:], np.repeat(prev[:, -1:], s, axis=1)], axis=1)
        w = prefix_weights(d, s, h, "exp", n_real=h - s)[None]
        calls = {
            "vanilla": lambda: be.infer(o, "vanilla", seed=1),
            "rtc": lambda: be.infer(o, "rtc", prefix=y, weights=w, seed=1),
            "rtc_lerobot": lambda: be.infer(o, "rtc_lerobot", prefix=y, weights=w, n_frozen=np.array([d]), seed=1),
        }
        variants = [
            (f"{m}[{tag}]", grad, fn) for tag, grad in (("new", False), ("old", True)) for m, fn in calls.items()
        ]
        out = {}
        for name, grad, fn in variants:
            be.policy.requires_grad_(grad)
            out[name] = fn()
        for m in calls:
            assert np.array_equal(out[f"{m}[new]"], out[f"{m}[old]"]), f"{m}: outputs differ"
        ts = {name: [] for name, _, _ in variants}
        for _ in range(ns.reps):
            for name, grad, fn in variants:
                be.policy.requires_grad_(grad)
                t0 = time.thread_time()
                fn()
                ts[name].append(time.thread_time() - t0)
        for name, v in ts.items():
            print(
                f"{name:18s} min {1e3 * min(v):6.2f}  p25 {1e3 * np.quantile(v, 0.25):6.2f}  "
                f"median {1e3 * np.median(v):6.2f} ms (thread CPU time, {ns.reps} reps)"
            )
    print("outputs identical new vs old; load average", " ".join(f"{x:.1f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
