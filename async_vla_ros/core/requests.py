"""The one conversion from a chunk request to a ``ChunkPolicy.infer`` call.

Every caller (the lockstep runner, replay, the robot session, the policy node, the latency
benchmark) turns a request into ``infer(obs, sampler, **kwargs)`` here, so the samplers see the
same inputs everywhere:

* ``rtc``, ``rtc_jf`` and ``rtc_lerobot`` (LeRobot's own RTC, lerobot backend only; it also takes
  ``n_frozen``, its inference delay): ``prefix (B, H, A)`` and ``weights (B, H)``; ``prefix``: ``prefix``
  and ``n_frozen (B,)``; ``remac``: ``prefix``, ``weights`` (> 0 on the rows that hold planned
  actions) and ``n_frozen``; ``bid``: ``prefix`` and ``weights``; ``vanilla``: nothing;
* ``beta``: the request's RTC guidance clip (``rtc``, ``rtc_jf``; None or <= 0: the policy's own
  default). It goes to ``infer(beta=...)`` only when the policy takes a per-request clip
  (:func:`takes_beta`), so one loaded policy serves every preset's beta, in the lockstep runner and
  in the policy node alike;
* **first chunk** (no previous plan: ``n_real == 0`` for every row, or no prefix received):
  ``rtc``, ``rtc_jf``, ``rtc_lerobot`` and ``prefix`` run ``vanilla`` (nothing to guide towards; their weights /
  frozen counts are all zero then, which is vanilla in exact arithmetic), ``bid`` gets ``prefix =
  weights = None`` (forward contrast only), ``remac`` starts from zeros with nothing frozen (its
  authors' first chunk: a zero prefix, zero weights, ``n_frozen = 0``). A batch mixing first and later requests keeps the
  strategy's sampler: the first requests' rows carry zero weights / ``n_frozen = 0``.

Pure numpy; ``policy`` is any object with ``infer`` (duck-typed ChunkPolicy).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from async_vla_ros.core.scheduler import RequestSpec
from async_vla_ros.core.strategies import SAMPLERS, check_beta

__all__ = ["SAMPLERS", "sampler_call", "spec_call", "infer_specs", "takes_beta"]


def takes_beta(policy: Any) -> bool:
    """Whether ``policy.infer`` accepts a per-request guidance clip ``beta``."""
    try:
        params = inspect.signature(policy.infer).parameters
    except (TypeError, ValueError):
        return False
    return "beta" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def sampler_call(
    sampler: str,
    prefix: np.ndarray | None,
    weights: np.ndarray | None,
    n_frozen: np.ndarray | None,
    seed: int | None = None,
    beta: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """``(sampler to run, infer kwargs)`` for a batch: ``prefix`` (B, H, A) or None (first chunk),
    ``weights`` (B, H) or None, ``n_frozen`` (B,) or None, ``beta`` the guidance clip of an
    ``rtc`` / ``rtc_jf`` request (None or <= 0: the policy's default; passed as ``beta=``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    kw: dict[str, Any] = {"seed": seed}
    if sampler in ("rtc", "rtc_jf", "rtc_lerobot", "prefix") and prefix is None:
        return "vanilla", kw  # first chunk: nothing to guide towards
    if sampler in ("rtc", "rtc_jf"):
        kw.update(prefix=prefix, weights=weights)
        if beta is not None and not beta <= 0:  # (NaN is refused by check_beta)
            kw["beta"] = check_beta(beta, sampler)
    elif sampler == "remac" and prefix is not None:  # (no prefix: the policy starts from zeros)
        kw.update(prefix=prefix, weights=weights, n_frozen=np.asarray(n_frozen, dtype=np.int64))
    elif sampler == "prefix":
        kw.update(prefix=prefix, n_frozen=np.asarray(n_frozen, dtype=np.int64))
    elif sampler == "rtc_lerobot":  # LeRobot's own RTC: d = n_frozen, H - s from the weights
        kw.update(prefix=prefix, weights=weights, n_frozen=np.asarray(n_frozen, dtype=np.int64))
    elif sampler == "bid" and prefix is not None:
        kw.update(prefix=prefix, weights=weights)
    return sampler, kw


def spec_call(specs: Sequence[RequestSpec], seed: int | None = None) -> tuple[str, dict[str, Any]]:
    """:func:`sampler_call` for scheduler requests answered by one batched call (same sampler)."""
    if not specs:
        raise ValueError("no request to answer")
    sampler = specs[0].sampler
    if any(sp.sampler != sampler for sp in specs):
        raise ValueError(f"one batched call runs one sampler, got {sorted({sp.sampler for sp in specs})}")
    first = all(sp.n_real == 0 for sp in specs)
    prefix = None if first else np.stack([sp.prefix for sp in specs])
    weights = None if first else np.stack([sp.weights for sp in specs])
    n_frozen = np.array([sp.n_frozen for sp in specs], dtype=np.int64)
    betas = {sp.beta for sp in specs}
    if len(betas) > 1:
        raise ValueError(f"one batched call runs one guidance clip, got {sorted(betas, key=str)}")
    return sampler_call(sampler, prefix, weights, n_frozen, seed, beta=betas.pop())


ONE_GUIDANCE_PER_CALL = frozenset({"rtc_lerobot"})  # samplers that take one (d, H - s) per call


def _rows(obs: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of an observation batch: an array, or a mapping of arrays / per-row lists (an
    instruction string applies to every row)."""
    if isinstance(obs, Mapping):
        return {k: (v if isinstance(v, str) else _rows(v, idx)) for k, v in obs.items()}
    if isinstance(obs, (list, tuple)):
        return [obs[i] for i in idx]
    return np.asarray(obs)[idx]


def infer_specs(
    policy: Any,
    obs: np.ndarray | Mapping[str, np.ndarray],
    specs: Sequence[RequestSpec],
    seed: int | None = None,
) -> np.ndarray:
    """Answer ``specs`` with one ``policy.infer`` on ``obs`` (B rows, one per spec): (B, H, A) float64.

    A sampler that guides a whole call with one (d, H - s) (``ONE_GUIDANCE_PER_CALL``: LeRobot's RTC)
    gets one call per distinct guidance when the rows differ (delays that vary per chunk)."""
    sampler, kw = spec_call(specs, seed)
    if sampler in ONE_GUIDANCE_PER_CALL and kw.get("weights") is not None and len(specs) > 1:
        keys = [(int(n), np.asarray(w).tobytes()) for n, w in zip(kw["n_frozen"], kw["weights"])]
        if len(set(keys)) > 1:
            out = np.empty((len(specs), int(policy.horizon), int(policy.action_dim)))
            for key in dict.fromkeys(keys):
                idx = np.array([i for i, k in enumerate(keys) if k == key])
                out[idx] = infer_specs(policy, _rows(obs, idx), [specs[i] for i in idx], seed)
            return out
    if "beta" in kw and not takes_beta(policy):
        # a backend without a per-request clip runs the one it was loaded with (the registry
        # loads such backends with the preset's beta)
        del kw["beta"]
    out = np.asarray(policy.infer(obs, sampler, **kw), dtype=np.float64)
    h, a, b = int(policy.horizon), int(policy.action_dim), len(specs)
    if out.shape != (b, h, a):
        raise ValueError(f"policy returned {out.shape}, expected {(b, h, a)}")
    return out
