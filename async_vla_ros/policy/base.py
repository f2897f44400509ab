"""The policy interface (:class:`ChunkPolicy`), the flow-matching backend, checkpoints, registry.

``ChunkPolicy.infer`` is the one seam between the scheduler / lockstep runner / policy node and
any model: numpy in (robot units), numpy out (robot units). Normalisation, noise, sampler
choice and torch details stay inside the backend.

Checkpoint format (one ``torch.save`` file, loadable with ``weights_only=True``)::

    {"format": "async_vla_ros.policy/1", "backend": "flow", "task": str,
     "obs_dim": int, "horizon": int, "action_dim": int,
     "network_config": FlowNetConfig.to_dict(), "state_dict": {...},
     "normalizer": Normalizer.to_dict(), "sampler_settings": SamplerSettings.to_dict(),
     "train_config": dict (JSON-compatible, from the trainer), "extra": dict}

A LoRA (peft) model is merged into its base weights before saving (zero inference cost).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from async_vla_ros.core.strategies import SAMPLERS, check_beta
from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.checks import check_sampler, check_seed, check_state, did_you_mean
from async_vla_ros.policy.networks import FlowNetConfig, ObsCond, build_network
from async_vla_ros.policy.normalize import Normalizer
from async_vla_ros.policy.registry import (
    Backend,
    BackendError,
    BackendRequest,
    available_backends,
    checkpoint_file,
    get_backend,
    register_backend,
)

CHECKPOINT_FORMAT = "async_vla_ros.policy/1"
# the camera a flow image policy reads (its demos' first camera: `demos --images` records scene)
FLOW_IMAGE_CAMERA = "scene"


@runtime_checkable
class ChunkPolicy(Protocol):
    """A policy that returns action chunks. Actions are in robot units (joint position targets in
    rad, gripper width in m); normalisation lives inside the implementation.

    ``infer`` arguments:

    * ``obs``: (B, obs_dim) float array, or a mapping ``{"state": (B, obs_dim), "images":
      {camera: (B, h, w, 3) uint8}, "instruction": str}`` for policies that take cameras (they
      name them in ``camera_hw``: camera -> (h, w)); a one-camera flow image policy also takes
      ``"image"`` directly (training, tests),
    * ``sampler``: ``"vanilla" | "rtc" | "rtc_jf" | "prefix" | "remac" | "bid"`` (what each needs:
      ``policy.samplers.SAMPLER_INPUTS``),
    * ``prefix``: (B, H, A) previous plan aligned to the new chunk's steps (rtc, rtc_jf, prefix,
      remac, bid; bid also accepts prefix=weights=None for a first chunk),
    * ``weights``: (B, H) soft mask in [0, 1] (rtc, rtc_jf, bid); for remac, > 0 on the prefix
      rows that hold real planned actions,
    * ``n_frozen``: (B,) number of frozen leading actions (prefix, remac),
    * ``seed``: noise seed for this call (deterministic output), or None,
    * ``beta``: RTC guidance clip of this call (rtc, rtc_jf), or None for the policy's default
      (a request parameter: one loaded policy serves every preset's beta). A backend without a
      per-request clip leaves the parameter out (``core.requests.takes_beta``).

    Returns (B, H, A) float64.

    A policy with ``reads_proprio = True`` (optional attribute, default False) reads only the
    proprioception, the first ``obs_dim`` (= ``names.N_PROPRIO``) values of any task's state: its
    callers hand it that prefix (:func:`policy_state`), so one policy serves every task.
    """

    horizon: int
    action_dim: int
    obs_dim: int

    def infer(
        self,
        obs: np.ndarray | Mapping[str, np.ndarray],
        sampler: str = "vanilla",
        prefix: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        n_frozen: np.ndarray | None = None,
        seed: int | None = None,
        beta: float | None = None,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class SamplerSettings:
    """Inference settings of :class:`FlowPolicyBackend`."""

    n_steps: int = 5  # n Euler denoising steps
    beta: float = 5.0  # RTC guidance weight clip
    bid_n: int = 8  # BID: strong samples per row (and weak samples when a weak model is set)
    prefix_mode: str = "clean"  # REMAC prefix written as "clean" actions or the noisy "interpolant"
    num_threads: int | None = 1  # torch.set_num_threads at construction (process-wide); None: leave
    cache_conditioning: bool = True  # memoise the tau/obs-only adaLN modulation across steps
    seed: int = 0  # seed of the backend's own noise stream (used when infer(seed=None))

    def __post_init__(self) -> None:
        for name in ("n_steps", "bid_n"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"SamplerSettings.{name} must be an int >= 1, got {val!r}")
        if not (isinstance(self.beta, (int, float)) and np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"SamplerSettings.beta must be finite and >= 0, got {self.beta!r}")
        if self.prefix_mode not in S.PREFIX_MODES:
            raise ValueError(f"SamplerSettings.prefix_mode must be one of {S.PREFIX_MODES}, got {self.prefix_mode!r}")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"SamplerSettings.num_threads must be None or an int >= 1, got {self.num_threads!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"SamplerSettings.seed must be an int, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplerSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SamplerSettings fields: {sorted(unknown)}")
        return cls(**dict(d))


def _check_sampler(name: str) -> str:
    check_sampler(name, SAMPLERS)
    if name not in S.SAMPLER_INPUTS:
        raise ValueError(
            f"the flow backend does not run sampler {name!r} (it runs {', '.join(S.SAMPLER_INPUTS)}; "
            "rtc_lerobot is LeRobot's own RTC, on the lerobot backend)"
        )
    return name


class FlowPolicyBackend:
    """:class:`ChunkPolicy` over a :class:`FlowMixerNet`, a :class:`Normalizer` and sampler settings.

    Not thread-safe: one ``infer`` at a time (the policy node serialises requests); the
    backend's own noise stream advances with every call made without a seed.

    ``network`` may be any module with ``encode(obs, cache)``, ``velocity(x, tau, cond)`` and a
    ``config`` (:class:`FlowNetConfig`), including a peft-wrapped one (merge before deployment:
    unmerged LoRA costs 1.3-2.2x). ``weak_network`` (optional, same normaliser) enables BID's
    forward contrast; ``bid_select`` replaces :func:`async_vla_ros.core.bid.bid_select`
    (same signature). After every call, ``last_info`` holds the sampler, the latency in ms and
    (BID) the chosen candidate indices.
    """

    def __init__(
        self,
        network: nn.Module,
        normalizer: Normalizer | None = None,
        settings: SamplerSettings | None = None,
        *,
        task: str = "",
        weak_network: nn.Module | None = None,
        device: str | torch.device = "cpu",
        train_config: Mapping[str, Any] | None = None,
        bid_select: S.BidSelectFn | None = None,
    ) -> None:
        cfg = getattr(network, "config", None)
        if not isinstance(cfg, FlowNetConfig):
            raise TypeError("network must carry a FlowNetConfig as .config (a FlowMixerNet or a peft wrap of one)")
        self.config: FlowNetConfig = cfg
        self.settings = settings if settings is not None else SamplerSettings()
        self.normalizer = normalizer if normalizer is not None else Normalizer.identity(cfg.obs_dim, cfg.action_dim)
        if self.normalizer.obs.dim != cfg.obs_dim or self.normalizer.action.dim != cfg.action_dim:
            raise ValueError(
                f"normalizer dims (obs {self.normalizer.obs.dim}, action {self.normalizer.action.dim}) do not match "
                f"the network (obs {cfg.obs_dim}, action {cfg.action_dim})"
            )
        if weak_network is not None:
            wc = getattr(weak_network, "config", None)
            if not isinstance(wc, FlowNetConfig) or (wc.obs_dim, wc.horizon, wc.action_dim) != (
                cfg.obs_dim,
                cfg.horizon,
                cfg.action_dim,
            ):
                raise ValueError("weak_network must be a flow network with the same obs_dim, H and A")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.weak_network = weak_network.to(self.device).eval() if weak_network is not None else None
        self.task = str(task)
        self.train_config = dict(train_config or {})
        self._bid_select = bid_select  # None: async_vla_ros.core.bid.bid_select
        if self.settings.num_threads is not None:
            torch.set_num_threads(self.settings.num_threads)
        self._generator = torch.Generator(device=self.device).manual_seed(self.settings.seed)
        self.last_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ ChunkPolicy fields
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
        return self.config.hidden

    @property
    def camera_hw(self) -> dict[str, tuple[int, int]]:
        """Camera name -> (h, w) an image policy takes (``FLOW_IMAGE_CAMERA``); {} for state policies."""
        if self.config.encoder != "image":
            return {}
        return {FLOW_IMAGE_CAMERA: tuple(int(v) for v in self.config.image_size)}

    # ------------------------------------------------------------------ input checks
    def _prepare_obs(self, obs) -> tuple[torch.Tensor | dict[str, torch.Tensor], int]:
        """Validate and normalise the observation; returns (network input, B)."""
        if isinstance(obs, Mapping):
            if "state" not in obs:
                raise ValueError("observation mapping needs a 'state' entry (B, obs_dim)")
            state = self._check_state(obs["state"])
            b = state.shape[0]
            if self.config.encoder != "image":
                return self._state_tensor(state), b
            image = obs.get("image")
            if image is None and obs.get("images") is not None:
                images = obs["images"]
                if set(images) != {FLOW_IMAGE_CAMERA}:
                    raise ValueError(
                        f"camera names do not match: this image policy takes [{FLOW_IMAGE_CAMERA!r}], "
                        f"given {sorted(images)}"
                    )
                image = images[FLOW_IMAGE_CAMERA]
            if image is None:
                raise ValueError(
                    f"image policy needs obs['images'][{FLOW_IMAGE_CAMERA!r}] (or obs['image']): "
                    "(B, h, w, ch) uint8 or (B, ch, h, w) float in [0, 1]"
                )
            return {"state": self._state_tensor(state), "image": self._image_tensor(image, b)}, b
        if self.config.encoder == "image":
            raise ValueError("image policy needs a mapping obs = {'state': (B, obs_dim), 'image': ...}")
        state = self._check_state(obs)
        return self._state_tensor(state), state.shape[0]

    def _check_state(self, state) -> np.ndarray:
        return check_state(state, self.obs_dim)

    def _state_tensor(self, s: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.normalizer.obs.normalize(s), dtype=torch.float32, device=self.device)

    def _image_tensor(self, image, b: int) -> torch.Tensor:
        img = np.asarray(image)
        ch, (h, w) = self.config.image_channels, self.config.image_size
        if img.dtype == np.uint8:  # camera layout (B, h, w, ch), 0..255
            if img.shape != (b, h, w, ch):
                raise ValueError(f"uint8 image must have shape (B, h, w, ch) = ({b}, {h}, {w}, {ch}), got {img.shape}")
            t = torch.as_tensor(img, device=self.device).permute(0, 3, 1, 2).float() / 255.0
        else:  # float layout (B, ch, h, w) in [0, 1]
            if img.shape != (b, ch, h, w):
                raise ValueError(f"float image must have shape (B, ch, h, w) = ({b}, {ch}, {h}, {w}), got {img.shape}")
            if not np.isfinite(img).all():
                raise ValueError("image contains NaN or Inf")
            t = torch.as_tensor(img, dtype=torch.float32, device=self.device)
        return t.contiguous()

    def _check_prefix(self, prefix, b: int) -> torch.Tensor:
        if prefix is None:
            raise ValueError("this sampler needs prefix: (B, H, A)")
        p = np.asarray(prefix, dtype=np.float64)
        if p.shape != (b, self.horizon, self.action_dim):
            raise ValueError(
                f"prefix must have shape (B, H, A) = ({b}, {self.horizon}, {self.action_dim}), got {p.shape}"
            )
        if not np.isfinite(p).all():
            raise ValueError("prefix contains NaN or Inf")
        return torch.as_tensor(self.normalizer.action.normalize(p), dtype=torch.float32, device=self.device)

    def _check_weights(self, weights, b: int) -> torch.Tensor:
        if weights is None:
            raise ValueError("this sampler needs weights: (B, H)")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (b, self.horizon):
            raise ValueError(f"weights must have shape (B, H) = ({b}, {self.horizon}), got {w.shape}")
        if not np.isfinite(w).all() or (w < -1e-9).any() or (w > 1.0 + 1e-6).any():
            raise ValueError("weights must be finite and lie in [0, 1]")
        # round-off of soft-mask schedules (e.g. 1 + 2e-16) is clipped, not rejected
        return torch.as_tensor(np.clip(w, 0.0, 1.0), dtype=torch.float32, device=self.device)

    def _check_n_frozen(self, n_frozen, b: int) -> np.ndarray:
        if n_frozen is None:
            raise ValueError("the prefix sampler needs n_frozen: (B,)")
        nf = np.asarray(n_frozen)
        if nf.shape != (b,) or not (nf.dtype.kind in "iu" or (nf.dtype.kind == "f" and np.all(nf == np.round(nf)))):
            raise ValueError(f"n_frozen must be (B,) = ({b},) integers, got shape {nf.shape} dtype {nf.dtype}")
        if (nf < 0).any() or (nf > self.horizon).any():
            raise ValueError(f"n_frozen must lie in [0, H={self.horizon}], got {nf.tolist()}")
        return nf.astype(np.int64)

    # ------------------------------------------------------------------ inference
    def _precompute(self, cond: ObsCond) -> ObsCond:
        """Batch the tau/obs-only adaLN modulation of all Euler steps (when caching is on)."""
        if self.settings.cache_conditioning and hasattr(self.network, "precompute"):
            self.network.precompute(cond, S.flow_times(self.settings.n_steps))
        return cond

    def _noise(self, shape, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32, device=self.device)

    def encode(self, obs) -> ObsCond:
        """Validated, normalised observation -> the network's cached conditioning."""
        obs_t, _ = self._prepare_obs(obs)
        with torch.no_grad():
            return self.network.encode(obs_t, cache=self.settings.cache_conditioning)

    def latent(self, obs) -> np.ndarray:
        """Base-policy latent (B, latent_dim) for the A2C2 correction head."""
        return self.encode(obs).emb.detach().cpu().numpy().astype(np.float64)

    def infer(
        self,
        obs: np.ndarray | Mapping[str, np.ndarray],
        sampler: str = "vanilla",
        prefix: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        n_frozen: np.ndarray | None = None,
        seed: int | None = None,
        beta: float | None = None,
    ) -> np.ndarray:
        """One chunk per observation row: (B, H, A) float64 in robot units (see :class:`ChunkPolicy`)."""
        t_start = time.perf_counter_ns()
        _check_sampler(sampler)
        seed = check_seed(seed)
        beta = self.settings.beta if beta is None else check_beta(beta, "infer")
        obs_t, b = self._prepare_obs(obs)
        h, a, st = self.horizon, self.action_dim, self.settings
        y = w = nf = None
        if sampler == "bid" and prefix is None and weights is None:
            pass  # first chunk, no previous plan: BID scores by forward contrast only
        elif sampler == "remac" and prefix is None and weights is None and n_frozen is None:
            # first chunk: the authors' sampler starts from zeros with nothing clamped
            y = torch.zeros((b, h, a), dtype=torch.float32, device=self.device)
            w = torch.zeros((b, h), dtype=torch.float32, device=self.device)
            nf = np.zeros(b, dtype=np.int64)
        else:
            needs = S.SAMPLER_INPUTS[sampler]
            if "prefix" in needs:
                y = self._check_prefix(prefix, b)
            if "weights" in needs:
                w = self._check_weights(weights, b)
            if "n_frozen" in needs:
                nf = self._check_n_frozen(n_frozen, b)
        if seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(seed)
        else:
            gen = self._generator
        info: dict[str, Any] = {"sampler": sampler, "n_steps": st.n_steps}
        if sampler in ("rtc", "rtc_jf"):
            info["beta"] = beta
        # RTC differentiates through x, which inference_mode forbids; no_grad is enough there.
        ctx = torch.no_grad() if sampler == "rtc" else torch.inference_mode()
        with ctx:
            cond = self.network.encode(obs_t, cache=st.cache_conditioning)
            if sampler != "bid":
                self._precompute(cond)
            v = (
                self.network.velocity_fn(cond)
                if hasattr(self.network, "velocity_fn")
                else (lambda x, tau: self.network.velocity(x, tau, cond))
            )
            if sampler == "vanilla":
                out = S.sample_vanilla(v, self._noise((b, h, a), gen), st.n_steps)
            elif sampler in ("rtc", "rtc_jf"):
                out = S.sample_rtc(
                    v,
                    self._noise((b, h, a), gen),
                    st.n_steps,
                    y,
                    w,
                    beta=beta,
                    validate=False,
                    jacobian=sampler == "rtc",
                )
            elif sampler == "remac":
                n_real = (w > 0).sum(dim=1).cpu().numpy()
                out = S.sample_remac(
                    lambda x, tau, m: self.network.velocity(x, tau, cond, mask=m),
                    S.remac_start(y, n_real),
                    st.n_steps,
                    nf,
                    validate=False,
                )
            elif sampler == "prefix":
                out = S.sample_prefix(
                    v, self._noise((b, h, a), gen), st.n_steps, y, nf, mode=st.prefix_mode, validate=False
                )
            else:
                out, info = self._bid(obs_t, cond, y, w, gen, b, info)
        actions = self.normalizer.action.unnormalize(out.detach().cpu().numpy().astype(np.float64))
        if not np.isfinite(actions).all():
            raise FloatingPointError("policy produced NaN/Inf actions")
        info["latency_ms"] = (time.perf_counter_ns() - t_start) / 1e6
        self.last_info = info
        return actions

    def _bid(self, obs_t, cond: ObsCond, y, w, gen, b: int, info: dict) -> tuple[torch.Tensor, dict]:
        st, h, a = self.settings, self.horizon, self.action_dim
        n_c = st.bid_n
        cond_n = self._precompute(cond.repeat_interleave(n_c))
        x0 = self._noise((b, n_c, h, a), gen)
        weak_v = weak_x0 = None
        if self.weak_network is not None:
            wcond = self.weak_network.encode(obs_t, cache=st.cache_conditioning).repeat_interleave(n_c)
            if st.cache_conditioning and hasattr(self.weak_network, "precompute"):
                self.weak_network.precompute(wcond, S.flow_times(st.n_steps))
            weak_v = lambda x, tau: self.weak_network.velocity(x, tau, wcond)  # noqa: E731
            weak_x0 = self._noise((b, n_c, h, a), gen)
        res = S.sample_bid(
            lambda x, tau: self.network.velocity(x, tau, cond_n),
            x0,
            st.n_steps,
            y,
            w,
            weak_v=weak_v,
            weak_x0=weak_x0,
            select=self._bid_select,
        )
        info = dict(info, bid_index=res.index.tolist(), bid_n=n_c)
        return res.actions, info

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write this backend's network, normaliser and settings as a checkpoint."""
        return save_checkpoint(
            path,
            self.network,
            self.normalizer,
            task=self.task,
            settings=self.settings,
            train_config=self.train_config,
            extra=extra,
        )

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Mapping[str, Any],
        *,
        settings: SamplerSettings | None = None,
        device: str | torch.device = "cpu",
        weak_network: nn.Module | None = None,
        bid_select: S.BidSelectFn | None = None,
    ) -> FlowPolicyBackend:
        """Build from a loaded checkpoint dict (see :func:`load_checkpoint`)."""
        cfg = FlowNetConfig.from_dict(ckpt["network_config"])
        net = build_network(cfg)
        missing, unexpected = net.load_state_dict(ckpt["state_dict"], strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint weights do not match the network: missing {missing}, unexpected {unexpected}")
        st = settings if settings is not None else SamplerSettings.from_dict(ckpt.get("sampler_settings", {}))
        return cls(
            net,
            Normalizer.from_dict(ckpt["normalizer"]),
            st,
            task=ckpt.get("task", ""),
            weak_network=weak_network,
            device=device,
            train_config=ckpt.get("train_config", {}),
            bid_select=bid_select,
        )


def make_flow_backend(
    config: FlowNetConfig,
    normalizer: Normalizer | None = None,
    settings: SamplerSettings | None = None,
    *,
    init_seed: int = 0,
    task: str = "",
    bid_select: S.BidSelectFn | None = None,
) -> FlowPolicyBackend:
    """A backend around a freshly initialised network (seeded), e.g. for benchmarks and tests."""
    g = torch.random.get_rng_state()
    torch.manual_seed(init_seed)
    try:
        net = build_network(config)
    finally:
        torch.random.set_rng_state(g)
    return FlowPolicyBackend(net, normalizer, settings, task=task, bid_select=bid_select)


# ---------------------------------------------------------------------- checkpoint files
def _unwrap_for_saving(model: nn.Module) -> nn.Module:
    """peft-wrapped model -> merged plain copy; plain module -> itself."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        PeftModel = ()  # type: ignore[assignment]
    if isinstance(model, PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    normalizer: Normalizer,
    *,
    task: str,
    settings: SamplerSettings | None = None,
    train_config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    backend: str = "flow",
) -> Path:
    """Write a single-file checkpoint (atomic rename). ``train_config``/``extra`` must be JSON-compatible."""
    model = _unwrap_for_saving(model)
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, FlowNetConfig):
        raise TypeError("model must carry a FlowNetConfig as .config")
    if (normalizer.obs.dim, normalizer.action.dim) != (cfg.obs_dim, cfg.action_dim):
        raise ValueError("normalizer dims do not match the network config")
    get_backend(backend)
    for name, val in (("train_config", train_config), ("extra", extra)):
        try:
            json.dumps(dict(val or {}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be JSON-compatible (str/number/bool/list/dict): {exc}") from exc
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "backend": backend,
        "task": str(task),
        "obs_dim": cfg.obs_dim,
        "horizon": cfg.horizon,
        "action_dim": cfg.action_dim,
        "network_config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "normalizer": normalizer.to_dict(),
        "sampler_settings": (settings or SamplerSettings()).to_dict(),
        "train_config": json.loads(json.dumps(dict(train_config or {}))),
        "extra": json.loads(json.dumps(dict(extra or {}))),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint file (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable policy checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: not an {CHECKPOINT_FORMAT} checkpoint (format={ckpt.get('format') if isinstance(ckpt, dict) else None!r})"
        )
    for key in ("backend", "network_config", "state_dict", "normalizer", "obs_dim", "horizon", "action_dim"):
        if key not in ckpt:
            raise ValueError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


# ---------------------------------------------------------------------- the flow backend
def load_policy(path: str | os.PathLike, *, backend: str | None = None, **kwargs: Any) -> ChunkPolicy:
    """Load a checkpoint file and build the backend it names (``backend`` overrides that name).

    ``kwargs`` go to the backend's ``from_checkpoint`` (flow: ``settings``, ``device``,
    ``weak_network``, ``bid_select``).
    """
    ckpt = load_checkpoint(path)
    b = get_backend(backend or ckpt["backend"])
    if b.from_checkpoint is None:
        raise BackendError(f"{path}: the {b.name!r} backend does not load checkpoint files")
    return b.from_checkpoint(ckpt, **kwargs)


def _load_weak(path: str | os.PathLike) -> nn.Module:
    wck = load_checkpoint(Path(path).expanduser())
    weak = build_network(FlowNetConfig.from_dict(wck["network_config"]))
    weak.load_state_dict(wck["state_dict"])
    return weak


def _load_flow(req: BackendRequest) -> FlowPolicyBackend:
    """A flow checkpoint: ``req.target`` (a path) or the task's ``<kind>`` checkpoint."""
    path = Path(req.target).expanduser() if req.target else checkpoint_file(req.task, req.kind, req.checkpoint_dir)
    if not path.is_file():
        known = available_backends()
        raise BackendError(
            f"policy {req.target!r}: no such checkpoint file, and not a registered backend"
            f"{did_you_mean(req.target, known)} (backends: {', '.join(known)}; or 'default')"
        )
    ckpt = load_checkpoint(path)
    if ckpt.get("backend", "flow") != "flow":
        raise BackendError(f"{path} is a {ckpt['backend']!r} checkpoint, not a flow one")
    if ckpt.get("task", "") not in ("", req.task):
        raise BackendError(f"{path} was trained on task {ckpt['task']!r}, not {req.task!r}")
    settings = SamplerSettings.from_dict(ckpt.get("sampler_settings", {}))
    changes: dict[str, Any] = {}
    if req.num_threads is not None:
        changes["num_threads"] = int(req.num_threads)
    if req.seed is not None:
        changes["seed"] = int(req.seed)
    if req.n_steps > 0:
        changes["n_steps"] = int(req.n_steps)
    if req.bid_n > 0:
        changes["bid_n"] = int(req.bid_n)
    if req.beta > 0:
        changes["beta"] = float(req.beta)
    weak = _load_weak(req.weak) if req.weak else None
    return FlowPolicyBackend.from_checkpoint(ckpt, settings=dataclasses.replace(settings, **changes), weak_network=weak)


def _flow_cameras(req: BackendRequest) -> dict[str, tuple[int, int]]:
    """The camera an image checkpoint reads ({} for a state checkpoint), from its config only."""
    path = Path(req.target).expanduser() if req.target else checkpoint_file(req.task, req.kind, req.checkpoint_dir)
    if not path.is_file():
        return {}  # loading says what is wrong
    cfg = FlowNetConfig.from_dict(load_checkpoint(path)["network_config"])
    return {FLOW_IMAGE_CAMERA: tuple(int(v) for v in cfg.image_size)} if cfg.encoder == "image" else {}


register_backend(
    Backend(
        "flow",
        _load_flow,
        "flow-matching checkpoint (async_vla_ros.policy/1): 'default' (the task's shipped files) or a .pt path",
        from_checkpoint=FlowPolicyBackend.from_checkpoint,
        cameras=_flow_cameras,
        samplers=tuple(S.SAMPLER_INPUTS),
        per_request_beta=True,
    )
)
