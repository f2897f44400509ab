"""A deterministic stress chunk source: a :class:`~async_vla_ros.policy.base.ChunkPolicy` whose
chunks switch discontinuously.

Not a learned model. Each chunk follows a smooth base motion (a sinusoid per joint around a
home pose) plus a per-chunk **offset** drawn from the request's seed, so consecutive chunks
disagree by up to ``jump`` rad per joint: every switch between chunks is a position step, the
event that makes Franka abort with ``joint_motion_generator_velocity_discontinuity``. Optional
square-wave ``steps`` make the base motion itself discontinuous.

The guided samplers are honoured exactly, the way an ideal sampler would:

* ``rtc``: ``W * prefix + (1 - W) * raw`` (soft inpainting towards the previous plan);
* ``prefix``: the first ``n_frozen`` actions are the prefix, the rest raw (REMAC);
* ``bid``: ``n_candidates`` chunks with different offsets; :func:`~async_vla_ros.core.bid.bid_select`
  picks the most coherent with the prefix (backward coherence only, no weak model);
* ``vanilla``: raw.

Observation: ``(B, 1)`` holding the observation's control step ``t_obs`` (a float); action ``k``
of a chunk is for step ``t_obs + k``. Actions ``(H, 7)`` (joints) or ``(H, 8)`` with a constant
gripper width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from async_vla_ros.core.bid import bid_select
from async_vla_ros.core.strategies import SAMPLERS

__all__ = ["FR3_HOME", "StressConfig", "StressPolicy"]

# franka-sim's (and libfranka examples') start pose, rad
FR3_HOME = (0.0, 0.0, 0.0, -1.5708, 0.0, 1.5708, 0.7854)


@dataclass(frozen=True)
class StressConfig:
    """Shape of the stress motion."""

    horizon: int = 10  # H, actions per chunk
    control_dt: float = 0.05  # s per action
    home: tuple[float, ...] = FR3_HOME  # (7,) centre of the motion, rad
    amplitude: float = 0.25  # rad, sinusoid amplitude per joint (scaled by joint_scale)
    frequency: float = 0.4  # Hz of the sinusoid
    jump: float = 0.12  # rad, max |per-chunk offset| per joint (uniform in [-jump, jump])
    steps: float = 0.0  # rad, amplitude of a square wave added to the base motion (0: off)
    step_period: float = 1.0  # s, period of that square wave
    joint_scale: tuple[float, ...] = (1.0, 0.6, 1.0, 0.8, 1.0, 0.8, 1.0)  # per-joint factor on all of the above
    gripper: float | None = None  # constant gripper width appended as action 8, or None (A = 7)
    n_candidates: int = 4  # BID samples per request
    seed: int = 0  # base seed of the offsets

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"StressConfig.horizon must be an int >= 1, got {self.horizon!r}")
        for name in ("control_dt", "frequency", "step_period"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"StressConfig.{name} must be > 0, got {v!r}")
        for name in ("amplitude", "jump", "steps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 0.5):
                raise ValueError(f"StressConfig.{name} must be in [0, 0.5] rad, got {v!r}")
        for name in ("home", "joint_scale"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (7,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"StressConfig.{name} must be 7 finite numbers")
            object.__setattr__(self, name, tuple(float(x) for x in arr))
        if self.gripper is not None and not (0.0 <= float(self.gripper) <= 0.08):
            raise ValueError(f"StressConfig.gripper must be None or in [0, 0.08] m, got {self.gripper!r}")
        if isinstance(self.n_candidates, bool) or not isinstance(self.n_candidates, int) or self.n_candidates < 1:
            raise ValueError(f"StressConfig.n_candidates must be an int >= 1, got {self.n_candidates!r}")


class StressPolicy:
    """``ChunkPolicy`` with deterministic, deliberately discontinuous chunks (module docstring)."""

    obs_dim = 1

    def __init__(self, config: StressConfig | None = None) -> None:
        self.config = config or StressConfig()
        self.horizon = self.config.horizon
        self.action_dim = 7 if self.config.gripper is None else 8
        self._home = np.asarray(self.config.home)
        self._scale = np.asarray(self.config.joint_scale)
        self._phase = np.linspace(0.0, 2 * np.pi, 7, endpoint=False)  # joints out of phase
        self.calls = 0

    def base(self, steps: np.ndarray) -> np.ndarray:
        """Smooth part at control ``steps (N,)`` -> ``(N, 7)``."""
        c = self.config
        t = np.asarray(steps, dtype=np.float64)[:, None] * c.control_dt
        out = self._home + self._scale * c.amplitude * np.sin(2 * np.pi * c.frequency * t + self._phase)
        if c.steps > 0:
            sq = np.where(np.floor(2 * t / c.step_period) % 2 == 0, 1.0, -1.0)
            out = out + self._scale * c.steps * sq
        return out

    def _offsets(self, seed: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.config.seed & 0xFFFFFFFF, int(seed) & 0xFFFFFFFF])
        return rng.uniform(-1.0, 1.0, size=(n, 7)) * self.config.jump * self._scale

    def raw_chunk(self, t_obs: int, seed: int, n: int = 1) -> np.ndarray:
        """``(n, H, 7)``: base motion from ``t_obs`` plus ``n`` offsets drawn from ``seed``."""
        base = self.base(t_obs + np.arange(self.horizon))
        return base[None] + self._offsets(seed, n)[:, None, :]

    def infer(
        self, obs, sampler: str = "vanilla", prefix=None, weights=None, n_frozen=None, seed: int | None = None
    ) -> np.ndarray:
        """``obs (B, 1)`` control steps -> actions ``(B, H, A)``; see the module docstring."""
        o = np.asarray(obs, dtype=np.float64)
        if o.ndim != 2 or o.shape[1] != 1 or not np.all(np.isfinite(o)):
            raise ValueError(f"obs must be (B, 1) finite control steps, got shape {o.shape}")
        b, h = o.shape[0], self.horizon
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}")
        base_seed = self.calls if seed is None else int(seed)
        self.calls += 1
        pre = None
        if prefix is not None:
            pre = np.asarray(prefix, dtype=np.float64)
            if pre.shape[:2] != (b, h) or pre.shape[2] < 7:
                raise ValueError(f"prefix must be (B, H, A), got {pre.shape}")
            pre = pre[..., :7]
        out = np.empty((b, h, 7))
        for i in range(b):
            t_obs = int(round(o[i, 0]))
            seed_i = base_seed * 1009 + i
            if sampler == "bid" and pre is not None and weights is not None:
                cands = self.raw_chunk(t_obs, seed_i, self.config.n_candidates)
                w = np.asarray(weights, dtype=np.float64)[i]
                idx = int(bid_select(cands[None], pre[i][None], w[None], None, forward=False)[0])
                out[i] = cands[idx]
                continue
            raw = self.raw_chunk(t_obs, seed_i)[0]
            if sampler in ("rtc", "rtc_jf") and pre is not None and weights is not None:
                w = np.clip(np.asarray(weights, dtype=np.float64)[i], 0.0, 1.0)[:, None]
                raw = w * pre[i] + (1.0 - w) * raw
            elif sampler in ("prefix", "remac") and pre is not None and n_frozen is not None:
                nf = int(np.asarray(n_frozen).reshape(-1)[i])
                raw[:nf] = pre[i, :nf]
            out[i] = raw
        if self.config.gripper is not None:
            out = np.concatenate([out, np.full((b, h, 1), float(self.config.gripper))], axis=2)
        return out
