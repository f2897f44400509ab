"""`async-vla-ros env`: print the ROS environment this project runs its nodes with."""

from __future__ import annotations

import argparse
import os

from async_vla_ros.rosenv import check_ros_env, ros_env_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="exit 1 if discovery could leave this host")


def run(ns: argparse.Namespace) -> int:
    for key in ros_env_keys():
        print(f"{key}={os.environ.get(key, '')}")
    problems = check_ros_env()
    for p in problems:
        print(f"WARNING: {p}")
    return 1 if (ns.check and problems) else 0
