"""Pure helpers of the camera_ingestion node (numpy only, no rclpy).

* :class:`StampedBuffer`: the last N stamped samples of one stream; ``nearest(t)`` pairs streams
  by time.
* :func:`resize_nearest`: (h, w, c) uint8 image -> (size, size, c) by nearest-neighbour sampling
  of pixel centres (cheap; the policies use small images).
* :func:`image_to_rgb`: a ``sensor_msgs/Image`` payload (rgb8 / bgr8 / rgba8 / bgra8 / mono8) to an
  (h, w, 3) uint8 array, validating sizes.
* :func:`joint_arrays`: positions / velocities of named joints out of a JointState-like payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["StampedBuffer", "resize_nearest", "image_to_rgb", "joint_arrays", "InputError"]

T = TypeVar("T")


class InputError(ValueError):
    """A message failed validation; ``reason`` is the short code it is counted under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StampedBuffer(Generic[T]):
    """The last ``maxlen`` (stamp_ns, value) pairs, stamps strictly increasing."""

    def __init__(self, maxlen: int = 64) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._items: deque[tuple[int, T]] = deque(maxlen=maxlen)

    def push(self, stamp_ns: int, value: T) -> None:
        """Append; raises :class:`InputError` ('out_of_order') unless the stamp is newer."""
        if self._items and stamp_ns <= self._items[-1][0]:
            raise InputError("out_of_order", f"stamp {stamp_ns} is not newer than {self._items[-1][0]}")
        self._items.append((int(stamp_ns), value))

    def latest(self) -> tuple[int, T] | None:
        return self._items[-1] if self._items else None

    def nearest(self, stamp_ns: int, max_dt_ns: int | None = None) -> tuple[int, T] | None:
        """The sample closest in time to ``stamp_ns`` (ties: the older), or None if the buffer is
        empty or the closest is further than ``max_dt_ns``."""
        if not self._items:
            return None
        best = min(self._items, key=lambda it: abs(it[0] - stamp_ns))
        if max_dt_ns is not None and abs(best[0] - stamp_ns) > max_dt_ns:
            return None
        return best

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def resize_nearest(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (h, w, c) to (size, size, c) (pixel-centre sampling)."""
    if img.ndim != 3:
        raise ValueError(f"image must be (h, w, c), got {img.shape}")
    h, w = img.shape[:2]
    if size < 1:
        raise ValueError("size must be >= 1")
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return np.ascontiguousarray(img[rows[:, None], cols[None, :]])


_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def image_to_rgb(encoding: str, height: int, width: int, step: int, data: bytes | Sequence[int]) -> np.ndarray:
    """Image payload -> (height, width, 3) uint8 RGB; raises :class:`InputError` on bad payloads."""
    if encoding not in _CHANNELS:
        raise InputError("bad_encoding", f"unsupported image encoding {encoding!r} (supported: {', '.join(_CHANNELS)})")
    ch = _CHANNELS[encoding]
    if height < 1 or width < 1 or step < width * ch:
        raise InputError("bad_shape", f"image {width}x{height} step {step} is inconsistent for {encoding}")
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size != step * height:
        raise InputError("bad_shape", f"image data has {buf.size} bytes, expected step*height = {step * height}")
    img = buf.reshape(height, step)[:, : width * ch].reshape(height, width, ch)
    if encoding == "mono8":
        return np.repeat(img, 3, axis=2)
    if encoding.startswith("bgr"):
        img = img[:, :, [2, 1, 0]]
    return np.ascontiguousarray(img[:, :, :3])


def joint_arrays(
    names: Sequence[str],
    position: Sequence[float],
    velocity: Sequence[float],
    wanted: Sequence[str],
    optional: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Positions (n,) and velocities (n,) of the ``wanted`` joints (velocities 0 when the message
    has none) plus ``{name: position}`` of the ``optional`` joints present.

    Raises :class:`InputError`: 'bad_shape' (lengths differ), 'missing_joint', 'non_finite'.
    """
    pos = np.asarray(position, dtype=np.float64)
    vel = np.asarray(velocity, dtype=np.float64)
    if pos.shape != (len(names),):
        raise InputError("bad_shape", f"{len(names)} joint names but {pos.size} positions")
    if vel.size not in (0, len(names)):
        raise InputError("bad_shape", f"{len(names)} joint names but {vel.size} velocities")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise InputError("missing_joint", f"joint state lacks {missing}")
    idx = np.array([index[n] for n in wanted], dtype=np.int64)
    q = pos[idx]
    qd = vel[idx] if vel.size else np.zeros(len(wanted))
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
        raise InputError("non_finite", "joint state contains NaN or Inf")
    extra = {}
    for n in optional:
        if n in index:
            v = float(pos[index[n]])
            if not np.isfinite(v):
                raise InputError("non_finite", f"joint {n} is not finite")
            extra[n] = v
    return q, qd, extra
