"""The multi-task VLA: a tiny SmolVLA (LeRobot architecture, random init, the project's own VLM
config and tokenizer) trained by behaviour cloning on every task's camera demonstrations, the
language instruction choosing the task.

``async-vla-ros train vla --demos DIR [DIR ...] --out OUT_DIR``

What the policy gets (and nothing else; no privileged object state):

* ``observation.images.scene`` and ``observation.images.wrist``: the sim's two cameras, rendered at
  ``image_size`` (``async-vla-ros demos TASK --images scene wrist --image-size 64``);
* ``observation.images.scene_prev``: the scene camera's previous frame (one control period, 50 ms,
  earlier; ``--prev-frames``): one frame cannot show which way, or how fast, the target, the ball,
  the pole or the cube moves, and every task depends on it. The fixed scene view, not the wrist
  view, whose own motion would mix into it. A deployment has it for free (the camera's last frame);
  the lockstep runner and camera_ingestion supply it (``names.frame_source``);
* ``observation.state``: the proprioception, ``names.N_PROPRIO`` values (q, qd, gripper width),
  the head of every task's state, so one policy serves all four tasks (``reads_proprio``);
* ``task``: a language instruction, for each training sample one of the task's training
  paraphrases (``names.INSTRUCTIONS``) drawn at random, optionally with words dropped
  (``word_dropout``); ``names.HELD_OUT`` never appears here.

The objective is LeRobot's own (``SmolVLAPolicy.forward``: flow matching on the normalised, padded
action chunk), run by our optimisation loop (``train.common.train_loop``: warm-up + cosine
learning rate, gradient clip, periodic validation and checkpoints). Normalisation statistics come
from the training windows (mean/std, with floors: a dimension that never varies, such as the
gripper on tasks that do not grasp, must not turn noise into a 1000-sigma input). The joint
velocities are blinded by default (``--no-blind-qd`` to feed them), for the reason given in
docs/training.md for the state policies: in noisy demonstrations ``qd`` carries the last step's
execution noise, a spurious cue. The result is a LeRobot policy folder (``save_pretrained`` with
its processors) and our sidecar (cameras, state input, instructions, training record):
``--policy lerobot:OUT_DIR`` serves it in the policy node, ``eval``, ``bench`` and ``replay``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N
from async_vla_ros.train import common as C
from async_vla_ros.train.data import (
    ChunkWindows,
    DemoSet,
    Episode,
    load_episodes,
    release_freed_memory,
    split_episodes,
)

__all__ = ["VLAConfig", "VLAData", "load_vla_data", "sample_instructions", "train_vla"]

CAMERAS = ("scene", "wrist")
STATE_KEY, ACTION_KEY, IMAGE_PREFIX = "observation.state", "action", "observation.images."
OBS_SCALE_MIN = 0.01  # floor on state std (normalised units explode on near-constant inputs)
ACTION_SCALE_MIN = 1e-3  # floor on action std (the gripper on tasks that never grasp)
BLIND_SCALE = 1e6  # std given to a blinded state dimension: its normalised input is ~0
# flow time distributions of training (VLAConfig.flow_time): Beta(a, b) concentrations; t = 1 is noise
FLOW_TIMES = {"lerobot": (1.5, 1.0), "uniform": (1.0, 1.0), "clean": (1.0, 1.5)}
# what a run started from another (VLAConfig.init) must share with it: the weights' shapes and meaning.
# Not the previous frames: every camera goes through the one vision encoder, so a warm start may give
# the model a previous frame it was not trained with (no new weights; the strict load checks shapes).
INIT_MUST_MATCH = (
    "chunk",
    "width",
    "patches",
    "vision_width",
    "image_size",
    "blind_qd",
    "pad_dims",
    "expert_width",
    "action_frame",
)


@dataclass(frozen=True)
class VLAConfig(C.DictConfig):
    """Multi-task tiny SmolVLA training run."""

    steps: int = 20000  # optimiser steps
    batch_size: int = 32  # windows per step
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 500  # linear warm-up steps, then cosine to 5 %
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    val_every: int = 1000  # validation (and a history entry) every N steps
    ckpt_every: int = 5000  # policy folder written every N steps and at the end
    val_fraction: float = 0.05  # episodes held out per task for the validation loss
    seed: int = 0
    num_threads: int = 2  # torch threads (per process)
    # processes training side by side on shares of each batch (train.common.DataParallel): 2 uses both
    # cores of this machine, where one process runs on one core whatever its threads. Each rank draws the
    # same batch rows as a 1-process run and keeps its share; only the flow noise and times differ
    procs: int = 1
    chunk: int = 8  # H: actions per chunk (the state policies' H)
    n_steps: int = 10  # flow integration steps at inference
    width: int = 64  # VLM hidden size
    patches: int = 4  # vision patches per image side (4: 16x16 px patches at 64 px, 4 tokens per camera)
    vision_width: int = 32  # vision encoder hidden size
    image_size: int = 64  # square camera frames (the demos' size)
    blind_qd: bool = True  # joint velocities blinded (see the module docstring)
    # cameras whose previous frame is an extra input ("scene": scene_prev). Off by default: measured, it
    # made the policy copy the arm's own motion (docs/training.md, section 4)
    prev_frames: tuple[str, ...] = ()
    # how many control periods back those frames are (1: scene_prev, 50 ms; k: scene_prev<k>): a ball at
    # 0.6 m/s moves ~1.6 px of a 64 px front view per period, ~5 px in three
    prev_gap: int = 1
    # LeRobot's padding of state and action to 32 values, whose flow loss counts the 24 padded action
    # values too (32: LeRobot's default, as every VLA before v7; 0: the sizes themselves)
    pad_dims: int = 32
    expert_width: float = 0.75  # the action expert's width over the VLM's (LeRobot's expert_width_multiplier)
    # the flow time of each training sample (t = 1: noise, t = 0: the chunk): "lerobot", LeRobot's own
    # Beta(1.5, 1) (weighted to the noisy end); "uniform"; "clean", Beta(1, 1.5) (weighted to the clean end,
    # where a chunk's last centimetres are decided): FLOW_TIMES
    flow_time: str = "lerobot"
    # what the 7 joint targets of a chunk are: "absolute" joint positions, or "delta_q", relative to the
    # observation's joint positions (the gripper width stays absolute); names.ACTION_FRAMES
    action_frame: str = "absolute"
    # EMA of the weights (validated and saved), as the base policies (section 1); 0: the raw weights
    ema: float = 0.0
    # each word of a training instruction dropped with this probability (one word always kept), so a
    # task's words each choose it and an instruction in other words still can; 0: the paraphrases whole
    # (as every shipped VLA). Validation always sees them whole
    word_dropout: float = 0.0
    # windows of DAgger episodes (a folder recorded with `demos --driver`) whose driver failed are drawn this
    # many times as often as the others: the states a learned policy fails from, and the expert's labels
    # there, are a small share of the data (intercept: the last periods before the line). 1: every
    # window alike (as every shipped VLA)
    oversample_failed: float = 1.0
    # a VLA policy folder written by `train vla` to start from: its weights, normalisation and tokenizer,
    # then this run's schedule from step 0 (warm-up, cosine): a warm restart (SGDR, Loshchilov & Hutter
    # 2017) that trains a run further without its first steps again. The architecture options must match
    # (INIT_MUST_MATCH); the data may differ. "": a random initialisation
    init: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must lie in [0, 1), got {self.word_dropout}")
        if not (np.isfinite(self.oversample_failed) and self.oversample_failed >= 1.0):
            raise ValueError(f"oversample_failed must be a number >= 1, got {self.oversample_failed}")
        if self.flow_time not in FLOW_TIMES:
            raise ValueError(f"flow_time must be one of {tuple(FLOW_TIMES)}, got {self.flow_time!r}")
        if self.action_frame not in N.ACTION_FRAMES:
            raise ValueError(f"action_frame must be one of {N.ACTION_FRAMES}, got {self.action_frame!r}")
        if isinstance(self.prev_frames, str):
            object.__setattr__(self, "prev_frames", tuple(x.strip() for x in self.prev_frames.split(",") if x.strip()))
        bad = [c for c in self.prev_frames if c not in CAMERAS]
        if bad or len(set(self.prev_frames)) != len(self.prev_frames):
            raise ValueError(f"prev_frames: cameras of {CAMERAS}, each once; got {self.prev_frames}")
        N.prev_frame_name("scene", self.prev_gap)  # raises on a gap out of range
        if self.procs < 1 or self.batch_size % self.procs:
            raise ValueError(f"procs must be >= 1 and divide batch_size {self.batch_size}, got {self.procs}")

    @property
    def policy_cameras(self) -> tuple[str, ...]:
        """Every image input: the cameras, then the previous frames (``<camera>_prev[<k>]``)."""
        return CAMERAS + tuple(N.prev_frame_name(c, self.prev_gap) for c in self.prev_frames)


@dataclass
class VLAData:
    """Every task's windows in one set: proprioceptive state, cameras, chunks, per-window task."""

    windows: ChunkWindows
    tasks: tuple[str, ...]  # task of each episode (windows.ep indexes it)
    sources: tuple[dict[str, Any], ...]  # DemoSet.describe() per directory
    image_style: str = N.IMAGE_STYLE  # what the frames draw (names.IMAGE_STYLES); the policy must be shown the same
    scene_camera: str = N.SCENE_CAMERA_LEGACY  # where the scene camera stood (sim.scene.SCENE_CAMERAS)

    def task_of(self, rows: np.ndarray) -> list[str]:
        return [self.tasks[int(e)] for e in self.windows.ep[rows]]

    def driver_failed(self) -> np.ndarray:
        """(episodes,) bool: recorded with a driver (DAgger) that failed the episode."""
        return np.array([bool(e.meta.get("driven")) and not e.meta.get("success", True) for e in self.windows.episodes])


def row_sampler(rows: np.ndarray, weights: np.ndarray | None) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Draws ``n`` of ``rows`` with replacement: uniformly (``weights`` None, the generator's integers as
    before the option), else in proportion to ``weights`` (one per row)."""
    if weights is None:
        return lambda rng, n: rows[rng.integers(0, len(rows), n)]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != rows.shape or not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise ValueError("row weights must be finite, >= 0, not all 0, one per row")
    cdf = np.cumsum(w)
    return lambda rng, n: rows[np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(rows) - 1)]


def load_vla_data(dirs: Sequence[str | Path], horizon: int, image_size: int) -> VLAData:
    """Read demonstration directories (one task each) into one window set; ValueError with what to
    record when a directory lacks a camera or has frames of another size."""
    episodes: list[Episode] = []
    tasks: list[str] = []
    sources = []
    seen: dict[str, str] = {}
    styles: dict[str, str] = {}
    placements: dict[str, str] = {}
    for d in dirs:
        demos: DemoSet = load_episodes(d)
        # demonstrations written before the style was recorded drew the default
        styles[str(d)] = str((demos.metadata.get("images") or {}).get("style") or N.IMAGE_STYLE)
        # and before the scene camera's placement was recorded, the camera stood at front_v1
        placements[str(d)] = str((demos.metadata.get("images") or {}).get("scene_camera") or N.SCENE_CAMERA_LEGACY)
        task = demos.task
        if task not in N.TASK_NAMES:
            raise ValueError(f"{d}: demonstrations of an unknown task {task!r} (expected one of {N.TASK_NAMES})")
        # several directories of one task add up (demonstrations and DAgger rounds); one directory twice
        # would weigh its episodes double
        where = str(Path(d).resolve())
        if where in seen:
            raise ValueError(f"{d}: given twice (as {seen[where]})")
        seen[where] = str(d)
        for e in demos.episodes:
            missing = [c for c in CAMERAS if c not in e.camera_images]
            if missing:
                raise ValueError(
                    f"{d}: episodes lack cameras {missing}; record them with "
                    f"`async-vla-ros demos {task} --images {' '.join(CAMERAS)} --image-size {image_size}`"
                )
            hw = {e.camera_images[c].shape[1:3] for c in CAMERAS}
            if hw != {(image_size, image_size)}:
                raise ValueError(f"{d}: frames are {sorted(hw)}, the policy takes {image_size}x{image_size}")
            if e.obs.shape[1] < N.N_PROPRIO:
                raise ValueError(f"{d}: observations have {e.obs.shape[1]} values, fewer than {N.N_PROPRIO}")
            episodes.append(
                Episode(
                    obs=e.obs[:, : N.N_PROPRIO],
                    actions=e.actions,
                    seed=e.seed,
                    meta={**dict(e.meta), "task": task, "driven": bool(demos.metadata.get("driver"))},
                    camera_images={c: e.camera_images[c] for c in CAMERAS},
                )
            )
            tasks.append(task)
        sources.append(demos.describe())
        del demos  # its episodes hold the frames too: let ChunkWindows free each one once it has copied it
    if not episodes:
        raise ValueError("no demonstrations given")
    if len(set(styles.values())) > 1:
        raise ValueError(
            f"the demonstrations draw different image styles: {styles}; record them all with one --image-style"
        )
    if len(set(placements.values())) > 1:
        raise ValueError(
            f"the demonstrations saw the scene camera at different placements: {placements}; record them all with one"
        )
    windows = ChunkWindows(episodes, horizon)  # the episodes' frames become views of its arrays
    release_freed_memory()  # the frames as read are garbage now: give their pages back (docs/training.md, "Memory")
    return VLAData(
        windows,
        tuple(tasks),
        tuple(sources),
        next(iter(styles.values())),
        next(iter(placements.values())),
    )


def _stats(win: ChunkWindows, rows: np.ndarray, blind_qd: bool) -> dict[str, dict[str, Any]]:
    import torch

    obs = win.obs[rows]
    acts = win.chunks[rows].reshape(-1, win.action_dim)
    s_mean, s_std = obs.mean(0), np.maximum(obs.std(0), OBS_SCALE_MIN)
    if blind_qd:
        s_mean[7:14], s_std[7:14] = 0.0, BLIND_SCALE
    a_mean, a_std = acts.mean(0), np.maximum(acts.std(0), ACTION_SCALE_MIN)

    def t(x):
        return torch.as_tensor(x, dtype=torch.float32)

    return {
        STATE_KEY: {"mean": t(s_mean), "std": t(s_std)},
        ACTION_KEY: {"mean": t(a_mean), "std": t(a_std)},
    }


def _folder_stats(folder: Path) -> dict[str, dict[str, Any]]:
    """The normaliser statistics a policy folder was written with (its preprocessor's file)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("policy_preprocessor_step_*normalizer*.safetensors"))
    if len(files) != 1:
        raise ValueError(f"{folder}: expected one preprocessor normaliser file, found {[f.name for f in files]}")
    st = load_file(str(files[0]))
    return {
        key: {"mean": st[f"{key}.mean"].float(), "std": st[f"{key}.std"].float()} for key in (STATE_KEY, ACTION_KEY)
    }


def _init_record(config: VLAConfig) -> dict[str, Any]:
    """The training record of ``config.init``; ValueError unless it is a ``train vla`` folder whose
    architecture options are this run's."""
    from async_vla_ros.policy.lerobot_backend import SIDECAR

    folder = Path(config.init)
    side_path = folder / SIDECAR
    if not side_path.is_file():
        raise FileNotFoundError(f"init {folder}: no {SIDECAR}; give a policy folder written by `train vla`")
    record = json.loads(side_path.read_text()).get("training") or {}
    if record.get("kind") != "vla" or "config" not in record:
        raise ValueError(f"init {folder}: not written by `train vla` (its {SIDECAR} has no VLA training record)")
    theirs = {**dataclasses.asdict(VLAConfig()), **record["config"]}
    mine = config.to_dict()
    differ = [
        f"{k} {theirs[k]!r} (this run {mine[k]!r})"
        for k in INIT_MUST_MATCH
        if (tuple(theirs[k]) if isinstance(theirs[k], list) else theirs[k])
        != (tuple(mine[k]) if isinstance(mine[k], list) else mine[k])
    ]
    if differ:
        raise ValueError(f"init {folder}: its architecture differs: {', '.join(differ)}; give the same options")
    return record


def sample_instructions(tasks: Sequence[str], rng: np.random.Generator, word_dropout: float = 0.0) -> list[str]:
    """One training paraphrase of each task (``names.INSTRUCTIONS``; never a held-out one), each of
    its words dropped with probability ``word_dropout`` (at least one kept; no extra draws at 0)."""
    out = [str(rng.choice(N.INSTRUCTIONS[t])) for t in tasks]
    if word_dropout <= 0.0:
        return out
    for i, text in enumerate(out):
        words = text.split()
        keep = rng.random(len(words)) >= word_dropout
        if not keep.any():
            keep[rng.integers(len(words))] = True
        out[i] = " ".join(w for w, k in zip(words, keep, strict=True) if k)
    return out


def train_vla(
    dirs: Sequence[str | Path],
    config: VLAConfig,
    out_dir: str | Path,
    *,
    progress_bar: bool = False,
    log=print,
) -> dict[str, Any]:
    """Train the multi-task tiny SmolVLA on the demonstration directories; write ``out_dir``."""
    from async_vla_ros.hfenv import apply_hf_offline

    apply_hf_offline()
    import torch

    from async_vla_ros.policy.lerobot_backend import SIDECAR, load_lerobot_folder
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    C.set_threads(config.num_threads)
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    init_record = _init_record(config) if config.init else None  # refused before the data is read
    if init_record is not None and Path(config.init).resolve() == out_dir.resolve():
        raise ValueError(f"init {config.init}: the folder this run writes; give another --out")
    data = load_vla_data(dirs, config.chunk, config.image_size)
    win = data.windows
    if config.action_frame == "delta_q":  # the model learns (and its normaliser scales) the motion from q
        win.chunks[..., : N.N_ARM] -= win.obs[:, None, : N.N_ARM]
    # per task, whole episodes held out (the same share of every task)
    train_eps, val_eps = [], []
    for k, task in enumerate(sorted(set(data.tasks))):
        ids = np.flatnonzero(np.asarray(data.tasks) == task)
        tr, va = split_episodes(len(ids), config.val_fraction, config.seed + k)
        train_eps += ids[tr].tolist()
        val_eps += ids[va].tolist()
    train_rows = win.rows_of_episodes(sorted(train_eps))
    val_rows = win.rows_of_episodes(sorted(val_eps))
    if config.oversample_failed > 1.0:
        failed = data.driver_failed()
        weights = np.where(failed[win.ep[train_rows]], config.oversample_failed, 1.0)
        draw = row_sampler(train_rows, weights)
        log(
            f"train vla: windows of {int(failed[sorted(train_eps)].sum())} DAgger episodes the driver failed drawn "
            f"{config.oversample_failed:g} x as often ({weights[weights > 1].sum() / weights.sum():.1%} of the draws)"
        )
    else:
        draw = row_sampler(train_rows, None)
    spec = TinySmolVLASpec(
        cameras={c: IMAGE_PREFIX + c for c in config.policy_cameras},
        image_hw=(config.image_size, config.image_size),
        state_dim=N.N_PROPRIO,
        action_dim=win.action_dim,
        chunk=config.chunk,
        n_steps=config.n_steps,
        width=config.width,
        patches=config.patches,
        vision_width=config.vision_width,
        pad_dims=config.pad_dims,
        expert_width=config.expert_width,
        seed=config.seed,
        state_names=[f"{j}.position" for j in N.ARM_JOINTS]
        + [f"{j}.velocity" for j in N.ARM_JOINTS]
        + ["gripper_width"],
        action_names=list(N.ACTION_NAMES),
        instruction=N.default_instruction(data.tasks[0]),
        proprio_only=True,
    )
    # a warm start keeps its normalisation (its weights are for those units), else the training windows'
    stats = _folder_stats(Path(config.init)) if config.init else _stats(win, train_rows, config.blind_qd)
    build_tiny_smolvla(out_dir, spec, stats=stats)
    if config.init:  # the same words, the same token ids: its embeddings mean what they meant
        mine, theirs = (Path(d) / "vlm" / "tokenizer.json" for d in (out_dir, config.init))
        if mine.read_bytes() != theirs.read_bytes():
            raise ValueError(f"init {config.init}: its tokenizer differs from this project's; train from scratch")
    be = load_lerobot_folder(out_dir)
    policy, pre = be.policy, be.pre
    if config.init:  # strict: every tensor, cast to the run's float32 (a shipped folder stores float16)
        from safetensors.torch import load_model

        load_model(policy, str(Path(config.init) / "model.safetensors"), strict=True)
    policy.requires_grad_(True)
    policy.train()
    n_params = sum(p.numel() for p in policy.parameters())
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # LeRobot draws the flow noise and time from the global generator

    def batch_of(rows: np.ndarray, instr: list[str]) -> dict[str, Any]:
        b = {
            STATE_KEY: torch.as_tensor(win.obs[rows], dtype=torch.float32),
            ACTION_KEY: torch.as_tensor(win.chunks[rows], dtype=torch.float32),
            "task": instr,
        }
        for c, frames in win.frames(rows, config.policy_cameras).items():
            img = torch.from_numpy(np.ascontiguousarray(frames))
            b[IMAGE_PREFIX + c] = img.permute(0, 3, 1, 2).float().div_(255.0)
        return pre(b)

    time_dist = torch.distributions.Beta(*(torch.tensor(x) for x in FLOW_TIMES[config.flow_time]))

    share = slice(None)  # this rank's share of each batch (all of it in one process)

    def step_fn(step: int):
        rows = draw(rng, config.batch_size)  # every rank draws the same rows and words (one rng state) ...
        instr = sample_instructions(data.task_of(rows), rng, config.word_dropout)
        b = batch_of(rows[share], instr[share])  # ... and keeps its share
        if config.flow_time == "lerobot":  # LeRobot draws it (the same distribution), as before the option
            loss, _ = policy.forward(b)
        else:  # as LeRobot's sample_time, from another Beta
            loss, _ = policy.forward(b, time=time_dist.sample((len(rows),)) * 0.999 + 0.001)
        return loss, {}

    # validation: a fixed draw of held-out windows, instructions, noise and flow times
    vrng = np.random.default_rng(config.seed + 1)
    v_rows = val_rows[vrng.choice(len(val_rows), min(len(val_rows), 256), replace=False)] if len(val_rows) else val_rows
    v_instr = sample_instructions(data.task_of(v_rows), vrng)
    v_noise = torch.randn((len(v_rows), config.chunk, be.padded_dim), generator=gen)
    v_time = torch.rand(len(v_rows), generator=gen) * 0.999 + 0.001

    ema = C.EMA(policy, config.ema) if config.ema > 0 else None

    class _ema_weights:
        """The EMA weights in the policy for a validation or a write, the raw ones back after."""

        def __enter__(self):
            if ema is not None:
                self.raw = {k: v.detach().clone() for k, v in policy.state_dict().items()}
                policy.load_state_dict(ema.shadow)

        def __exit__(self, *exc):
            if ema is not None:
                policy.load_state_dict(self.raw)

    def validate() -> dict[str, Any]:
        if not len(v_rows):
            return {}
        with _ema_weights():
            return _validate()

    def _validate() -> dict[str, Any]:
        policy.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(v_rows), 64):
                sl = slice(i, i + 64)
                b = batch_of(v_rows[sl], v_instr[sl])
                loss, _ = policy.forward(b, noise=v_noise[sl], time=v_time[sl])
                total += float(loss) * len(v_rows[sl])
        policy.train()
        return {"val_fm": total / len(v_rows)}

    history: list[dict[str, Any]] = []
    record = {
        "kind": "vla",
        "config": config.to_dict(),
        "demos": list(data.sources),
        "tasks": sorted(set(data.tasks)),
        "windows": {"train": int(len(train_rows)), "val": int(len(val_rows))},
        "params": int(n_params),
        "instructions": {t: list(N.INSTRUCTIONS[t]) for t in sorted(set(data.tasks))},
        "held_out_instructions": {t: list(N.HELD_OUT[t]) for t in sorted(set(data.tasks))},
        **C.provenance(),
    }
    if init_record is not None:  # the run it continues, with its own record (and so its chain)
        record["init"] = {"path": config.init, "training": init_record}

    def write(step: int) -> None:
        policy.eval()
        with _ema_weights():
            policy.save_pretrained(out_dir)
        policy.train()
        side_path = out_dir / SIDECAR
        side = json.loads(side_path.read_text())
        side["image_style"] = data.image_style  # the sim and the lockstep runner must draw what training saw
        side["scene_camera"] = data.scene_camera  # and place the scene camera where it stood (the backend checks)
        side["action_frame"] = config.action_frame  # the backend adds q back to "delta_q" chunks
        side["training"] = {
            **record,
            "step": int(step),
            "history": history,
            "seconds": round(time.perf_counter() - t_start, 1),
        }
        side_path.write_text(json.dumps(side, indent=1))

    log(
        f"train vla: tasks {record['tasks']}, {len(train_rows)} train / {len(val_rows)} val windows, "
        f"{n_params:,} parameters, {config.steps} steps of batch {config.batch_size}, {config.num_threads} thread(s)"
        + (f" in each of {config.procs} processes" if config.procs > 1 else "")
        + (f", from {config.init} (its step {init_record.get('step')})" if init_record is not None else "")
    )
    dp = C.DataParallel(config.procs, params) if config.procs > 1 else None  # forks: ranks > 0 start here
    rank = dp.rank if dp is not None else 0
    if dp is not None:
        share = slice(rank, None, config.procs)
        if rank > 0:  # its own flow noise and times; rank 0 keeps the seed's
            torch.manual_seed(config.seed + 1_000_003 * rank)
    checked = False

    def write_step(step_now: int) -> None:
        """Rank 0 writes; before the last write every rank checks the weights are still equal (a run
        whose folder says it finished has no drift): all ranks reach the same steps here."""
        nonlocal checked
        if dp is not None and step_now == config.steps and not checked:
            checked = True  # once: a rank > 0 may call again after the loop (out not written yet)
            drift = dp.max_weight_difference(params)
            if drift > 0.0:
                raise RuntimeError(f"data-parallel ranks' weights differ by up to {drift:g} after {step_now} steps")
        if rank == 0:
            write(step_now)

    try:
        step = C.train_loop(
            step_fn=step_fn,
            params=params,
            opt=opt,
            config=config,
            step=0,
            stop_at=None,
            validate=validate if rank == 0 else dict,
            write=write_step,
            after_step=None if ema is None else (lambda _step: ema.update(policy)),
            out=out_dir / "model.safetensors",
            history=history,
            t_start=t_start,
            desc="train vla",
            progress_bar=progress_bar and rank == 0,
            log=log if rank == 0 else (lambda _line: None),
            grad_sync=None if dp is None else dp.average,
        )
    except BaseException:
        if dp is not None:
            dp.abort()  # a rank > 0 exits here; rank 0 stops the others
        raise
    if dp is not None:
        dp.finish()  # a rank > 0 exits here; rank 0 waits for them
    secs = time.perf_counter() - t_start
    last = history[-1] if history else {}
    log(f"train vla: done at step {step}, val_fm {last.get('val_fm')}, {secs:.1f} s -> {out_dir}")
    return {"out": str(out_dir), "step": step, "seconds": secs, "history": history, "params": n_params}


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from async_vla_ros.train.base import add_config_arguments

    parser.add_argument(
        "--demos",
        nargs="+",
        default=[f"data/demos_vla/{t}" for t in N.TASK_NAMES],
        help="demonstration directories with both cameras, at least one per task (several of one task add up: "
        "more demonstrations, DAgger rounds) [data/demos_vla/{track,intercept,bifurcate,pick_moving}]",
    )
    parser.add_argument("--out", default="runs/train/vla", help="policy folder to write [runs/train/vla]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-blind-qd", dest="blind_qd", action="store_false", help="feed the joint velocities")
    add_config_arguments(parser, VLAConfig)


def run(ns: argparse.Namespace) -> int:
    from async_vla_ros.train.base import _config_from_ns

    try:
        config = dataclasses.replace(_config_from_ns(ns, VLAConfig), blind_qd=ns.blind_qd)
        train_vla(ns.demos, config, ns.out, progress_bar=not ns.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"train vla: {exc}", file=sys.stderr)
        return 2
    return 0
