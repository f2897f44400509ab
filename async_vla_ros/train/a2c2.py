"""A2C2 correction-head training (Sendai et al., arXiv 2509.23224).

``async-vla-ros train a2c2 --base BASE_CKPT --demos DIR --out HEAD``

Dataset (built by running the base policy on the demonstrations): for every episode the base
policy samples one chunk ``C_t`` from each observation ``obs_t`` (vanilla sampler, seeded). Under
asynchronous execution the action executed at step t can come from any chunk made ``k`` steps
earlier, so every pair ``(t, k)`` with ``0 <= k < H`` and ``t - k >= 0`` is a sample:

* base action ``a_base = C_{t-k}[k]`` (the chunk made from ``obs_{t-k}``, its index k),
* features ``obs_t`` (the latest observation), ``a_base``, ``sin/cos(2 pi k / H)`` and, with
  ``--latent``, the base policy's latent of ``obs_t`` (what the lockstep runner and the correction
  node feed the head: ``policy.latent(obs_t)``),
* target residual ``a_expert(t) - a_base`` (robot units; the head learns it in normalised units).

The head (:class:`async_vla_ros.policy.a2c2.CorrectionHead`) uses the base checkpoint's
normaliser; MSE loss, AdamW, cosine schedule. Validation reports the residual MSE next to the
"no correction" MSE (predicting 0) on held-out episodes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead
from async_vla_ros.policy.base import ChunkPolicy, FlowPolicyBackend, load_checkpoint, load_policy
from async_vla_ros.policy.networks import count_params
from async_vla_ros.policy.normalize import Normalizer
from async_vla_ros.train import common as C
from async_vla_ros.train.base import TrainResult, _config_from_ns, add_config_arguments
from async_vla_ros.train.data import DemoSet, Episode, load_episodes, split_episodes

KIND = "a2c2"


@dataclass(frozen=True)
class A2C2Config(C.DictConfig):
    """Correction-head run."""

    steps: int = 3000  # optimiser steps
    batch_size: int = 512  # samples per step
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup: int = 100  # linear warm-up steps
    grad_clip: float = 1.0  # max global gradient norm
    hidden: int = 128  # head width
    depth: int = 2  # head hidden layers
    latent: bool = False  # feed the base policy's latent of obs_t
    val_fraction: float = 0.1  # fraction of episodes held out
    val_every: int = 250  # steps between validation passes
    ckpt_every: int = 1000  # steps between checkpoints
    seed: int = 0  # seeds split, base sampling, init, batches
    num_threads: int | None = 1  # torch threads

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "warmup", "hidden", "depth", "val_every", "ckpt_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"A2C2Config.{name} must be an int >= 1, got {v!r}")
        for name in ("lr", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"A2C2Config.{name} must be > 0, got {v!r}")
        if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"A2C2Config.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"A2C2Config.val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"A2C2Config.seed must be an int, got {self.seed!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"A2C2Config.num_threads must be None or an int >= 1, got {self.num_threads!r}")


@dataclass(frozen=True, eq=False)
class A2C2Dataset:
    """Correction samples (M = number of valid (t, k) pairs), robot units."""

    obs: np.ndarray  # (M, obs_dim) latest observation obs_t
    base: np.ndarray  # (M, A) base action C_{t-k}[k]
    k: np.ndarray  # (M,) in-chunk index
    target: np.ndarray  # (M, A) a_expert(t) - base
    ep: np.ndarray  # (M,) episode index
    t: np.ndarray  # (M,) step
    latent: np.ndarray | None  # (M, latent_dim) base latent of obs_t, or None
    horizon: int  # H

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def rows_of_episodes(self, ids: Sequence[int]) -> np.ndarray:
        return np.nonzero(np.isin(self.ep, np.asarray(ids)))[0]


def build_a2c2_dataset(
    policy: ChunkPolicy, episodes: Sequence[Episode], *, seed: int = 0, latent: bool = False
) -> A2C2Dataset:
    """Run ``policy`` (vanilla sampler) on every observation of every episode and pair each step
    t with the base action of every chunk that covers it (see module docstring)."""
    h = int(policy.horizon)
    if latent and not hasattr(policy, "latent"):
        raise ValueError("latent features need a policy with .latent(obs) (the flow backend)")
    cols: dict[str, list[np.ndarray]] = {n: [] for n in ("obs", "base", "k", "target", "ep", "t", "latent")}
    for i, e in enumerate(episodes):
        chunks = np.asarray(policy.infer(e.obs, sampler="vanilla", seed=seed + i))  # (T, H, A)
        if chunks.shape != (e.length, h, e.actions.shape[1]):
            raise ValueError(f"policy returned {chunks.shape}, expected {(e.length, h, e.actions.shape[1])}")
        tt, kk = np.meshgrid(np.arange(e.length), np.arange(h), indexing="ij")  # (T, H)
        valid = tt >= kk
        t_v, k_v = tt[valid], kk[valid]
        base = chunks[t_v - k_v, k_v]
        cols["obs"].append(e.obs[t_v])
        cols["base"].append(base)
        cols["k"].append(k_v)
        cols["target"].append(e.actions[t_v] - base)
        cols["ep"].append(np.full(len(t_v), i))
        cols["t"].append(t_v)
        if latent:
            lat = np.asarray(policy.latent(e.obs))  # (T, L)
            cols["latent"].append(lat[t_v])
    cat = {n: np.concatenate(v) for n, v in cols.items() if v}
    return A2C2Dataset(
        obs=cat["obs"],
        base=cat["base"],
        k=cat["k"].astype(np.int64),
        target=cat["target"],
        ep=cat["ep"].astype(np.int64),
        t=cat["t"].astype(np.int64),
        latent=cat.get("latent"),
        horizon=h,
    )


class _Tensors:
    def __init__(self, ds: A2C2Dataset, norm: Normalizer) -> None:
        self.obs = torch.as_tensor(norm.obs.normalize(ds.obs), dtype=torch.float32)
        self.base = torch.as_tensor(norm.action.normalize(ds.base), dtype=torch.float32)
        self.k = torch.as_tensor(ds.k)
        self.target = torch.as_tensor(ds.target / norm.action.scale, dtype=torch.float32)
        self.latent = None if ds.latent is None else torch.as_tensor(ds.latent, dtype=torch.float32)

    def batch(self, rows: torch.Tensor):
        lat = None if self.latent is None else self.latent[rows]
        return (self.obs[rows], self.base[rows], self.k[rows], lat), self.target[rows]


def _mse(head: CorrectionHead, tens: _Tensors, rows: np.ndarray) -> tuple[float, float]:
    """(head MSE, zero-residual MSE) in normalised action units over ``rows``."""
    head.eval()
    tot, tot0, n = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), 4096):
            r = torch.as_tensor(rows[i : i + 4096])
            inp, tgt = tens.batch(r)
            pred = head(*inp)
            tot += float(((pred - tgt) ** 2).mean()) * len(r)
            tot0 += float((tgt**2).mean()) * len(r)
            n += len(r)
    head.train()
    return tot / max(n, 1), tot0 / max(n, 1)


def train_a2c2(
    demos: DemoSet,
    base_ckpt: str | Path,
    config: A2C2Config,
    out: str | Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    stop_at: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Build the A2C2 dataset with the base policy and train a correction head; writes ``out``."""
    t_start = time.perf_counter()
    out = Path(out)
    C.set_threads(config.num_threads)
    ckpt = load_checkpoint(base_ckpt)
    policy = load_policy(base_ckpt)
    if not isinstance(policy, FlowPolicyBackend):
        raise ValueError("A2C2 training needs a flow base checkpoint")
    task = policy.task or demos.task
    if demos.task and task and demos.task != task:
        raise ValueError(f"base checkpoint is for task {task!r}, demonstrations for {demos.task!r}")
    norm = policy.normalizer
    log(f"train a2c2: running the base policy on {len(demos.episodes)} episodes")
    ds = build_a2c2_dataset(policy, demos.episodes, seed=config.seed + 7, latent=config.latent)
    C.set_threads(config.num_threads)  # the backend sets its own thread count
    train_eps, val_eps = split_episodes(len(demos.episodes), config.val_fraction, config.seed)
    train_rows, val_rows = ds.rows_of_episodes(train_eps), ds.rows_of_episodes(val_eps)
    tens = _Tensors(ds, norm)
    head_cfg = CorrectionConfig(
        obs_dim=policy.obs_dim,
        action_dim=policy.action_dim,
        horizon=policy.horizon,
        latent_dim=policy.latent_dim if config.latent else 0,
        hidden=config.hidden,
        depth=config.depth,
    )
    torch.manual_seed(config.seed)
    head = CorrectionHead(head_cfg, norm)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    np_rng = np.random.default_rng(config.seed + 2)
    gen = torch.Generator().manual_seed(config.seed + 3)
    step, history = 0, []
    if resume:
        st = C.resume_state(out, KIND, A2C2Config, config, demos)
        head.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        C.set_rng_state(st["rng"], np_rng, gen)
        step, history = int(st["step"]), list(st["history"])

    def record(step_now: int, val: float | None, val0: float | None) -> dict[str, Any]:
        return {
            "kind": KIND,
            "task": task,
            "config": config.to_dict(),
            "head": head_cfg.to_dict(),
            "horizon": policy.horizon,
            "seed": config.seed,
            "demos": demos.describe(),
            "base_checkpoint": str(base_ckpt),
            "base_git": ckpt.get("train_config", {}).get("provenance", {}),
            "samples": len(ds),
            "num_params": count_params(head),
            "step": step_now,
            "val_mse": val,
            "val_mse_zero": val0,
            "provenance": C.provenance(),
        }

    def write(step_now: int, val: float | None, val0: float | None) -> Path:
        rec = record(step_now, val, val0)
        head.save(out, extra={"train_config": rec, "history": history})
        C.save_trainstate(
            out,
            kind=KIND,
            step=step_now,
            model_state=head.state_dict(),
            ema_state=None,
            optimizer=opt,
            rng=C.rng_state(np_rng, gen),
            config=rec,
            history=history,
        )
        return out

    log(
        f"train a2c2: task={task!r} {len(train_rows)} train / {len(val_rows)} val samples, "
        f"{count_params(head)} params, latent={config.latent}"
    )
    last: dict[str, float | None] = {"val_mse": None, "val_mse_zero": None}
    if history:
        last = {"val_mse": history[-1]["val_mse"], "val_mse_zero": history[-1]["val_mse_zero"]}

    def step_fn(_step: int):
        rows = torch.as_tensor(train_rows[np_rng.integers(0, len(train_rows), config.batch_size)])
        inp, tgt = tens.batch(rows)
        return ((head(*inp) - tgt) ** 2).mean(), {}

    def validate() -> dict[str, Any]:
        if len(val_rows):
            last["val_mse"], last["val_mse_zero"] = _mse(head, tens, val_rows)
        return dict(last)

    step = C.train_loop(
        step_fn=step_fn,
        params=head.parameters(),
        opt=opt,
        config=config,
        step=step,
        stop_at=stop_at,
        validate=validate,
        write=lambda step_now: write(step_now, last["val_mse"], last["val_mse_zero"]),
        out=out,
        history=history,
        t_start=t_start,
        desc=f"a2c2[{task}]",
        progress_bar=progress_bar,
        log=log,
        loss_name="mse",
    )
    val, val0 = last["val_mse"], last["val_mse_zero"]
    secs = time.perf_counter() - t_start
    log(f"train a2c2: done at step {step}, val mse {val} (no correction: {val0}), {secs:.1f} s -> {out}")
    return TrainResult(path=out, step=step, val_loss=val, history=tuple(history), seconds=secs)


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="base policy checkpoint whose chunks the head corrects")
    parser.add_argument("--demos", default=None, help="demonstrations directory [data/demos/<task of --base>]")
    parser.add_argument("--out", default=None, help="head file to write [next to --base: a2c2.pt]")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    parser.add_argument("--latent", action="store_true", help="feed the base latent to the head")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, A2C2Config)


def run(ns: argparse.Namespace) -> int:
    try:
        config = _config_from_ns(ns, A2C2Config)
        task = str(load_checkpoint(ns.base).get("task", ""))
        demos = load_episodes(ns.demos or f"data/demos/{task}")
        out = ns.out or str(Path(ns.base).with_name("a2c2.pt"))
        train_a2c2(demos, ns.base, config, out, resume=ns.resume, progress_bar=not ns.no_progress)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"train a2c2: {exc}")
        return 2
    return 0
