"""REMAC fine-tuning (Wang et al., ICLR 2026, arXiv 2601.20130): LoRA on a base flow policy.

``async-vla-ros train remac --base BASE_CKPT --demos DIR --out CKPT [--variant authors|clean]``

Two variants (differences listed in docs/remac.md):

* ``authors`` (default, checkpoint kind ``remac``): REMAC as the authors' code runs it
  (hatchetProject/REMAC, ``src_lora``), re-implemented: see :func:`train_remac_authors`.
* ``clean`` (kind ``remac_clean``): our earlier reading of the paper, below.

The ``clean`` variant (per training sample, window ``(obs_t, A = actions[t : t + H])``):

1. **Prefix masking.** A delay ``d ~ U{0..d_max}``. The first ``d`` slots of the noisy chunk are
   overwritten with a conditioning prefix ``P[:d]`` written *clean* (not noised), exactly what
   :func:`async_vla_ros.policy.samplers.sample_prefix` (``mode="clean"``) does before every
   velocity evaluation at inference: ``x_in = where(k < d, P, (1 - tau) x0 + tau A)``. The
   flow-matching loss is taken only on slots ``k >= d`` (``m_d = 1[k >= d]``); targets of the
   prefix slots never enter the loss.
2. **Self-conditioned curriculum.** ``P`` comes from the ground truth (``P[:d] = A[:d]``) with
   probability ``sigma``, else from the frozen base policy's own sampled chunk for the same
   episode at the step of the previous request: at deployment a request at step t carries the
   plan made from the observation at ``t - s`` (``s = max(d, s_min)``, the execution horizon), so
   ``P[i] = base_chunk(obs_{t-s})[s + i]`` (index clipped to H - 1 like the scheduler's padding).
   Where ``t - s < 0`` (episode start) the ground truth is used. ``sigma`` falls linearly from 1 to
   0 over the first ``curriculum_frac`` of the steps and stays 0 after. Base chunks are sampled
   once before training (``base_samples`` draws per observation, vanilla sampler, the base
   checkpoint's step count) -- the base is frozen, so they do not change during training.
3. **Residual alignment.** With ``v_on`` the LoRA model's velocity and ``v_off`` the base's
   (adapters disabled, no gradient) at the same input, ``u = A - x0`` the target, ``r = v_on -
   v_off`` the LoRA residual and ``r* = u - v_off`` the residual the base would need, on the
   unmasked slots: ``L_m = mean ||r||^2`` (keeps the fine-tuned field close to the pretrained
   one) and ``L_delta = mean_b (1 - cos(r_b, r*_b))`` (points the residual where the target lies).
   Total ``L = L_fm + lambda_m L_m + lambda_delta L_delta`` (0.01 each by default). The paper's
   exact equation could not be retrieved offline; this is our reading of "a residual alignment
   loss between the LoRA-on and LoRA-off velocity estimates and the target" and is documented as
   such in docs/training.md.

Deployment: the adapters are merged into the weights (:func:`save_checkpoint` merges a peft
model), so the REMAC checkpoint is a plain flow checkpoint with zero extra latency; it runs with
the ``prefix`` sampler (``prefix_mode="clean"``, stored in its sampler settings).

Ablations: ``--no-mask`` (loss on all H slots), ``--no-curriculum`` (sigma = 1: ground-truth
prefixes only), ``--no-align`` (lambda_m = lambda_delta = 0).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.base import SamplerSettings, load_checkpoint, save_checkpoint
from async_vla_ros.policy.lora import adapters_disabled, apply_lora, count_trainable_params
from async_vla_ros.policy.networks import FlowNetConfig, build_network
from async_vla_ros.policy.normalize import Normalizer
from async_vla_ros.train import common as C
from async_vla_ros.train.base import TrainResult, _Batcher, _config_from_ns, add_config_arguments
from async_vla_ros.train.data import ChunkWindows, DemoSet, load_episodes, split_episodes

KIND = "remac"
KIND_CLEAN = "remac_clean"
VARIANTS = ("authors", "clean")


@dataclass(frozen=True)
class RemacConfig(C.DictConfig):
    """REMAC fine-tuning run."""

    steps: int = 2000  # optimiser steps in total
    batch_size: int = 256  # windows per step
    lr: float = 2e-3  # peak learning rate of the LoRA parameters (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup: int = 100  # linear warm-up steps
    grad_clip: float = 1.0  # max global gradient norm
    d_max: int = 4  # delays d ~ U{0..d_max} (in control steps)
    s_min: int = 1  # execution horizon floor: the previous request was s = max(d, s_min) steps earlier
    curriculum_frac: float = 0.8  # sigma anneals 1 -> 0 over this fraction of the steps
    lambda_m: float = 0.01  # weight of L_m (residual magnitude)
    lambda_delta: float = 0.01  # weight of L_delta (residual direction alignment)
    lora_rank: int = 8  # LoRA rank r (all Linear layers)
    lora_alpha: float = 16.0  # LoRA alpha (scale alpha / r)
    mask: bool = True  # prefix masking of the loss (ablation: False)
    curriculum: bool = True  # self-conditioned curriculum (ablation: False -> sigma = 1)
    align: bool = True  # residual alignment loss (ablation: False -> lambdas 0)
    base_samples: int = 2  # base chunks precomputed per observation for self-conditioning
    val_fraction: float = 0.1  # fraction of episodes held out
    val_every: int = 250  # steps between validation passes
    val_max_windows: int = 2048  # cap on validation windows per pass
    ckpt_every: int = 1000  # steps between checkpoints
    seed: int = 0  # seeds split, LoRA init, batches, delays, noise
    num_threads: int | None = 1  # torch threads

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "warmup",
            "lora_rank",
            "base_samples",
            "val_every",
            "val_max_windows",
            "ckpt_every",
            "s_min",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RemacConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.d_max, bool) or not isinstance(self.d_max, int) or self.d_max < 0:
            raise ValueError(f"RemacConfig.d_max must be an int >= 0, got {self.d_max!r}")
        for name in ("lr", "grad_clip", "lora_alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"RemacConfig.{name} must be > 0, got {v!r}")
        for name in ("weight_decay", "lambda_m", "lambda_delta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"RemacConfig.{name} must be >= 0, got {v!r}")
        if not 0.0 < self.curriculum_frac <= 1.0:
            raise ValueError(f"RemacConfig.curriculum_frac must lie in (0, 1], got {self.curriculum_frac!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"RemacConfig.val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"RemacConfig.seed must be an int, got {self.seed!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"RemacConfig.num_threads must be None or an int >= 1, got {self.num_threads!r}")

    def sigma(self, step: int) -> float:
        """Probability of a ground-truth prefix at ``step`` (1 without the curriculum)."""
        if not self.curriculum:
            return 1.0
        return float(max(0.0, 1.0 - step / (self.curriculum_frac * self.steps)))

    @property
    def effective_lambdas(self) -> tuple[float, float]:
        return (self.lambda_m, self.lambda_delta) if self.align else (0.0, 0.0)


@dataclass(frozen=True)
class RemacAuthorsConfig(C.DictConfig):
    """REMAC as its authors train it (hatchetProject/REMAC ``async_loss`` + ``train_flow_lora``).

    Model and loss values are the authors' defaults. The step budget is ours (the authors run 32
    epochs of batch 512 over far larger Kinetix data sets); their per-epoch schedules run here
    over ``epochs`` equal slices of ``steps``. Their learning rate is tuned per task group
    (1e-5 .. 3e-4, constant, no warm-up) and their EMA decay is 0.999. In our 2000 steps that does
    not undo the random adapter initialisation (measured on track with lr 3e-4, EMA 0.999: masked
    validation MSE 3.45 at step 500 against 0.18 for the backbone), so the defaults here are a
    constant 2e-3 (the ``remac_clean`` peak rate) and EMA 0.99.
    """

    steps: int = 2000  # optimiser steps in total
    batch_size: int = 256  # windows per step
    lr: float = 2e-3  # constant learning rate of the trainable parameters (AdamW); see the class doc
    weight_decay: float = 1e-2  # AdamW weight decay (authors: 1e-2)
    grad_clip: float = 10.0  # max global gradient norm (authors: 10)
    d_max: int = 4  # delays d in {0..d_max}
    epochs: int = 32  # schedule slices (the authors' epochs)
    mix_start: float = 1.0  # probability of the ground truth in the curriculum mix, first epoch
    mix_end: float = 0.0  # ... annealed exponentially towards this value
    mix_k: float = 5.0  # steepness: p = end + (start - end) * exp(-k * epoch / epochs)
    gamma_flow: float = 0.01  # weight of the masked Charbonnier flow loss and of the delta loss
    gamma_keep: float = 0.01  # weight of the prefix consistency loss
    lora_rank: int = 4  # adapter rank (authors: 4)
    lora_alpha: float = 8.0  # adapter scale alpha / rank (authors: 8)
    lora_dropout: float = 0.1  # dropout on the rank-r code (authors: 0.1)
    ema: float = 0.99  # EMA of the trainable weights, saved (authors: 0.999 over a far longer run)
    base_samples: int = 2  # base chunks precomputed per observation (the frozen base's predictions)
    mask: bool = True  # ablation False: mask all ones (loss on every row, no prefix conditioning)
    curriculum: bool = True  # ablation False: ground truth only in x_tau (p = 1)
    delta: bool = True  # ablation False: no delta loss
    delay_curriculum: bool = True  # d ~ U{floor(d_max (1 - epoch / epochs))..d_max} (their setting 1)
    val_fraction: float = 0.1  # fraction of episodes held out
    val_every: int = 250  # steps between validation passes
    val_max_windows: int = 2048  # cap on validation windows per pass
    ckpt_every: int = 1000  # steps between checkpoints
    seed: int = 0
    num_threads: int | None = 1  # torch threads

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "epochs", "lora_rank", "base_samples", "val_every", "ckpt_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RemacAuthorsConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.d_max, bool) or not isinstance(self.d_max, int) or self.d_max < 0:
            raise ValueError(f"RemacAuthorsConfig.d_max must be an int >= 0, got {self.d_max!r}")
        for name in ("lr", "grad_clip", "lora_alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"RemacAuthorsConfig.{name} must be > 0, got {v!r}")
        for name in ("weight_decay", "gamma_flow", "gamma_keep", "mix_k"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"RemacAuthorsConfig.{name} must be >= 0, got {v!r}")
        for name in ("mix_start", "mix_end", "lora_dropout", "val_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0 or (name in ("lora_dropout", "val_fraction") and v >= 1.0):
                raise ValueError(f"RemacAuthorsConfig.{name} must lie in [0, 1], got {v!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"RemacAuthorsConfig.ema must lie in [0, 1), got {self.ema!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"RemacAuthorsConfig.num_threads must be None or an int >= 1, got {self.num_threads!r}")

    def epoch(self, step: int) -> int:
        return min(self.epochs - 1, step * self.epochs // self.steps)

    def p_ground_truth(self, step: int) -> float:
        """Curriculum: probability that a sample's x_tau interpolates towards the ground truth."""
        if not self.curriculum:
            return 1.0
        t = self.epoch(step) / self.epochs
        return float(np.clip(self.mix_end + (self.mix_start - self.mix_end) * np.exp(-self.mix_k * t), 0.0, 1.0))

    def d_min(self, step: int) -> int:
        """Smallest delay drawn at ``step`` (the delay curriculum starts at d_max only)."""
        if not self.delay_curriculum:
            return 0
        return int(self.d_max * (1.0 - self.epoch(step) / self.epochs))


def charbonnier(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smooth L1: ``sqrt(x^2 + eps^2)``."""
    return torch.sqrt(x * x + eps * eps)


def remac_authors_loss(
    model: nn.Module,
    obs,
    actions: torch.Tensor,
    base_pred: torch.Tensor,
    d: torch.Tensor,
    p_gt: float,
    *,
    mask: bool = True,
    gamma_flow: float = 0.01,
    gamma_keep: float = 0.01,
    delta: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The authors' REMAC loss for one batch (normalised action space).

    ``model``: a :class:`~async_vla_ros.policy.networks.FlowMixerNet` with mask-gated adapters
    (``model(obs, x, tau, mask=m, adapters=...)``); ``actions``: (B, H, A) ground truth;
    ``base_pred``: (B, H, A) the frozen base's prediction for the same observation; ``d``: (B,).

    * ``tau ~ U[0, 1]``, noise ``x0``; per sample the interpolation end point is the ground truth
      if ``tau < p_gt`` else the base prediction (the authors draw this Bernoulli with the same
      random key as tau, which makes it exactly ``1[tau < p]``); ``x_tau = (1 - tau) x0 + tau E``;
      the target is always ``u = A - x0``. No prefix is written into ``x_tau``.
    * ``m = 1[k >= d]`` (all ones with ``mask=False``) conditions the adapters.
    * ``L = gamma_flow * (L_charb + L_delta) + gamma_keep * L_consist`` with, per sample,
      ``L_charb = sum_{k,a} m charb(u - v) / max(1, sum_k m)``,
      ``L_delta = sum m ((u - v_off) - (v - v_off))^2 / max(1, sum_k m)`` (algebraically the masked
      squared flow error; ``v_off`` is the backbone with adapters off) and
      ``L_consist = mean((v - v_off)^2 (1 - m))`` over all elements.
    """
    if actions.ndim != 3 or base_pred.shape != actions.shape:
        raise ValueError(
            f"actions and base_pred must both be (B, H, A), got {tuple(actions.shape)} and {tuple(base_pred.shape)}"
        )
    b, h, _ = actions.shape
    x0 = torch.randn(actions.shape, generator=generator, dtype=actions.dtype, device=actions.device)
    tau = torch.rand((b,), generator=generator, dtype=actions.dtype, device=actions.device)
    gt = (tau < p_gt).to(actions.dtype)[:, None, None]
    end = gt * actions + (1.0 - gt) * base_pred
    t = tau[:, None, None]
    x_tau = (1.0 - t) * x0 + t * end
    u = actions - x0
    if mask:
        m = (~S.frozen_mask(d, b, h, device=actions.device)).to(actions.dtype)  # (B, H)
    else:
        m = torch.ones((b, h), dtype=actions.dtype, device=actions.device)
    v_on = model(obs, x_tau, tau, mask=m, adapters=True)
    with torch.no_grad():
        v_off = model(obs, x_tau, tau, mask=m, adapters=False)
    m3 = m.unsqueeze(-1)
    rows = m.sum(dim=1).clamp_min(1.0)
    l_charb = ((charbonnier(u - v_on) * m3).sum(dim=(1, 2)) / rows).mean()
    l_delta = ((((u - v_off) * m3 - (v_on - v_off) * m3) ** 2).sum(dim=(1, 2)) / rows).mean()
    l_consist = (((v_on - v_off) ** 2) * (1.0 - m3)).mean()
    total = gamma_flow * l_charb + gamma_keep * l_consist
    if delta:
        total = total + gamma_flow * l_delta
    parts = {
        "charb": float(l_charb.detach()),
        "delta": float(l_delta.detach()),
        "consist": float(l_consist.detach()),
        "gt_frac": float(gt.mean()),
    }
    return total, parts


# ---------------------------------------------------------------------- the loss
def remac_loss(
    model: nn.Module,
    obs,
    actions: torch.Tensor,
    prefix: torch.Tensor,
    d: torch.Tensor,
    *,
    mask: bool = True,
    lambda_m: float = 0.01,
    lambda_delta: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REMAC training loss for one batch (normalised action space).

    ``model``: a flow network ``model(obs, x, tau) -> v`` (peft-wrapped for the alignment terms;
    for a plain module LoRA-off == LoRA-on and the residual terms vanish); ``obs``: network input
    for B rows; ``actions``: (B, H, A) target chunks; ``prefix``: (B, H, A) conditioning prefix
    (rows ``k < d[b]`` are read); ``d``: (B,) ints in [0, H]. Returns the scalar loss and its parts
    ``{"fm", "m", "delta"}`` as floats.
    """
    if actions.ndim != 3 or prefix.shape != actions.shape:
        raise ValueError(
            f"actions and prefix must both be (B, H, A), got {tuple(actions.shape)} and {tuple(prefix.shape)}"
        )
    b, h, _ = actions.shape
    frozen = S.frozen_mask(d, b, h, device=actions.device)  # (B, H) True on the prefix slots
    x0 = torch.randn(actions.shape, generator=generator, dtype=actions.dtype, device=actions.device)
    tau = torch.rand((b,), generator=generator, dtype=actions.dtype, device=actions.device)
    t = tau[:, None, None]
    x_tau = (1.0 - t) * x0 + t * actions
    x_in = torch.where(frozen.unsqueeze(-1), prefix, x_tau)  # == sample_prefix(mode="clean") input
    u = actions - x0
    v_on = model(obs, x_in, tau)
    w = (~frozen if mask else torch.ones_like(frozen)).to(actions.dtype).unsqueeze(-1).expand_as(u)
    denom = w.sum().clamp_min(1.0)
    l_fm = (((v_on - u) ** 2) * w).sum() / denom
    parts = {"fm": float(l_fm.detach())}
    total = l_fm
    if lambda_m > 0 or lambda_delta > 0:
        with torch.no_grad(), adapters_disabled(model):
            v_off = model(obs, x_in, tau)
        r = v_on - v_off
        r_star = u - v_off
        l_m = ((r**2) * w).sum() / denom
        rw, sw = (r * w).reshape(b, -1), (r_star * w).reshape(b, -1)
        valid = w.reshape(b, -1).sum(1) > 0
        cos = nn.functional.cosine_similarity(rw, sw, dim=1, eps=1e-8)
        l_delta = ((1.0 - cos) * valid).sum() / valid.sum().clamp_min(1)
        total = total + lambda_m * l_m + lambda_delta * l_delta
        parts.update(m=float(l_m.detach()), delta=float(l_delta.detach()))
    else:
        parts.update(m=0.0, delta=0.0)
    return total, parts


# ---------------------------------------------------------------------- prefixes
@torch.no_grad()
def sample_base_chunks(
    net: nn.Module,
    obs_input: Callable[[torch.Tensor], Any],
    n_rows: int,
    horizon: int,
    action_dim: int,
    n_steps: int,
    samples: int,
    seed: int,
    batch: int = 1024,
) -> torch.Tensor:
    """The frozen base policy's own chunks (normalised): (samples, N, H, A), vanilla sampler."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty((samples, n_rows, horizon, action_dim))
    net.eval()
    for k in range(samples):
        for i in range(0, n_rows, batch):
            rows = torch.arange(i, min(i + batch, n_rows))
            cond = net.encode(obs_input(rows), cache=True)
            if hasattr(net, "precompute"):
                net.precompute(cond, S.flow_times(n_steps))
            x0 = torch.randn((len(rows), horizon, action_dim), generator=gen)
            out[k, rows] = S.sample_vanilla(lambda x, tau, cond=cond: net.velocity(x, tau, cond), x0, n_steps)
    return out


def build_prefixes(
    windows: ChunkWindows,
    chunks_n: torch.Tensor,
    base_chunks: torch.Tensor,
    rows: np.ndarray,
    d: np.ndarray,
    s_min: int,
    sigma: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, np.ndarray]:
    """Conditioning prefixes (B, H, A) for windows ``rows`` with delays ``d`` (B,).

    Ground truth (the window's own chunk) with probability ``sigma`` or where the previous request
    would precede the episode start; otherwise the base chunk sampled at step ``t - s`` shifted by
    ``s = max(d, s_min)``: ``P[i] = base(obs_{t-s})[min(s + i, H - 1)]``. Returns the prefixes and a
    boolean (B,) mask of rows that use the base policy's prediction.
    """
    rows = np.asarray(rows)
    b, h = len(rows), windows.horizon
    s = np.maximum(d, s_min)
    t_prev = windows.t[rows] - s
    use_base = (rng.random(b) >= sigma) & (t_prev >= 0)
    prefix = chunks_n[torch.as_tensor(rows)].clone()
    if use_base.any():
        sel = np.nonzero(use_base)[0]
        prev = windows.index_of(windows.ep[rows[sel]], t_prev[sel])
        k = rng.integers(0, base_chunks.shape[0], len(sel))
        idx = np.minimum(s[sel, None] + np.arange(h)[None, :], h - 1)  # (n, H)
        src = base_chunks[torch.as_tensor(k)[:, None], torch.as_tensor(prev)[:, None], torch.as_tensor(idx)]
        prefix[torch.as_tensor(sel)] = src
    return prefix, use_base


# ---------------------------------------------------------------------- training
def load_base_network(base_ckpt: str | Path) -> tuple[nn.Module, Normalizer, dict[str, Any]]:
    """Plain base network (eval mode), its normaliser and the raw checkpoint dict."""
    ckpt = load_checkpoint(base_ckpt)
    if ckpt.get("backend") != "flow":
        raise ValueError(f"{base_ckpt}: REMAC/A2C2 need a flow checkpoint, got backend {ckpt.get('backend')!r}")
    net = build_network(FlowNetConfig.from_dict(ckpt["network_config"]))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), Normalizer.from_dict(ckpt["normalizer"]), ckpt


def train_remac(
    demos: DemoSet,
    base_ckpt: str | Path,
    config: RemacConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    stop_at: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Fine-tune ``base_ckpt`` with REMAC on ``demos``; writes the merged checkpoint ``out``."""
    t_start = time.perf_counter()
    out = Path(out)
    C.set_threads(config.num_threads)
    base_net, norm, base = load_base_network(base_ckpt)
    net_cfg: FlowNetConfig = base_net.config
    task = str(base.get("task", "")) or demos.task
    if demos.task and task and demos.task != task:
        raise ValueError(f"base checkpoint is for task {task!r}, demonstrations for {demos.task!r}")
    h = net_cfg.horizon
    if config.d_max >= h:
        raise ValueError(f"d_max ({config.d_max}) must be < H ({h})")
    windows = ChunkWindows(demos.episodes, h)
    if (windows.obs_dim, windows.action_dim) != (net_cfg.obs_dim, net_cfg.action_dim):
        raise ValueError("demonstrations do not match the base network's obs_dim / action_dim")
    train_eps, val_eps = split_episodes(len(demos.episodes), config.val_fraction, config.seed)
    train_rows = windows.rows_of_episodes(train_eps)
    val_rows = windows.rows_of_episodes(val_eps)
    if len(val_rows) > config.val_max_windows:
        val_rows = np.sort(
            np.random.default_rng(config.seed + 1).choice(val_rows, config.val_max_windows, replace=False)
        )
    batcher = _Batcher(windows, norm, net_cfg.encoder)
    base_settings = SamplerSettings.from_dict(base.get("sampler_settings", {}))
    log(f"train remac: sampling {config.base_samples} base chunk(s) for {len(windows)} observations")
    base_chunks = sample_base_chunks(
        base_net,
        batcher.obs_input,
        len(windows),
        h,
        net_cfg.action_dim,
        base_settings.n_steps,
        config.base_samples,
        config.seed + 5,
    )
    torch.manual_seed(config.seed)
    model = apply_lora(copy.deepcopy(base_net), rank=config.lora_rank, alpha=config.lora_alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    np_rng = np.random.default_rng(config.seed + 2)
    gen = torch.Generator().manual_seed(config.seed + 3)
    lam_m, lam_d = config.effective_lambdas
    step, history = 0, []
    if resume:
        st = C.resume_state(out, KIND, RemacConfig, config, demos)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        C.set_rng_state(st["rng"], np_rng, gen)
        step, history = int(st["step"]), list(st["history"])

    # fixed validation draw: delays, base-prefix conditioning (sigma = 0, the deployment case)
    vrng = np.random.default_rng(config.seed + 6)
    val_d = vrng.integers(0, config.d_max + 1, len(val_rows))
    val_prefix = (
        build_prefixes(windows, batcher.chunks, base_chunks, val_rows, val_d, config.s_min, 0.0, vrng)[0]
        if len(val_rows)
        else None
    )

    def validate() -> tuple[float | None, float | None]:
        """(REMAC model, base model) masked flow loss on the validation windows, same noise."""
        if not len(val_rows):
            return None, None
        res = []
        model.eval()
        for disabled in (False, True):
            vgen = torch.Generator().manual_seed(config.seed + 4)
            total, n = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(val_rows), 512):
                    r = torch.as_tensor(val_rows[i : i + 512])
                    args = (
                        batcher.obs_input(r),
                        batcher.chunks[r],
                        val_prefix[i : i + 512],
                        torch.as_tensor(val_d[i : i + 512]),
                    )
                    if disabled:
                        with adapters_disabled(model):
                            _, parts = remac_loss(model, *args, mask=True, lambda_m=0, lambda_delta=0, generator=vgen)
                    else:
                        _, parts = remac_loss(model, *args, mask=True, lambda_m=0, lambda_delta=0, generator=vgen)
                    total += parts["fm"] * len(r)
                    n += len(r)
            res.append(total / max(n, 1))
        model.train()
        return res[0], res[1]

    settings = dataclasses.replace(base_settings, prefix_mode="clean")

    def record(step_now: int, val: float | None, val_base: float | None) -> dict[str, Any]:
        return {
            "kind": KIND,
            "variant": "clean",
            "task": task,
            "config": config.to_dict(),
            "network": net_cfg.to_dict(),
            "horizon": h,
            "seed": config.seed,
            "demos": demos.describe(),
            "base_checkpoint": str(base_ckpt),
            "base_train_config": base.get("train_config", {}),
            "obs_fields": demos.metadata.get("obs_fields"),
            "action_fields": demos.metadata.get("action_fields"),
            "lora_trainable_params": count_trainable_params(model),
            "merged": True,
            "effective_lambdas": [lam_m, lam_d],
            "step": step_now,
            "val_masked_fm": val,
            "val_masked_fm_base": val_base,
            "provenance": C.provenance(),
        }

    def write(step_now: int, val: float | None, val_base: float | None) -> Path:
        rec = record(step_now, val, val_base)
        path = save_checkpoint(
            out, model, norm, task=task, settings=settings, train_config=rec, extra={"history": history}
        )
        C.save_trainstate(
            out,
            kind=KIND,
            step=step_now,
            model_state=model.state_dict(),
            ema_state=None,
            optimizer=opt,
            rng=C.rng_state(np_rng, gen),
            config=rec,
            history=history,
        )
        return path

    log(
        f"train remac: task={task!r} base={base_ckpt} windows={len(train_rows)} train / {len(val_rows)} val, "
        f"{count_trainable_params(model)} LoRA params, {config.steps} steps, mask={config.mask} "
        f"curriculum={config.curriculum} align={config.align}"
    )
    prev = history[-1].get("val_masked_fm") if history else None
    last = {"val_masked_fm": prev, "val_masked_fm_base": prev}

    def step_fn(step_now: int):
        rows = train_rows[np_rng.integers(0, len(train_rows), config.batch_size)]
        d = np_rng.integers(0, config.d_max + 1, len(rows))
        prefix, used = build_prefixes(
            windows, batcher.chunks, base_chunks, rows, d, config.s_min, config.sigma(step_now), np_rng
        )
        r = torch.as_tensor(rows)
        loss, parts = remac_loss(
            model,
            batcher.obs_input(r),
            batcher.chunks[r],
            prefix,
            torch.as_tensor(d),
            mask=config.mask,
            lambda_m=lam_m,
            lambda_delta=lam_d,
            generator=gen,
        )
        return loss, {"fm": parts["fm"], "m": parts["m"], "delta": parts["delta"], "base_prefix": float(used.mean())}

    def validate_entry() -> dict[str, Any]:
        last["val_masked_fm"], last["val_masked_fm_base"] = validate()
        return dict(last)

    step = C.train_loop(
        step_fn=step_fn,
        params=params,
        opt=opt,
        config=config,
        step=step,
        stop_at=stop_at,
        validate=validate_entry,
        write=lambda step_now: write(step_now, last["val_masked_fm"], last["val_masked_fm_base"]),
        out=out,
        history=history,
        t_start=t_start,
        desc=f"remac[{task}]",
        progress_bar=progress_bar,
        log=log,
        entry_info=lambda st: {"sigma": config.sigma(st)},
    )
    val, val_base = last["val_masked_fm"], last["val_masked_fm_base"]
    secs = time.perf_counter() - t_start
    log(f"train remac: done at step {step}, val masked fm {val} (base {val_base}), {secs:.1f} s -> {out}")
    return TrainResult(path=out, step=step, val_loss=val, history=tuple(history), seconds=secs)


def _ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    with torch.no_grad():
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, [p.detach() for p in params], alpha=1.0 - decay)


def train_remac_authors(
    demos: DemoSet,
    base_ckpt: str | Path,
    config: RemacAuthorsConfig,
    out: str | Path,
    *,
    progress_bar: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """REMAC as its authors train it (see :class:`RemacAuthorsConfig`, :func:`remac_authors_loss`).

    The backbone is the base network, frozen; trainable are the mask-gated adapters
    (:class:`~async_vla_ros.policy.networks.MaskedLoRA`: A, B and the mask projection). The
    adapters cannot be merged (they are gated per row), so the checkpoint is a network with
    ``mask_lora_rank > 0``; it runs with the ``remac`` sampler. The EMA weights are saved.
    """
    t_start = time.perf_counter()
    out = Path(out)
    C.set_threads(config.num_threads)
    base_net, norm, base = load_base_network(base_ckpt)
    if base_net.config.mask_lora_rank:
        raise ValueError(f"{base_ckpt}: the base must be a plain network (it already has REMAC adapters)")
    task = str(base.get("task", "")) or demos.task
    if demos.task and task and demos.task != task:
        raise ValueError(f"base checkpoint is for task {task!r}, demonstrations for {demos.task!r}")
    h = base_net.config.horizon
    if config.d_max >= h:
        raise ValueError(f"d_max ({config.d_max}) must be < H ({h})")
    windows = ChunkWindows(demos.episodes, h)
    if (windows.obs_dim, windows.action_dim) != (base_net.config.obs_dim, base_net.config.action_dim):
        raise ValueError("demonstrations do not match the base network's obs_dim / action_dim")
    train_eps, val_eps = split_episodes(len(demos.episodes), config.val_fraction, config.seed)
    train_rows = windows.rows_of_episodes(train_eps)
    val_rows = windows.rows_of_episodes(val_eps)
    if len(val_rows) > config.val_max_windows:
        val_rows = np.sort(
            np.random.default_rng(config.seed + 1).choice(val_rows, config.val_max_windows, replace=False)
        )
    batcher = _Batcher(windows, norm, base_net.config.encoder)
    base_settings = SamplerSettings.from_dict(base.get("sampler_settings", {}))
    log(f"train remac (authors): sampling {config.base_samples} base chunk(s) for {len(windows)} observations")
    base_chunks = sample_base_chunks(
        base_net,
        batcher.obs_input,
        len(windows),
        h,
        base_net.config.action_dim,
        base_settings.n_steps,
        config.base_samples,
        config.seed + 5,
    )
    torch.manual_seed(config.seed)
    net_cfg = dataclasses.replace(
        base_net.config,
        mask_lora_rank=config.lora_rank,
        mask_lora_alpha=config.lora_alpha,
        mask_lora_dropout=config.lora_dropout,
    )
    model = build_network(net_cfg)
    missing, unexpected = model.load_state_dict(base_net.state_dict(), strict=False)
    if unexpected or any(not k.startswith("adapters.") for k in missing):
        raise RuntimeError(f"backbone weights do not fit: missing {missing}, unexpected {unexpected}")
    for p in model.parameters():
        p.requires_grad_(False)
    params = model.adapter_parameters()
    for p in params:
        p.requires_grad_(True)
    n_train = sum(p.numel() for p in params)
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    np_rng = np.random.default_rng(config.seed + 2)
    gen = torch.Generator().manual_seed(config.seed + 3)
    vrng = np.random.default_rng(config.seed + 6)
    val_d = vrng.integers(0, config.d_max + 1, len(val_rows))

    def validate() -> tuple[float | None, float | None]:
        """Masked flow MSE on the validation windows (ground-truth interpolant, fixed draws) of the
        EMA model and of the backbone (adapters off)."""
        if not len(val_rows):
            return None, None
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
        model.eval()
        res = []
        for adapters in (True, False):
            vgen = torch.Generator().manual_seed(config.seed + 4)
            total, n = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(val_rows), 512):
                    r = torch.as_tensor(val_rows[i : i + 512])
                    a = batcher.chunks[r]
                    b_ = len(r)
                    x0 = torch.randn(a.shape, generator=vgen)
                    tau = torch.rand((b_,), generator=vgen)
                    x = (1 - tau[:, None, None]) * x0 + tau[:, None, None] * a
                    m = (~S.frozen_mask(val_d[i : i + 512], b_, h)).float()
                    v = model(batcher.obs_input(r), x, tau, mask=m, adapters=adapters)
                    err = (((v - (a - x0)) ** 2) * m.unsqueeze(-1)).sum() / (m.sum() * a.shape[-1]).clamp_min(1)
                    total += float(err) * b_
                    n += b_
            res.append(total / max(n, 1))
        with torch.no_grad():
            for p, lv in zip(params, live):
                p.copy_(lv)
        model.train()
        return res[0], res[1]

    settings = base_settings

    def write(step_now: int, val: float | None, val_base: float | None, history: list) -> Path:
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
        rec = {
            "kind": KIND,
            "variant": "authors",
            "task": task,
            "config": config.to_dict(),
            "network": net_cfg.to_dict(),
            "horizon": h,
            "seed": config.seed,
            "demos": demos.describe(),
            "base_checkpoint": str(base_ckpt),
            "base_train_config": base.get("train_config", {}),
            "obs_fields": demos.metadata.get("obs_fields"),
            "action_fields": demos.metadata.get("action_fields"),
            "lora_trainable_params": n_train,
            "merged": False,
            "step": step_now,
            "val_masked_fm": val,
            "val_masked_fm_base": val_base,
            "provenance": C.provenance(),
        }
        model.eval()
        path = save_checkpoint(
            out, model, norm, task=task, settings=settings, train_config=rec, extra={"history": history}
        )
        model.train()
        with torch.no_grad():
            for p, lv in zip(params, live):
                p.copy_(lv)
        return path

    log(
        f"train remac (authors): task={task!r} base={base_ckpt} windows={len(train_rows)} train / "
        f"{len(val_rows)} val, {n_train} adapter params, {config.steps} steps, mask={config.mask} "
        f"curriculum={config.curriculum} delta={config.delta}"
    )
    model.train()
    history: list[dict[str, Any]] = []
    last: dict[str, float | None] = {"val_masked_fm": None, "val_masked_fm_base": None}

    def step_fn(step_now: int):
        rows = train_rows[np_rng.integers(0, len(train_rows), config.batch_size)]
        d = np_rng.integers(config.d_min(step_now), config.d_max + 1, len(rows))
        k = np_rng.integers(0, config.base_samples, len(rows))
        r = torch.as_tensor(rows)
        return remac_authors_loss(
            model,
            batcher.obs_input(r),
            batcher.chunks[r],
            base_chunks[torch.as_tensor(k), r],
            torch.as_tensor(d),
            config.p_ground_truth(step_now),
            mask=config.mask,
            gamma_flow=config.gamma_flow,
            gamma_keep=config.gamma_keep,
            delta=config.delta,
            generator=gen,
        )

    def validate_entry() -> dict[str, Any]:
        last["val_masked_fm"], last["val_masked_fm_base"] = validate()
        return dict(last)

    step = C.train_loop(
        step_fn=step_fn,
        params=params,
        opt=opt,
        config=config,
        step=0,
        stop_at=None,
        validate=validate_entry,
        write=lambda step_now: write(step_now, last["val_masked_fm"], last["val_masked_fm_base"], history),
        out=out,
        history=history,
        t_start=t_start,
        desc=f"remac-authors[{task}]",
        progress_bar=progress_bar,
        log=log,
        lr_schedule=False,  # the authors' constant rate
        after_step=lambda _s: _ema_update(ema, params, config.ema),
        entry_info=lambda st: {"p_ground_truth": config.p_ground_truth(st - 1), "d_min": config.d_min(st - 1)},
    )
    val, val_base = last["val_masked_fm"], last["val_masked_fm_base"]
    secs = time.perf_counter() - t_start
    log(f"train remac (authors): done at step {step}, val masked fm {val} (backbone {val_base}), {secs:.1f} s -> {out}")
    return TrainResult(path=out, step=step, val_loss=val, history=tuple(history), seconds=secs)


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", required=True, help="base policy checkpoint to fine-tune, or lerobot:DIR (a LeRobot flow VLA folder)"
    )
    parser.add_argument(
        "--demos",
        nargs="+",
        default=None,
        help="demonstrations directory [data/demos/<task of --base>]; for a multi-task VLA (train vla) "
        "one directory per task",
    )
    parser.add_argument("--out", default=None, help="checkpoint to write [next to --base: remac.pt]")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="authors: REMAC as its authors' code trains it (default for our flow checkpoints); "
        "clean: our earlier reading (the only one for --base lerobot:DIR)",
    )
    parser.add_argument("--no-mask", dest="mask", action="store_false", help="ablation: loss on all H slots")
    parser.add_argument(
        "--no-curriculum",
        dest="curriculum",
        action="store_false",
        help="ablation: ground-truth prefixes only (sigma = 1)",
    )
    parser.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="ablation (clean): no residual alignment loss (lambda_m = lambda_delta = 0)",
    )
    parser.add_argument("--no-delta", dest="delta", action="store_false", help="ablation (authors): no delta loss")
    parser.add_argument(
        "--no-delay-curriculum",
        dest="delay_curriculum",
        action="store_false",
        help="(authors) d ~ U{0..d_max} from the start",
    )
    add_config_arguments(parser, RemacConfig)
    names = {f.name for f in dataclasses.fields(RemacConfig)}
    add_config_arguments(parser, RemacAuthorsConfig, skip=tuple(names))


def run(ns: argparse.Namespace) -> int:
    try:
        if ns.base.startswith("lerobot:"):  # a LeRobot flow VLA folder (train/remac_lerobot.py)
            if ns.variant == "authors":
                raise ValueError(
                    "--variant authors needs our mask-conditioned adapter network; a LeRobot policy is "
                    "fine-tuned with the clean objective (--variant clean, served by the remac_clean preset)"
                )
            config = _config_from_ns(ns, RemacConfig)
            from async_vla_ros.train.remac_lerobot import train_remac_lerobot

            folder = Path(ns.base.split(":", 1)[1])
            if not ns.demos or not ns.out:
                raise ValueError("--base lerobot:DIR needs --demos DIR and --out OUT_DIR")
            demos = load_episodes(ns.demos[0]) if len(ns.demos) == 1 else ns.demos
            res = train_remac_lerobot(demos, folder, config, ns.out, progress_bar=not ns.no_progress)
            print(
                f"wrote {res['out']} (LeRobot policy folder, LoRA merged; loss {res['loss_first']:.4f} -> {res['loss_last']:.4f})"
            )
            return 0
        task = str(load_checkpoint(ns.base).get("task", ""))
        if ns.demos and len(ns.demos) > 1:
            raise ValueError(f"--demos: one directory for a {task!r} checkpoint, got {len(ns.demos)}")
        demos = load_episodes(ns.demos[0] if ns.demos else f"data/demos/{task}")
        out = ns.out or str(Path(ns.base).with_name("remac.pt"))
        if ns.variant in (None, "authors"):
            if ns.resume:
                raise ValueError("--resume is only implemented for --variant clean")
            config = _config_from_ns(ns, RemacAuthorsConfig)
            train_remac_authors(demos, ns.base, config, out, progress_bar=not ns.no_progress)
        else:
            config = _config_from_ns(ns, RemacConfig)
            train_remac(demos, ns.base, config, out, resume=ns.resume, progress_bar=not ns.no_progress)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"train remac: {exc}")
        return 2
    return 0
