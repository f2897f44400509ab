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
    # REMAC as its authors run it: row-gated LoRA adapters that take the prefix mask as input
    # (0: none, the plain network). See :class:`MaskedLoRA`.
    mask_lora_rank: int = 0
    mask_lora_alpha: float = 8.0  # scale alpha / rank
    mask_lora_dropout: float = 0.1  # dropout on the rank-r code (training only)

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
        r = self.mask_lora_rank
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"FlowNetConfig.mask_lora_rank must be an int >= 0, got {r!r}")
        if not (math.isfinite(self.mask_lora_alpha) and self.mask_lora_alpha > 0):
            raise ValueError(f"FlowNetConfig.mask_lora_alpha must be > 0, got {self.mask_lora_alpha!r}")
        if not 0.0 <= self.mask_lora_dropout < 1.0:
            raise ValueError(f"FlowNetConfig.mask_lora_dropout must lie in [0, 1), got {self.mask_lora_dropout!r}")
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


class MaskedLoRA(nn.Module):
    """Low-rank update of one Linear layer, gated per action row by the prefix mask.

    REMAC as its authors implement it (hatchetProject/REMAC ``LoRALinear``, re-implemented, not
    copied): ``delta = m * (alpha / r) * B(dropout(A(x + P(m))))`` where ``m`` (B, H, 1) is 1 on
    the rows the policy must fill (``k >= d``) and 0 on the executed prefix, and ``P`` (1 -> in)
    is a learned projection of the mask added to the adapter's input (mask awareness). With
    ``m = None`` (token-mixing layers, whose rows are channels) the delta is ungated and has no
    mask input. ``A`` and ``B`` both start random (LeCun-normal, the Flax default the authors
    keep), not ``B = 0`` as in standard LoRA, so the adapted model starts away from the base.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float, mask_input: bool):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=in_features**-0.5)
        nn.init.normal_(self.up.weight, std=rank**-0.5)
        self.mask_in = nn.Linear(1, in_features) if mask_input else None
        if self.mask_in is not None:
            nn.init.normal_(self.mask_in.weight, std=1.0)
            nn.init.zeros_(self.mask_in.bias)
        self.scale = float(alpha) / float(rank)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        if m is not None and self.mask_in is not None:
            x = x + self.mask_in(m)
        delta = self.up(self.dropout(self.down(x))) * self.scale
        return delta if m is None or self.mask_in is None else delta * m


class BlockAdapters(nn.Module):
    """The four :class:`MaskedLoRA` of one mixer block (token mixing ungated, channel mixing gated)."""

    def __init__(self, horizon: int, token_hidden: int, hidden: int, channel_hidden: int, cfg: FlowNetConfig):
        super().__init__()
        r, a, p = cfg.mask_lora_rank, cfg.mask_lora_alpha, cfg.mask_lora_dropout
        self.token_in = MaskedLoRA(horizon, token_hidden, r, a, p, mask_input=False)
        self.token_out = MaskedLoRA(token_hidden, horizon, r, a, p, mask_input=False)
        self.channel_in = MaskedLoRA(hidden, channel_hidden, r, a, p, mask_input=True)
        self.channel_out = MaskedLoRA(channel_hidden, hidden, r, a, p, mask_input=True)


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

    def forward(
        self,
        x: torch.Tensor,
        mod: tuple[torch.Tensor, ...],
        adapters: BlockAdapters | None = None,
        m: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s1p, b1, g1, s2p, b2, g2 = mod
        c = (self.hidden,)
        y = torch.addcmul(b1, F.layer_norm(x, c), s1p)  # adaLN: norm(x) * (1 + scale) + shift
        if adapters is None:
            y = self.token_out(F.silu(self.token_in(y.transpose(1, 2)))).transpose(1, 2)  # mix over H
            x = torch.addcmul(x, g1, y)  # gated residual
            y = torch.addcmul(b2, F.layer_norm(x, c), s2p)
            y = self.channel_out(F.silu(self.channel_in(y)))  # mix over channels
            return torch.addcmul(x, g2, y)
        yt = y.transpose(1, 2)
        z = F.silu(self.token_in(yt) + adapters.token_in(yt, None))
        y = (self.token_out(z) + adapters.token_out(z, None)).transpose(1, 2)
        x = torch.addcmul(x, g1, y)
        y = torch.addcmul(b2, F.layer_norm(x, c), s2p)
        z = F.silu(self.channel_in(y) + adapters.channel_in(y, m))
        y = self.channel_out(z) + adapters.channel_out(z, m)
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
        self.adapters: nn.ModuleDict | None = None
        if config.mask_lora_rank:
            r, a, p = config.mask_lora_rank, config.mask_lora_alpha, config.mask_lora_dropout
            self.adapters = nn.ModuleDict(
                {
                    # the token input projection sees [x, obs embedding] (one Linear in the authors' net)
                    "in_proj": MaskedLoRA(config.action_dim + c, c, r, a, p, mask_input=True),
                    "blocks": nn.ModuleList(
                        BlockAdapters(config.horizon, config.token_hidden, c, config.channel_hidden, config)
                        for _ in range(config.depth)
                    ),
                    "out_proj": MaskedLoRA(c, config.action_dim, r, a, p, mask_input=True),
                }
            )

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
    def adapter_parameters(self) -> list[nn.Parameter]:
        """Parameters of the mask-gated adapters (empty for a plain network)."""
        return [] if self.adapters is None else list(self.adapters.parameters())

    def velocity(
        self,
        x: torch.Tensor,
        tau: float | torch.Tensor,
        cond: ObsCond,
        mask: torch.Tensor | None = None,
        adapters: bool = True,
    ) -> torch.Tensor:
        """Velocity (B, H, A) at noisy chunk ``x`` (B, H, A) and flow time ``tau`` (float or (B,)).

        ``mask`` (B, H), 1 on the rows to generate and 0 on the executed prefix, conditions the
        mask-gated adapters (networks with ``mask_lora_rank > 0``; None means all ones, d = 0);
        plain networks ignore it. ``adapters=False`` runs the frozen backbone only.
        """
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
        if self.adapters is None or not adapters:
            for blk, mod in zip(self.blocks, mods[:-1]):
                h = blk(h, mod)
            scale_p, shift = mods[-1]
            h = torch.addcmul(shift, F.layer_norm(h, (self.config.hidden,)), scale_p)
            return self.out_proj(h)
        if mask is None:
            m = x.new_ones((b, self.config.horizon, 1))
        else:
            m = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
            if tuple(m.shape) != (b, self.config.horizon):
                raise ValueError(f"mask must have shape (B, H) = ({b}, {self.config.horizon}), got {tuple(m.shape)}")
            m = m.unsqueeze(-1)
        ad = self.adapters
        obs_rows = cond.emb.unsqueeze(1).expand(b, self.config.horizon, cond.emb.shape[-1])
        h = h + ad["in_proj"](torch.cat([x, obs_rows], dim=-1), m)
        for blk, mod, bad in zip(self.blocks, mods[:-1], ad["blocks"]):
            h = blk(h, mod, bad, m)
        scale_p, shift = mods[-1]
        h = torch.addcmul(shift, F.layer_norm(h, (self.config.hidden,)), scale_p)
        return self.out_proj(h) + ad["out_proj"](h, m)

    def forward(
        self,
        obs: torch.Tensor | Mapping[str, torch.Tensor],
        x: torch.Tensor,
        tau: float | torch.Tensor,
        mask: torch.Tensor | None = None,
        adapters: bool = True,
    ) -> torch.Tensor:
        """Uncached path (training): ``velocity(x, tau, encode(obs), mask, adapters)``."""
        return self.velocity(x, tau, self.encode(obs, cache=False), mask=mask, adapters=adapters)

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
