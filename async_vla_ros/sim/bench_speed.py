"""Throughput of the lockstep benchmark: episodes per second with a small flow policy.

``python -m async_vla_ros.sim.bench_speed --task track --methods naive rtc --delays 0 4``
``python -m async_vla_ros.sim.bench_speed --policy still`` (simulation + scheduling only)

The policy is a default-size flow network (``FlowNetConfig`` defaults, random weights: inference
time does not depend on the weights) whose normaliser is fitted on a few closed-loop expert
rollouts, so its actions lie in the expert's joint range and the arm moves like it would under
a trained policy. ``--a2c2`` adds a (zero-initialised) correction head to every condition.
Prints, per condition, wall time, inference time per batched call, episodes/s overall and
without inference, and the projection for a 10 x 5 x N sweep from the measured mean rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _fitted_policy(task: str, n: int = 16):
    from async_vla_ros.policy.base import SamplerSettings, make_flow_backend
    from async_vla_ros.policy.networks import FlowNetConfig
    from async_vla_ros.policy.normalize import Normalizer
    from async_vla_ros.sim.env import BatchedPandaEnv
    from async_vla_ros.sim.experts import ScriptedExpert

    env = BatchedPandaEnv(task, n)
    ex = ScriptedExpert(env.task)
    obs = env.reset(range(n))
    o_all, a_all = [], []
    while not env.done:
        a = ex.act(obs)
        o_all.append(obs)
        a_all.append(a)
        obs = env.step(a)
    env.close()
    norm = Normalizer.from_data(np.concatenate(o_all), np.concatenate(a_all))
    cfg = FlowNetConfig(obs_dim=env.obs_dim, action_dim=8, horizon=8)
    return make_flow_backend(cfg, norm, SamplerSettings(num_threads=1), task=task), norm, cfg


class StillPolicy:
    """ChunkPolicy that plans "stay where you are" (H copies of the measured joints, gripper as
    measured): costs nothing, so a run measures simulation + scheduling alone."""

    horizon, action_dim = 8, 8

    def __init__(self, obs_dim: int):
        self.obs_dim = obs_dim

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        o = np.asarray(obs, dtype=np.float64)
        a = np.empty((o.shape[0], self.horizon, 8))
        a[:, :, :7] = o[:, None, :7]
        a[:, :, 7] = o[:, None, 14]
        return a


def main(argv: list[str] | None = None) -> int:
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="track")
    p.add_argument("--methods", nargs="+", default=["naive", "rtc", "bid"])
    p.add_argument("--delays", nargs="+", type=int, default=[0, 4])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--a2c2", action="store_true", help="add a correction head (zero residual)")
    p.add_argument(
        "--policy",
        choices=("flow", "still"),
        default="flow",
        help="flow: default-size flow network; still: free policy (simulation + scheduling only)",
    )
    ns = p.parse_args(argv)

    policy, norm, cfg = _fitted_policy(ns.task)
    if ns.policy == "still":
        policy = StillPolicy(cfg.obs_dim)
    corr = None
    if ns.a2c2:
        from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead

        corr = CorrectionHead(CorrectionConfig(obs_dim=cfg.obs_dim, action_dim=8, horizon=8), norm).eval()
    runner = LockstepRunner(policy, corr)
    total_eps, total_wall = 0, 0.0
    print(f"task {ns.task}  policy {ns.policy}  episodes {ns.episodes}  batch {ns.batch}  a2c2 {ns.a2c2}")
    print(f"{'method':<9}{'d':>2}{'wall_s':>8}{'inf_ms/call':>12}{'calls':>7}{'ep/s':>7}{'sim_ep/s':>9}")
    for m in ns.methods:
        for d in ns.delays:
            tic = time.perf_counter()
            r = runner.run(LockstepConfig(task=ns.task, strategy=m, delay=d, episodes=ns.episodes, batch=ns.batch))
            wall = time.perf_counter() - tic
            total_eps += r.n
            total_wall += wall
            print(
                f"{m:<9}{d:>2}{wall:>8.1f}{1e3 * r.infer_s / max(1, r.infer_calls):>12.2f}{r.infer_calls:>7}"
                f"{r.episodes_per_s:>7.1f}{r.sim_episodes_per_s:>9.1f}",
                flush=True,
            )
    rate = total_eps / total_wall
    print(
        f"overall {total_eps} episodes in {total_wall:.1f} s = {rate:.1f} episodes/s; "
        f"a 10 x 5 x {ns.episodes} sweep at this rate: {10 * 5 * ns.episodes / rate / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
