"""``async-vla-ros bench lerobot``: our samplers and LeRobot's RTC side by side on one SmolVLA.

Builds a tiny random SmolVLA offline (``policy/lerobot_tiny.py``; default: 2 cameras 64x64,
state 8, action 8, chunk 10, 10 denoising steps), loads it through the ``lerobot`` backend and
times one chunk (B = 1, one torch thread, one process) for: ``vanilla`` (LeRobot's own
``predict_action_chunk``), ``vanilla_v`` (our Euler loop on the backend's velocity, prefix KV
cached once: the baseline of our samplers), ``rtc`` (ours, exact VJP through the action expert),
``rtc_lerobot`` (LeRobot's RTC, J = I), ``prefix`` (REMAC) and ``bid``. Methods run interleaved
(one call of each per round) so load from other processes hits them alike.

Pinning and switch jump, on ``--trials`` random (observation, previous chunk) pairs: the previous
chunk ``P`` is drawn at one observation, the new request's prefix is ``Y[k] = P[k + s]`` (the plan
shifted by the s executed actions, its ``n_real = H - s`` rows real), d frozen rows, the strategy's
weights (``prefix_weights``, exp). ``pin`` = max |chunk[:d] - Y[:d]| (how well the frozen prefix is
held), ``jump`` = max |chunk[d] - Y[d]| (the step where the new chunk takes over). Units: the
model's normalised action space (the tiny model's stats are mean 0 / std 1, i.e. robot units).

``--policy vla`` (or ``vla_remac``) times the shipped trained VLA (``checkpoints/vla``: SmolVLA,
scene + wrist cameras 64x64, proprioception) instead. The last line is the RTC-vs-vanilla time
ratio as the RTC paper measures it (``rtc`` / ``vanilla_v``: the prefix -- images, language, state
-- encoded once into the KV cache, only the action expert differentiated), beside the paper's 1.28x.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("vanilla", "vanilla_v", "rtc", "rtc_lerobot", "prefix", "bid")
PAPER_RTC_RATIO = 1.28  # RTC paper (Black et al. 2025): RTC inference time over vanilla on pi0.5
SHIPPED = {"vla": "base", "vla_remac": "remac_clean"}  # --policy name -> the shipped VLA folder's kind


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--policy",
        default="",
        help="a LeRobot policy folder, or vla / vla_remac (the shipped trained VLA) (default: build the tiny SmolVLA)",
    )
    p.add_argument("--cameras", type=int, default=2, help="cameras of the built model (default 2)")
    p.add_argument("--image", type=int, default=64, help="image side of the built model (default 64)")
    p.add_argument("--state", type=int, default=8, help="state = action dimension of the built model (default 8)")
    p.add_argument("--chunk", type=int, default=10, help="chunk length H of the built model (default 10)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps (default 10)")
    p.add_argument("--d", type=int, default=3, help="frozen rows d (default 3)")
    p.add_argument("--s", type=int, default=4, help="executed actions s per chunk (default 4)")
    p.add_argument("--reps", type=int, default=30, help="timed rounds (default 30)")
    p.add_argument("--trials", type=int, default=20, help="pinning / jump trials (default 20)")
    p.add_argument("--bid-n", type=int, default=8, help="BID candidates (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    return p


def _call(be, method, obs, prev, w, d, seed):
    kw: dict = {"seed": seed}
    if method == "vanilla_v":
        return _vanilla_v(be, obs, seed)
    if method in ("rtc", "rtc_lerobot", "bid"):
        kw.update(prefix=prev, weights=w)
    if method in ("prefix", "rtc_lerobot"):
        kw.update(prefix=prev, n_frozen=np.array([d]))
    return be.infer(obs, method, **kw)


def _vanilla_v(be, obs, seed):
    """Our Euler loop on the backend's velocity (prefix KV cached once), in robot units."""
    import torch

    from async_vla_ros.policy import samplers as S

    batch, b = be._batch(obs)
    v = be.velocity_fn(batch)
    noise = torch.randn((b, be.horizon, be.padded_dim), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        x = S.sample_vanilla(v, noise, be.n_steps)
    return be._to_robot(x, obs)


def _prefix(be, obs):
    """What every sampler pays once per chunk before denoising: the batch and the VLM prefix's KV cache."""
    import torch

    from async_vla_ros.policy.lerobot_backend import encode_prefix

    batch, _ = be._batch(obs)
    with torch.inference_mode():
        return encode_prefix(be.policy, batch)


def run(ns: argparse.Namespace) -> int:
    import torch

    from async_vla_ros.core.strategies import prefix_weights
    from async_vla_ros.policy.lerobot_backend import LeRobotSettings, load_lerobot_folder, vla_folder
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    torch.set_num_threads(ns.threads)
    tmp = None
    if ns.policy in SHIPPED:
        folder = vla_folder(SHIPPED[ns.policy])
        print(f"the shipped VLA: {folder}")
    elif ns.policy:
        folder = Path(ns.policy)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_lerobot_")
        names = ["front", "wrist", "side", "top"][: ns.cameras]
        spec = TinySmolVLASpec(
            cameras={n: f"observation.images.{n}" for n in names},
            image_hw=(ns.image, ns.image),
            state_dim=ns.state,
            action_dim=ns.state,
            chunk=ns.chunk,
            n_steps=ns.steps,
        )
        t0 = time.perf_counter()
        folder = build_tiny_smolvla(tmp.name, spec)
        print(f"built tiny SmolVLA in {time.perf_counter() - t0:.1f} s")
    be = load_lerobot_folder(folder, settings=LeRobotSettings(bid_n=ns.bid_n, num_threads=ns.threads))
    torch.set_num_threads(ns.threads)
    n_params = sum(p.numel() for p in be.policy.parameters())
    h, d, s = be.horizon, ns.d, ns.s
    rng = np.random.default_rng(0)

    def obs():
        return {
            "state": rng.normal(size=(1, be.obs_dim)),
            "images": {c: rng.integers(0, 256, (1, hh, ww, 3), dtype=np.uint8) for c, (hh, ww) in be.camera_hw.items()},
        }

    def shifted(prev):
        y = np.concatenate([prev[:, s:], np.repeat(prev[:, -1:], s, axis=1)], axis=1)
        return y

    w = prefix_weights(d, s, h, "exp", n_real=h - s)[None]
    # timing: interleaved rounds after one warm-up call of each
    o = obs()
    y = shifted(be.infer(o, "vanilla", seed=0))
    for m in METHODS:
        _call(be, m, o, y, w, d, 1)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    prefix_s: list[float] = []  # the observation's preprocessing + VLM prefix encoding, once per chunk
    for r in range(ns.reps):
        for m in METHODS:
            t0 = time.perf_counter()
            _call(be, m, o, y, w, d, 100 + r)
            times[m].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _prefix(be, o)
        prefix_s.append(time.perf_counter() - t0)
    # pinning and switch jump
    pin: dict[str, list[float]] = {m: [] for m in METHODS}
    jump: dict[str, list[float]] = {m: [] for m in METHODS}
    for t in range(ns.trials):
        y = shifted(be.infer(obs(), "vanilla", seed=1000 + t))
        o = obs()
        for m in METHODS:
            c = _call(be, m, o, y, w, d, 2000 + t)
            pin[m].append(float(np.abs(c[0, :d] - y[0, :d]).max()) if d else 0.0)
            jump[m].append(float(np.abs(c[0, d] - y[0, d]).max()))
    base = float(np.median(times["vanilla"]))
    base_v = float(np.median(times["vanilla_v"]))
    rows = []
    for m in METHODS:
        med = float(np.median(times[m]))
        rows.append(
            {
                "method": m,
                "median_ms": 1e3 * med,
                "p90_ms": 1e3 * float(np.quantile(times[m], 0.9)),
                "x_vanilla": med / base,
                "x_vanilla_v": med / base_v,
                "pin_median": float(np.median(pin[m])),
                "pin_max": float(np.max(pin[m])),
                "jump_median": float(np.median(jump[m])),
            }
        )
    cfg = {
        "params": n_params,
        "cameras": be.camera_hw,
        "state": be.obs_dim,
        "action": be.action_dim,
        "H": h,
        "steps": be.n_steps,
        "d": d,
        "s": s,
        "beta": be.settings.beta,
        "bid_n": ns.bid_n,
        "threads": ns.threads,
        "reps": ns.reps,
        "trials": ns.trials,
        "loadavg": os.getloadavg(),
    }
    print(
        f"SmolVLA {n_params:,} params, cameras {be.camera_hw}, state {be.obs_dim}, H {h}, {be.n_steps} steps, "
        f"d {d}, s {s}, B 1, {ns.threads} thread(s), {ns.reps} rounds, {ns.trials} trials; "
        f"load avg {cfg['loadavg'][0]:.1f}"
    )
    print(
        f"{'method':12s} {'median ms':>9s} {'p90 ms':>7s} {'x vanilla':>9s} {'x van_v':>8s} "
        f"{'pin med':>8s} {'pin max':>8s} {'jump med':>8s}"
    )
    for r in rows:
        print(
            f"{r['method']:12s} {r['median_ms']:9.1f} {r['p90_ms']:7.1f} {r['x_vanilla']:9.2f} "
            f"{r['x_vanilla_v']:8.2f} {r['pin_median']:8.3f} {r['pin_max']:8.3f} {r['jump_median']:8.3f}"
        )
    ratio = float(np.median(times["rtc"])) / base_v
    pre = float(np.median(prefix_s))
    print(
        f"prefix (batch + VLM KV cache, once per chunk): median {1e3 * pre:.1f} ms = {100 * pre / base_v:.0f} % of "
        f"vanilla_v; the rest is the action expert's {be.n_steps} denoising steps"
    )
    print(
        f"RTC / vanilla inference time, prefix KV cached, only the action expert differentiated "
        f"(rtc / vanilla_v medians): {ratio:.2f}x   (paper: {PAPER_RTC_RATIO}x)"
    )
    if ns.json:
        doc = {
            "config": cfg,
            "rows": rows,
            "prefix_median_ms": 1e3 * pre,
            "rtc_over_vanilla": ratio,
            "paper_rtc_over_vanilla": PAPER_RTC_RATIO,
        }
        Path(ns.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {ns.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="async-vla-ros bench lerobot", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
