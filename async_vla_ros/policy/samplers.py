"""Flow-matching chunk samplers: vanilla, RTC-guided (exact or Jacobian-free), prefix-preserved
(REMAC, our clean-prefix reading ``prefix`` and the authors' ``remac``), BID.

Every sampler takes the model as a callable ``v(x, tau) -> velocity``:

* ``x``: (B, H, A) noisy action chunk,
* ``tau``: flow time, a Python float shared by the whole batch (the samplers always pass a
  float so that a network can cache what depends only on tau and the observation),
* returns (B, H, A).

Flow-time convention (the one of the RTC reference implementation,
Physical-Intelligence/real-time-chunking-kinetix, ``realtime_action``):
``tau = 0`` is pure noise, ``tau = 1`` is data, the interpolant is
``x_tau = (1 - tau) * x0 + tau * x1`` and the target velocity is ``x1 - x0``. Integration is
n explicit Euler steps at ``tau_k = k / n`` (k = 0..n-1): ``x <- x + v(x, tau_k) / n``
(computed as one fused ``x + (1/n) * v``).
Some other ports run time the other way round (tau = 1 noise): do not mix the two.

Samplers run in whatever (normalised) action space ``v`` works in; the caller normalises
the prefix ``Y`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]
"""``v(x (B,H,A), tau: float) -> (B,H,A)``."""

MaskedVelocityFn = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]
"""``v(x (B,H,A), tau: float, mask (B,H)) -> (B,H,A)``: a mask-conditioned (REMAC) network."""

BidSelectFn = Callable[..., np.ndarray]
"""``select(candidates (B,N,H,A), prefix (B,H,A), weights (B,H), weak (B,M,H,A)|None) -> (B,)``."""

PREFIX_MODES = ("clean", "interpolant")


# --------------------------------------------------------------------------- validation
def _check_steps(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"number of denoising steps n must be an int >= 1, got {n!r}")
    return int(n)


def _check_x0(x0: torch.Tensor, name: str = "x0", ndim: int = 3) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x0).__name__}")
    if x0.ndim != ndim:
        shape = "(B, H, A)" if ndim == 3 else "(B, N, H, A)"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x0.shape)}")
    if not x0.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x0.dtype}")
    if not bool(torch.isfinite(x0).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x0


def _as_tensor(value, like: torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def _check_prefix(prefix, x0: torch.Tensor) -> torch.Tensor:
    y = _as_tensor(prefix, x0, "prefix")
    if tuple(y.shape) != tuple(x0.shape):
        raise ValueError(f"prefix must have the chunk's shape (B, H, A) = {tuple(x0.shape)}, got {tuple(y.shape)}")
    return y


def _check_weights(weights, x0: torch.Tensor) -> torch.Tensor:
    """Weights (H,) or (B, H) -> (B, H, 1), non-negative."""
    b, h, _ = x0.shape
    w = _as_tensor(weights, x0, "weights")
    if w.ndim == 1:
        w = w.expand(b, h) if w.shape[0] == h else w
    if tuple(w.shape) != (b, h):
        raise ValueError(f"weights must have shape (H,) = ({h},) or (B, H) = ({b}, {h}), got {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative")
    return w.unsqueeze(-1)


def _check_velocity(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"velocity function returned {got}, expected {tuple(x.shape)}")
    return out


def flow_times(n: int) -> list[float]:
    """Euler evaluation times ``[k / n for k in 0..n-1]`` (tau = 0 noise, tau = 1 data)."""
    n = _check_steps(n)
    return [k / n for k in range(n)]


# --------------------------------------------------------------------------- vanilla
def sample_vanilla(v: VelocityFn, x0: torch.Tensor, n: int) -> torch.Tensor:
    """Plain Euler integration of the flow from noise ``x0`` (B, H, A) to data; returns (B, H, A)."""
    n = _check_steps(n)
    x = _check_x0(x0)
    for tau in flow_times(n):
        x = torch.add(x, _check_velocity(v(x, tau), x), alpha=1.0 / n)
    return x


# --------------------------------------------------------------------------- RTC
def rtc_guidance_weight(tau: float, beta: float) -> float:
    """Pi-GDM guidance weight of RTC, clipped at ``beta``.

    ``min(beta, ((1 - tau) / tau) * (tau^2 + (1 - tau)^2) / (1 - tau)^2)``; the first factor is
    +inf at tau = 0, so the weight is ``beta`` there. Defined for 0 <= tau < 1 (Euler never
    evaluates tau = 1).
    """
    if not (0.0 <= tau < 1.0):
        raise ValueError(f"tau must lie in [0, 1) for the RTC guidance weight, got {tau}")
    if not (beta >= 0.0 and np.isfinite(beta)):
        raise ValueError(f"beta must be finite and >= 0, got {beta}")
    if tau == 0.0:
        return float(beta)
    inv_r2 = (tau**2 + (1.0 - tau) ** 2) / (1.0 - tau) ** 2
    c = (1.0 - tau) / tau
    return float(min(beta, c * inv_r2))


def rtc_guided_velocity(
    v: VelocityFn,
    x: torch.Tensor,
    tau: float,
    y: torch.Tensor,
    w: torch.Tensor,
    beta: float,
    jacobian: bool = True,
) -> torch.Tensor:
    """One RTC velocity evaluation (no Euler step): ``v + weight * J^T ((Y - x1_hat) * W)``.

    ``x1_hat = x + (1 - tau) * v(x, tau)`` is the one-step denoised estimate and ``J`` its
    Jacobian w.r.t. ``x``; the vector-Jacobian product is one backward pass through ``v``
    (gradient w.r.t. ``x`` only). Sign: the correction moves ``x1_hat`` towards ``Y`` where
    ``W > 0``. ``y``: (B, H, A), ``w``: (B, H, 1). Returns (B, H, A), detached.

    ``jacobian=False`` is the Jacobian-free variant (``J = I``: the correction is the weighted
    error itself), which is what LeRobot's RTC computes (its velocity is evaluated before ``x``
    requires grad, so its ``autograd.grad`` returns the error unchanged); no backward pass.
    """
    if not jacobian:
        weight = rtc_guidance_weight(tau, beta)
        vt = _check_velocity(v(x, tau), x).detach()
        return vt + weight * ((y - (x + (1.0 - tau) * vt)) * w)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("RTC guidance needs autograd through x: do not call it under torch.inference_mode()")
    weight = rtc_guidance_weight(tau, beta)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        try:
            vt = _check_velocity(v(xg, tau), xg)
        except RuntimeError as exc:
            if "Inference tensors" in str(exc):
                raise RuntimeError(
                    "RTC guidance differentiates through the velocity function, but it uses tensors made under "
                    "torch.inference_mode() (e.g. an observation encoding): compute them under torch.no_grad()"
                ) from exc
            raise
        x1_hat = xg + (1.0 - tau) * vt
        err = ((y - x1_hat) * w).detach()
        (g,) = torch.autograd.grad(x1_hat, xg, grad_outputs=err)
    return vt.detach() + weight * g


def sample_rtc(
    v: VelocityFn,
    x0: torch.Tensor,
    n: int,
    Y: torch.Tensor | np.ndarray,
    W: torch.Tensor | np.ndarray,
    beta: float = 5.0,
    validate: bool = True,
    jacobian: bool = True,
) -> torch.Tensor:
    """RTC guided inpainting (Black et al. 2025, Pi-GDM guidance) from noise ``x0`` (B, H, A).

    ``Y``: (B, H, A) target (previous chunk's actions aligned to the new chunk's steps);
    ``W``: (H,) or (B, H) soft mask (1 on the frozen prefix, decaying, 0 beyond). With ``W = 0``
    the result equals :func:`sample_vanilla` for the same noise. Returns (B, H, A).
    Costs one extra backward pass through ``v`` per step. ``validate=False``: ``Y`` and ``W``
    must already be tensors of shape (B, H, A) and (B, H) (input checks skipped).
    ``jacobian=False``: Jacobian-free guidance (J = I, as LeRobot), see :func:`rtc_guided_velocity`.
    """
    n = _check_steps(n)
    if validate:
        x = _check_x0(x0)
        y = _check_prefix(Y, x)
        w = _check_weights(W, x)
    else:
        x, y, w = x0, Y, W.unsqueeze(-1)
    for tau in flow_times(n):
        x = torch.add(x, rtc_guided_velocity(v, x, tau, y, w, beta, jacobian), alpha=1.0 / n)
    return x


# --------------------------------------------------------------------------- REMAC prefix
def frozen_mask(n_frozen, batch: int, horizon: int, device=None) -> torch.Tensor:
    """Boolean (B, H) mask, True where step index h < n_frozen[b]; ``n_frozen`` int, (B,) array or tensor."""
    if isinstance(n_frozen, torch.Tensor):
        n_frozen = n_frozen.detach().cpu().numpy()
    nf = np.asarray(n_frozen)
    if nf.dtype.kind == "f":
        if not np.all(np.isfinite(nf)) or not np.all(nf == np.round(nf)):
            raise ValueError(f"n_frozen must hold integers, got {n_frozen!r}")
    elif nf.dtype.kind not in "iu":
        raise ValueError(f"n_frozen must hold integers, got {n_frozen!r}")
    nf = nf.astype(np.int64)
    if nf.ndim == 0:
        nf = np.full(batch, int(nf))
    if nf.shape != (batch,):
        raise ValueError(f"n_frozen must be an int or have shape (B,) = ({batch},), got {nf.shape}")
    if (nf < 0).any() or (nf > horizon).any():
        raise ValueError(f"n_frozen must lie in [0, H={horizon}], got {nf.tolist()}")
    return torch.from_numpy(np.arange(horizon)[None, :] < nf[:, None]).to(device)


def sample_prefix(
    v: VelocityFn,
    x0: torch.Tensor,
    n: int,
    prefix: torch.Tensor | np.ndarray,
    n_frozen,
    mode: str = "clean",
    validate: bool = True,
) -> torch.Tensor:
    """REMAC prefix-preserved sampling from noise ``x0`` (B, H, A).

    Before every velocity evaluation, the first ``n_frozen[b]`` actions of row b are
    overwritten and held fixed; the rest is integrated normally; the returned chunk carries
    the prefix exactly in those slots.

    ``prefix``: (B, H, A) (only rows ``h < n_frozen[b]`` are read); ``n_frozen``: int or (B,).
    ``mode``:

    * ``"clean"`` (default): the slots hold the clean prefix actions at every step. This is
      REMAC's "filled with the previous chunk's remaining actions and held fixed at every
      integration step" read literally, and matches training with the conditioning prefix
      written clean into ``x_tau`` (masked loss on actions >= d, as training-time action
      conditioning does). The REMAC trainer must build ``x_tau`` the same way.
    * ``"interpolant"``: the slots hold the prefix noised to the current flow time,
      ``(1 - tau) * x0 + tau * prefix`` (classic replacement inpainting); use only with a
      model trained without clean-prefix conditioning.

    Clean mode costs no extra op per step over vanilla (the frozen slots get a zero step).
    ``validate=False`` skips the input checks (for callers that validated already, like the
    backend: the checks cost ~40 us, a few % of a small model's chunk).
    """
    if mode not in PREFIX_MODES:
        raise ValueError(f"prefix mode must be one of {PREFIX_MODES}, got {mode!r}")
    n = _check_steps(n)
    if validate:
        x = _check_x0(x0)
        y = _check_prefix(prefix, x)
        b, h, _ = x.shape
        m = frozen_mask(n_frozen, b, h, device=x.device).unsqueeze(-1)  # (B, H, 1)
    else:
        x, y = x0, prefix
        b, h, _ = x.shape
        nf = np.asarray(n_frozen).reshape(-1)
        m = torch.from_numpy(np.arange(h)[None, :] < nf[:, None]).to(x.device).unsqueeze(-1)
    if mode == "clean":
        # Frozen slots start at the prefix and get a zero step (x + v * 0 keeps them bit-exact):
        # one fused op per step, the same count as vanilla's x + v / n.
        step = (~m).to(x.dtype) / n  # (B, H, 1): 1/n on free slots, 0 on frozen ones
        x = torch.where(m, y, x)
        for tau in flow_times(n):
            x = torch.addcmul(x, _check_velocity(v(x, tau), x), step)
        return x
    noise = x
    for tau in flow_times(n):
        x = torch.where(m, (1.0 - tau) * noise + tau * y, x)
        x = torch.add(x, _check_velocity(v(x, tau), x), alpha=1.0 / n)
    return torch.where(m, y, x)


def remac_start(prefix: torch.Tensor, n_real) -> torch.Tensor:
    """The chunk the authors' REMAC sampler starts from: the previous chunk's unexecuted tail
    (rows ``k < n_real[b]`` of ``prefix``) followed by zeros (normalised action space)."""
    b, h, _ = prefix.shape
    real = frozen_mask(n_real, b, h, device=prefix.device).unsqueeze(-1)
    return torch.where(real, prefix, torch.zeros_like(prefix))


def sample_remac(
    v: MaskedVelocityFn,
    start: torch.Tensor,
    n: int,
    n_frozen,
    validate: bool = True,
) -> torch.Tensor:
    """REMAC sampling as its authors run it (hatchetProject/REMAC ``LoRAFlowPolicy.action``).

    Deterministic: no noise. ``x`` starts at ``start`` (B, H, A) (see :func:`remac_start`), the
    network gets the mask ``m = 1[k >= d]`` (B, H) as conditioning, and after every Euler step
    the first ``d = n_frozen[b]`` rows are clamped back to ``start``:
    ``x <- m * (x + v(x, tau, m) / n) + (1 - m) * start``. With ``d = 0`` nothing is clamped
    (the authors' first chunk, started from zeros). Returns (B, H, A).
    """
    n = _check_steps(n)
    x = _check_x0(start, "start") if validate else start
    b, h, _ = x.shape
    frozen = frozen_mask(n_frozen, b, h, device=x.device)
    m = (~frozen).to(x.dtype)  # (B, H): 1 on the rows to generate
    step = m.unsqueeze(-1) / n
    for tau in flow_times(n):
        x = torch.addcmul(x, _check_velocity(v(x, tau, m), x), step)
    return x


# --------------------------------------------------------------------------- adherence
def prefix_adherence(chunk, prefix, n_frozen, weights) -> tuple[np.ndarray, np.ndarray]:
    """How closely chunks follow the prefix: per row b, the largest ``|chunk - Y|`` over the
    frozen rows ``k < n_frozen[b]`` and over the soft rows (``k >= n_frozen[b]`` with weight > 0).

    ``chunk``, ``prefix``: (B, H, A); ``n_frozen``: int or (B,); ``weights``: (H,) or (B, H).
    Returns two (B,) float arrays; NaN where a row has no such rows.
    """
    c = np.asarray(chunk, dtype=np.float64)
    y = np.asarray(prefix, dtype=np.float64)
    if c.ndim != 3 or c.shape != y.shape:
        raise ValueError(f"chunk and prefix must both be (B, H, A), got {c.shape} and {y.shape}")
    b, h, _ = c.shape
    frozen = frozen_mask(n_frozen, b, h).numpy()
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (b, h))
    soft = (~frozen) & (w > 0)
    err = np.abs(c - y).max(axis=2)  # (B, H)

    def rowmax(sel: np.ndarray) -> np.ndarray:
        return np.where(sel.any(axis=1), np.where(sel, err, -np.inf).max(axis=1), np.nan)

    return rowmax(frozen), rowmax(soft)


# --------------------------------------------------------------------------- BID
class BidResult(NamedTuple):
    """Outcome of :func:`sample_bid`."""

    actions: torch.Tensor  # (B, H, A) selected chunk per row
    candidates: torch.Tensor  # (B, N, H, A) all strong samples
    index: np.ndarray  # (B,) int64, chosen candidate per row
    weak: torch.Tensor | None  # (B, M, H, A) weak-policy samples, or None


def _default_select() -> BidSelectFn:
    try:
        from async_vla_ros.core.bid import bid_select
    except ImportError as exc:  # pragma: no cover - depends on the checkout state
        raise ImportError("sample_bid needs async_vla_ros.core.bid.bid_select (or pass select=...)") from exc
    return bid_select


def sample_bid(
    v: VelocityFn,
    x0: torch.Tensor,
    n: int,
    prefix: torch.Tensor | np.ndarray | None,
    weights: torch.Tensor | np.ndarray | None,
    *,
    weak_v: VelocityFn | None = None,
    weak_x0: torch.Tensor | None = None,
    select: BidSelectFn | None = None,
) -> BidResult:
    """Bidirectional decoding (Liu et al. 2024): N vanilla samples per row, pick one.

    ``x0``: (B, N, H, A) noise; ``v`` is evaluated on the flattened batch (B*N, H, A), row
    ``b * N + j`` being candidate j of batch row b (repeat the conditioning with
    ``repeat_interleave(N)``). ``prefix``: (B, H, A), ``weights``: (B, H) (backward coherence); both None when
    there is no previous plan (first chunk), the scorer then uses forward contrast only.
    Optional forward contrast: ``weak_v`` and ``weak_x0`` (B, M, H, A) draw M samples from a
    weak checkpoint. ``select`` defaults to :func:`async_vla_ros.core.bid.bid_select`
    (lower score is better); it receives numpy arrays.
    """
    n = _check_steps(n)
    x0 = _check_x0(x0, "x0", ndim=4)
    b, n_cand, h, a = x0.shape
    if (prefix is None) != (weights is None):
        raise ValueError("BID needs prefix and weights together (or neither, for a first chunk)")
    y = w = None
    if prefix is not None:
        y = _check_prefix(prefix, x0[:, 0])
        w = _check_weights(weights, x0[:, 0]).squeeze(-1)
    if (weak_v is None) != (weak_x0 is None):
        raise ValueError("weak_v and weak_x0 must be given together (forward contrast) or not at all")
    cands = sample_vanilla(v, x0.reshape(b * n_cand, h, a), n).reshape(b, n_cand, h, a)
    weak = None
    if weak_v is not None:
        weak_x0 = _check_x0(weak_x0, "weak_x0", ndim=4)
        if weak_x0.shape[0] != b or tuple(weak_x0.shape[2:]) != (h, a):
            raise ValueError(
                f"weak_x0 must have shape (B, M, H, A) with B,H,A = {b},{h},{a}, got {tuple(weak_x0.shape)}"
            )
        m = weak_x0.shape[1]
        weak = sample_vanilla(weak_v, weak_x0.reshape(b * m, h, a), n).reshape(b, m, h, a)
    sel = select if select is not None else _default_select()
    idx = np.asarray(
        sel(
            cands.detach().cpu().numpy(),
            None if y is None else y.detach().cpu().numpy(),
            None if w is None else w.detach().cpu().numpy(),
            None if weak is None else weak.detach().cpu().numpy(),
        )
    )
    if idx.shape != (b,) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"BID select must return (B,) = ({b},) integer indices, got {idx.shape} {idx.dtype}")
    if (idx < 0).any() or (idx >= n_cand).any():
        raise ValueError(f"BID select returned indices outside [0, {n_cand}): {idx.tolist()}")
    idx = idx.astype(np.int64)
    chosen = cands[torch.arange(b, device=cands.device), torch.as_tensor(idx, device=cands.device)]
    return BidResult(actions=chosen, candidates=cands, index=idx, weak=weak)


SAMPLER_INPUTS: dict[str, tuple[str, ...]] = {
    "vanilla": (),
    "rtc": ("prefix", "weights"),
    "rtc_jf": ("prefix", "weights"),
    "prefix": ("prefix", "n_frozen"),
    # weights > 0 mark the prefix rows that hold real planned actions (the rest start at zero)
    "remac": ("prefix", "weights", "n_frozen"),
    "bid": ("prefix", "weights"),
}
"""The samplers this module implements (those the flow backend runs; every sampler name a request
may carry is in ``core.strategies.SAMPLERS``) and what a request must carry for each (besides the
observation)."""
