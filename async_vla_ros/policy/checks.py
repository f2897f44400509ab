"""Argument checks of :meth:`ChunkPolicy.infer` shared by every backend (numpy only, no torch).

One place for what a caller may pass (sampler name, seed, state array), so a local flow policy
and a remote client reject the same bad input with the same message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["did_you_mean", "check_sampler", "check_seed", "check_state", "reads_proprio", "policy_state"]


def did_you_mean(name: str, choices: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` suffix for error messages, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_sampler(name: str, known: Iterable[str]) -> str:
    """``name`` if it is one of ``known``; ValueError with a suggestion otherwise."""
    known = tuple(known)
    if name not in known:
        raise ValueError(f"unknown sampler {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")
    return name


def check_seed(seed: Any) -> int | None:
    """``None`` or an int (numpy ints included; a bool is refused)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    return int(seed)


def check_state(state: Any, obs_dim: int) -> np.ndarray:
    """A numeric, finite ``(B, obs_dim)`` array, B >= 1 (returned as given, not copied)."""
    s = np.asarray(state)
    if s.dtype == object or not np.issubdtype(s.dtype, np.number):
        raise ValueError(f"observation must be a numeric array, got dtype {s.dtype}")
    if s.ndim != 2 or s.shape[1] != obs_dim or s.shape[0] < 1:
        raise ValueError(f"observation must have shape (B, obs_dim) = (B, {obs_dim}), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("observation contains NaN or Inf")
    return s


def reads_proprio(policy: Any) -> bool:
    """Whether ``policy`` reads only the proprioception prefix of the state (see ChunkPolicy)."""
    return bool(getattr(policy, "reads_proprio", False))


def policy_state(policy: Any, state: np.ndarray) -> np.ndarray:
    """The part of an observation state (..., n) that ``policy`` reads: all of it, or for a
    proprioception-only policy its first ``obs_dim`` columns. ValueError when the state is too short
    (or, for a policy that reads it all, of another width)."""
    state = np.asarray(state)
    dim, n = int(policy.obs_dim), int(state.shape[-1]) if state.ndim else 0
    if reads_proprio(policy):
        if n < dim:
            raise ValueError(
                f"the policy reads the {dim} proprioception values (q, qd, gripper) at the head of the state; "
                f"the state has only {n}"
            )
        return state[..., :dim]
    if n != dim:
        raise ValueError(f"the state has {n} values, the policy needs obs_dim = {dim}")
    return state
