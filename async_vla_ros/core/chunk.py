"""The action chunk: H future actions predicted from the observation of step ``t_obs``.

Action ``k`` of a chunk is meant for step ``t_obs + k`` (k = 0..H-1), see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Chunk", "ChunkError", "as_actions"]


class ChunkError(ValueError):
    """A chunk (or an action array) failed validation; ``reason`` is a short machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_int(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ChunkError("bad_field", f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ChunkError("bad_field", f"{name} must be >= {minimum}, got {value}")
    return int(value)


def as_actions(actions: object, name: str = "actions", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validated read-only float64 copy of an ``(H, A)`` action array.

    Raises :class:`ChunkError` with reason ``bad_shape`` (not 2-D, empty, or not ``shape``) or
    ``non_finite`` (NaN/Inf anywhere).
    """
    try:
        arr = np.array(actions, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ChunkError("bad_shape", f"{name} is not a numeric array: {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ChunkError("bad_shape", f"{name} must be a non-empty (H, A) array, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ChunkError("bad_shape", f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ChunkError("non_finite", f"{name} contains {bad} non-finite value(s)")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Chunk:
    """One predicted action chunk, validated on construction.

    ``actions`` is stored as a read-only float64 copy of shape ``(H, A)``.
    """

    chunk_id: int  # unique id given by the producer (policy node / lockstep runner)
    request_id: int  # id of the RequestSpec this chunk answers
    t_obs: int  # control step of the observation it was computed from
    actions: np.ndarray  # (H, A), robot units (rad, m)
    latency_s: float | None = field(default=None)  # measured inference latency, if known

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_id", _check_int("chunk_id", self.chunk_id))
        object.__setattr__(self, "request_id", _check_int("request_id", self.request_id))
        object.__setattr__(self, "t_obs", _check_int("t_obs", self.t_obs))
        object.__setattr__(self, "actions", as_actions(self.actions))
        if self.latency_s is not None:
            lat = float(self.latency_s)
            if not np.isfinite(lat) or lat < 0:
                raise ChunkError("bad_field", f"latency_s must be finite and >= 0, got {self.latency_s!r}")
            object.__setattr__(self, "latency_s", lat)

    @property
    def horizon(self) -> int:
        """H, the number of actions."""
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        """A, the size of one action."""
        return int(self.actions.shape[1])

    def __repr__(self) -> str:
        return (
            f"Chunk(chunk_id={self.chunk_id}, request_id={self.request_id}, t_obs={self.t_obs}, "
            f"actions=<{self.horizon}x{self.action_dim}>)"
        )
