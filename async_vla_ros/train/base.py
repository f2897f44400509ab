"""Base policy training: behaviour cloning with conditional flow matching.

``async-vla-ros train base --task T --demos DIR --out CKPT``

Samples are windows ``(obs_t, actions[t : t + H])`` of the demonstrations (see
:mod:`async_vla_ros.train.data`), normalised with statistics of the training episodes. The loss is
:func:`async_vla_ros.policy.networks.flow_matching_loss` (tau = 0 noise, tau = 1 data, target
``a - x0``). AdamW, linear warm-up then cosine decay, gradient clipping, an EMA of the weights
(the EMA weights are what the checkpoint holds and what validation measures). Validation: the
flow-matching loss on held-out episodes with a fixed noise/tau draw, so values are comparable
across evaluations. Checkpoints: :func:`async_vla_ros.policy.base.save_checkpoint` with the full
config in ``train_config`` plus a ``.trainstate`` resume file (see :mod:`.common`).

State observations by default; ``--encoder image`` trains the image+state network on the
camera frames stored with the demonstrations (``async-vla-ros demos T --images``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from async_vla_ros.policy.base import SamplerSettings, save_checkpoint
from async_vla_ros.policy.networks import FlowNetConfig, build_network, count_params, flow_matching_loss
from async_vla_ros.policy.normalize import DimNorm, Normalizer
from async_vla_ros.train import common as C
from async_vla_ros.train.data import ChunkWindows, DemoSet, load_episodes, split_episodes

KIND = "base"


@dataclass(frozen=True)
class BaseTrainConfig(C.DictConfig):
    """Behaviour-cloning run. Network defaults are the shipped size (~0.16M parameters)."""

    horizon: int = 8  # H, actions per chunk
    steps: int = 4000  # optimiser steps in total (a resumed run continues to this number)
    batch_size: int = 256  # windows per step
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup: int = 200  # linear warm-up steps
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float = 0.999  # EMA of the weights (checkpointed and validated)
    val_fraction: float = 0.1  # fraction of episodes held out for validation
    val_every: int = 250  # steps between validation passes
    val_max_windows: int = 2048  # cap on validation windows per pass
    ckpt_every: int = 1000  # steps between checkpoints (and at the end)
    weak_at: int = 0  # also save the EMA weights of this step as <out>_weak.pt (BID's weak policy); 0: no
    seed: int = 0  # seeds the split, initialisation, batches and noise
    num_threads: int | None = 1  # torch threads (None: torch default)
    obs_norm: str = "meanstd"  # observation normalisation mode
    action_norm: str = "meanstd"  # action normalisation mode
    ignore_obs: tuple[str, ...] = ("qd",)  # observation fields the network must not use (see ignore_fields)
    obs_scale_min: float = 1e-2  # floor of the observation scale (robot units), see floor_scales
    const_action_scale: float = 1e-3  # scale of action dims that never vary in the demos (robot units)
    # network (FlowNetConfig fields)
    encoder: str = "state"  # "state" or "image"
    hidden: int = 64  # mixer channel width C
    channel_hidden: int = 128  # channel-MLP hidden width
    token_hidden: int = 32  # token-MLP hidden width
    depth: int = 3  # mixer blocks
    obs_hidden: int = 128  # state-encoder hidden width

    def __post_init__(self) -> None:
        for name in (
            "horizon",
            "steps",
            "batch_size",
            "warmup",
            "val_every",
            "val_max_windows",
            "ckpt_every",
            "hidden",
            "channel_hidden",
            "token_hidden",
            "depth",
            "obs_hidden",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"BaseTrainConfig.{name} must be an int >= 1, got {v!r}")
        for name in ("lr", "grad_clip", "obs_scale_min", "const_action_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"BaseTrainConfig.{name} must be > 0, got {v!r}")
        if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"BaseTrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"BaseTrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"BaseTrainConfig.val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"BaseTrainConfig.seed must be an int, got {self.seed!r}")
        if isinstance(self.weak_at, bool) or not isinstance(self.weak_at, int) or not 0 <= self.weak_at < self.steps:
            raise ValueError(f"BaseTrainConfig.weak_at must be an int in [0, steps), got {self.weak_at!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"BaseTrainConfig.num_threads must be None or an int >= 1, got {self.num_threads!r}")
        for name in ("obs_norm", "action_norm"):
            if getattr(self, name) not in ("meanstd", "minmax", "identity"):
                raise ValueError(f"BaseTrainConfig.{name} must be meanstd, minmax or identity")
        if self.encoder not in ("state", "image"):
            raise ValueError(f"BaseTrainConfig.encoder must be 'state' or 'image', got {self.encoder!r}")
        if isinstance(self.ignore_obs, str):
            object.__setattr__(self, "ignore_obs", tuple(x for x in self.ignore_obs.split(",") if x))
        object.__setattr__(self, "ignore_obs", tuple(str(x) for x in self.ignore_obs))

    def network_config(self, obs_dim: int, action_dim: int, image_size: tuple[int, int] | None) -> FlowNetConfig:
        return FlowNetConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            horizon=self.horizon,
            hidden=self.hidden,
            channel_hidden=self.channel_hidden,
            token_hidden=self.token_hidden,
            depth=self.depth,
            obs_hidden=self.obs_hidden,
            encoder=self.encoder,
            image_size=image_size if self.encoder == "image" else None,
        )


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a training run."""

    path: Path  # the final checkpoint
    step: int  # steps done in total
    val_loss: float | None  # last validation loss (None without validation episodes)
    history: tuple[dict[str, Any], ...]  # per validation pass: step, train_loss, val_loss, seconds
    seconds: float  # wall time of this invocation


IGNORED_SCALE = 1e6


def floor_scales(norm: Normalizer, actions: np.ndarray, obs_scale_min: float, const_action_scale: float) -> Normalizer:
    """Make the normaliser safe for closed-loop use.

    * Observation scales are floored at ``obs_scale_min``: a feature that barely varies in the
      demonstrations (e.g. the gripper width on tasks that never use the gripper: std ~1e-5 m)
      would otherwise turn a harmless 5 mm deviation at run time into a 500-sigma input, and the
      policy's output collapses (measured: the first ``track`` policies failed every episode).
    * Action dimensions that are constant in the demonstrations (the gripper on ``track``) get
      scale ``const_action_scale`` instead of 1, so sampling noise in that dimension stays tiny in
      robot units instead of opening the gripper by centimetres.

    ``actions``: (N, ..., A) training action chunks.
    """
    o_scale = np.maximum(norm.obs.scale, obs_scale_min)
    spread = np.ptp(np.asarray(actions).reshape(-1, norm.action.dim), axis=0)
    a_scale = np.where(spread < 1e-9, const_action_scale, norm.action.scale)
    return Normalizer(
        DimNorm(norm.obs.mode, norm.obs.center, o_scale), DimNorm(norm.action.mode, norm.action.center, a_scale)
    )


def ignore_fields(norm: Normalizer, obs_fields, names) -> tuple[Normalizer, list[int]]:
    """Blind the network to observation fields ``names``: their normaliser becomes centre 0, scale
    1e6, so the normalised input is ~0 for any physical value while the checkpoint still takes
    the full observation vector (same ``obs_dim`` as the environment).

    Why: the scripted experts' actions do not depend on the joint velocities ``qd``, but with noisy
    demonstrations ``qd`` carries the last step's execution noise, which a small network latches
    onto; under its own (noise-free) control ``qd`` is then out of distribution and closed-loop
    rollouts diverge (measured on ``track``, see docs/training.md). Returns the new normaliser and
    the blinded dimensions.
    """
    if not names:
        return norm, []
    if not obs_fields:
        raise ValueError(f"ignore_obs={list(names)} needs the demonstrations' obs_fields metadata")
    slices, i = {}, 0
    for name, n in obs_fields:
        slices[str(name)] = range(i, i + int(n))
        i += int(n)
    missing = [n for n in names if n not in slices]
    if missing:
        raise ValueError(f"ignore_obs: unknown observation field(s) {missing}; fields: {list(slices)}")
    dims = sorted(d for n in names for d in slices[n])
    center, scale = norm.obs.center.copy(), norm.obs.scale.copy()
    center[dims], scale[dims] = 0.0, IGNORED_SCALE
    return Normalizer(DimNorm(norm.obs.mode, center, scale), norm.action), dims


class _Batcher:
    """Tensors of the windows and batch assembly (state or image+state inputs)."""

    def __init__(self, windows: ChunkWindows, norm: Normalizer, encoder: str) -> None:
        self.obs = torch.as_tensor(norm.obs.normalize(windows.obs), dtype=torch.float32)
        self.chunks = torch.as_tensor(norm.action.normalize(windows.chunks), dtype=torch.float32)
        self.images = None
        if encoder == "image":
            if windows.images is None:
                raise ValueError("--encoder image needs demonstrations recorded with images (`demos --images`)")
            self.images = torch.as_tensor(windows.images)  # uint8 (N, h, w, ch), converted per batch

    def obs_input(self, rows: torch.Tensor):
        if self.images is None:
            return self.obs[rows]
        img = self.images[rows].permute(0, 3, 1, 2).float() / 255.0
        return {"state": self.obs[rows], "image": img.contiguous()}


def _validate(net: torch.nn.Module, batcher: _Batcher, rows: np.ndarray, seed: int, batch: int = 512) -> float:
    """Mean flow-matching loss over ``rows`` with noise/tau drawn from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    net.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            r = torch.as_tensor(rows[i : i + batch])
            loss = flow_matching_loss(net, batcher.obs_input(r), batcher.chunks[r], generator=gen)
            total += float(loss) * len(r)
            count += len(r)
    net.train()
    return total / max(count, 1)


def train_base(
    demos: DemoSet,
    config: BaseTrainConfig,
    out: str | Path,
    *,
    task: str | None = None,
    resume: bool = False,
    progress_bar: bool = True,
    stop_at: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume) a base flow policy on ``demos``; writes ``out`` (+ ``out.trainstate``).

    ``stop_at``: end this invocation at that step (checkpoint written) although the schedule runs
    to ``config.steps``; ``resume=True`` later continues exactly where it stopped.
    """
    t_start = time.perf_counter()
    out = Path(out)
    task = task if task is not None else demos.task
    C.set_threads(config.num_threads)
    windows = ChunkWindows(demos.episodes, config.horizon)
    train_eps, val_eps = split_episodes(len(demos.episodes), config.val_fraction, config.seed)
    train_rows = windows.rows_of_episodes(train_eps)
    val_rows = windows.rows_of_episodes(val_eps)
    if len(val_rows) > config.val_max_windows:
        val_rows = np.sort(
            np.random.default_rng(config.seed + 1).choice(val_rows, config.val_max_windows, replace=False)
        )
    norm = Normalizer.from_data(
        windows.obs[train_rows], windows.chunks[train_rows], config.obs_norm, config.action_norm
    )
    norm = floor_scales(norm, windows.chunks[train_rows], config.obs_scale_min, config.const_action_scale)
    norm, ignored_dims = ignore_fields(norm, demos.metadata.get("obs_fields"), config.ignore_obs)
    image_size = None if windows.images is None else tuple(int(v) for v in windows.images.shape[1:3])
    net_cfg = config.network_config(windows.obs_dim, windows.action_dim, image_size)
    torch.manual_seed(config.seed)
    net = build_network(net_cfg)
    net.train()
    ema = C.EMA(net, config.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    np_rng = np.random.default_rng(config.seed + 2)
    gen = torch.Generator().manual_seed(config.seed + 3)
    step, history = 0, []
    if resume:
        st = C.resume_state(out, KIND, BaseTrainConfig, config, demos)
        net.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        C.set_rng_state(st["rng"], np_rng, gen)
        step, history = int(st["step"]), list(st["history"])
        if step >= config.steps:
            log(f"resume: already at step {step} >= steps {config.steps}; nothing to do")
    batcher = _Batcher(windows, norm, config.encoder)
    eval_net = build_network(net_cfg)

    def record() -> dict[str, Any]:
        return {
            "kind": KIND,
            "task": task,
            "config": config.to_dict(),
            "network": net_cfg.to_dict(),
            "horizon": config.horizon,
            "seed": config.seed,
            "demos": demos.describe(),
            "obs_fields": demos.metadata.get("obs_fields"),
            "action_fields": demos.metadata.get("action_fields"),
            "dt": demos.metadata.get("dt"),
            "ignored_obs_dims": ignored_dims,
            "train_episodes": int(len(train_eps)),
            "val_episodes": int(len(val_eps)),
            "num_params": count_params(net),
            "provenance": C.provenance(),
        }

    def write(step_now: int, val_loss: float | None, weak: bool = False) -> Path:
        eval_net.load_state_dict(ema.state_dict())
        rec = record()
        rec.update(step=step_now, val_loss=val_loss, weak_snapshot=weak)
        if weak:  # BID's weak policy: the same run, earlier
            return save_checkpoint(
                weak_path(out),
                eval_net,
                norm,
                task=task,
                settings=SamplerSettings(),
                train_config=rec,
                extra={"history": history},
            )
        path = save_checkpoint(
            out, eval_net, norm, task=task, settings=SamplerSettings(), train_config=rec, extra={"history": history}
        )
        C.save_trainstate(
            out,
            kind=KIND,
            step=step_now,
            model_state=net.state_dict(),
            ema_state=ema.state_dict(),
            optimizer=opt,
            rng=C.rng_state(np_rng, gen),
            config=rec,
            history=history,
        )
        return path

    log(
        f"train base: task={task!r} windows={len(train_rows)} train / {len(val_rows)} val, "
        f"{count_params(net)} params, {config.steps} steps, batch {config.batch_size}"
    )
    last = {"val_loss": history[-1]["val_loss"] if history else None}

    def step_fn(_step: int):
        rows = torch.as_tensor(train_rows[np_rng.integers(0, len(train_rows), config.batch_size)])
        return flow_matching_loss(net, batcher.obs_input(rows), batcher.chunks[rows], generator=gen), {}

    def validate() -> dict[str, Any]:
        if len(val_rows):
            eval_net.load_state_dict(ema.state_dict())
            last["val_loss"] = _validate(eval_net, batcher, val_rows, config.seed + 4)
        return dict(last)

    def snapshot_weak(step_now: int) -> None:
        if config.weak_at and step_now == config.weak_at:
            write(step_now, last["val_loss"], weak=True)

    step = C.train_loop(
        step_fn=step_fn,
        params=net.parameters(),
        opt=opt,
        config=config,
        step=step,
        stop_at=stop_at,
        validate=validate,
        write=lambda step_now: write(step_now, last["val_loss"]),
        out=out,
        history=history,
        t_start=t_start,
        desc=f"base[{task}]",
        progress_bar=progress_bar,
        log=log,
        after_step=lambda _s: ema.update(net),
        on_step_end=snapshot_weak,
    )
    val_loss = last["val_loss"]
    secs = time.perf_counter() - t_start
    log(f"train base: done at step {step}, val loss {val_loss}, {secs:.1f} s -> {out}")
    return TrainResult(path=out, step=step, val_loss=val_loss, history=tuple(history), seconds=secs)


def weak_path(out: str | Path) -> Path:
    """Where the weak snapshot of checkpoint ``out`` goes: ``<stem>_weak<suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_weak{out.suffix}")


# ---------------------------------------------------------------------- CLI
def _config_from_ns(ns: argparse.Namespace, cls, skip: tuple[str, ...] = ()) -> Any:
    vals = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        v = getattr(ns, f.name, None)
        if v is not None:
            vals[f.name] = v
    return cls(**vals)


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per config field (defaults from the dataclass, shown in --help)."""
    g = parser.add_argument_group(f"{cls.__name__} (defaults in brackets)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            continue  # booleans get explicit switches from the command
        if isinstance(default, tuple):  # comma-separated list ("" for none)
            g.add_argument(flag, dest=f.name, type=str, default=None, help=f"[{','.join(default)}] comma-separated")
            continue
        typ = type(default) if default is not None else int
        g.add_argument(flag, dest=f.name, type=typ, default=None, help=f"[{default}]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name (track, intercept, bifurcate, pick_moving)")
    parser.add_argument("--demos", default=None, help="demonstrations directory [data/demos/<task>]")
    parser.add_argument("--out", default=None, help="checkpoint to write [runs/train/<task>/base.pt]")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --out (its .trainstate)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, BaseTrainConfig)


def run(ns: argparse.Namespace) -> int:
    try:
        config = _config_from_ns(ns, BaseTrainConfig)
        demos = load_episodes(ns.demos or f"data/demos/{ns.task}")
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"train base: {exc}")
        return 2
    if demos.task and demos.task != ns.task:
        print(f"train base: the demonstrations are of task {demos.task!r}, not {ns.task!r}")
        return 2
    out = ns.out or f"runs/train/{ns.task}/base.pt"
    try:
        train_base(demos, config, out, task=ns.task, resume=ns.resume, progress_bar=not ns.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"train base: {exc}")
        return 2
    return 0
