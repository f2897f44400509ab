"""REMAC fine-tuning of a LeRobot flow VLA (SmolVLA): LoRA on the action expert, merged, saved
back as a LeRobot policy folder.

``async-vla-ros train remac --base lerobot:DIR --demos DEMOS --out OUT_DIR``

The objective is the one of :mod:`async_vla_ros.train.remac` unchanged (:func:`remac_loss`:
clean prefix written into the first d slots of the noisy chunk, loss on the slots >= d, the
self-conditioned curriculum of :func:`build_prefixes`, the residual alignment terms with the
adapters switched off), applied to the model's velocity in our time convention
(:class:`ExpertVelocity`: ``v(x, tau) = -v_lerobot(x, 1 - tau)``), in its normalised, padded
action space. LoRA adapters go on the action expert's Linear layers and its action/time
projections only (``expert_linear_names``); the VLM and the state projection stay frozen, so the
VLM prefix KV cache is computed without gradient, as at inference. After training the adapters
are merged (peft ``merge_and_unload``) and the policy is written with LeRobot's own
``save_pretrained`` together with the base folder's processors: LeRobot loads the result like
any policy, with zero inference overhead.

Training data: our demonstrations (``async-vla-ros demos TASK --images CAM``, or ``dataset
import`` of a LeRobotDataset); every camera the policy takes, by name (the demos' camera names are
the sim's: ``scene``, ``wrist``), each at the policy's image size.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from async_vla_ros import names as N
from async_vla_ros.train.data import ChunkWindows, DemoSet

__all__ = ["ExpertVelocity", "expert_linear_names", "train_remac_lerobot"]

_EXPERT_PROJECTIONS = ("action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out")


class ExpertVelocity(nn.Module):
    """``model(batch, x, tau) -> v`` (our convention) over a SmolVLA-style policy; ``tau`` (B,)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        from async_vla_ros.policy.lerobot_backend import encode_prefix

        ppm, pkv = encode_prefix(self.policy, batch)
        return -self.policy.model.denoise_step(ppm, pkv, x, (1.0 - tau).to(torch.float32))


def expert_linear_names(model: nn.Module) -> list[str]:
    """Names of the action expert's Linear layers and the action/time projections in ``model``."""
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if ".lm_expert." in name or name.rsplit(".", 1)[-1] in _EXPERT_PROJECTIONS:
            out.append(name)
    if not out:
        raise ValueError("the policy has no action-expert Linear layers (not a SmolVLA-style flow VLA)")
    return out


def train_remac_lerobot(
    demos: DemoSet | Sequence[str | Path],
    base_dir: str | Path,
    config: Any,
    out_dir: str | Path,
    *,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Fine-tune the LeRobot policy at ``base_dir`` with REMAC; write the merged policy folder.

    ``demos``: one task's demonstrations, or for a multi-task proprioception-only VLA (``train
    vla``) its demonstration directories, one per task: each window then carries its task's
    instruction (a training paraphrase drawn at random per step, as in ``train vla``)."""
    from async_vla_ros.policy.lerobot_backend import SIDECAR, LeRobotSettings, load_lerobot_folder
    from async_vla_ros.policy.lora import apply_lora, count_trainable_params, merge_lora
    from async_vla_ros.train.remac import build_prefixes, remac_loss
    from async_vla_ros.train.vla import load_vla_data, sample_instructions

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    be = load_lerobot_folder(base_dir, settings=LeRobotSettings(seed=config.seed, num_threads=config.num_threads))
    if not be.is_flow:
        raise ValueError(f"{base_dir}: a {be.cfg.type!r} policy is not a flow VLA; REMAC needs one (SmolVLA)")
    rng = np.random.default_rng(config.seed)
    if not be.reads_proprio:
        if not isinstance(demos, DemoSet):
            raise ValueError(f"{base_dir}: several demonstration directories need a multi-task VLA (train vla)")
        win = ChunkWindows(demos.episodes, be.horizon)
        described: Any = demos.describe()

        def instructions(rows):
            return None  # the folder's instruction (or the backend's default)
    else:  # the multi-task VLA: proprioception, both cameras, each window its task's instruction
        dirs = [demos.path] if isinstance(demos, DemoSet) else list(demos)
        size = {hw[0] for hw in be.camera_hw.values()}
        data = load_vla_data(dirs, be.horizon, size.pop() if len(size) == 1 else 0)
        win, described = data.windows, list(data.sources)

        def instructions(rows):
            return sample_instructions(data.task_of(rows), rng)

    if win.obs_dim != be.obs_dim or win.action_dim != be.action_dim:
        raise ValueError(
            f"demos have obs_dim {win.obs_dim}, A {win.action_dim}; the policy {be.obs_dim}, {be.action_dim}"
        )
    missing = sorted({N.frame_source(c)[0] for c in be.camera_hw} - set(win.camera_images))
    if missing:
        raise ValueError(
            f"the policy takes cameras {sorted(be.camera_hw)}; the demos carry {sorted(win.camera_images)} "
            f"(missing {missing}: record them with `demos --images {' '.join(sorted(be.camera_hw))}`)"
        )
    for name, hw in be.camera_hw.items():
        cam = N.frame_source(name)[0]
        if win.camera_images[cam].shape[1:3] != tuple(hw):
            raise ValueError(
                f"the policy's camera {cam!r} takes {hw[0]}x{hw[1]} images; the demos have "
                f"{win.camera_images[cam].shape[1:3]}"
            )
    gen = torch.Generator().manual_seed(config.seed)
    n, h = len(win), be.horizon

    def obs_of(rows):
        obs = {"state": win.obs[rows], "images": win.frames(rows, list(be.camera_hw))}
        instr = instructions(rows)
        if instr is not None:
            obs["instruction"] = instr
        return obs

    t0 = time.perf_counter()
    chunks_n = be._normalize_actions(win.chunks, win.obs).detach()  # (N, H, padded)
    base = torch.empty((config.base_samples, n, h, be.padded_dim))
    for k in range(config.base_samples):  # the frozen base policy's own chunks (self-conditioning)
        for i in range(0, n, 64):
            rows = np.arange(i, min(i + 64, n))
            chunk = be.infer(obs_of(rows), "vanilla", seed=config.seed + 7919 * k + i)
            base[k, rows] = be._normalize_actions(chunk, win.obs[rows])
    net = ExpertVelocity(be.policy)
    targets = expert_linear_names(net)
    model = apply_lora(net, rank=config.lora_rank, alpha=config.lora_alpha, targets=targets)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    lam_m, lam_d = config.effective_lambdas
    history = []
    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, unit="step", desc="remac (lerobot)")
    for step in range(config.steps):
        for g in opt.param_groups:
            g["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        rows = rng.integers(0, n, min(config.batch_size, n))
        d = np.minimum(rng.integers(0, config.d_max + 1, len(rows)), h)
        prefix, _ = build_prefixes(win, chunks_n, base, rows, d, config.s_min, config.sigma(step), rng)
        batch, _ = be._batch(obs_of(rows))
        loss, parts = remac_loss(
            model,
            batch,
            chunks_n[torch.as_tensor(rows)],
            prefix,
            torch.as_tensor(d),
            mask=config.mask,
            lambda_m=lam_m,
            lambda_delta=lam_d,
            generator=gen,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        history.append({"step": step, "loss": float(loss.detach()), **parts})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    n_lora = count_trainable_params(model)
    merged = merge_lora(model)  # ExpertVelocity with plain (merged) Linear layers
    policy = merged.policy.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out_dir)
    be.pre.save_pretrained(out_dir)
    be.post.save_pretrained(out_dir)
    if (base_dir / "vlm").is_dir():
        # the base's VLM config and tokenizer go with it (tens of KB): the folder stays loadable when
        # shipped or moved, where its config.json names the path the base was built at (a shipped
        # fine-tune once named a scratch folder a fresh clone does not have)
        shutil.copytree(base_dir / "vlm", out_dir / "vlm", dirs_exist_ok=True)
    side = json.loads((base_dir / SIDECAR).read_text()) if (base_dir / SIDECAR).is_file() else {}
    side["remac"] = {
        "base": str(base_dir),
        "demos": described,
        "config": config.to_dict() if hasattr(config, "to_dict") else {},
        "lora_params": n_lora,
        "lora_targets": len(targets),
        "loss_first": history[0]["loss"] if history else None,
        "loss_last": history[-1]["loss"] if history else None,
        "seconds": time.perf_counter() - t0,
        "sampler": "prefix",
    }
    (out_dir / SIDECAR).write_text(json.dumps(side, indent=1))
    return {"out": str(out_dir), "history": history, **side["remac"]}
