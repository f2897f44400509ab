"""``async-vla-ros dataset export``: our demonstrations or a recorded bag -> LeRobotDataset v3.

    async-vla-ros dataset export --format lerobot data/demos/track datasets/track_lerobot
    async-vla-ros dataset export --format lerobot runs/bags/run1 datasets/run1_lerobot
    async-vla-ros dataset import datasets/track_lerobot data/demos/track_imported

See :mod:`async_vla_ros.train.lerobot_data` and docs/datasets.md.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--format", choices=("lerobot",), default="lerobot", help="output format (lerobot: v3)")
    p.add_argument("src", help="our demonstrations directory, or a rosbag2 bag recorded from the graph")
    p.add_argument("dst", help="output folder (LeRobotDataset root)")
    p.add_argument("--repo-id", default=None, help="dataset repo id (default local/<task>)")
    p.add_argument("--instruction", default=None, help="language instruction (default: the task's)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty dst")
    return p


def run(ns: argparse.Namespace) -> int:
    from async_vla_ros.train.lerobot_data import export_lerobot

    try:
        out = export_lerobot(ns.src, ns.dst, repo_id=ns.repo_id, instruction=ns.instruction, overwrite=ns.overwrite)
    except (ValueError, FileExistsError, RuntimeError) as exc:
        raise SystemExit(f"dataset export: {exc}") from exc
    print(json.dumps({k: out[k] for k in ("repo_id", "episodes", "frames", "task", "cameras")}))
    return 0
