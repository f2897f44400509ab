"""Demonstrations as training data: episodes, (observation, action chunk) windows, splits.

An :class:`Episode` is one demonstration: ``obs (T, obs_dim)`` (the observation of step t),
``actions (T, A)`` (the expert's action of step t, robot units) and optionally
``images (T, h, w, 3)`` uint8. :class:`ChunkWindows` turns episodes into training samples
``(obs_t, actions[t : t + H])``; a window that runs past the episode end is padded with the
episode's last action (the arm holds its last command when the demonstration stops).

Windows keep their episode index and step so the REMAC and A2C2 trainers can look up the
same episode at another step (``index_of(ep, t)``).

Demonstrations on disk are read through the simulation package's loader
(:func:`async_vla_ros.sim.demos.load_demos`); :func:`load_episodes` adapts whatever record type
it returns (mapping or attributes ``obs``/``observations`` and ``actions``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Episode:
    """One demonstration (robot units)."""

    obs: np.ndarray  # (T, obs_dim) observation of step t
    actions: np.ndarray  # (T, A) expert action of step t
    images: np.ndarray | None = None  # (T, h, w, 3) uint8 frames of the first camera, optional
    seed: int = -1  # episode seed (-1: unknown)
    meta: Mapping[str, Any] = field(default_factory=dict)  # per-episode metadata (success, side, ...)
    camera_images: Mapping[str, np.ndarray] = field(default_factory=dict)  # every camera: name -> (T, h, w, 3)

    def __post_init__(self) -> None:
        obs = np.asarray(self.obs, dtype=np.float64)
        act = np.asarray(self.actions, dtype=np.float64)
        if obs.ndim != 2 or act.ndim != 2 or obs.shape[0] != act.shape[0] or obs.shape[0] < 1:
            raise ValueError(
                f"episode needs obs (T, obs_dim) and actions (T, A) with equal T >= 1, got {obs.shape} and {act.shape}"
            )
        if not (np.isfinite(obs).all() and np.isfinite(act).all()):
            raise ValueError("episode observations/actions contain NaN or Inf")
        if self.images is not None:
            img = np.asarray(self.images)
            if img.ndim != 4 or img.shape[0] != obs.shape[0] or img.dtype != np.uint8:
                raise ValueError(
                    f"episode images must be (T, h, w, ch) uint8 with T = {obs.shape[0]}, got {img.shape} {img.dtype}"
                )
            object.__setattr__(self, "images", img)
        cams = {}
        for name, frames in dict(self.camera_images or {}).items():
            img = np.asarray(frames)
            if img.ndim != 4 or img.shape[0] != obs.shape[0] or img.dtype != np.uint8:
                raise ValueError(
                    f"episode camera {name!r} must be (T, h, w, ch) uint8 with T = {obs.shape[0]}, "
                    f"got {img.shape} {img.dtype}"
                )
            cams[str(name)] = img
        object.__setattr__(self, "camera_images", cams)
        object.__setattr__(self, "obs", obs)
        object.__setattr__(self, "actions", act)

    @property
    def length(self) -> int:
        return int(self.obs.shape[0])


def _field(rec: Any, *names: str) -> Any:
    for n in names:
        if isinstance(rec, Mapping) and n in rec:
            return rec[n]
        if hasattr(rec, n):
            return getattr(rec, n)
    return None


def episode_from_record(rec: Any) -> Episode:
    """Adapt one loaded demonstration (mapping or object) to an :class:`Episode`."""
    obs = _field(rec, "obs", "observations", "state")
    act = _field(rec, "actions", "action")
    if obs is None or act is None:
        raise ValueError(f"demonstration record has no obs/actions fields: {type(rec).__name__}")
    images = _field(rec, "images", "image")
    cams = _field(rec, "camera_images") or {}
    seed = _field(rec, "seed")
    meta = _field(rec, "meta", "metadata") or {}
    if not isinstance(meta, Mapping):
        meta = {}
    return Episode(
        obs=obs,
        actions=act,
        images=images,
        seed=-1 if seed is None else int(seed),
        meta=dict(meta),
        camera_images=dict(cams) if isinstance(cams, Mapping) else {},
    )


@dataclass(frozen=True)
class DemoSet:
    """Episodes loaded from a demonstrations directory plus what the checkpoints record about it."""

    episodes: tuple[Episode, ...]
    path: str  # where they came from ("" for in-memory data)
    task: str  # task name from the metadata ("" when unknown)
    metadata: Mapping[str, Any]  # dataset metadata (obs fields, dt, ...)

    @property
    def num_steps(self) -> int:
        return sum(e.length for e in self.episodes)

    def describe(self) -> dict[str, Any]:
        """JSON-compatible summary for checkpoint configs."""
        return {
            "path": self.path,
            "episodes": len(self.episodes),
            "steps": self.num_steps,
            "task": self.task,
            "fingerprint": fingerprint(self.episodes),
        }


def fingerprint(episodes: Sequence[Episode]) -> str:
    """Short content hash of the episodes' observations and actions (detects a changed dataset)."""
    h = hashlib.sha256()
    for e in episodes:
        h.update(np.ascontiguousarray(e.obs, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(e.actions, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def load_episodes(path: str | os.PathLike) -> DemoSet:
    """Read demonstrations written by ``async-vla-ros demos`` (via ``sim.demos.load_demos``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"demonstrations not found: {p} (write them with `async-vla-ros demos TASK`)")
    try:
        from async_vla_ros.sim.demos import load_demos
    except ImportError as exc:  # pragma: no cover - depends on the checkout state
        raise ImportError("reading demonstrations needs async_vla_ros.sim.demos.load_demos") from exc
    loaded = load_demos(p)
    records = _field(loaded, "episodes")
    meta = _field(loaded, "metadata", "meta", "info") or {}
    if records is None:
        records = loaded
    episodes = tuple(episode_from_record(r) for r in records)
    if not episodes:
        raise ValueError(f"{p}: no episodes")
    if not isinstance(meta, Mapping):
        meta = {}
    task = str(meta.get("task", "")) if meta else ""
    if not task:
        task = str(episodes[0].meta.get("task", ""))
    return DemoSet(episodes=episodes, path=str(p), task=task, metadata=dict(meta))


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim(0)``).

    Demonstrations are read as per-episode frames (~0.6 MB a camera) and then concatenated: the
    freed per-episode blocks stay on glibc's heap, resident, because it only shrinks from its top.
    After reading 1,000+ demonstrations a task a VLA training stayed 12.1 GB resident for ~7 GB of
    arrays (docs/training.md). False where the C library is not glibc (nothing to do there).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)  # returns whether it released anything; either is fine
        return True
    except (OSError, AttributeError):
        return False


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode indices (train, val), split by whole episodes (no leakage of near-identical windows).

    At least one episode stays in training; val is empty when ``val_fraction`` is 0 or n == 1.
    """
    if n < 1:
        raise ValueError("need at least one episode")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(int(round(val_fraction * n)), n - 1)
    if val_fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class ChunkWindows:
    """All (episode, step) windows of a set of episodes with horizon H.

    Arrays (N = total steps): ``obs (N, obs_dim)``, ``chunks (N, H, A)`` (padded past the episode
    end with its last action), ``ep (N,)``, ``t (N,)``, ``images (N, h, w, ch)`` uint8 or None
    (the first camera), ``camera_images`` {camera: (N, h, w, ch)} (the cameras every episode has).
    """

    def __init__(self, episodes: Sequence[Episode], horizon: int) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if not episodes:
            raise ValueError("need at least one episode")
        dims = {(e.obs.shape[1], e.actions.shape[1]) for e in episodes}
        if len(dims) != 1:
            raise ValueError(f"episodes disagree on (obs_dim, A): {sorted(dims)}")
        has_img = {e.images is not None for e in episodes}
        if len(has_img) != 1:
            raise ValueError("either every episode has images or none does")
        self.horizon = int(horizon)
        self.episodes = tuple(episodes)
        self.obs_dim, self.action_dim = dims.pop()
        obs, chunks, ep, ts = [], [], [], []
        self._offsets = np.zeros(len(episodes) + 1, dtype=np.int64)
        for i, e in enumerate(episodes):
            t_len = e.length
            idx = np.minimum(np.arange(t_len)[:, None] + np.arange(self.horizon)[None, :], t_len - 1)
            obs.append(e.obs)
            chunks.append(e.actions[idx])
            ep.append(np.full(t_len, i, dtype=np.int64))
            ts.append(np.arange(t_len, dtype=np.int64))
            self._offsets[i + 1] = self._offsets[i] + t_len
        self.obs = np.concatenate(obs)
        self.chunks = np.concatenate(chunks)
        self.ep = np.concatenate(ep)
        self.t = np.concatenate(ts)
        common = sorted(set.intersection(*(set(e.camera_images) for e in episodes)))
        self.images = self._gather_frames(episodes, None) if episodes[0].images is not None else None
        self.camera_images = {c: self._gather_frames(episodes, c) for c in common}

    def _gather_frames(self, episodes: Sequence[Episode], camera: str | None) -> np.ndarray:
        """One camera's frames of every episode in one array (``camera`` None: ``images``).

        Copied episode by episode into an array allocated once, and each episode's frames become a
        view of it as soon as they are copied, so the per-episode arrays can be freed on the way:
        the frames are held once, not twice, once the caller lets go of what it read, and the peak
        while copying is the frames plus what the caller still holds, not twice the frames (a
        concatenation held both). The freed blocks are handed back to the OS every ~256 MB copied
        (glibc keeps them on its heap otherwise; ``release_freed_memory``)."""
        first = episodes[0].images if camera is None else episodes[0].camera_images[camera]
        shapes = {(e.images if camera is None else e.camera_images[camera]).shape[1:] for e in episodes}
        if len(shapes) != 1:
            raise ValueError(
                f"camera {camera or 'images'!r}: episodes have frames of different shapes {sorted(shapes)}"
            )
        out = np.empty((int(self._offsets[-1]), *first.shape[1:]), dtype=first.dtype)
        copied = 0
        for i, e in enumerate(episodes):
            a, b = self._offsets[i], self._offsets[i + 1]
            if camera is None:
                out[a:b] = e.images
                object.__setattr__(e, "images", out[a:b])
            else:
                out[a:b] = e.camera_images[camera]
                object.__setattr__(e, "camera_images", {**e.camera_images, camera: out[a:b]})
            copied += out[a:b].nbytes
            if copied >= 256 << 20:
                release_freed_memory()
                copied = 0
        return out

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def index_of(self, ep: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Flat window index of (episode, step) pairs (arrays of equal shape); steps must exist."""
        ep = np.asarray(ep, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        lengths = self._offsets[1:] - self._offsets[:-1]
        if (t < 0).any() or (t >= lengths[ep]).any():
            raise IndexError("step outside its episode")
        return self._offsets[ep] + t

    def rows_of_episodes(self, episode_ids: Sequence[int]) -> np.ndarray:
        """Flat indices of every window of the given episodes."""
        parts = [np.arange(self._offsets[i], self._offsets[i + 1]) for i in episode_ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def frames(self, rows: np.ndarray, cameras: Sequence[str]) -> dict[str, np.ndarray]:
        """Camera name -> (len(rows), h, w, ch) frames of the windows ``rows``; a name
        ``<camera>_prev`` (``names.frame_source``) is that camera's frame one step earlier in the
        episode (its first frame at t = 0)."""
        from async_vla_ros.names import frame_source

        rows = np.asarray(rows, dtype=np.int64)
        out = {}
        for name in cameras:
            cam, back = frame_source(name)
            if cam not in self.camera_images:
                raise KeyError(f"the demonstrations have no camera {cam!r} (they have {sorted(self.camera_images)})")
            out[name] = self.camera_images[cam][rows - np.minimum(self.t[rows], back)]
        return out
