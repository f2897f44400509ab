"""Flow-matching chunk networks: an MLP-Mixer over the chunk with adaLN conditioning.

Architecture in the style of the RTC Kinetix benchmark policy: tokens are the H action steps,
each block mixes across tokens (an MLP over H) and across channels (SiLU MLPs: on CPU erf-GELU
costs ~4x SiLU at this size), both pre-normalised with adaLN (scale, shift, gate) computed from the flow time tau (sinusoidal features + MLP) plus
the observation embedding. Two observation encoders:

* ``state``: an MLP over the flat state vector (B, obs_dim),
* ``image``: a small CNN over one camera image (B, 3, h, w) in [0, 1] plus the state MLP.

Everything that depends only on the observation is computed once per chunk by
:meth:`FlowMixerNet.encode`; :meth:`FlowMixerNet.velocity` then runs only the x-dependent
part. With ``encode(obs, cache=True)`` the adaLN modulation (a function of tau and the
observation only) is also memoised per tau value inside the returned :class:`ObsCond`, so
the n Euler steps of one chunk compute it once each and a second sampler pass (BID, RTC's
grad pass) reuses it. Flow time: tau = 0 noise, tau = 1 data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ENCODERS = ("state", "image")


@dataclass(frozen=True)
class FlowNetConfig:
    """Configuration of :class:`FlowMixerNet` (defaults: ~0.6M parameters at obs_dim 32, H=A=8)."""

    obs_dim: int  # flat state observation size
    action_dim: int  # A
    horizon: int  # H, number of tokens
    hidden: int = 128  # channel width C of the mixer
    channel_hidden: int = 256  # hidden width of the channel-mixing MLP
    token_hidden: int = 32  # hidden width of the token-mixing MLP
    depth: int = 3  # number of mixer blocks
    obs_hidden: int = 128  # hidden width of the state encoder MLP
    encoder: str = "state"  # "state" or "image"
    image_size: tuple[int, int] | None = None  # (h, w) of the camera image, image encoder only
    image_channels: int = 3  # camera channels (rgb)
    cnn_channels: tuple[int, ...] = (16, 32, 32)  # conv widths, each conv has stride 2
    time_min_period: float = 4e-3  # sinusoidal tau features: shortest period
    time_max_period: float = 4.0  # sinusoidal tau features: longest period

    def __post_init__(self) -> None:
        for name in (
            "obs_dim",
            "action_dim",
            "horizon",
            "hidden",
            "channel_hidden",
            "token_hidden",
            "depth",
            "obs_hidden",
            "image_channels",
        ):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"FlowNetConfig.{name} must be an int >= 1, got {val!r}")
        if self.hidden % 2:
            raise ValueError(f"FlowNetConfig.hidden must be even (sin/cos tau features), got {self.hidden}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"FlowNetConfig.encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "image":
            if self.image_size is None or len(self.image_size) != 2 or min(self.image_size) < 16:
                raise ValueError(f"image encoder needs image_size=(h, w) with h, w >= 16, got {self.image_size!r}")
            if not self.cnn_channels or min(self.cnn_channels) < 1:
                raise ValueError(f"cnn_channels must be non-empty positive ints, got {self.cnn_channels!r}")
        elif self.image_size is not None:
            raise ValueError("image_size is only valid with encoder='image'")
        if not (0 < self.time_min_period < self.time_max_period):
            raise ValueError("need 0 < time_min_period < time_max_period")
        # normalise list inputs (e.g. from JSON) to tuples so the config stays hashable
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "cnn_channels", tuple(int(v) for v in self.cnn_channels))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FlowNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FlowNetConfig fields: {sorted(unknown)}")
        return cls(**dict(d))


def sincos_features(tau: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sinusoidal features of tau (B,) -> (B, dim): sin and cos at log-spaced periods."""
    frac = torch.linspace(0.0, 1.0, dim // 2, dtype=tau.dtype, device=tau.device)
    period = min_period * (max_period / min_period) ** frac
    arg = tau[:, None] * (2.0 * math.pi / period)[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


@dataclass
class ObsCond:
    """Per-chunk conditioning computed once from the observation.

    ``emb``: (B, C) observation embedding (also the latent exported to A2C2);
    ``tokens``: (B, 1, C) observation contribution to every input token;
    ``cache``: per-tau memo of the adaLN modulation, or None (no memoisation, e.g. training).
    A cond belongs to the parameter state it was computed with (LoRA on/off): re-encode
    after switching adapters.
    """

    emb: torch.Tensor
    tokens: torch.Tensor
    cache: dict[float, list[tuple[torch.Tensor, ...]]] | None = field(default=None)

    @property
    def batch(self) -> int:
        return int(self.emb.shape[0])

    def repeat_interleave(self, n: int) -> ObsCond:
        """Each row repeated n times (row b -> rows b*n .. b*n+n-1), a fresh memo."""
        return ObsCond(
            emb=self.emb.repeat_interleave(n, dim=0),
            tokens=self.tokens.repeat_interleave(n, dim=0),
            cache={} if self.cache is not None else None,
        )


class MixerBlock(nn.Module):
    """Token-mixing + channel-mixing MLP block (SiLU) with adaLN (scale, shift, gate) modulation."""

    def __init__(self, horizon: int, token_hidden: int, hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.token_in = nn.Linear(horizon, token_hidden)
        self.token_out = nn.Linear(token_hidden, horizon)
        self.channel_in = nn.Linear(hidden, channel_hidden)
        self.channel_out = nn.Linear(channel_hidden, hidden)
        self.adaln = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.adaln.weight)  # blocks start as identity (DiT-style)
        nn.init.zeros_(self.adaln.bias)

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, C) conditioning -> six (B, 1, C) tensors (1 + scale1, shift1, gate1, 1 + scale2, shift2,
        gate2); they depend on tau and the observation only, so they can be cached per chunk."""
        s1, b1, g1, s2, b2, g2 = self.adaln(F.silu(c)).unsqueeze(1).chunk(6, dim=-1)
        return (1.0 + s1, b1.contiguous(), g1.contiguous(), 1.0 + s2, b2.contiguous(), g2.contiguous())

    def forward(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        s1p, b1, g1, s2p, b2, g2 = mod
        c = (self.hidden,)
        y = torch.addcmul(b1, F.layer_norm(x, c), s1p)  # adaLN: norm(x) * (1 + scale) + shift
        y = self.token_out(F.silu(self.token_in(y.transpose(1, 2)))).transpose(1, 2)  # mix over H
        x = torch.addcmul(x, g1, y)  # gated residual
        y = torch.addcmul(b2, F.layer_norm(x, c), s2p)
        y = self.channel_out(F.silu(self.channel_in(y)))  # mix over channels
        return torch.addcmul(x, g2, y)


class StateEncoder(nn.Module):
    """MLP over the flat (normalised) state (B, obs_dim) -> (B, C)."""

    def __init__(self, obs_dim: int, obs_hidden: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, obs_hidden), nn.SiLU(), nn.Linear(obs_hidden, hidden), nn.LayerNorm(hidden)
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


class ImageStateEncoder(nn.Module):
    """Small CNN over an image (B, ch, h, w) in [0, 1] plus the state MLP -> (B, C)."""

    def __init__(self, cfg: FlowNetConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.image_channels
        for i, c_out in enumerate(cfg.cnn_channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2), nn.GroupNorm(1, c_out), nn.SiLU()]
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        self.image_proj = nn.Linear(c_in, cfg.hidden)
        self.state = StateEncoder(cfg.obs_dim, cfg.obs_hidden, cfg.hidden)
        self.fuse = nn.Sequential(nn.SiLU(), nn.Linear(2 * cfg.hidden, cfg.hidden), nn.LayerNorm(cfg.hidden))

    def forward(self, state: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        feat = self.cnn(image).mean(dim=(2, 3))  # global average pool -> (B, c)
        return self.fuse(torch.cat([self.image_proj(feat), self.state(state)], dim=-1))


class FlowMixerNet(nn.Module):
    """Velocity network ``v(x, tau | obs)`` over action chunks x: (B, H, A)."""

    def __init__(self, config: FlowNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.hidden
        self.encoder = (
            StateEncoder(config.obs_dim, config.obs_hidden, c)
            if config.encoder == "state"
            else ImageStateEncoder(config)
        )
        self.obs_proj = nn.Linear(c, c)  # observation part of the token input projection
        self.action_proj = nn.Linear(config.action_dim, c)  # x part of the token input projection
        self.time_mlp = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, c))
        self.blocks = nn.ModuleList(
            MixerBlock(config.horizon, config.token_hidden, c, config.channel_hidden) for _ in range(config.depth)
        )
        self.final_adaln = nn.Linear(c, 2 * c)
        nn.init.zeros_(self.final_adaln.weight)
        nn.init.zeros_(self.final_adaln.bias)
        self.out_proj = nn.Linear(c, config.action_dim)

    # ------------------------------------------------------------------ properties
    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def obs_dim(self) -> int:
        return self.config.obs_dim

    @property
    def latent_dim(self) -> int:
        """Size of :meth:`latent` (the observation embedding)."""
        return self.config.hidden

    # ------------------------------------------------------------------ observation side
    def encode(self, obs: torch.Tensor | Mapping[str, torch.Tensor], cache: bool = False) -> ObsCond:
        """Observation -> :class:`ObsCond` (computed once per chunk).

        ``obs``: (B, obs_dim) normalised state for the state encoder; for the image encoder a
        mapping ``{"state": (B, obs_dim), "image": (B, ch, h, w) float in [0, 1]}``.
        ``cache=True`` memoises the adaLN modulation per tau (inference only: the memo is
        computed without gradients).
        """
        if self.config.encoder == "state":
            if isinstance(obs, Mapping):
                obs = obs["state"]
            self._check_state(obs)
            emb = self.encoder(obs)
        else:
            if not isinstance(obs, Mapping) or "state" not in obs or "image" not in obs:
                raise ValueError("image encoder needs obs = {'state': (B, obs_dim), 'image': (B, ch, h, w)}")
            state, image = obs["state"], obs["image"]
            self._check_state(state)
            ch, (h, w) = self.config.image_channels, self.config.image_size
            if image.ndim != 4 or tuple(image.shape[1:]) != (ch, h, w) or image.shape[0] != state.shape[0]:
                raise ValueError(f"image must have shape (B, {ch}, {h}, {w}), got {tuple(image.shape)}")
            emb = self.encoder(state, image)
        return ObsCond(emb=emb, tokens=self.obs_proj(emb).unsqueeze(1), cache={} if cache else None)

    def _check_state(self, state: torch.Tensor) -> None:
        if state.ndim != 2 or state.shape[1] != self.config.obs_dim:
            raise ValueError(f"state must have shape (B, {self.config.obs_dim}), got {tuple(state.shape)}")

    def latent(self, cond: ObsCond) -> torch.Tensor:
        """Base-policy latent for A2C2: the observation embedding (B, latent_dim)."""
        return cond.emb

    # ------------------------------------------------------------------ tau side
    def _modulation(self, tau: torch.Tensor, cond: ObsCond) -> list[torch.Tensor]:
        """adaLN modulation for every block plus the final layer; tau: (B,)."""
        t = self.time_mlp(
            sincos_features(tau, self.config.hidden, self.config.time_min_period, self.config.time_max_period)
        )
        c = t + cond.emb
        mods: list = [blk.modulation(c) for blk in self.blocks]
        scale, shift = self.final_adaln(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        mods.append((1.0 + scale, shift.contiguous()))
        return mods

    def precompute(self, cond: ObsCond, taus) -> ObsCond:
        """Fill ``cond``'s memo for all flow times ``taus`` (e.g. ``flow_times(n)``) in one batched pass.

        One (n*B, C) matrix product per adaLN layer instead of n matrix-vector products spread
        over the Euler steps. No-op when ``cond.cache`` is None. Returns ``cond``.
        """
        if cond.cache is None:
            return cond
        todo = [float(t) for t in taus if float(t) not in cond.cache]
        if not todo:
            return cond
        b = cond.batch
        with torch.no_grad():
            tau = torch.tensor(todo, dtype=cond.emb.dtype, device=cond.emb.device).repeat_interleave(b)
            big = ObsCond(emb=cond.emb.repeat(len(todo), 1), tokens=cond.tokens)
            mods = self._modulation(tau, big)  # per layer: tensors with n*B rows, tau-major
        for i, t in enumerate(todo):
            rows = slice(i * b, (i + 1) * b)
            cond.cache[t] = [tuple(m[rows] for m in layer) for layer in mods]
        return cond

    def _tau_vector(self, tau: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(tau, dtype=like.dtype, device=like.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"tau must be a scalar or have shape (B,) = ({batch},), got {tuple(t.shape)}")
        return t

    # ------------------------------------------------------------------ x side
    def velocity(self, x: torch.Tensor, tau: float | torch.Tensor, cond: ObsCond) -> torch.Tensor:
        """Velocity (B, H, A) at noisy chunk ``x`` (B, H, A) and flow time ``tau`` (float or (B,))."""
        b = cond.batch
        if x.ndim != 3 or tuple(x.shape) != (b, self.config.horizon, self.config.action_dim):
            raise ValueError(
                f"x must have shape (B, H, A) = ({b}, {self.config.horizon}, {self.config.action_dim}), "
                f"got {tuple(x.shape)}"
            )
        if cond.cache is not None and isinstance(tau, (float, int)):
            key = float(tau)
            mods = cond.cache.get(key)
            if mods is None:
                with torch.no_grad():
                    mods = self._modulation(self._tau_vector(key, b, x), cond)
                cond.cache[key] = mods
        else:
            mods = self._modulation(self._tau_vector(tau, b, x), cond)
        h = self.action_proj(x) + cond.tokens
        for blk, mod in zip(self.blocks, mods[:-1]):
            h = blk(h, mod)
        scale_p, shift = mods[-1]
        h = torch.addcmul(shift, F.layer_norm(h, (self.config.hidden,)), scale_p)
        return self.out_proj(h)

    def forward(
        self, obs: torch.Tensor | Mapping[str, torch.Tensor], x: torch.Tensor, tau: float | torch.Tensor
    ) -> torch.Tensor:
        """Uncached path (training): ``velocity(x, tau, encode(obs))``, gradients everywhere."""
        return self.velocity(x, tau, self.encode(obs, cache=False))

    def velocity_fn(self, cond: ObsCond):
        """Bind a cond: returns ``v(x, tau)`` for the samplers."""
        return lambda x, tau: self.velocity(x, tau, cond)


def build_network(config: FlowNetConfig) -> FlowMixerNet:
    """The network for a config (one class; the encoder is chosen by ``config.encoder``)."""
    return FlowMixerNet(config)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def flow_matching_loss(
    net: nn.Module,
    obs: torch.Tensor | Mapping[str, torch.Tensor],
    actions: torch.Tensor,
    generator: torch.Generator | None = None,
    loss_mask: torch.Tensor | None = None,
    cond_prefix: torch.Tensor | None = None,
    n_frozen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conditional flow-matching loss for normalised ``actions`` (B, H, A).

    ``x_tau = (1 - tau) * x0 + tau * actions``, target ``actions - x0``, tau ~ U[0, 1).
    ``loss_mask``: optional (B, H) weights; the loss is the mean squared error over the
    weighted entries. REMAC masked action chunking: pass ``cond_prefix`` (B, H, A, normalised;
    ground truth or the frozen base policy's prediction, per the curriculum) and ``n_frozen``
    (B,) ints: the first ``n_frozen[b]`` slots of ``x_tau`` are overwritten with the clean
    prefix (exactly what :func:`~async_vla_ros.policy.samplers.sample_prefix` does in its
    default ``"clean"`` mode at inference) and the loss covers only actions ``h >= n_frozen[b]``
    (multiplied with ``loss_mask`` when both are given).
    """
    b, h, _ = actions.shape
    x0 = torch.randn(actions.shape, generator=generator, dtype=actions.dtype, device=actions.device)
    tau = torch.rand((b,), generator=generator, dtype=actions.dtype, device=actions.device)
    t = tau[:, None, None]
    x_tau = (1.0 - t) * x0 + t * actions
    if (cond_prefix is None) != (n_frozen is None):
        raise ValueError("cond_prefix and n_frozen must be given together")
    if cond_prefix is not None:
        if cond_prefix.shape != actions.shape:
            raise ValueError(
                f"cond_prefix must have the shape of actions {tuple(actions.shape)}, got {tuple(cond_prefix.shape)}"
            )
        nf = torch.as_tensor(n_frozen, device=actions.device).long().reshape(-1)
        if nf.shape != (b,) or bool((nf < 0).any()) or bool((nf > h).any()):
            raise ValueError(f"n_frozen must be (B,) = ({b},) ints in [0, H={h}]")
        frozen = torch.arange(h, device=actions.device)[None, :] < nf[:, None]  # (B, H)
        x_tau = torch.where(frozen.unsqueeze(-1), cond_prefix.to(x_tau.dtype), x_tau)
        free = (~frozen).to(actions.dtype)
        loss_mask = free if loss_mask is None else loss_mask.to(actions.dtype) * free
    err = (net(obs, x_tau, tau) - (actions - x0)) ** 2
    if loss_mask is None:
        return err.mean()
    if loss_mask.shape != (b, h):
        raise ValueError(f"loss_mask must have shape (B, H) = ({b}, {h}), got {tuple(loss_mask.shape)}")
    m = loss_mask.to(err.dtype).unsqueeze(-1).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)
