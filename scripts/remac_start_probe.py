"""Which part of the authors' REMAC sampler costs success (docs/remac.md, "Why remac fails at d = 0").

Runs the lockstep simulator with the ``remac`` strategy (its requests: the old plan as prefix,
d frozen rows) on a ``remac`` checkpoint, answering each request with the authors' sampling loop
(:func:`async_vla_ros.policy.samplers.sample_remac`: clamp the first d rows after every Euler step,
the mask as the adapters' input) from three starting points and with the adapters on or off:

* ``tail``: the authors' start, the old plan's unexecuted rows followed by zeros (what ``remac`` runs),
* ``zeros``: the frozen rows of the old plan, zeros elsewhere,
* ``noise``: the frozen rows of the old plan, Gaussian noise elsewhere (the flow's training start).

``on`` / ``off``: the mask-gated adapters run / the frozen backbone alone (the base policy's weights).
Also prints how the normalised demonstration chunks differ from Gaussian noise (what the flow
starts from in training), because the ``tail`` start hands the network such a chunk at tau = 0.

    python scripts/remac_start_probe.py --task track --delays 0 2 --episodes 20 \
        --variants on-tail off-tail on-zeros off-zeros on-noise off-noise
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from async_vla_ros.checkpoints import checkpoint_path  # noqa: E402
from async_vla_ros.policy import samplers as S  # noqa: E402
from async_vla_ros.policy.base import load_policy  # noqa: E402
from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner  # noqa: E402

STARTS = ("tail", "zeros", "noise")


class StartProbe:
    """A ChunkPolicy answering ``remac`` requests with the authors' loop from a chosen start."""

    def __init__(self, policy, adapters: bool, start: str, seed: int = 0):
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        self.p, self.adapters, self.start = policy, adapters, start
        self.horizon, self.action_dim, self.obs_dim = policy.horizon, policy.action_dim, policy.obs_dim
        self.gen = torch.Generator().manual_seed(seed)

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        p = self.p
        obs_t, b = p._prepare_obs(obs)
        h, a = p.horizon, p.action_dim
        if prefix is None:  # first chunk: nothing planned, nothing frozen
            y, n_real, nf = torch.zeros((b, h, a)), np.zeros(b, int), np.zeros(b, int)
        else:
            y, w = p._check_prefix(prefix, b), p._check_weights(weights, b)
            n_real, nf = (w > 0).sum(1).numpy(), p._check_n_frozen(n_frozen, b)
        with torch.inference_mode():
            cond = p.network.encode(obs_t, cache=False)
            frozen = S.frozen_mask(nf, b, h).unsqueeze(-1)
            if self.start == "tail":
                x0 = S.remac_start(y, n_real)
            elif self.start == "zeros":
                x0 = torch.where(frozen, y, torch.zeros_like(y))
            else:
                x0 = torch.where(frozen, y, torch.randn((b, h, a), generator=self.gen))
            out = S.sample_remac(
                lambda x, tau, m: p.network.velocity(x, tau, cond, mask=m, adapters=self.adapters),
                x0,
                p.settings.n_steps,
                nf,
            )
        return p.normalizer.action.unnormalize(out.numpy().astype(np.float64))


def chunk_statistics(policy, task: str, demos: str | None, n: int = 200, seed: int = 0) -> str:
    """How normalised demonstration chunks differ from N(0, I) noise."""
    from async_vla_ros.train.data import load_episodes

    ds = load_episodes(demos or f"data/demos/{task}")
    rng = np.random.default_rng(seed)
    h = policy.horizon
    eps = [e for e in ds.episodes if len(e.actions) > h]
    chunks = []
    for i in rng.integers(0, len(eps), n):
        t = int(rng.integers(0, len(eps[i].actions) - h))
        chunks.append(eps[i].actions[t : t + h])
    a = policy.normalizer.action.normalize(np.stack(chunks))
    z = rng.standard_normal(a.shape)

    def stats(x):
        lag1 = float(np.mean([np.corrcoef(c[:-1].ravel(), c[1:].ravel())[0, 1] for c in x]))
        offset = float((np.broadcast_to(x.mean(1, keepdims=True), x.shape) ** 2).sum() / (x**2).sum())
        return float(np.sqrt((x**2).mean())), lag1, offset

    (ra, la, oa), (rz, lz, oz) = stats(a), stats(z)
    return (
        f"normalised demonstration chunks ({n}, H = {h}) vs N(0, I) noise: rms {ra:.2f} vs {rz:.2f}; "
        f"correlation of consecutive rows {la:.3f} vs {lz:.3f}; share of the energy in a per-joint "
        f"offset constant over the rows {oa:.3f} vs {oz:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="track")
    ap.add_argument("--checkpoint", default=None, help="a remac checkpoint [the task's shipped one]")
    ap.add_argument("--delays", nargs="+", type=int, default=[0, 2])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--variants", nargs="+", default=["on-tail", "off-tail", "on-zeros", "off-zeros", "on-noise"])
    ap.add_argument("--demos", default=None, help="demonstrations for the chunk statistics [data/demos/TASK]")
    ns = ap.parse_args(argv)
    torch.set_num_threads(1)
    ckpt = ns.checkpoint or str(checkpoint_path(ns.task, "remac"))
    pol = load_policy(ckpt)
    try:
        print(chunk_statistics(pol, ns.task, ns.demos))
    except FileNotFoundError as exc:
        print(f"(no chunk statistics: {exc})")
    print(f"\n| adapters | start | d | success | s |\n|---|---|---|---|---|  ({Path(ckpt).name}, seed 0)")
    for d in ns.delays:
        for v in ns.variants:
            on, start = v.split("-")
            probe = StartProbe(pol, {"on": True, "off": False}[on], start)
            t0 = time.time()
            cfg = LockstepConfig(
                task=ns.task, strategy="remac", delay=d, s_min=1, episodes=ns.episodes, batch=ns.episodes, seed=0
            )
            res = LockstepRunner(probe).run(cfg)
            print(f"| {on} | {start} | {d} | {res.successes}/{res.n} | {time.time() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
