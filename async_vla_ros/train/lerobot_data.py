"""LeRobotDataset v3 <-> our demonstrations: export (demos and recorded rosbag2 bags), import.

* :func:`export_lerobot` writes ``LeRobotDataset.create(...)`` at ``DST`` from our demonstrations
  directory (``async-vla-ros demos``: every recorded camera; the task's training paraphrases,
  ``names.INSTRUCTIONS``, one per episode in turn) or from a bag recorded from the running graph
  (``/observation`` state, every camera it carried, its instruction; the executed command of each
  step); the result opens with ``LeRobotDataset(repo_id, root=DST)``, offline.
* :func:`import_lerobot` reads a LeRobotDataset v3 folder into our demonstrations layout
  (``sim/demos.py``), which ``train base|remac|a2c2`` read.

Features: ``observation.state`` (float32, names from our observation fields), ``action``
(float32, ``fr3_joint1..7`` + ``gripper_width``), ``observation.images.<camera>`` stored as
**image** features (PNG frames in the parquet files), not video: with the torch/torchvision pair
this project installs (torchvision 0.29, no torchcodec) LeRobot cannot decode its videos
(docs/datasets.md). Demos also carry ``action.executed`` (the command actually sent). Our names
and task go into ``meta/async_vla_ros.json`` beside LeRobot's own ``meta/info.json`` so an import
restores them; a foreign dataset imports without it given ``--task``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.hfenv import apply_hf_offline

__all__ = ["ExportEpisode", "export_lerobot", "import_lerobot", "episodes_from_demos", "episodes_from_bag", "SIDECAR"]

SIDECAR = "meta/async_vla_ros.json"
ACTION_NAMES = [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper_width"]


@dataclass
class ExportEpisode:
    """One episode to export (robot units)."""

    obs: np.ndarray  # (T, obs_dim)
    actions: np.ndarray  # (T, A)
    executed: np.ndarray | None = None  # (T, A) commands actually sent (demos)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (T, h, w, 3) uint8
    instructions: list[str] | None = None  # (T,) per frame (a bag: what the graph sent); None: the task's


def _state_names(obs_fields: Sequence[Sequence[Any]] | None, dim: int) -> list[str]:
    if not obs_fields:
        return [f"state_{i}" for i in range(dim)]
    names = [f"{n}_{i}" if int(k) > 1 else str(n) for n, k in obs_fields for i in range(int(k))]
    if len(names) != dim:
        raise ValueError(f"observation fields name {len(names)} values, the state has {dim}")
    return names


# ---------------------------------------------------------------------- sources
def episodes_from_demos(src: str | Path) -> tuple[list[ExportEpisode], dict[str, Any]]:
    """Our demonstrations directory -> episodes and (task, fps, obs_fields)."""
    from async_vla_ros.sim.demos import load_demos

    demos = load_demos(src, images=True)
    info = demos.info
    eps = [ExportEpisode(e.obs, e.actions, e.executed, dict(e.camera_images)) for e in demos.episodes]
    return eps, {"task": info["task"], "fps": float(info["fps"]), "obs_fields": info.get("obs_fields")}


def episodes_from_bag(src: str | Path, dt: float | None = None) -> tuple[list[ExportEpisode], dict[str, Any]]:
    """A bag recorded from the running graph -> one episode per ``episode_id``.

    Step t is one ``/observation`` (state, every camera that all observations carried, its
    instruction); its action is the command the robot
    was sent next (the first command logged after the observation's stamp; the last steps with no
    later command are dropped). Frame rate: ``1 / dt`` of the recorded requests, or ``dt``.
    """
    from async_vla_ros.bags import BagError
    from async_vla_ros.eval.replay import COMMAND_TOPICS, load_recording

    run = load_recording(src)  # states, stamps, episodes, commands, dt (validated)
    if run.cmd.size == 0:
        raise BagError(f"bag {src} has no executed commands ({' or '.join(COMMAND_TOPICS)}): nothing to label with")
    step_dt = dt or run.dt
    if not step_dt:
        raise BagError(f"bag {src}: no control period recorded; pass dt")
    eps: list[ExportEpisode] = []
    for ep_id in np.unique(run.episode):
        rows = np.flatnonzero(run.episode == ep_id)
        idx = np.searchsorted(run.cmd_t_ns, run.obs_t_ns[rows], side="right")
        keep = idx < len(run.cmd_t_ns)
        rows, idx = rows[keep], idx[keep]
        if len(rows) < 2:
            continue
        ep_imgs = {c: frames[rows] for c, frames in run.images.items()}
        instr = [run.instructions[int(i)] for i in rows] if run.instructions else None
        eps.append(ExportEpisode(run.obs[rows], run.cmd[idx], None, ep_imgs, instr))
    if not eps:
        raise BagError(f"bag {src}: no episode with at least 2 labelled observations")
    return eps, {"task": run.task, "fps": 1.0 / step_dt, "obs_fields": None}


# ---------------------------------------------------------------------- export
def export_lerobot(
    src: str | Path,
    dst: str | Path,
    *,
    repo_id: str | None = None,
    instruction: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write our demos or a recorded bag at ``src`` as a LeRobotDataset v3 at ``dst``."""
    apply_hf_offline()
    src, dst = Path(src), Path(dst)
    if (src / "metadata.yaml").is_file():
        eps, meta = episodes_from_bag(src)
        kind = "bag"
    elif (src / "meta" / "info.json").is_file():
        eps, meta = episodes_from_demos(src)
        kind = "demos"
    else:
        raise ValueError(
            f"{src}: neither a demonstrations directory (meta/info.json) nor a rosbag2 bag (metadata.yaml)"
        )
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{dst} is not empty (use --overwrite to replace it)")
        shutil.rmtree(dst)
    elif dst.exists():
        dst.rmdir()  # LeRobotDataset.create makes the folder itself
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    task = meta["task"] or "unknown"
    # the task's training paraphrases (held-out ones never go into data), one per episode in turn
    phrases = [instruction] if instruction else list(N.INSTRUCTIONS.get(task, (task,)))
    instr = phrases[0]
    obs_dim, a_dim = eps[0].obs.shape[1], eps[0].actions.shape[1]
    state_names = _state_names(meta["obs_fields"], obs_dim)
    action_names = ACTION_NAMES if a_dim == len(ACTION_NAMES) else [f"action_{i}" for i in range(a_dim)]
    features: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": (obs_dim,), "names": state_names},
        "action": {"dtype": "float32", "shape": (a_dim,), "names": action_names},
    }
    if all(e.executed is not None for e in eps):
        features["action.executed"] = {"dtype": "float32", "shape": (a_dim,), "names": action_names}
    cams = sorted(eps[0].images)
    for c in cams:
        h, w, _ = eps[0].images[c].shape[1:]
        features[f"observation.images.{c}"] = {
            "dtype": "image",
            "shape": (int(h), int(w), 3),
            "names": ["height", "width", "channels"],
        }
    repo = repo_id or f"local/{task}"
    ds = LeRobotDataset.create(repo_id=repo, root=dst, fps=int(round(meta["fps"])), features=features, use_videos=False)
    for i, e in enumerate(eps):
        if sorted(e.images) != cams or e.obs.shape[1] != obs_dim or e.actions.shape[1] != a_dim:
            raise ValueError("episodes differ in cameras or dimensions: cannot share one dataset's features")
        for t in range(e.obs.shape[0]):
            frame: dict[str, Any] = {
                "observation.state": e.obs[t].astype(np.float32),
                "action": e.actions[t].astype(np.float32),
                "task": (instruction or (e.instructions[t] if e.instructions else "") or phrases[i % len(phrases)]),
            }
            if "action.executed" in features:
                frame["action.executed"] = e.executed[t].astype(np.float32)
            for c in cams:
                frame[f"observation.images.{c}"] = e.images[c][t]
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    side = {
        "source": str(src),
        "source_kind": kind,
        "task": task,
        "instruction": instr,
        "instructions": phrases,
        "obs_fields": meta["obs_fields"],
        "state_names": state_names,
        "action_names": action_names,
        "cameras": cams,
        "fps": meta["fps"],
    }
    (dst / SIDECAR).write_text(json.dumps(side, indent=1))
    return {"repo_id": repo, "episodes": len(eps), "frames": sum(e.obs.shape[0] for e in eps), **side}


# ---------------------------------------------------------------------- import
def _to_numpy_image(x) -> np.ndarray:
    """A LeRobot frame image (C, H, W) float in [0, 1] -> (H, W, C) uint8."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
    return np.clip(np.rint(arr.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def import_lerobot(
    src: str | Path,
    dst: str | Path,
    *,
    repo_id: str | None = None,
    task: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """A LeRobotDataset v3 at ``src`` -> our demonstrations layout at ``dst`` (what train reads)."""
    apply_hf_offline()
    import pyarrow.parquet as pq

    from async_vla_ros.sim.demos import FORMAT, _episode_table

    src, dst = Path(src), Path(dst)
    if not (src / "meta" / "info.json").is_file():
        raise ValueError(f"{src}: not a LeRobotDataset (no meta/info.json)")
    side: Mapping[str, Any] = {}
    if (src / SIDECAR).is_file():
        side = json.loads((src / SIDECAR).read_text())
    task = task or side.get("task")
    if not task:
        raise ValueError(f"{src}: no {SIDECAR}; pass the task name (--task)")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id or f"local/{task}", root=src)
    feats = ds.meta.features
    for need in ("observation.state", "action"):
        if need not in feats:
            raise ValueError(f"{src}: dataset has no {need!r} feature (features: {sorted(feats)})")
    cams = [k[len("observation.images.") :] for k in feats if k.startswith("observation.images.")]
    for k in cams:
        if feats[f"observation.images.{k}"]["dtype"] == "video":
            raise ValueError(
                f"{src}: camera {k!r} is a video feature; this environment cannot decode LeRobot videos "
                "(torchvision 0.29, no torchcodec: docs/datasets.md). Re-export with image features."
            )
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{dst} is not empty (use --overwrite to replace it)")
        shutil.rmtree(dst)
    (dst / "data").mkdir(parents=True, exist_ok=True)
    (dst / "meta").mkdir(parents=True, exist_ok=True)
    ep_index = np.asarray(ds.hf_dataset["episode_index"])
    dt = 1.0 / float(ds.fps)
    entries, shape = [], None
    for i, ep in enumerate(np.unique(ep_index)):
        rows = np.flatnonzero(ep_index == ep)
        frames = [ds[int(r)] for r in rows]
        obs = np.stack([f["observation.state"].numpy() for f in frames]).astype(np.float64)
        act = np.stack([f["action"].numpy() for f in frames]).astype(np.float64)
        exe = (
            np.stack([f["action.executed"].numpy() for f in frames]).astype(np.float64)
            if "action.executed" in feats
            else act
        )
        imgs = {c: np.stack([_to_numpy_image(f[f"observation.images.{c}"]) for f in frames]) for c in cams}
        if imgs:
            shape = list(next(iter(imgs.values())).shape[1:])
        fname = f"data/episode_{i:06d}.parquet"
        pq.write_table(_episode_table(obs, act, exe, dt, imgs), dst / fname, compression="zstd")
        entries.append(
            {
                "episode_index": i,
                "seed": -1,
                "length": len(rows),
                "file": fname,
                "success": True,
                "success_step": -1,
                "events": {},
            }
        )
    with open(dst / "meta" / "episodes.jsonl", "w") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    obs_dim, a_dim = int(feats["observation.state"]["shape"][0]), int(feats["action"]["shape"][0])
    obs_fields = side.get("obs_fields") or [["state", obs_dim]]
    info = {
        "format": FORMAT,
        "task": task,
        "dt": dt,
        "fps": float(ds.fps),
        "episode_steps": max(e["length"] for e in entries),
        "obs_fields": obs_fields,
        "obs_dim": obs_dim,
        "action_fields": [["q_target", 7], ["gripper_width", 1]] if a_dim == 8 else [["action", a_dim]],
        "action_dim": a_dim,
        "config": {},
        "total_episodes": len(entries),
        "total_frames": sum(e["length"] for e in entries),
        "success_rate": 1.0,
        "attempted_episodes": len(entries),
        "seed": -1,
        "expert": {"name": "imported", "source": str(src), "instruction": side.get("instruction", "")},
        "images": {
            "cameras": cams,
            "shape": shape,
            "dtype": "uint8",
            "encoding": "raw row-major bytes",
            "style": "imported",
        }
        if cams
        else None,
        "columns": ["frame_index", "timestamp", "observation.state", "action", "action.executed"]
        + [f"observation.images.{c}" for c in cams],
    }
    (dst / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return info
