"""Scripted-expert demonstrations: writer (``async-vla-ros demos TASK``) and loader.

Format: a documented parquet layout (docs/datasets.md), not LeRobotDataset v3: v3 stores images
as AV1/H.264 videos with per-feature statistics and chunked episode tables that only the
``lerobot`` package writes and validates; we could not check compatibility without it.

    OUT/
      meta/info.json        dataset-level metadata (format, task, dt, fields, counts, expert settings)
      meta/episodes.jsonl   one JSON object per episode (index, seed, length, success, side, events)
      data/episode_000000.parquet, ...   one row per control step

Columns of an episode file (float64 vectors as ``fixed_size_list``):
``frame_index`` int32, ``timestamp`` float64 (t * dt), ``observation.state`` [obs_dim],
``action`` [8] (the expert's clean closed-loop action: 7 absolute joint targets rad + gripper
width m), ``action.executed`` [8] (what was sent to the robot: action + DART-style noise when
``--noise`` > 0), and with ``--images`` ``observation.images.<camera>`` (raw ``h*w*3`` uint8 bytes,
shape in info.json; ``--image-style collision`` (default, ~5x faster on CPU) draws the robot's
collision meshes, ``visual`` its visual meshes).

Recording: B envs in lockstep; at every step the expert plans from the observation
(``ScriptedExpert.act``), the label is that action, the executed command adds Gaussian noise of
``--noise`` rad (noisy execution, clean labels: the data covers recovering from small errors).
Episode i uses env seed ``seed + i``; every episode runs its full ``episode_steps``.

DAgger (``--driver POLICY``; Ross, Gordon & Bagnell 2011): a learned policy drives instead (the
first action of a chunk it samples from this step's observation, cameras and one of the task's
training instructions per episode: d = 0, s = 1, as ``eval --method naive --delay 0``), and the
expert labels every state the driver reaches; ``--expert-share p`` executes the expert's action
instead at a share p of the steps. Training on these with the demonstrations shows a policy the
states its own errors lead to, and what the expert does there. Where a task has several right
answers the labels keep the one the driver chose (bifurcate: the side of the pole it took,
``ScriptedExpert(keep_arm_side=True)``), else every label of an episode on the other side would
pull the driver back across the pole.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N

FORMAT = "async_vla_ros.demos/1"
CAMERAS = ("scene", "wrist")
IMAGE_STYLES = N.IMAGE_STYLES  # MuJoCo geom groups drawn per style


@dataclass(frozen=True, eq=False)
class DemoEpisode:
    """One loaded demonstration (numpy arrays, robot units)."""

    obs: np.ndarray  # (T, obs_dim)
    actions: np.ndarray  # (T, 8) expert labels
    executed: np.ndarray  # (T, 8) commands actually sent
    seed: int
    meta: dict[str, Any]  # the episodes.jsonl entry + "task"
    images: np.ndarray | None = None  # (T, h, w, 3) uint8 of the first camera, if recorded
    camera_images: dict[str, np.ndarray] = field(default_factory=dict)  # every recorded camera

    @property
    def length(self) -> int:
        return int(self.obs.shape[0])


@dataclass(frozen=True)
class Demos:
    """A loaded demonstrations directory."""

    info: dict[str, Any]
    episodes: list[DemoEpisode]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info


# ---------------------------------------------------------------------- writing
def _episode_table(obs, act, exe, dt, images: dict[str, np.ndarray]):
    import pyarrow as pa

    t = obs.shape[0]

    def vec(x: np.ndarray) -> pa.Array:
        x = np.ascontiguousarray(x, dtype=np.float64)
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])

    cols = {
        "frame_index": pa.array(np.arange(t, dtype=np.int32)),
        "timestamp": pa.array(np.arange(t) * dt),
        "observation.state": vec(obs),
        "action": vec(act),
        "action.executed": vec(exe),
    }
    for cam, img in images.items():
        cols[f"observation.images.{cam}"] = pa.array([np.ascontiguousarray(f).tobytes() for f in img], type=pa.binary())
    return pa.table(cols)


def write_demos(
    task: str,
    out: str | Path,
    episodes: int,
    *,
    seed: int = 0,
    batch: int = 32,
    noise: float = 0.0,
    images: Sequence[str] = (),
    image_size: int = 96,
    image_style: str = N.IMAGE_STYLE,
    only_success: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    driver: Any = None,
    driver_spec: str = "",
    expert_share: float = 0.0,
) -> dict[str, Any]:
    """Record ``episodes`` expert demonstrations of ``task`` into ``out``; returns info.json's dict.

    ``image_style``: ``collision`` draws the Panda's collision meshes (~20 ms per frame on CPU
    here), ``visual`` its textured visual meshes (~90 ms per frame). ``driver``: a loaded chunk
    policy that executes instead of the expert (DAgger, module docstring; ``driver_spec`` names it
    in info.json), the expert's action at ``expert_share`` of the steps.
    """
    import pyarrow.parquet as pq

    from async_vla_ros.sim.env import BatchedPandaEnv
    from async_vla_ros.sim.experts import ScriptedExpert, expert_side
    from async_vla_ros.sim.tasks import make_task

    if episodes < 1 or batch < 1:
        raise ValueError("episodes and batch must be >= 1")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0, got {noise!r}")
    bad = [c for c in images if c not in CAMERAS]
    if bad:
        raise ValueError(f"unknown camera(s) {bad}; choose from {CAMERAS}")
    if images and not (16 <= image_size <= 480):
        raise ValueError("image_size must be in 16..480")
    if image_style not in IMAGE_STYLES:
        raise ValueError(f"image_style must be one of {tuple(IMAGE_STYLES)}, got {image_style!r}")
    groups = IMAGE_STYLES[image_style]
    if not 0.0 <= expert_share <= 1.0:
        raise ValueError(f"expert_share must lie in [0, 1], got {expert_share!r}")
    if driver is not None:
        _check_driver(driver, images, image_size, image_style)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (use --overwrite to replace it)")
        import shutil

        shutil.rmtree(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    task_obj = make_task(task)
    # a driver's states are labelled keeping the mode it chose (bifurcate: the side of the pole it took)
    expert = ScriptedExpert(task_obj, keep_arm_side=driver is not None)
    rng = np.random.default_rng([seed, 0xDA27])
    max_attempts = episodes * 3 if only_success else episodes
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, unit="ep", desc=f"demos {task}", file=sys.stderr)
    written: list[dict[str, Any]] = []
    attempted = 0
    env = None
    try:
        while len(written) < episodes and attempted < max_attempts:
            n = min(batch, max_attempts - attempted, episodes - len(written) if not only_success else batch)
            if env is None or env.num_envs != n:
                if env is not None:
                    env.close()
                env = BatchedPandaEnv(task_obj, n)
            seeds = [seed + attempted + i for i in range(n)]
            attempted += n
            obs = env.reset(seeds)
            # a driver's instruction: one training paraphrase per episode (drawn only with a driver: the
            # noise of a recording without one stays what it always was)
            instr = rng.choice(N.INSTRUCTIONS[task], size=n) if driver is not None else None
            t_len = env.episode_steps
            o_buf = np.empty((n, t_len, env.obs_dim))
            a_buf = np.empty((n, t_len, 8))
            e_buf = np.empty((n, t_len, 8))
            imgs = {c: np.empty((n, t_len, image_size, image_size, 3), np.uint8) for c in images}
            for t in range(t_len):
                o_buf[:, t] = obs
                for c in images:
                    for i in range(n):
                        imgs[c][i, t] = env.render(i, c, image_size, image_size, geom_groups=groups)
                a = expert.act(obs)
                e = a.copy()
                if driver is not None:
                    d = _drive(driver, obs, imgs, t, [str(x) for x in instr], seed + attempted + t)
                    mine = rng.random(n) >= expert_share
                    e[mine] = d[mine]
                if noise > 0:
                    e[:, :7] += rng.normal(0.0, noise, size=(n, 7))
                a_buf[:, t], e_buf[:, t] = a, e
                obs = env.step(e)
            succ, sstep = env.success(), env.success_step()
            for i in range(n):
                if len(written) >= episodes or (only_success and not succ[i]):
                    continue
                idx = len(written)
                fname = f"data/episode_{idx:06d}.parquet"
                table = _episode_table(o_buf[i], a_buf[i], e_buf[i], env.dt, {c: imgs[c][i] for c in images})
                pq.write_table(table, out / fname, compression="zstd")
                st = env.states[i]
                entry = {
                    "episode_index": idx,
                    "seed": seeds[i],
                    "length": t_len,
                    "file": fname,
                    "success": bool(succ[i]),
                    "success_step": int(sstep[i]),
                    "events": {
                        k: (float(v) if isinstance(v, (float, np.floating)) else int(v))
                        for k, v in st.info.items()
                        if np.isscalar(v) and np.isfinite(v)
                    },
                }
                if task == "bifurcate":
                    entry["expert_side"] = int(expert_side(np.array([st.params["goal"][1]]))[0])
                written.append(entry)
                if bar is not None:
                    bar.update(1)
    finally:
        if env is not None:
            env.close()
        if bar is not None:
            bar.close()
    if len(written) < episodes:
        print(f"warning: only {len(written)} successful episodes in {attempted} attempts", file=sys.stderr)
    with open(out / "meta" / "episodes.jsonl", "w") as f:
        for e in written:
            f.write(json.dumps(e) + "\n")
    meta = task_obj.metadata()
    info = {
        "format": FORMAT,
        **meta,
        "fps": 1.0 / task_obj.dt,
        "total_episodes": len(written),
        "total_frames": sum(e["length"] for e in written),
        "success_rate": float(np.mean([e["success"] for e in written])) if written else 0.0,
        "attempted_episodes": attempted,
        "seed": seed,
        "expert": {
            "name": "ScriptedExpert",
            "horizon": expert.horizon,
            "execution_noise_rad": noise,
            "labels": "clean closed-loop expert action (first action of a fresh plan)",
            # bifurcate: which side of the pole the labels pass on (sim.experts, keep_arm_side)
            "side": "the arm's, once taken near the pole" if expert.keep_arm_side else "the goal's",
        },
        # DAgger: who executed (the label is the expert's action at the state reached either way)
        "driver": {"policy": driver_spec or type(driver).__name__, "expert_share": expert_share}
        if driver is not None
        else None,
        "images": {
            "cameras": list(images),
            "shape": [image_size, image_size, 3],
            "dtype": "uint8",
            "encoding": "raw row-major bytes",
            "style": image_style,
            "scene_camera": N.SCENE_CAMERA,  # the scene camera's placement (sim.scene.SCENE_CAMERAS)
        }
        if images
        else None,
        "columns": ["frame_index", "timestamp", "observation.state", "action", "action.executed"]
        + [f"observation.images.{c}" for c in images],
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return info


def _check_driver(driver: Any, images: Sequence[str], image_size: int, image_style: str) -> None:
    """ValueError unless the recording renders what the driver sees (its cameras, size and style)."""
    hw = dict(getattr(driver, "camera_hw", None) or {})
    need = sorted({N.frame_source(c)[0] for c in hw} - set(images))
    if need:
        raise ValueError(f"the driver sees cameras {need}: record them too (--images {' '.join(sorted(hw))})")
    sizes = {tuple(v) for v in hw.values()}
    if sizes and sizes != {(image_size, image_size)}:
        raise ValueError(f"the driver takes {sorted(sizes)} frames: record with --image-size matching")
    style = getattr(driver, "image_style", image_style)
    if style != image_style:
        raise ValueError(f"the driver was trained on {style!r} frames: record with --image-style {style}")


def _drive(driver: Any, obs: np.ndarray, imgs: dict[str, np.ndarray], t: int, instr: list[str], seed: int):
    """The driver's command at step t for every env: the first action of a chunk sampled from
    this step's observation (d = 0), its previous-frame cameras from the frames already recorded."""
    from async_vla_ros.policy.checks import policy_state

    hw = dict(getattr(driver, "camera_hw", None) or {})
    x: Any = policy_state(driver, obs)
    if hw:
        frames = {}
        for name in hw:
            cam, back = N.frame_source(name)
            frames[name] = imgs[cam][:, max(t - back, 0)]
        x = {"state": x, "images": frames, "instruction": instr}
    chunk = np.asarray(driver.infer(x, "vanilla", seed=seed), dtype=np.float64)
    if chunk.ndim != 3 or chunk.shape[0] != len(obs) or chunk.shape[2] != 8 or not np.isfinite(chunk).all():
        raise ValueError(f"the driver returned {chunk.shape} chunks (finite (B, H, 8) expected)")
    return chunk[:, 0]


# ---------------------------------------------------------------------- reading
def load_info(path: str | Path) -> dict[str, Any]:
    p = Path(path) / "meta" / "info.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} not found: not a demonstrations directory (write one with `async-vla-ros demos TASK`)"
        )
    info = json.loads(p.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{p}: format {info.get('format')!r}, expected {FORMAT!r}")
    return info


def load_demos(path: str | Path, only_success: bool = False, images: bool = True) -> Demos:
    """Read a demonstrations directory into numpy arrays (see the module docstring for the layout)."""
    import pyarrow.parquet as pq

    root = Path(path)
    info = load_info(root)
    obs_dim, a_dim = int(info["obs_dim"]), int(info["action_dim"])
    img_info = info.get("images") or {}
    shape = tuple(img_info.get("shape", ()))
    eps: list[DemoEpisode] = []
    with open(root / "meta" / "episodes.jsonl") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    for e in entries:
        if only_success and not e.get("success", False):
            continue
        table = pq.read_table(root / e["file"])

        def vec(col: str, dim: int, table=table) -> np.ndarray:
            arr = table.column(col).combine_chunks()
            return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(-1, dim)

        obs, act, exe = vec("observation.state", obs_dim), vec("action", a_dim), vec("action.executed", a_dim)
        if obs.shape[0] != e["length"]:
            raise ValueError(f"{e['file']}: {obs.shape[0]} rows, metadata says {e['length']}")
        cams: dict[str, np.ndarray] = {}
        if images:
            for cam in img_info.get("cameras", []) or []:
                raw = table.column(f"observation.images.{cam}").to_pylist()
                cams[cam] = np.stack([np.frombuffer(b, np.uint8).reshape(shape) for b in raw])
        first = cams[next(iter(cams))] if cams else None
        eps.append(
            DemoEpisode(
                obs=obs,
                actions=act,
                executed=exe,
                seed=int(e["seed"]),
                meta={**e, "task": info["task"]},
                images=first,
                camera_images=cams,
            )
        )
    return Demos(info=info, episodes=eps)


# ---------------------------------------------------------------------- CLI
def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from async_vla_ros.sim.tasks import TASKS

    parser.add_argument("task", choices=sorted(TASKS), help="simulation task")
    parser.add_argument("--episodes", type=int, default=200, help="episodes to write (default 200)")
    parser.add_argument("--out", default=None, help="output directory (default data/demos/TASK)")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses env seed SEED + i (default 0)")
    parser.add_argument("--batch", type=int, default=32, help="environments recorded in lockstep (default 32)")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="std (rad) of Gaussian noise added to executed joint targets; labels stay clean",
    )
    parser.add_argument(
        "--images",
        nargs="*",
        choices=CAMERAS,
        default=None,
        metavar="CAM",
        help="also record RGB frames (scene and/or wrist; bare --images = scene)",
    )
    parser.add_argument("--image-size", type=int, default=96, help="square image size in px (default 96)")
    parser.add_argument(
        "--image-style",
        choices=sorted(IMAGE_STYLES),
        default=N.IMAGE_STYLE,
        help="draw the robot's collision meshes (fast, default) or its visual meshes",
    )
    parser.add_argument(
        "--driver",
        default=None,
        metavar="POLICY",
        help="DAgger: this policy (a spec as --policy elsewhere, e.g. vla or lerobot:DIR) executes, the "
        "expert labels every state it reaches (record the cameras it sees)",
    )
    parser.add_argument(
        "--expert-share",
        type=float,
        default=0.0,
        help="with --driver: share of steps that execute the expert's action instead (default 0)",
    )
    parser.add_argument("--only-success", action="store_true", help="keep only successful episodes (up to 3N tries)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_demos(ns: argparse.Namespace) -> int:
    cams = ns.images if ns.images else ([] if ns.images is None else ["scene"])
    out = Path(ns.out) if ns.out else Path("data") / "demos" / ns.task
    try:
        driver = None
        if ns.driver:
            from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

            driver = load_policy_spec(ns.driver, BackendRequest(ns.task))
        elif ns.expert_share:
            raise ValueError("--expert-share needs --driver")
        info = write_demos(
            ns.task,
            out,
            ns.episodes,
            seed=ns.seed,
            batch=ns.batch,
            noise=ns.noise,
            images=cams,
            image_size=ns.image_size,
            image_style=ns.image_style,
            only_success=ns.only_success,
            progress=not ns.no_progress,
            overwrite=ns.overwrite,
            driver=driver,
            driver_spec=ns.driver or "",
            expert_share=ns.expert_share,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"demos: {exc}", file=sys.stderr)
        return 2
    who = f"{ns.driver} driving" if ns.driver else "expert"
    print(
        f"wrote {info['total_episodes']} episodes ({info['total_frames']} steps, {who} success "
        f"{info['success_rate']:.3f}) of {ns.task} to {out}"
    )
    return 0


# The CLI registry convention (add_arguments / run).
add_arguments = add_demo_arguments
run = run_demos
