"""`async-vla-ros`: the project's command line.

Every sub-command is registered in ``_COMMANDS`` with the module that implements it; a module
provides ``add_arguments(parser)`` and ``run(ns) -> int``. Modules are imported lazily so that
``--help`` is instant and a command that needs torch or rclpy does not slow the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from async_vla_ros.rosenv import apply_ros_defaults


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # module with add_arguments(parser) and run(ns) -> int
    help: str
    group: str | None = None  # sub-command group (e.g. "bench", "train")


# The registry. A command whose module is not importable yet is listed with the reason.
_COMMANDS: tuple[Command, ...] = (
    Command("env", "async_vla_ros.cli_env", "show the ROS environment defaults in force"),
    Command("replay", "async_vla_ros.eval.replay", "re-run methods on a recorded bag's observations (simulated or recorded delays) -> metrics, report"),
    Command("report", "async_vla_ros.eval.report", "markdown/HTML report with plots from a bag or a replay result"),
    Command("launch", "async_vla_ros.bringup.launch_cmd", "start a node graph (e.g. `launch franka sim:=mujoco method:=rtc`)"),
    Command("demo", "async_vla_ros.demo", "the main job: the whole ROS graph on MuJoCo for a bounded time, live status"),
    Command("pipeline", "async_vla_ros.eval.bench_pipeline", "graph latency overhead, command period error, CPU per node", group="bench"),
    Command("samplers", "async_vla_ros.eval.bench_samplers", "latency of one chunk per sampler (vanilla, RTC, prefix, BID) and of the A2C2 head", group="bench"),
    Command("base", "async_vla_ros.train.base", "train a base flow policy by behaviour cloning on demonstrations", group="train"),
    Command("remac", "async_vla_ros.train.remac", "REMAC LoRA fine-tuning of a base checkpoint (merged for deployment)", group="train"),
    Command("a2c2", "async_vla_ros.train.a2c2", "train an A2C2 correction head on a base checkpoint's chunks", group="train"),
    Command("paper", "async_vla_ros.eval.bench_paper", "the papers' comparison on every task: success vs delay, smoothness, latency -> reports/benchmark.md", group="bench"),
)


def _add_command(subparsers, cmd: Command) -> None:
    try:
        module = importlib.import_module(cmd.module)
    except ImportError as exc:  # a missing optional dependency must not break --help
        p = subparsers.add_parser(cmd.name, help=f"{cmd.help} (unavailable: {exc})")
        p.set_defaults(_unavailable=f"`{cmd.name}` is unavailable: {exc}")
        return
    p = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
    module.add_arguments(p)
    p.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="async-vla-ros",
        description="Real-time action chunking (RTC, REMAC, A2C2 and baselines) for Franka arms on ROS 2.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in _COMMANDS:
        if cmd.group is None:
            _add_command(top, cmd)
            continue
        if cmd.group not in groups:
            gp = top.add_parser(cmd.group, help=f"{cmd.group} commands")
            groups[cmd.group] = gp.add_subparsers(dest=f"{cmd.group}_command", metavar="WHAT")
            gp.set_defaults(_group_parser=gp)
        _add_command(groups[cmd.group], cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_ros_defaults()
    parser = build_parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "_unavailable", None):
        print(ns._unavailable, file=sys.stderr)
        return 2
    run = getattr(ns, "_run", None)
    if run is None:
        (getattr(ns, "_group_parser", None) or parser).print_help()
        return 0 if ns.command is None else 2
    try:
        rc = run(ns)
        return rc if isinstance(rc, int) else 0  # some commands return their results
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
