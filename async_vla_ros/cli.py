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
    Command("demos", "async_vla_ros.sim.demos", "write scripted-expert demonstrations of a task (parquet dataset)"),
    Command(
        "eval",
        "async_vla_ros.eval.eval_cmd",
        "lockstep evaluation of a method under simulated delay: success (95%% Wilson), smoothness",
    ),
    Command(
        "replay",
        "async_vla_ros.eval.replay",
        "re-run methods on a recorded bag's observations (simulated or recorded delays) -> metrics, report",
    ),
    Command("report", "async_vla_ros.eval.report", "markdown/HTML report with plots from a bag or a replay result"),
    Command(
        "launch",
        "async_vla_ros.bringup.launch_cmd",
        "start a node graph (e.g. `launch franka sim:=mujoco method:=rtc`)",
    ),
    Command(
        "demo", "async_vla_ros.demo", "the main job: the whole ROS graph on MuJoCo for a bounded time, live status"
    ),
    Command(
        "snapshot",
        "async_vla_ros.eval.headless",
        "screenshot of a running dashboard once every chart has data (headless Chromium)",
    ),
    Command(
        "serve",
        "async_vla_ros.policy.openpi_serve",
        "serve a policy over openpi's websocket protocol (127.0.0.1 by default; our RTC/REMAC/BID guidance included)",
    ),
    Command(
        "chaos",
        "async_vla_ros.eval.chaos",
        "fault injection on the running graph: command limits, no crash, recovery time -> reports/reliability.md",
    ),
    Command(
        "soak",
        "async_vla_ros.eval.soak",
        "the graph + recorder under CPU stress for a bounded time: memory growth, period error, drops, bag vs published",
    ),
    Command(
        "pipeline",
        "async_vla_ros.eval.bench_pipeline",
        "graph latency overhead, command period error, CPU per node",
        group="bench",
    ),
    Command(
        "record",
        "async_vla_ros.eval.bench_record",
        "the recorder in the running graph: per-topic counts, no message lost (recorder vs publishers' sequence ids)",
        group="bench",
    ),
    Command(
        "samplers",
        "async_vla_ros.eval.bench_samplers",
        "latency of one chunk per sampler (vanilla, RTC, prefix, BID) and of the A2C2 head",
        group="bench",
    ),
    Command(
        "export",
        "async_vla_ros.train.dataset_export",
        "our demonstrations or a recorded bag -> LeRobotDataset v3 (--format lerobot)",
        group="dataset",
    ),
    Command(
        "import",
        "async_vla_ros.train.dataset_import",
        "a LeRobotDataset v3 -> our demonstrations layout (what train reads)",
        group="dataset",
    ),
    Command(
        "lerobot",
        "async_vla_ros.eval.bench_lerobot",
        "a LeRobot SmolVLA: vanilla, our exact RTC, LeRobot's RTC, prefix, BID: latency, prefix pinning, switch jump",
        group="bench",
    ),
    Command(
        "base",
        "async_vla_ros.train.base",
        "train a base flow policy by behaviour cloning on demonstrations",
        group="train",
    ),
    Command(
        "remac",
        "async_vla_ros.train.remac",
        "REMAC LoRA fine-tuning of a base checkpoint (merged for deployment)",
        group="train",
    ),
    Command(
        "vla",
        "async_vla_ros.train.vla",
        "train the multi-task VLA (tiny SmolVLA: cameras + instruction + proprioception) on every task's demos",
        group="train",
    ),
    Command(
        "a2c2", "async_vla_ros.train.a2c2", "train an A2C2 correction head on a base checkpoint's chunks", group="train"
    ),
    Command(
        "franka",
        "async_vla_ros.eval.bench_franka",
        "every merge strategy streamed at 1 kHz over libfranka to franka-sim: aborts, max vel/acc/jerk, with and without the safety filter",
        group="bench",
    ),
    Command(
        "paper",
        "async_vla_ros.eval.bench_paper",
        "the papers' comparison on every task: success vs delay, smoothness, latency -> reports/benchmark.md",
        group="bench",
    ),
)


def _add_command(subparsers, cmd: Command, load: bool) -> None:
    """Register ``cmd``; only a command that will run (``load``) imports its module."""
    if not load:
        subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help, add_help=False)
        return
    try:
        module = importlib.import_module(cmd.module)
    except ImportError as exc:  # a missing optional dependency must not break the other commands
        p = subparsers.add_parser(cmd.name, help=f"{cmd.help} (unavailable: {exc})")
        p.set_defaults(_unavailable=f"`{cmd.name}` is unavailable: {exc}")
        return
    p = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help.replace("%%", "%"))
    module.add_arguments(p)
    p.set_defaults(_run=module.run)


def _selected(argv: list[str]) -> tuple[str | None, str | None]:
    """(command or group, sub-command) named on the command line, without importing anything."""
    words = [a for a in argv if not a.startswith("-")]
    return (words[0] if words else None, words[1] if len(words) > 1 else None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` only the selected command's module is imported (fast --help)."""
    first, second = _selected(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        prog="async-vla-ros",
        description="Real-time action chunking (RTC, REMAC, A2C2 and baselines) for Franka arms on ROS 2.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in _COMMANDS:
        if cmd.group is None:
            _add_command(top, cmd, load=first == cmd.name)
            continue
        if cmd.group not in groups:
            gp = top.add_parser(cmd.group, help=f"{cmd.group} commands")
            groups[cmd.group] = gp.add_subparsers(dest=f"{cmd.group}_command", metavar="WHAT")
            gp.set_defaults(_group_parser=gp)
        _add_command(groups[cmd.group], cmd, load=first == cmd.group and second == cmd.name)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_ros_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
