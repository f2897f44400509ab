"""The ``lerobot`` backend: any LeRobot ``PreTrainedPolicy`` folder as a :class:`ChunkPolicy`.

``--policy lerobot:DIR`` (policy node ``policy:=lerobot:DIR``) loads a folder written by
LeRobot's ``save_pretrained`` (``config.json``, ``model.safetensors``) with its
pre/post-processors (``policy_preprocessor.json``, ``policy_postprocessor.json``), and maps:

* our observation -> its batch: ``obs["state"] (B, obs_dim)`` -> ``observation.state``; camera
  images ``obs["images"] = {name: (B, h, w, 3) uint8}`` -> ``observation.images.*`` by the
  folder's camera map (the names must be exactly the policy's); the language instruction
  (``obs["instruction"]`` when non-empty, else the folder's) -> ``task``; the pre-processor
  normalises and tokenises; ``last_info`` records the instruction and cameras it fed;
* its chunk -> robot units: the post-processor un-normalises (B, chunk_size, A).

Checks, each a :class:`BackendError` saying what differs: state and action dimensions; joint
names and order (when the folder's sidecar ``async_vla_ros.json`` names them and the caller
passes names); camera names and image shapes; a feature the policy needs that nothing feeds.

Samplers. ``vanilla`` is the policy's own ``predict_action_chunk`` (any policy: ACT, diffusion,
SmolVLA, pi0 ...). For flow-matching VLAs (SmolVLA) the backend also exposes the velocity in
our time convention (``tau`` 0 noise -> 1 data: ``v(x, tau) = -v_lerobot(x, 1 - tau)``) with the
VLM prefix (images, language, state) encoded ONCE per chunk into its KV cache, so our samplers
run on it: ``rtc`` (paper-exact: the vector-Jacobian product goes through the action expert
only, the cached prefix is a constant), ``prefix`` (REMAC) and ``bid``. ``rtc_lerobot`` runs
LeRobot's own RTC (``predict_action_chunk(..., inference_delay=d, prev_chunk_left_over=Y,
execution_horizon=H - s)``: Jacobian-free guidance, J = I) on the same model; d comes from the
request's ``n_frozen``, ``H - s`` from its weights, which must be LeRobot's exp schedule for
that (d, H - s) (they are: :func:`async_vla_ros.core.strategies.prefix_weights` is the same
schedule). All samplers work in the model's normalised, padded action space
(``max_action_dim``); the prefix is normalised with the folder's own statistics and padded with
zeros, as LeRobot pads ``prev_chunk_left_over``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.core.strategies import check_beta
from async_vla_ros.hfenv import apply_hf_offline
from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.registry import SAMPLERS, Backend, BackendError, BackendRequest, register_backend

__all__ = ["LeRobotPolicyBackend", "LeRobotSettings", "load_lerobot_folder", "SIDECAR", "FLOW_SAMPLERS"]

SIDECAR = "async_vla_ros.json"  # our names for a LeRobot folder: cameras, joint names, instruction
# our samplers that need only v(x, tau) (the authors' ``remac`` needs our mask-conditioned network),
# plus LeRobot's own RTC
FLOW_SAMPLERS = ("vanilla", "rtc", "rtc_jf", "prefix", "bid", "rtc_lerobot")
assert set(FLOW_SAMPLERS) <= set(SAMPLERS), "a lerobot sampler missing from core.strategies.SAMPLERS"
STATE_KEY, ACTION_KEY, IMAGE_PREFIX = "observation.state", "action", "observation.images."
_WEIGHT_TOL = 1e-6


@dataclass(frozen=True)
class LeRobotSettings:
    """Inference settings (the policy's own config holds the model's)."""

    beta: float = 5.0  # RTC guidance clip, ours and LeRobot's (max_guidance_weight)
    bid_n: int = 8  # BID candidates per row
    prefix_mode: str = "clean"  # REMAC prefix mode (samplers.sample_prefix)
    seed: int = 0  # the backend's noise stream (calls without a seed)
    num_threads: int | None = 1  # torch.set_num_threads at construction; None: leave

    def __post_init__(self) -> None:
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise BackendError(f"beta must be finite and >= 0, got {self.beta!r}")
        if isinstance(self.bid_n, bool) or not isinstance(self.bid_n, int) or self.bid_n < 1:
            raise BackendError(f"bid_n must be an int >= 1, got {self.bid_n!r}")
        if self.prefix_mode not in S.PREFIX_MODES:
            raise BackendError(f"prefix_mode must be one of {S.PREFIX_MODES}, got {self.prefix_mode!r}")


def _read_sidecar(folder: Path) -> dict[str, Any]:
    path = folder / SIDECAR
    if not path.is_file():
        return {}
    try:
        side = json.loads(path.read_text())
    except ValueError as exc:
        raise BackendError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(side, dict):
        raise BackendError(f"{path}: expected a JSON object")
    return side


class LeRobotPolicyBackend:
    """:class:`~async_vla_ros.policy.base.ChunkPolicy` over a LeRobot policy and its processors.

    Not thread-safe (one ``infer`` at a time, like every backend). ``last_info`` holds the
    sampler, the latency in ms and, for ``rtc_lerobot``, the (d, execution_horizon) it ran.
    """

    def __init__(
        self,
        policy: Any,
        preprocessor: Any,
        postprocessor: Any,
        *,
        cameras: Mapping[str, str] | None = None,
        instruction: str = "",
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        task: str = "",
        settings: LeRobotSettings | None = None,
        reads_proprio: bool = False,
        image_style: str = N.IMAGE_STYLE,
        scene_camera: str | None = None,
        action_frame: str = "absolute",
    ) -> None:
        import torch

        self.settings = settings or LeRobotSettings()
        if self.settings.num_threads is not None:
            torch.set_num_threads(self.settings.num_threads)
        self.policy = policy.eval()
        self.pre, self.post = preprocessor, postprocessor
        cfg = policy.config
        self.cfg = cfg
        state_ft = cfg.input_features.get(STATE_KEY)
        action_ft = cfg.output_features.get(ACTION_KEY)
        if action_ft is None:
            raise BackendError(f"the policy has no {ACTION_KEY!r} output feature: {sorted(cfg.output_features)}")
        if state_ft is None:
            raise BackendError(f"the policy has no {STATE_KEY!r} input feature: {sorted(cfg.input_features)}")
        self.obs_dim = int(state_ft.shape[0])
        self.action_dim = int(action_ft.shape[0])
        self.horizon = int(getattr(cfg, "chunk_size", 0) or getattr(cfg, "horizon", 0))
        if self.horizon < 1:
            raise BackendError(f"cannot tell the chunk length of a {cfg.type!r} policy")
        self.image_keys = [k for k in cfg.input_features if k.startswith(IMAGE_PREFIX)]
        self.image_shapes = {k: tuple(int(v) for v in cfg.input_features[k].shape) for k in self.image_keys}
        unfed = sorted(set(cfg.input_features) - {STATE_KEY, *self.image_keys})
        if unfed:
            raise BackendError(f"the policy needs input features this backend does not feed: {unfed}")
        # our camera name -> LeRobot key; default: the key's last part ("observation.images.front" -> "front")
        cams = dict(cameras) if cameras else {k[len(IMAGE_PREFIX) :]: k for k in self.image_keys}
        bad = sorted(set(cams.values()) - set(self.image_keys))
        if bad:
            raise BackendError(f"camera map names features the policy does not have: {bad}; it has {self.image_keys}")
        self.cameras = cams
        if image_style not in N.IMAGE_STYLES:
            raise BackendError(f"image_style {image_style!r} is not one of {sorted(N.IMAGE_STYLES)}")
        # what its training frames drew (the robot's collision or visual meshes): renderers draw the same
        self.image_style = str(image_style)
        if action_frame not in N.ACTION_FRAMES:
            raise BackendError(f"action_frame {action_frame!r} is not one of {N.ACTION_FRAMES}")
        # "delta_q": the chunk's joint targets are relative to the observation's joint positions
        self.action_frame = str(action_frame)
        if self.action_frame == "delta_q" and (self.obs_dim < N.N_ARM or self.action_dim < N.N_ARM):
            raise BackendError(f"a delta_q policy needs >= {N.N_ARM} state and action values")
        # where the scene camera stood in its training frames (names.SCENE_CAMERA): a policy that reads
        # the scene camera is refused where the sim places it elsewhere (it would see another picture)
        self.scene_camera = None if scene_camera is None else str(scene_camera)
        if self.scene_camera is not None and "scene" in self.cameras and self.scene_camera != N.SCENE_CAMERA:
            raise BackendError(
                f"the policy was trained with the scene camera at {self.scene_camera!r}; the sim places it at "
                f"{N.SCENE_CAMERA!r} (names.SCENE_CAMERA, sim/scene.py SCENE_CAMERAS): it would see another "
                "picture. Retrain it on demonstrations recorded with this placement"
            )
        self.instruction = str(instruction)
        self.state_names = list(state_names) if state_names is not None else None
        self.action_names = list(action_names) if action_names is not None else None
        for what, names, dim in (
            ("state", self.state_names, self.obs_dim),
            ("action", self.action_names, self.action_dim),
        ):
            if names is not None and len(names) != dim:
                raise BackendError(f"{len(names)} {what} names for a {what} of dimension {dim}")
        self.task = str(task)
        # the policy reads only q, qd, gripper (names.N_PROPRIO values at the head of any task's state)
        self.reads_proprio = bool(reads_proprio)
        if self.reads_proprio and self.obs_dim != N.N_PROPRIO:
            raise BackendError(
                f"a proprioception-only policy takes {N.N_PROPRIO} state values (q, qd, gripper), this one {self.obs_dim}"
            )
        self.needs_image = bool(self.image_keys)
        self.takes_instruction = True  # the policy node hands over the observation's instruction
        model = getattr(policy, "model", None)
        self.is_flow = all(hasattr(model, a) for a in ("embed_prefix", "denoise_step", "vlm_with_expert")) and all(
            hasattr(policy, a) for a in ("prepare_images", "prepare_state")
        )
        self.samplers = FLOW_SAMPLERS if self.is_flow else ("vanilla",)
        self.padded_dim = int(getattr(cfg, "max_action_dim", self.action_dim)) if self.is_flow else self.action_dim
        self.n_steps = int(getattr(cfg, "num_steps", 0))
        self._norm_step = next((s for s in getattr(preprocessor, "steps", []) if hasattr(s, "_normalize_action")), None)
        if self.is_flow:
            self._enable_lerobot_rtc()
        # inference only: no parameter needs a gradient, so RTC's VJP records only the ops that
        # depend on x (the time embedding, the cached prefix, every weight stay out of the graph);
        # a trainer (train/remac_lerobot.py) enables what it trains itself
        self.policy.requires_grad_(False)
        self._generator = torch.Generator().manual_seed(self.settings.seed)
        self.last_info: dict[str, Any] = {}
        self._fed: dict[str, Any] = {}

    @property
    def camera_hw(self) -> dict[str, tuple[int, int]]:
        """Our camera name -> (h, w) the policy takes (the lockstep runner renders these)."""
        return {name: self.image_shapes[key][1:] for name, key in self.cameras.items()}

    # ------------------------------------------------------------------ names
    def check_names(self, state_names: Sequence[str] | None = None, action_names: Sequence[str] | None = None) -> None:
        """BackendError when given names differ (in content or order) from the folder's."""
        for what, mine, theirs in (
            ("state", self.state_names, state_names),
            ("action", self.action_names, action_names),
        ):
            if mine is None or theirs is None or not len(theirs):
                continue
            if list(theirs) != mine:
                if sorted(theirs) == sorted(mine):
                    raise BackendError(f"{what} names in a different order: policy {mine}, given {list(theirs)}")
                raise BackendError(f"{what} names differ: policy {mine}, given {list(theirs)}")

    # ------------------------------------------------------------------ observation -> batch
    def _images(self, obs: Mapping[str, Any], b: int) -> dict[str, Any]:
        import torch

        given = obs.get("images") if isinstance(obs, Mapping) else None
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise BackendError("obs['images'] must map camera names to (B, h, w, 3) uint8 arrays")
        missing = sorted(set(self.cameras) - set(given))
        unknown = sorted(set(given) - set(self.cameras))
        if missing or unknown:
            detail = "; ".join(x for x in (missing and f"missing {missing}", unknown and f"unknown {unknown}") if x)
            raise BackendError(
                f"camera names do not match: the policy takes {sorted(self.cameras)}, given {sorted(given)} ({detail})"
            )
        out = {}
        for name, key in self.cameras.items():
            img = np.asarray(given[name])
            c, h, w = self.image_shapes[key]
            if img.dtype != np.uint8 or img.shape != (b, h, w, c):
                raise BackendError(
                    f"camera {name!r} ({key}): expected (B, h, w, ch) = ({b}, {h}, {w}, {c}) uint8, "
                    f"got {img.shape} {img.dtype}"
                )
            out[key] = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().div_(255.0)
        return out

    def _batch(self, obs: Any) -> tuple[dict[str, Any], int]:
        import torch

        if not isinstance(obs, Mapping):
            obs = {"state": obs}
        if "state" not in obs:
            raise BackendError("observation mapping needs a 'state' entry (B, obs_dim)")
        s = np.asarray(obs["state"])
        if s.dtype == object or not np.issubdtype(s.dtype, np.number):
            raise BackendError(f"observation state must be numeric, got dtype {s.dtype}")
        if s.ndim != 2 or s.shape[1] != self.obs_dim or s.shape[0] < 1:
            raise BackendError(f"observation state must be (B, obs_dim) = (B, {self.obs_dim}), got {s.shape}")
        if not np.isfinite(s).all():
            raise BackendError("observation state contains NaN or Inf")
        b = s.shape[0]
        batch: dict[str, Any] = {STATE_KEY: torch.tensor(s, dtype=torch.float32)}  # a copy: s may be read-only
        if self.image_keys:
            batch.update(self._images(obs, b))
        instr = obs.get("instruction") or self.instruction
        batch["task"] = [str(instr)] * b if isinstance(instr, str) else [str(x) or self.instruction for x in instr]
        if len(batch["task"]) != b:
            raise BackendError(f"{len(batch['task'])} instructions for {b} observations")
        self._fed = {"instruction": batch["task"][0], "cameras": sorted(self.cameras) if self.image_keys else []}
        return self.pre(batch), b

    # ------------------------------------------------------------------ action space
    def _frame_offset(self, state: Any, b: int) -> np.ndarray | None:
        """(B, 1, A) what a chunk in the model's frame lacks of robot units: the observation's joint
        positions for a ``delta_q`` policy (None for an absolute one)."""
        if self.action_frame == "absolute":
            return None
        if state is None:
            raise BackendError("a delta_q policy's actions need the observation state they are relative to")
        s = np.asarray(state["state"] if isinstance(state, Mapping) else state, dtype=np.float64).reshape(b, -1)
        off = np.zeros((b, 1, self.action_dim))
        off[:, 0, : N.N_ARM] = s[:, : N.N_ARM]
        return off

    def _normalize_actions(self, a: np.ndarray, state: Any = None):
        """(B, H, A) robot units -> (B, H, padded) normalised model space (zeros in the padding).
        ``state`` (B, obs_dim): the observations the chunks start from (needed by a delta_q policy)."""
        import torch

        a = np.asarray(a, dtype=np.float64)
        off = self._frame_offset(state, a.shape[0])
        t = torch.as_tensor(a if off is None else a - off, dtype=torch.float32)
        if self._norm_step is not None:
            t = self._norm_step._normalize_action(t, inverse=False)
        if self.padded_dim > self.action_dim:
            t = torch.nn.functional.pad(t, (0, self.padded_dim - self.action_dim))
        return t

    def _to_robot(self, x, state: Any = None) -> np.ndarray:
        out = self.post(x[..., : self.action_dim].detach())
        arr = np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float64)
        off = self._frame_offset(state, arr.shape[0])
        if off is not None:
            arr = arr + off
        if not np.isfinite(arr).all():
            raise FloatingPointError("policy produced NaN/Inf actions")
        return arr

    # ------------------------------------------------------------------ velocity
    def velocity_fn(self, batch: Mapping[str, Any]):
        """``v(x, tau)`` in our convention for one processed batch; the VLM prefix KV cache is
        computed here, once (no gradient: RTC's VJP runs through the action expert only)."""
        import torch

        if not self.is_flow:
            raise BackendError(f"a {self.cfg.type!r} policy exposes no flow velocity (vanilla only)")
        m = self.policy.model
        ppm, pkv = encode_prefix(self.policy, batch)
        cache: dict[int, tuple[Any, Any]] = {}

        def for_batch(n: int):
            """prefix masks and KV cache repeated to n rows (BID's candidates)."""
            if n not in cache:
                r = n // ppm.shape[0]
                cache[n] = (
                    ppm.repeat_interleave(r, 0),
                    {k: {kk: vv.repeat_interleave(r, 0) for kk, vv in d.items()} for k, d in pkv.items()},
                )
            return cache[n]

        cache[ppm.shape[0]] = (ppm, pkv)

        def v(x, tau: float):
            masks, kv = for_batch(x.shape[0])
            t = torch.full((x.shape[0],), 1.0 - float(tau), dtype=torch.float32)
            return -m.denoise_step(masks, kv, x, t)

        return v

    # ------------------------------------------------------------------ observation features
    @property
    def latent_dim(self) -> int:
        """Size of :meth:`latent` (0: the policy exposes no features)."""
        if not self.is_flow:
            return 0
        if not hasattr(self, "_latent_dim"):
            probe = {
                "state": np.zeros((1, self.obs_dim)),
                "images": {n: np.zeros((1, h, w, 3), np.uint8) for n, (h, w) in self.camera_hw.items()},
            }
            self._latent_dim = int(self.latent(probe).shape[1])
        return self._latent_dim

    def latent(self, obs: Any) -> np.ndarray:
        """The VLA's features of an observation, (B, F): what A2C2's head reads instead of the state.

        The prefix (cameras, instruction, proprioception) through the VLM, as for a chunk: every
        image token's output (the spatial layout: where things are), the mean over the instruction's
        tokens, and the state token. Nothing else of the task reaches it (no privileged state)."""
        import torch

        if not self.is_flow:
            raise BackendError(f"a {self.cfg.type!r} policy exposes no prefix features")
        batch, b = self._batch(obs)
        with torch.inference_mode():
            _, out, _ = prefix_pass(self.policy, batch, use_cache=False)
            tokens, tmask = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
            n_lang, n_img = tokens.shape[1], out.shape[1] - tokens.shape[1] - 1  # layout: images, language, state
            img = out[:, :n_img].reshape(b, -1)
            lm = tmask[:, :, None].to(out.dtype)
            lang = (out[:, n_img : n_img + n_lang] * lm).sum(1) / lm.sum(1).clamp(min=1.0)
            feat = torch.cat([img, lang, out[:, -1]], dim=1)
        return feat.float().numpy().astype(np.float64)

    # ------------------------------------------------------------------ LeRobot's RTC
    def _enable_lerobot_rtc(self) -> None:
        from lerobot.configs.types import RTCAttentionSchedule
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        rc = getattr(self.cfg, "rtc_config", None)
        if rc is None or not rc.enabled or rc.prefix_attention_schedule != RTCAttentionSchedule.EXP:
            rc = RTCConfig(enabled=True, prefix_attention_schedule=RTCAttentionSchedule.EXP)
        rc.max_guidance_weight = float(self.settings.beta)
        rc.execution_horizon = self.horizon
        self.cfg.rtc_config = rc
        self.policy.init_rtc_processor()

    def lerobot_rtc_args(self, weights: np.ndarray, n_frozen: np.ndarray) -> tuple[int, int]:
        """(inference_delay d, execution_horizon E = H - s) for LeRobot's RTC from our request.

        d is the request's frozen count; E is one past the last non-zero weight (our soft region
        ends there: ``min(H - s, n_real)``). The weights must equal LeRobot's exp schedule for
        (d, E): anything else (another schedule, a per-row difference) is a BackendError.
        """
        w = np.asarray(weights, dtype=np.float64)
        nf = np.asarray(n_frozen).reshape(-1)
        if w.ndim != 2 or w.shape[1] != self.horizon or nf.shape != (w.shape[0],):
            raise BackendError(f"rtc_lerobot needs weights (B, H={self.horizon}) and n_frozen (B,)")
        if (nf != nf[0]).any() or (np.abs(w - w[:1]) > _WEIGHT_TOL).any():
            raise BackendError("rtc_lerobot runs one (d, H - s) per call: rows differ")
        d = int(nf[0])
        nz = np.flatnonzero(w[0] > _WEIGHT_TOL)
        e = max(d, int(nz[-1]) + 1 if nz.size else 0)
        expected = self.policy.rtc_processor.get_prefix_weights(d, e, self.horizon).numpy()
        if np.abs(expected - w[0]).max() > _WEIGHT_TOL:
            raise BackendError(
                f"rtc_lerobot: the request's weights are not LeRobot's exp schedule for d={d}, "
                f"execution_horizon={e} (use strategy rtc_lerobot: exp schedule, n_frozen = d)"
            )
        return d, e

    # ------------------------------------------------------------------ inference
    def infer(
        self,
        obs: Any,
        sampler: str = "vanilla",
        prefix: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        n_frozen: np.ndarray | None = None,
        seed: int | None = None,
        beta: float | None = None,
    ) -> np.ndarray:
        """One chunk per observation row: (B, H, A) float64 in robot units (ChunkPolicy).

        ``beta``: this call's guidance clip for rtc, rtc_jf and rtc_lerobot (LeRobot's
        ``max_guidance_weight``, set for the call); None: the folder's load-time default. One
        loaded policy serves every preset's clip."""
        import torch

        t_start = time.perf_counter_ns()
        if sampler not in self.samplers:
            raise BackendError(
                f"sampler {sampler!r}: a {self.cfg.type!r} LeRobot policy runs {', '.join(self.samplers)}"
            )
        try:
            beta = self.settings.beta if beta is None else check_beta(beta, "lerobot infer")
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        batch, b = self._batch(obs)
        h, st = self.horizon, self.settings
        gen = self._generator if seed is None else torch.Generator().manual_seed(int(seed))
        y = w = None
        if prefix is not None:
            p = np.asarray(prefix, dtype=np.float64)
            if p.shape != (b, h, self.action_dim) or not np.isfinite(p).all():
                raise BackendError(f"prefix must be finite (B, H, A) = ({b}, {h}, {self.action_dim}), got {p.shape}")
            y = self._normalize_actions(p, obs)
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (b, h) or not np.isfinite(w).all() or (w < -1e-9).any() or (w > 1 + 1e-6).any():
                raise BackendError(f"weights must be (B, H) = ({b}, {h}) values in [0, 1]")
        if sampler in ("rtc", "rtc_jf", "prefix", "rtc_lerobot") and y is None:
            raise BackendError(f"sampler {sampler!r} needs a prefix (the first chunk runs vanilla)")
        if sampler in ("rtc", "rtc_jf", "rtc_lerobot") and w is None:
            raise BackendError(f"sampler {sampler!r} needs weights (B, H)")
        if sampler == "bid" and (y is None) != (w is None):
            raise BackendError("bid needs prefix and weights together (or neither, for a first chunk)")
        info: dict[str, Any] = {"sampler": sampler, "n_steps": self.n_steps, **self._fed}
        if sampler in ("rtc", "rtc_jf", "rtc_lerobot"):
            info["beta"] = beta
        shape = (b, h, self.padded_dim)
        if sampler == "vanilla":
            if self.is_flow:
                noise = torch.randn(shape, generator=gen)
                out = self.policy.predict_action_chunk(batch, noise=noise)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                    out = self.policy.predict_action_chunk(batch)
        elif sampler == "rtc_lerobot":
            if n_frozen is None:
                raise BackendError("rtc_lerobot needs n_frozen (d) with the prefix")
            d, e = self.lerobot_rtc_args(w, n_frozen)
            info.update(inference_delay=d, execution_horizon=e)
            noise = torch.randn(shape, generator=gen)
            rc = self.policy.rtc_processor.rtc_config  # read by LeRobot's guidance on every call
            rc.max_guidance_weight = float(beta)
            try:
                out = self.policy.predict_action_chunk(
                    batch,
                    noise=noise,
                    inference_delay=d,
                    prev_chunk_left_over=y[..., : self.action_dim],
                    execution_horizon=e,
                )
            finally:
                rc.max_guidance_weight = float(st.beta)
        else:
            v = self.velocity_fn(batch)
            n = self.n_steps
            if sampler in ("rtc", "rtc_jf"):
                wt = torch.as_tensor(np.clip(w, 0.0, 1.0), dtype=torch.float32)
                x0 = torch.randn(shape, generator=gen)
                with torch.no_grad():
                    out = S.sample_rtc(v, x0, n, y, wt, beta=beta, validate=False, jacobian=sampler == "rtc")
            elif sampler == "prefix":
                if n_frozen is None:
                    raise BackendError("the prefix sampler needs n_frozen (B,)")
                nf = np.asarray(n_frozen).reshape(-1)
                if nf.shape != (b,) or (nf < 0).any() or (nf > h).any():
                    raise BackendError(f"n_frozen must be (B,) = ({b},) ints in [0, {h}]")
                with torch.inference_mode():
                    out = S.sample_prefix(v, torch.randn(shape, generator=gen), n, y, nf, mode=st.prefix_mode)
            else:
                assert sampler == "bid", sampler  # self.samplers was checked above
                x0 = torch.randn((b, st.bid_n, *shape[1:]), generator=gen)
                with torch.inference_mode():
                    res = S.sample_bid(v, x0, n, y, w, select=_bid_select(self))
                out = res.actions
                info.update(bid_index=res.index.tolist(), bid_n=st.bid_n)
        actions = self._to_robot(out[..., : self.action_dim], obs)
        info["latency_ms"] = (time.perf_counter_ns() - t_start) / 1e6
        self.last_info = info
        return actions


def prefix_pass(policy: Any, batch: Mapping[str, Any], use_cache: bool) -> tuple[Any, Any, Any]:
    """A SmolVLA-style policy's prefix (images, language, state) through its VLM, without gradient:
    (pad masks, the prefix's output embeddings, the KV cache when ``use_cache``)."""
    import torch
    from lerobot.policies.smolvla.modeling_smolvla import make_att_2d_masks

    m = policy.model
    with torch.no_grad():
        images, img_masks = policy.prepare_images(batch)
        state = policy.prepare_state(batch)
        pe, ppm, pam = m.embed_prefix(
            images,
            img_masks,
            batch["observation.language.tokens"],
            batch["observation.language.attention_mask"],
            state=state,
        )
        (out, _), pkv = m.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(ppm, pam),
            position_ids=torch.cumsum(ppm, dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[pe, None],
            use_cache=use_cache,
            fill_kv_cache=True,
        )
    return ppm, out, pkv


def encode_prefix(policy: Any, batch: Mapping[str, Any]) -> tuple[Any, Any]:
    """A SmolVLA-style policy's prefix (images, language, state) -> (pad masks, KV cache), once,
    without gradient (the VLM is never differentiated: RTC's VJP and REMAC's LoRA live in the
    action expert)."""
    ppm, _, pkv = prefix_pass(policy, batch, use_cache=True)
    return ppm, pkv


def _bid_select(backend: LeRobotPolicyBackend):
    """BID's scorer on the unpadded action dims (the padding is the model's, not the robot's)."""
    from async_vla_ros.core.bid import bid_select

    a = backend.action_dim

    def select(cands, prefix, weights, weak):
        cut = None if prefix is None else prefix[..., :a]
        return bid_select(cands[..., :a], cut, weights, None if weak is None else weak[..., :a])

    return select


# ---------------------------------------------------------------------- loading
def load_lerobot_folder(
    folder: str | Path,
    *,
    settings: LeRobotSettings | None = None,
    cameras: Mapping[str, str] | None = None,
    device: str = "cpu",
) -> LeRobotPolicyBackend:
    """Load a LeRobot policy folder (``save_pretrained``) with its processors, offline."""
    early = apply_hf_offline()
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise BackendError(f"{folder}: not a LeRobot policy folder (no config.json)")
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        if not (folder / name).is_file():
            raise BackendError(f"{folder}: no {name} (save the processors with the policy: pre.save_pretrained(DIR))")
    if early:
        raise BackendError(f"{early} were imported before the offline settings: import async_vla_ros first")
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    try:
        cfg = PreTrainedConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - draccus/json errors of all kinds
        raise BackendError(f"{folder}/config.json: not a LeRobot policy config ({exc})") from exc
    cfg.device = device
    pre_overrides: dict[str, Any] = {"device_processor": {"device": device}}
    own_vlm = folder / "vlm"
    vlm_name = getattr(cfg, "vlm_model_name", None)
    if vlm_name is not None and own_vlm.is_dir() and Path(vlm_name) != own_vlm:
        # a folder that carries its VLM config and tokenizer (lerobot_tiny, train vla) stays usable
        # when moved or shipped: its config.json names the path it was built at
        cfg.vlm_model_name = str(own_vlm.resolve())
        pre_overrides["tokenizer_processor"] = {"tokenizer_name": cfg.vlm_model_name}
    policy = get_policy_class(cfg.type).from_pretrained(str(folder), config=cfg)
    pre, post = make_pre_post_processors(
        cfg,
        pretrained_path=str(folder),
        preprocessor_overrides=pre_overrides,
        postprocessor_overrides={"device_processor": {"device": "cpu"}},
    )
    side = _read_sidecar(folder)
    return LeRobotPolicyBackend(
        policy,
        pre,
        post,
        cameras=cameras or side.get("cameras"),
        instruction=side.get("instruction", ""),
        state_names=side.get("state_names"),
        action_names=side.get("action_names"),
        task=side.get("task", ""),
        settings=settings,
        reads_proprio=side.get("state_input") == "proprioception",
        image_style=side.get("image_style", N.IMAGE_STYLE),
        scene_camera=_scene_camera(side),
        action_frame=side.get("action_frame", "absolute"),
    )


def _scene_camera(side: Mapping[str, Any]) -> str | None:
    """The scene camera's placement a folder was trained with: its sidecar's ``scene_camera``; a folder
    trained on our demonstrations before it was recorded (a sidecar with a ``training`` or ``remac``
    record) saw ``names.SCENE_CAMERA_LEGACY``; None (unchecked) for a folder of unknown origin."""
    if side.get("scene_camera"):
        return str(side["scene_camera"])
    if "training" in side or "remac" in side:
        return N.SCENE_CAMERA_LEGACY
    return None


def _load(req: BackendRequest) -> LeRobotPolicyBackend:
    if not req.target:
        raise BackendError("the lerobot backend needs a folder: lerobot:DIR")
    st = LeRobotSettings(
        beta=float(req.beta) if req.beta > 0 else LeRobotSettings.beta,
        bid_n=int(req.bid_n) if req.bid_n > 0 else LeRobotSettings.bid_n,
        seed=int(req.seed) if req.seed is not None else 0,
        num_threads=req.num_threads if req.num_threads is not None else 1,
    )
    backend = load_lerobot_folder(req.target, settings=st)
    if req.n_steps > 0 and backend.is_flow:
        backend.cfg.num_steps = int(req.n_steps)
        backend.n_steps = int(req.n_steps)
    if backend.task and req.task and backend.task != req.task:
        raise BackendError(f"lerobot:{req.target} is a policy for task {backend.task!r}, not {req.task!r}")
    return backend


def folder_cameras(folder: str | Path) -> dict[str, tuple[int, int]]:
    """Our camera name -> (h, w) of a LeRobot policy folder, from its ``config.json`` and sidecar
    only (no lerobot import): what the graph renders and ingests for it."""
    folder = Path(folder).expanduser()
    path = folder / "config.json"
    if not path.is_file():
        raise BackendError(f"{folder}: not a LeRobot policy folder (no config.json)")
    try:
        feats = json.loads(path.read_text()).get("input_features", {})
    except ValueError as exc:
        raise BackendError(f"{path}: not valid JSON ({exc})") from exc
    keys = {k: v for k, v in feats.items() if k.startswith(IMAGE_PREFIX)}
    cams = _read_sidecar(folder).get("cameras") or {k[len(IMAGE_PREFIX) :]: k for k in keys}
    bad = sorted(set(cams.values()) - set(keys))
    if bad:
        raise BackendError(
            f"{folder}: camera map names features the policy does not have: {bad}; it has {sorted(keys)}"
        )
    return {name: tuple(int(v) for v in keys[key]["shape"][1:]) for name, key in cams.items()}


def folder_state_dim(folder: str | Path) -> int:
    """The width of the state a LeRobot policy folder reads (its ``observation.state``), from its
    ``config.json`` only (no lerobot import): a VLA's proprioception, or a task's full state."""
    path = Path(folder).expanduser() / "config.json"
    if not path.is_file():
        raise BackendError(f"{Path(folder).expanduser()}: not a LeRobot policy folder (no config.json)")
    try:
        feat = json.loads(path.read_text()).get("input_features", {}).get("observation.state")
        return int(feat["shape"][0])
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise BackendError(f"{path}: no observation.state feature with a shape ({exc})") from exc


def _state_dim(req: BackendRequest) -> int:
    if not req.target:
        raise BackendError("the lerobot backend needs a folder: lerobot:DIR")
    return folder_state_dim(req.target)


def _no_default_head(req: BackendRequest) -> Path:
    raise BackendError(
        "a LeRobot folder has no default A2C2 head: train one (train a2c2 --base lerobot:DIR --demos ...) and "
        "give it (--a2c2 FILE, a2c2:=FILE)"
    )


def _cameras(req: BackendRequest) -> dict[str, tuple[int, int]]:
    if not req.target:
        raise BackendError("the lerobot backend needs a folder: lerobot:DIR")
    return folder_cameras(req.target)


register_backend(
    Backend(
        "lerobot",
        _load,
        "a LeRobot PreTrainedPolicy folder (save_pretrained + processors): lerobot:DIR",
        samplers=FLOW_SAMPLERS,
        cameras=_cameras,
        per_request_beta=True,
        head_file=_no_default_head,
        state_dim=_state_dim,
    )
)


# ---------------------------------------------------------------------- the shipped multi-task VLA
VLA_FOLDERS = {"base": "vla", "remac_clean": "vla_remac"}  # checkpoint kind -> folder in checkpoints/


def vla_folder(kind: str = "base", directory: str | Path | None = None) -> Path:
    """The shipped multi-task VLA folder of a checkpoint kind (``train vla``; REMAC: ``train remac
    --base lerobot:...``), in ``directory`` (default: the package's checkpoints); BackendError
    saying how to make it when missing."""
    from async_vla_ros.checkpoints import DIR

    if kind not in VLA_FOLDERS:
        raise BackendError(f"the vla backend has no {kind} model (it has {sorted(VLA_FOLDERS)})")
    folder = Path(directory or DIR) / VLA_FOLDERS[kind]
    if not (folder / "config.json").is_file():
        raise BackendError(f"{folder}: the multi-task VLA is not there; train it as docs/training.md says (train vla)")
    return folder


VLA_HEAD = "vla_a2c2.pt"  # the multi-task VLA's A2C2 head, next to its folders


def vla_head(req: BackendRequest) -> Path:
    """The shipped VLA's A2C2 head (``train a2c2 --base vla``); BackendError when missing."""
    from async_vla_ros.checkpoints import DIR

    path = Path(req.checkpoint_dir or DIR) / VLA_HEAD
    if not path.is_file():
        raise BackendError(f"{path}: the VLA's A2C2 head is not there; train it as docs/training.md says (train a2c2)")
    return path


def _load_vla(req: BackendRequest) -> LeRobotPolicyBackend:
    folder = Path(req.target) if req.target else vla_folder(req.kind or "base", req.checkpoint_dir or None)
    return _load(replace(req, target=str(folder)))


def _vla_cameras(req: BackendRequest) -> dict[str, tuple[int, int]]:
    return folder_cameras(req.target or vla_folder(req.kind or "base", req.checkpoint_dir or None))


def _vla_state_dim(req: BackendRequest) -> int:
    return folder_state_dim(req.target or vla_folder(req.kind or "base", req.checkpoint_dir or None))


register_backend(
    Backend(
        "vla",
        _load_vla,
        "the shipped multi-task VLA (tiny SmolVLA: both cameras, an instruction, proprioception): vla",
        kinds=tuple(VLA_FOLDERS),
        samplers=FLOW_SAMPLERS,
        cameras=_vla_cameras,
        per_request_beta=True,
        head_file=vla_head,
        state_dim=_vla_state_dim,
    )
)
