"""``manifest.json`` of a checkpoint folder: what each file is, how it was made, what it measured.

``python -m async_vla_ros.train.manifest [DIR] [--keep-fp32]`` first stores every checkpoint's
weights as float16 (halves the shipped size; idempotent; loaders copy them into the float32
networks, and every benchmark number is measured on these stored weights), then rewrites
``DIR/manifest.json`` (default: the shipped ``async_vla_ros/checkpoints``) from the
``train_config`` recorded inside every file, so the manifest cannot drift from the checkpoints.
LeRobot policy folders in ``DIR`` (the multi-task VLA ``vla/`` and its REMAC ``vla_remac/``) get the
same: ``model.safetensors`` as float16, an entry from the training record of their sidecar.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from async_vla_ros.policy.lerobot_backend import SIDECAR

ShippedAs = Callable[[str], str | None]  # a base's path as trained -> the shipped folder with its weights

COMMANDS = {
    "base": "async-vla-ros train base --task {task} --demos {demos} --out {out} --weak-at 500",
    "remac": "async-vla-ros train remac --base {base} --demos {demos} --out {out}",
    "remac_clean": "async-vla-ros train remac --variant clean --base {base} --demos {demos} --out {out}",
    "a2c2": "async-vla-ros train a2c2 --base {base} --demos {demos} --out {out}",
}
ABLATION_FLAGS = {
    "remac_nomask": "--no-mask",
    "remac_nocurriculum": "--no-curriculum",
    "remac_noalign": "--no-align",
    "remac_nodelta": "--no-delta",
    "clean_nomask": "--no-mask",
    "clean_nocurriculum": "--no-curriculum",
    "clean_noalign": "--no-align",
}


def _entry(path: Path, shipped_as: ShippedAs) -> dict[str, Any]:
    d = torch.load(path, map_location="cpu", weights_only=True)
    tc = d.get("train_config") or (d.get("extra") or {}).get("train_config") or {}
    hist = (d.get("extra") or {}).get("history") or []
    kind = tc.get("kind", "?")
    vla_head = tc.get("inputs") == "vla"  # the multi-task VLA's head: demos of every task, no task of its own
    demos = "" if vla_head else (tc.get("demos") or {}).get("path", "")
    e: dict[str, Any] = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "kind": kind,
        "task": tc.get("task"),
        "seed": tc.get("seed"),
        "step": tc.get("step"),
        "demos": tc.get("demos"),
        "git_commit": (tc.get("provenance") or {}).get("git_commit"),
        "date_utc": (tc.get("provenance") or {}).get("date_utc"),
        "train_seconds": hist[-1].get("seconds") if hist else None,
        "stored_dtype": (d.get("extra") or {}).get("stored_dtype", "float32"),
        "params": tc.get("num_params") or tc.get("lora_trainable_params"),
    }
    if kind == "base":
        e["val_loss"] = tc.get("val_loss")
        e["weak_snapshot"] = bool(tc.get("weak_snapshot"))
    elif kind == "remac":
        # files written before the authors' variant existed carry no "variant": they are the clean one
        variant = tc.get("variant", "clean")
        e["variant"] = variant
        e["val_masked_fm"] = tc.get("val_masked_fm")
        e["val_masked_fm_base"] = tc.get("val_masked_fm_base")
        keys = (
            ("mask", "curriculum", "delta", "gamma_flow", "gamma_keep", "d_max", "lora_rank", "lr", "steps")
            if variant == "authors"
            else ("mask", "curriculum", "align", "lambda_m", "lambda_delta", "d_max", "lora_rank", "steps")
        )
        e["remac"] = {k: tc["config"][k] for k in keys}
        if variant == "clean":
            kind = "remac_clean"
    elif kind == "a2c2":
        e["val_mse"] = tc.get("val_mse")
        e["val_mse_no_correction"] = tc.get("val_mse_zero")
    base = tc.get("base_checkpoint", "")
    stem = path.stem
    if vla_head:
        cfg = tc.get("config") or {}
        name = shipped_as(base.removeprefix("lerobot:"))
        if name is not None:
            e["base_as_trained"], base = base, name
        e.update(
            kind="vla_a2c2",
            tasks=tc.get("tasks"),
            base=base,
            demos=[
                {k: d.get(k) for k in ("path", "episodes", "used_episodes", "task", "fingerprint")} for d in tc["demos"]
            ],
            latent_dim=(tc.get("head") or {}).get("latent_dim"),
            command=f"async-vla-ros train a2c2 --base {base} --demos "
            + " ".join(str(d["path"]) for d in tc["demos"])  # every folder it read, in its order
            + f" --out async_vla_ros/checkpoints/{path.name}"
            + "".join(f" --{k.replace('_', '-')} {cfg[k]}" for k in ("hidden", "depth", "steps") if k in cfg),
        )
    elif kind in COMMANDS and not e.get("weak_snapshot"):
        cmd = COMMANDS[kind].format(
            task=tc.get("task"), demos=demos, out=f"async_vla_ros/checkpoints/{path.name}", base=base
        )
        for suffix, flag in ABLATION_FLAGS.items():
            if stem.endswith(suffix):
                cmd += " " + flag
                break
        e["command"] = cmd
    elif e.get("weak_snapshot"):
        e["command"] = f"(written at step {tc.get('step')} by the base run: --weak-at)"
    return e


def compact_fp16(path: str | Path) -> bool:
    """Store the floating-point weights of checkpoint ``path`` as float16 in place; False if they were already."""
    import os

    path = Path(path)
    d = torch.load(path, map_location="cpu", weights_only=True)
    sd = d.get("state_dict")
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: no state_dict")
    todo = [k for k, v in sd.items() if v.is_floating_point() and v.dtype != torch.float16]
    if not todo:
        return False
    for k in todo:
        sd[k] = sd[k].to(torch.float16)
    extra = d.setdefault("extra", {})
    extra["stored_dtype"] = "float16"
    tmp = path.with_name(path.name + ".partial")
    torch.save(d, tmp)
    os.replace(tmp, path)
    return True


def policy_folders(root: Path) -> list[Path]:
    """The LeRobot policy folders in a checkpoint folder (the multi-task VLA and its REMAC)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file() and (p / SIDECAR).is_file())


def compact_fp16_folder(folder: str | Path) -> bool:
    """Store a LeRobot policy folder's ``model.safetensors`` as float16 in place (LeRobot copies
    them into its float32 model on load); False if they were already."""
    import os

    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    sd = load_file(str(path))
    todo = [k for k, v in sd.items() if v.is_floating_point() and v.dtype != torch.float16]
    if not todo:
        return False
    for k in todo:
        sd[k] = sd[k].to(torch.float16)
    tmp = path.with_name(path.name + ".partial")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return True


def _train_vla_command(training: dict[str, Any], out: str) -> str:
    """The ``train vla`` command of a run's sidecar record: its demonstration folders as recorded and
    every option whose value differs from ``VLAConfig``'s default (steps always). A run started from
    another (``--init``) is preceded by that run's command, writing the folder it names."""
    from async_vla_ros.train.vla import VLAConfig

    defaults = dataclasses.asdict(VLAConfig())
    flags = []
    for k, v in (training.get("config") or {}).items():
        default = defaults.get(k, v)
        if isinstance(v, list):  # a tuple field, as JSON keeps it
            v = tuple(v)
        if k != "steps" and v == default:
            continue
        if k == "blind_qd":
            flags.append("--no-blind-qd")
        elif isinstance(v, tuple):
            flags.append(f"--{k.replace('_', '-')} " + " ".join(map(str, v)))
        else:
            flags.append(f"--{k.replace('_', '-')} {v}")
    dirs = [str(d.get("path")) for d in training.get("demos", [])]
    command = " ".join(["async-vla-ros train vla --demos", *dirs, f"--out {out}", *flags])
    init = training.get("init")
    if isinstance(init, dict) and isinstance(init.get("training"), dict):
        return _train_vla_command(init["training"], str(init.get("path"))) + " && " + command
    return command


def _train_seconds(training: dict[str, Any]) -> float | None:
    """A run's training time, with the runs it started from (``--init``) added."""
    secs = training.get("seconds")
    init = training.get("init")
    if secs is None or not isinstance(init, dict) or not isinstance(init.get("training"), dict):
        return secs
    before = _train_seconds(init["training"])
    return None if before is None else round(float(secs) + float(before), 1)


def _folder_entry(folder: Path, shipped_as: ShippedAs) -> dict[str, Any]:
    from safetensors import safe_open

    side = json.loads((folder / SIDECAR).read_text())
    model = folder / "model.safetensors"
    with safe_open(str(model), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    e: dict[str, Any] = {
        "folder": folder.name,
        "bytes": sum(p.stat().st_size for p in files),
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "stored_dtype": "float16" if dtypes == {"F16"} else "/".join(sorted(dtypes)),
        "params": params,
        "state_input": side.get("state_input", "full"),
        "cameras": sorted(side.get("cameras") or {}),
    }
    if "training" in side and "remac" not in side:  # a REMAC folder keeps its base's record: not its own
        tr = side["training"]
        hist = tr.get("history") or []
        e.update(
            kind="vla",
            tasks=tr.get("tasks"),
            seed=(tr.get("config") or {}).get("seed"),
            step=tr.get("step"),
            demos=[
                {k: d.get(k) for k in ("path", "episodes", "steps", "task", "fingerprint")} for d in tr.get("demos", [])
            ],
            git_commit=tr.get("git_commit"),
            date_utc=tr.get("date_utc"),
            train_seconds=_train_seconds(tr),
            val_fm=hist[-1].get("val_fm") if hist else None,
            command=_train_vla_command(tr, f"async_vla_ros/checkpoints/{folder.name}"),
        )
    if "remac" in side:
        rm = side["remac"]
        trained = str(rm.get("base", ""))
        name = shipped_as(trained)
        if name is not None:
            e["base_as_trained"] = trained
        base = name if name is not None else Path(trained).name
        e.update(
            kind="vla_remac",
            base=base,
            lora_params=rm.get("lora_params"),
            loss_first=rm.get("loss_first"),
            loss_last=rm.get("loss_last"),
            train_seconds=rm.get("seconds"),
            command="async-vla-ros train remac --variant clean --base lerobot:async_vla_ros/checkpoints/"
            + base
            + " --demos "
            + " ".join(f"data/demos_vla/{d.get('task')}" for d in (rm.get("demos") or []) if isinstance(d, dict))
            + f" --out async_vla_ros/checkpoints/{folder.name}"
            + "".join(
                f" --{k.replace('_', '-')} {v}"
                for k, v in (rm.get("config") or {}).items()
                if k in ("steps", "batch_size", "base_samples", "num_threads")
            ),
            seed=(rm.get("config") or {}).get("seed"),
            remac={k: (rm.get("config") or {}).get(k) for k in ("d_max", "lora_rank", "mask", "curriculum", "align")},
        )
    return e


def _shipped_resolver(root: Path, folders: list[Path]) -> ShippedAs:
    """Names a REMAC folder's or VLA head's base as the folder shipped beside it, where they are the
    same weights: ``scripts/train_vla.sh`` trains both on a run folder (``runs/D_vla``) that its ship
    step then copies to ``vla/``. The resolver maps the path a base was trained on to the shipped
    folder whose ``model.safetensors`` has the same sha256 (the entry keeps the path as
    ``base_as_trained`` and gives the command on the shipped folder), else None: a path not on this
    machine (a manifest rewritten on a fresh clone) or already a shipped folder stays as recorded."""
    shipped = {hashlib.sha256((f / "model.safetensors").read_bytes()).hexdigest(): f.name for f in folders}

    def shipped_as(path: str) -> str | None:
        model = Path(path) / "model.safetensors"
        if not path or not model.is_file() or model.resolve().parent.parent == root.resolve():
            return None
        return shipped.get(hashlib.sha256(model.read_bytes()).hexdigest())

    return shipped_as


def write_manifest(directory: str | Path | None = None) -> Path:
    from async_vla_ros.checkpoints import DIR

    root = Path(directory) if directory is not None else DIR
    files = sorted(root.glob("*.pt"))
    folders = policy_folders(root)
    shipped_as = _shipped_resolver(root, folders)
    manifest = {
        "note": "generated by `python -m async_vla_ros.train.manifest`; see docs/training.md",
        "files": [_entry(p, shipped_as) for p in files],
    }
    if folders:
        manifest["folders"] = [_folder_entry(f, shipped_as) for f in folders]
    out = root / "manifest.json"
    out.write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from async_vla_ros.checkpoints import DIR

    ap = argparse.ArgumentParser(prog="python -m async_vla_ros.train.manifest", description=__doc__.splitlines()[0])
    ap.add_argument("directory", nargs="?", default=None, help="checkpoint folder [async_vla_ros/checkpoints]")
    ap.add_argument("--keep-fp32", action="store_true", help="do not convert the weights to float16")
    ns = ap.parse_args(argv)
    root = Path(ns.directory) if ns.directory else DIR
    if not ns.keep_fp32:
        for p in sorted(root.glob("*.pt")):
            if compact_fp16(p):
                print(f"stored {p.name} as float16")
        for f in policy_folders(root):
            if compact_fp16_folder(f):
                print(f"stored {f.name}/model.safetensors as float16")
    print(write_manifest(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
