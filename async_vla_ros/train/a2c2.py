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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from async_vla_ros import names as N
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
    # the base latent of obs_t, or None: stored once per step (S, latent_dim), sample i's is
    # latent_steps[latent_row[i]] (up to H samples share a step; a VLA's 1,280 features per
    # sample would take ~8 GB for 3,200 episodes)
    latent_steps: np.ndarray | None
    latent_row: np.ndarray | None  # (M,) row of latent_steps
    horizon: int  # H

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def latent(self) -> np.ndarray | None:
        """(M, latent_dim) every sample's latent (a copy; training gathers per batch instead)."""
        return None if self.latent_steps is None else self.latent_steps[self.latent_row]

    def rows_of_episodes(self, ids: Sequence[int]) -> np.ndarray:
        return np.nonzero(np.isin(self.ep, np.asarray(ids)))[0]


def build_a2c2_dataset(
    policy: ChunkPolicy,
    episodes: Sequence[Episode],
    *,
    seed: int = 0,
    latent: bool = False,
    inputs: Callable[[int, Episode], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> A2C2Dataset:
    """Run ``policy`` (vanilla sampler) on every observation of every episode and pair each step
    t with the base action of every chunk that covers it (see module docstring).

    ``inputs(i, episode)``: what the policy is given for all of episode i's steps (default its
    state ``episode.obs``; a VLA: cameras, instruction and proprioception); the head's ``obs`` is
    ``episode.obs`` either way, its latent ``policy.latent`` of those inputs."""
    h = int(policy.horizon)
    if latent and not hasattr(policy, "latent"):
        raise ValueError("latent features need a policy with .latent(obs) (the flow backend)")
    cols: dict[str, list[np.ndarray]] = {n: [] for n in ("obs", "base", "k", "target", "ep", "t", "lat", "lat_row")}
    n_steps = 0
    for i, e in enumerate(episodes):
        x = e.obs if inputs is None else inputs(i, e)
        chunks = np.asarray(policy.infer(x, sampler="vanilla", seed=seed + i))  # (T, H, A)
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
            lat = np.asarray(policy.latent(x), dtype=np.float32)  # (T, L)
            cols["lat"].append(lat)
            cols["lat_row"].append(n_steps + t_v)
        n_steps += e.length
        if progress is not None:
            progress(i + 1, len(episodes))
    cat = {n: np.concatenate(v) for n, v in cols.items() if v}
    return A2C2Dataset(
        obs=cat["obs"],
        base=cat["base"],
        k=cat["k"].astype(np.int64),
        target=cat["target"],
        ep=cat["ep"].astype(np.int64),
        t=cat["t"].astype(np.int64),
        latent_steps=cat.get("lat"),
        latent_row=cat["lat_row"].astype(np.int64) if "lat_row" in cat else None,
        horizon=h,
    )


class _Tensors:
    def __init__(self, ds: A2C2Dataset, norm: Normalizer) -> None:
        self.obs = torch.as_tensor(norm.obs.normalize(ds.obs), dtype=torch.float32)
        self.base = torch.as_tensor(norm.action.normalize(ds.base), dtype=torch.float32)
        self.k = torch.as_tensor(ds.k)
        self.target = torch.as_tensor(ds.target / norm.action.scale, dtype=torch.float32)
        self.latent, self.latent_row = None, None
        if ds.latent_steps is not None:
            self.latent = torch.as_tensor(ds.latent_steps, dtype=torch.float32)
            self.latent_row = torch.as_tensor(ds.latent_row)

    def batch(self, rows: torch.Tensor):
        lat = None if self.latent is None else self.latent[self.latent_row[rows]]
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
    head_cfg = CorrectionConfig(
        obs_dim=policy.obs_dim,
        action_dim=policy.action_dim,
        horizon=policy.horizon,
        latent_dim=policy.latent_dim if config.latent else 0,
        hidden=config.hidden,
        depth=config.depth,
    )
    about = {
        "task": task,
        "demos": demos.describe(),
        "base_checkpoint": str(base_ckpt),
        "base_git": ckpt.get("train_config", {}).get("provenance", {}),
    }
    return fit_head(
        ds,
        norm,
        head_cfg,
        config,
        out,
        about=about,
        n_episodes=len(demos.episodes),
        resume_demos=demos if resume else None,
        progress_bar=progress_bar,
        stop_at=stop_at,
        log=log,
        t_start=t_start,
    )


def fit_head(
    ds: A2C2Dataset,
    norm: Normalizer,
    head_cfg: CorrectionConfig,
    config: A2C2Config,
    out: str | Path,
    *,
    about: dict[str, Any],
    n_episodes: int,
    resume_demos: DemoSet | None = None,
    progress_bar: bool = True,
    stop_at: int | None = None,
    log: Callable[[str], None] = print,
    t_start: float | None = None,
) -> TrainResult:
    """Train a correction head on a built dataset (whole episodes held out for validation) and
    write it to ``out``; ``about`` goes into its training record (task, demos, base)."""
    t_start = time.perf_counter() if t_start is None else t_start
    out = Path(out)
    task = str(about.get("task", ""))
    train_eps, val_eps = split_episodes(n_episodes, config.val_fraction, config.seed)
    train_rows, val_rows = ds.rows_of_episodes(train_eps), ds.rows_of_episodes(val_eps)
    tens = _Tensors(ds, norm)
    torch.manual_seed(config.seed)
    head = CorrectionHead(head_cfg, norm)
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    np_rng = np.random.default_rng(config.seed + 2)
    gen = torch.Generator().manual_seed(config.seed + 3)
    step, history = 0, []
    if resume_demos is not None:
        st = C.resume_state(out, KIND, A2C2Config, config, resume_demos)
        head.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        C.set_rng_state(st["rng"], np_rng, gen)
        step, history = int(st["step"]), list(st["history"])

    def record(step_now: int, val: float | None, val0: float | None) -> dict[str, Any]:
        return {
            "kind": KIND,
            **about,
            "config": config.to_dict(),
            "head": head_cfg.to_dict(),
            "horizon": head_cfg.horizon,
            "seed": config.seed,
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


# ---------------------------------------------------------------------- the VLA's head
def is_vla_spec(base: str) -> bool:
    """A policy spec of a LeRobot VLA (``vla``, ``vla:DIR``, ``lerobot:DIR``) rather than a checkpoint file."""
    return base == "vla" or base.startswith(("vla:", "lerobot:"))


def train_a2c2_vla(
    dirs: Sequence[str | Path],
    base: str,
    config: A2C2Config,
    out: str | Path,
    *,
    episodes_per_task: int | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """A2C2 head of a multi-task VLA (``base``: ``vla`` or ``lerobot:DIR``), trained on every
    task's demonstrations (one directory or more per task, as for ``train vla``).

    What the head reads is what the paper gives it, never the privileged state: the VLA's
    features of the latest observation (``latent``: its cameras and instruction through the VLM),
    the proprioception (q, gripper; qd blinded as for the VLA), the base action and its index k.
    The base chunks come from the VLA itself on each demonstration's frames, with a training
    paraphrase of the episode's task as the instruction."""
    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec
    from async_vla_ros.train.vla import ACTION_SCALE_MIN, BLIND_SCALE, OBS_SCALE_MIN, sample_instructions

    t_start = time.perf_counter()
    C.set_threads(config.num_threads)
    if not config.latent:
        raise ValueError("the VLA's head reads the VLA's features: latent must be on")
    rng = np.random.default_rng(config.seed + 11)
    episodes: list[Episode] = []
    tasks: list[str] = []
    sources = []
    for d in dirs:
        demos = load_episodes(d)
        eps = list(demos.episodes[: episodes_per_task or None])
        if not eps or not all(e.camera_images for e in eps):
            raise ValueError(f"{d}: the VLA's head needs demonstrations with camera frames (demos --images ...)")
        episodes += eps
        tasks += [demos.task] * len(eps)
        sources.append({**demos.describe(), "used_episodes": len(eps)})
    policy = load_policy_spec(base, BackendRequest(tasks[0], num_threads=config.num_threads))
    if not getattr(policy, "reads_proprio", False) or not getattr(policy, "latent_dim", 0):
        raise ValueError(f"{base}: not a proprioception-and-cameras VLA with features (latent)")
    C.set_threads(config.num_threads)
    cams = dict(policy.camera_hw)
    instructions = sample_instructions(tasks, rng)

    def inputs(i: int, e: Episode) -> dict[str, Any]:
        t = np.arange(e.length)
        images = {}
        for name in cams:
            src, back = N.frame_source(name)
            images[name] = e.camera_images[src][np.maximum(t - back, 0)]
        return {"state": e.obs[:, : N.N_PROPRIO], "images": images, "instruction": instructions[i]}

    proprio = [replace(e, obs=e.obs[:, : N.N_PROPRIO], camera_images=e.camera_images) for e in episodes]
    log(f"train a2c2 (VLA {base}): running the VLA on {len(proprio)} episodes of {sorted(set(tasks))}")
    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(proprio), unit="ep", desc="a2c2 data", leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    ds = build_a2c2_dataset(policy, proprio, seed=config.seed + 7, latent=True, inputs=inputs, progress=progress)
    if bar is not None:
        bar.close()
    log(f"train a2c2: dataset built in {time.perf_counter() - t_start:.1f} s ({len(ds)} samples)")
    C.set_threads(config.num_threads)
    obs = np.concatenate([e.obs for e in proprio])
    center, scale = obs.mean(0), np.maximum(obs.std(0), OBS_SCALE_MIN)
    center[7:14], scale[7:14] = 0.0, BLIND_SCALE  # qd blinded, as for the VLA (docs/training.md)
    acts = np.concatenate([e.actions for e in proprio])
    from async_vla_ros.policy.normalize import DimNorm

    norm = Normalizer(
        DimNorm("meanstd", center, scale),
        DimNorm("meanstd", acts.mean(0), np.maximum(acts.std(0), ACTION_SCALE_MIN)),
    )
    head_cfg = CorrectionConfig(
        obs_dim=N.N_PROPRIO,
        action_dim=int(policy.action_dim),
        horizon=int(policy.horizon),
        latent_dim=int(policy.latent_dim),
        hidden=config.hidden,
        depth=config.depth,
    )
    about = {"task": "", "tasks": sorted(set(tasks)), "demos": sources, "base_checkpoint": base, "inputs": "vla"}
    return fit_head(
        ds,
        norm,
        head_cfg,
        config,
        out,
        about=about,
        n_episodes=len(proprio),
        progress_bar=progress_bar,
        log=log,
        t_start=t_start,
    )


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        required=True,
        help="base policy whose chunks the head corrects: a checkpoint file, or a VLA (vla, lerobot:DIR) trained "
        "on several tasks",
    )
    parser.add_argument(
        "--demos",
        nargs="+",
        default=None,
        help="demonstrations directory [data/demos/<task of --base>]; a VLA: directories with cameras, at least one per "
        "task (several of one task add up, as for train vla)",
    )
    parser.add_argument(
        "--episodes-per-task", type=int, default=0, help="a VLA: use the first N episodes of each directory (0: all)"
    )
    parser.add_argument("--out", default=None, help="head file to write [next to --base: a2c2.pt]")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    parser.add_argument("--latent", action="store_true", help="feed the base latent to the head")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, A2C2Config)


def run(ns: argparse.Namespace) -> int:
    try:
        config = _config_from_ns(ns, A2C2Config)
        if is_vla_spec(ns.base):
            if not ns.demos:
                raise ValueError("a VLA's head needs --demos: one directory per task, with cameras")
            if ns.resume:
                raise ValueError("--resume is for a checkpoint's head; rerun the VLA's head from the start")
            out = ns.out or "vla_a2c2.pt"
            train_a2c2_vla(
                ns.demos,
                ns.base,
                replace(config, latent=True),
                out,
                episodes_per_task=ns.episodes_per_task or None,
                progress_bar=not ns.no_progress,
            )
            return 0
        if ns.demos and len(ns.demos) > 1:
            raise ValueError("a checkpoint's head takes one --demos directory (its task's)")
        task = str(load_checkpoint(ns.base).get("task", ""))
        demos = load_episodes(ns.demos[0] if ns.demos else f"data/demos/{task}")
        out = ns.out or str(Path(ns.base).with_name("a2c2.pt"))
        train_a2c2(demos, ns.base, config, out, resume=ns.resume, progress_bar=not ns.no_progress)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"train a2c2: {exc}")
        return 2
    return 0
