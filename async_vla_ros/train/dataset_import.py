"""``async-vla-ros dataset import``: a LeRobotDataset v3 -> our demonstrations (what ``train`` reads).

    async-vla-ros dataset export --format lerobot data/demos/track datasets/track_lerobot
    async-vla-ros dataset export --format lerobot runs/bags/run1 datasets/run1_lerobot
    async-vla-ros dataset import datasets/track_lerobot data/demos/track_imported

See :mod:`async_vla_ros.train.lerobot_data` and docs/datasets.md.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("src", help="a LeRobotDataset v3 root folder")
    p.add_argument("dst", help="output demonstrations directory (what `train` reads)")
    p.add_argument("--repo-id", default=None, help="dataset repo id (default local/<task>)")
    p.add_argument("--task", default=None, help="task name when the dataset does not carry ours")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty dst")
    return p


def run(ns: argparse.Namespace) -> int:
    from async_vla_ros.train.lerobot_data import import_lerobot

    try:
        info = import_lerobot(ns.src, ns.dst, repo_id=ns.repo_id, task=ns.task, overwrite=ns.overwrite)
    except (ValueError, FileExistsError) as exc:
        raise SystemExit(f"dataset import: {exc}") from exc
    print(json.dumps({k: info[k] for k in ("task", "total_episodes", "total_frames", "obs_dim", "action_dim")}))
    return 0
