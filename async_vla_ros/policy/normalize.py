"""Per-dimension normalisation of observations and actions (stored in checkpoints).

Two modes, both an affine map ``z = (x - center) / scale`` per dimension:

* ``"meanstd"``: center = mean, scale = std (floored at ``eps``),
* ``"minmax"``: center = (max + min) / 2, scale = (max - min) / 2 (floored at ``eps``), so the
  data range maps to [-1, 1].

Dimensions whose spread is below ``eps`` get scale 1.0 (constant features are centred,
not blown up). Actions in robot units (rad, m) <-> the network's normalised space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NORM_MODES = ("meanstd", "minmax", "identity")


@dataclass(frozen=True, eq=False)
class DimNorm:
    """Affine per-dimension normaliser: ``normalize(x) = (x - center) / scale`` over the last axis."""

    mode: str  # "meanstd" | "minmax" | "identity"
    center: np.ndarray  # (D,) float64
    scale: np.ndarray  # (D,) float64, > 0

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ValueError(f"normalisation mode must be one of {NORM_MODES}, got {self.mode!r}")
        center = np.asarray(self.center, dtype=np.float64).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if center.shape != scale.shape or center.size == 0:
            raise ValueError(
                f"center and scale must be equal-length non-empty vectors, got {center.shape}, {scale.shape}"
            )
        if not (np.isfinite(center).all() and np.isfinite(scale).all()) or (scale <= 0).any():
            raise ValueError("normalisation stats must be finite with scale > 0")
        center.setflags(write=False)
        scale.setflags(write=False)
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "scale", scale)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DimNorm):
            return NotImplemented
        return (
            self.mode == other.mode
            and np.array_equal(self.center, other.center)
            and np.array_equal(self.scale, other.scale)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @classmethod
    def identity(cls, dim: int) -> DimNorm:
        return cls("identity", np.zeros(dim), np.ones(dim))

    @classmethod
    def from_data(cls, data: np.ndarray, mode: str = "meanstd", eps: float = 1e-6) -> DimNorm:
        """Stats from samples ``data`` (N, D) or (N, H, D) (all leading axes pooled)."""
        x = np.asarray(data, dtype=np.float64)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"data must have shape (N, ..., D) with N > 0, got {x.shape}")
        x = x.reshape(-1, x.shape[-1])
        if not np.isfinite(x).all():
            raise ValueError("data for normalisation stats contains NaN or Inf")
        if mode == "meanstd":
            center, scale = x.mean(axis=0), x.std(axis=0)
        elif mode == "minmax":
            lo, hi = x.min(axis=0), x.max(axis=0)
            center, scale = (hi + lo) / 2.0, (hi - lo) / 2.0
        elif mode == "identity":
            return cls.identity(x.shape[-1])
        else:
            raise ValueError(f"normalisation mode must be one of {NORM_MODES}, got {mode!r}")
        scale = np.where(scale < eps, 1.0, scale)  # constant dimensions: pass through centred
        return cls(mode, center, scale)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.center) / self.scale

    def unnormalize(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.scale + self.center

    def normalize_t(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(self.center, dtype=x.dtype, device=x.device)
        s = torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
        return (x - c) / s

    def unnormalize_t(self, z: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(self.center, dtype=z.dtype, device=z.device)
        s = torch.as_tensor(self.scale, dtype=z.dtype, device=z.device)
        return z * s + c

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DimNorm:
        return cls(str(d["mode"]), np.asarray(d["center"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64))


@dataclass(frozen=True)
class Normalizer:
    """Observation (state) and action normalisers of one policy."""

    obs: DimNorm  # (obs_dim,)
    action: DimNorm  # (A,)

    @classmethod
    def identity(cls, obs_dim: int, action_dim: int) -> Normalizer:
        return cls(DimNorm.identity(obs_dim), DimNorm.identity(action_dim))

    @classmethod
    def from_data(
        cls, obs: np.ndarray, actions: np.ndarray, obs_mode: str = "meanstd", action_mode: str = "meanstd"
    ) -> Normalizer:
        """``obs``: (N, obs_dim); ``actions``: (N, A) or (N, H, A)."""
        return cls(DimNorm.from_data(obs, obs_mode), DimNorm.from_data(actions, action_mode))

    def to_dict(self) -> dict[str, Any]:
        return {"obs": self.obs.to_dict(), "action": self.action.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        return cls(DimNorm.from_dict(d["obs"]), DimNorm.from_dict(d["action"]))
