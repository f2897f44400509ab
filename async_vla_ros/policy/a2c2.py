"""A2C2 correction head (Sendai et al., arXiv 2509.23224).

A small MLP that runs every control step on the latest observation, the base action the plan
holds for this step, the position k of that action inside its chunk (as sin/cos(2 pi k / H))
and optionally a base-policy latent, and outputs a residual: executed = base + residual.

Inputs are normalised with the base policy's normaliser; the network predicts the residual in
normalised action units and :meth:`CorrectionHead.residual` converts it to robot units
(multiplies by the action scale). The output layer starts at zero, so an untrained head is
the identity correction (residual 0).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from async_vla_ros.policy.normalize import Normalizer

A2C2_FORMAT = "async_vla_ros.a2c2/1"


@dataclass(frozen=True)
class CorrectionConfig:
    """Configuration of :class:`CorrectionHead` (defaults: ~0.18M parameters at obs_dim 32, A 8, latent 128)."""

    obs_dim: int  # flat state observation size
    action_dim: int  # A
    horizon: int  # H of the base policy (for the sin/cos position feature)
    latent_dim: int = 0  # size of the base-policy latent input; 0: no latent
    hidden: int = 256  # width of the hidden layers
    depth: int = 3  # number of hidden layers (Linear + LayerNorm + SiLU)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim", "horizon", "hidden", "depth"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"CorrectionConfig.{name} must be an int >= 1, got {val!r}")
        if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int) or self.latent_dim < 0:
            raise ValueError(f"CorrectionConfig.latent_dim must be an int >= 0, got {self.latent_dim!r}")

    @property
    def in_dim(self) -> int:
        return self.obs_dim + self.action_dim + 2 + self.latent_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CorrectionConfig:
        return cls(**dict(d))


def position_features(k: torch.Tensor, horizon: int) -> torch.Tensor:
    """In-chunk position k (B,) -> (B, 2) = [sin(2 pi k / H), cos(2 pi k / H)]."""
    ang = (2.0 * math.pi / horizon) * k.to(torch.float32)
    return torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1)


class CorrectionHead(nn.Module):
    """Residual MLP over [obs, base action, sin/cos(2 pi k/H), latent] -> residual (B, A)."""

    def __init__(self, config: CorrectionConfig, normalizer: Normalizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.normalizer = (
            normalizer if normalizer is not None else Normalizer.identity(config.obs_dim, config.action_dim)
        )
        if (self.normalizer.obs.dim, self.normalizer.action.dim) != (config.obs_dim, config.action_dim):
            raise ValueError("normalizer dims do not match the CorrectionConfig")
        layers: list[nn.Module] = []
        d = config.in_dim
        for _ in range(config.depth):
            layers += [nn.Linear(d, config.hidden), nn.LayerNorm(config.hidden), nn.SiLU()]
            d = config.hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(d, config.action_dim)
        nn.init.zeros_(self.out.weight)  # start as the identity correction
        nn.init.zeros_(self.out.bias)

    def features(
        self, obs_n: torch.Tensor, base_n: torch.Tensor, k: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Concatenated input (B, in_dim) from normalised obs (B, obs_dim), base action (B, A), k (B,)."""
        cfg = self.config
        b = obs_n.shape[0]
        if obs_n.shape != (b, cfg.obs_dim):
            raise ValueError(f"obs must have shape (B, {cfg.obs_dim}), got {tuple(obs_n.shape)}")
        if base_n.shape != (b, cfg.action_dim):
            raise ValueError(
                f"base_action must have shape (B, {cfg.action_dim}) = ({b}, {cfg.action_dim}), got {tuple(base_n.shape)}"
            )
        if k.shape != (b,):
            raise ValueError(f"k must have shape (B,) = ({b},), got {tuple(k.shape)}")
        parts = [obs_n, base_n, position_features(k, cfg.horizon).to(obs_n.dtype)]
        if cfg.latent_dim:
            if latent is None:
                raise ValueError(
                    f"this head was built with latent_dim={cfg.latent_dim}: pass latent (B, {cfg.latent_dim})"
                )
            if latent.shape != (b, cfg.latent_dim):
                raise ValueError(f"latent must have shape (B, {cfg.latent_dim}), got {tuple(latent.shape)}")
            parts.append(latent.to(obs_n.dtype))
        elif latent is not None:
            raise ValueError("this head was built without a latent input (latent_dim=0)")
        return torch.cat(parts, dim=-1)

    def forward(
        self, obs_n: torch.Tensor, base_n: torch.Tensor, k: torch.Tensor, latent: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Residual (B, A) in normalised action units (training target: (a_expert - a_base) / scale)."""
        return self.out(self.body(self.features(obs_n, base_n, k, latent)))

    @torch.inference_mode()
    def residual(
        self, obs: np.ndarray, base_action: np.ndarray, k: np.ndarray, H: int, latent: np.ndarray | None = None
    ) -> np.ndarray:
        """Numpy-facing: residual (B, A) in robot units; executed action = base_action + residual.

        ``obs``: (B, obs_dim) raw state; ``base_action``: (B, A) robot units; ``k``: (B,) int in
        [0, H); ``H`` must equal the horizon the head was trained for; ``latent``: (B, latent_dim).
        """
        cfg = self.config
        if int(H) != cfg.horizon:
            raise ValueError(f"H={H} differs from the head's horizon {cfg.horizon}")
        o = np.asarray(obs, dtype=np.float64)
        a = np.asarray(base_action, dtype=np.float64)
        kk = np.asarray(k)
        if o.ndim != 2 or o.shape[1] != cfg.obs_dim:
            raise ValueError(f"obs must have shape (B, {cfg.obs_dim}), got {o.shape}")
        b = o.shape[0]
        if a.shape != (b, cfg.action_dim):
            raise ValueError(f"base_action must have shape (B, A) = ({b}, {cfg.action_dim}), got {a.shape}")
        if kk.shape != (b,) or not np.issubdtype(kk.dtype, np.integer) or (kk < 0).any() or (kk >= cfg.horizon).any():
            raise ValueError(f"k must be (B,) = ({b},) integers in [0, {cfg.horizon}), got {kk!r}")
        if not (np.isfinite(o).all() and np.isfinite(a).all()):
            raise ValueError("obs or base_action contains NaN or Inf")
        parts = [self.normalizer.obs.normalize(o), self.normalizer.action.normalize(a)]
        ang = (2.0 * np.pi / cfg.horizon) * kk.astype(np.float64)
        parts += [np.sin(ang)[:, None], np.cos(ang)[:, None]]
        if cfg.latent_dim:
            if latent is None:
                raise ValueError(
                    f"this head was built with latent_dim={cfg.latent_dim}: pass latent (B, {cfg.latent_dim})"
                )
            la = np.asarray(latent, dtype=np.float64)
            if la.shape != (b, cfg.latent_dim):
                raise ValueError(f"latent must have shape (B, {cfg.latent_dim}), got {la.shape}")
            if not np.isfinite(la).all():
                raise ValueError("latent contains NaN or Inf")
            parts.append(la)
        elif latent is not None:
            raise ValueError("this head was built without a latent input (latent_dim=0)")
        # same layout as features(), assembled in numpy: one tensor conversion per call
        feat = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
        r_n = self.out(self.body(feat))
        return r_n.numpy().astype(np.float64) * self.normalizer.action.scale

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Single torch file: config, weights, normaliser, extra (JSON-compatible)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        torch.save(
            {
                "format": A2C2_FORMAT,
                "config": self.config.to_dict(),
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                "normalizer": self.normalizer.to_dict(),
                "extra": dict(extra or {}),
            },
            tmp,
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CorrectionHead:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"correction head checkpoint not found: {path}")
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("format") != A2C2_FORMAT:
            raise ValueError(f"{path}: not an {A2C2_FORMAT} checkpoint")
        head = cls(CorrectionConfig.from_dict(d["config"]), Normalizer.from_dict(d["normalizer"]))
        head.load_state_dict(d["state_dict"])
        return head.eval()
