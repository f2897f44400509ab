"""``async-vla-ros launch GRAPH [name:=value ...]``: the built-in launcher on the command line.

Same graph, same arguments as ``ros2 launch async_vla_ros franka.launch.py name:=value ...``.
"""

from __future__ import annotations

import argparse
import sys

from async_vla_ros.bringup.graph import LAUNCH_ARGS, GraphError, build_graph


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "launch arguments (name:=value):\n" + "\n".join(
        f"  {a.name:<11} default {a.default or repr('')}: {a.description}"
        + (f" ({'|'.join(a.choices)})" if a.choices else "")
        for a in LAUNCH_ARGS
    )
    parser.add_argument("graph", nargs="?", default="franka", help="graph in config/graph.yaml (default: franka)")
    parser.add_argument("args", nargs="*", metavar="name:=value", help="launch arguments")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="print the node commands and parameters, start nothing")


def run(ns: argparse.Namespace) -> int:
    from async_vla_ros.bringup.graph import parse_launch_args

    try:
        graph = build_graph(ns.graph, parse_launch_args(ns.args))
    except GraphError as exc:
        print(f"launch: {exc}", file=sys.stderr)
        return 2
    if ns.dry_run:
        import yaml

        for node in graph.nodes:
            print(" ".join(node.command("PARAMS.yaml")))
        print(yaml.safe_dump(graph.params_file_content(), sort_keys=False))
        return 0
    if ns.duration is not None and ns.duration <= 0:
        print("launch: --duration must be > 0", file=sys.stderr)
        return 2
    from async_vla_ros.bringup.launcher import Launcher

    launcher = Launcher(graph)
    rc = launcher.run(ns.duration)
    if launcher.failed:
        for name, code in launcher.failed:
            print(f"launch: node {name} died with status {code}", file=sys.stderr)
    return rc
