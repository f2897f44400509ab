"""ros2 launch async_vla_ros franka.launch.py [sim:=mujoco|none] [method:=rtc] [policy:=default|expert|PATH] ...

The Franka graph for ROS 2 launch. The nodes, their parameters and remappings come from
``async_vla_ros.bringup.graph.build_graph`` -- the same function the built-in launcher
(``async-vla-ros launch franka ...``) uses -- so both start exactly the same graph. Launch
arguments are the ones listed in ``async_vla_ros.bringup.graph.LAUNCH_ARGS`` (sim, bridge, method,
policy, a2c2, task, control_hz, command_hz, latency_ms, namespace, episodes, seed, camera, cameras,
instruction, command, fifo, ...); they are validated there, with a clear error for a bad value.

launch / launch_ros are imported inside :func:`generate_launch_description` only, so this file can
be imported (and its graph tested) where ROS launch tools are not installed.
"""

from __future__ import annotations


def node_actions(graph, Node, params_dir=None):
    """launch_ros ``Node`` actions for every process of ``graph`` (a bringup ``Graph``).

    ``Node`` is the launch_ros class (passed in so this is testable without launch_ros). A process
    that runs several nodes (``compose``: camera_ingestion in the policy's process) keeps its
    nodes' own names and gets their parameters as a params file keyed by node name (written into
    ``params_dir``, a new temporary directory by default): a plain dict would give every node
    of the process every parameter.
    """
    import tempfile
    from pathlib import Path

    import yaml

    actions = []
    for spec in graph.nodes:
        params = [dict(spec.parameters)]
        if spec.hosted:
            folder = Path(params_dir or tempfile.mkdtemp(prefix="async_vla_ros_launch_"))
            path = folder / f"{spec.name}.params.yaml"
            path.write_text(yaml.safe_dump(spec.params_file_content(), sort_keys=False))
            params = [str(path)]
        actions.append(
            Node(
                package="async_vla_ros",
                executable=spec.executable,
                name=None if spec.hosted else spec.name,
                namespace=spec.namespace or None,
                parameters=params,
                remappings=spec.remap_arguments(),
                output="screen",
                emulate_tty=True,
            )
        )
    return actions


def check_command_line(argv, log=print) -> None:
    """Launch arguments given on the command line (``context.argv``) that this file does not
    declare: a close match of a declared one is a typo (GraphError with "did you mean", so the run
    stops with one line); any other is logged and ignored (it may belong to a parent launch file
    that includes this one)."""
    import difflib

    from async_vla_ros.bringup.graph import LAUNCH_ARGS, GraphError

    names = [a.name for a in LAUNCH_ARGS]
    for tok in argv:
        name = tok.split(":=", 1)[0]
        if ":=" not in tok or name in names:
            continue
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            raise GraphError(f"unknown launch argument {name!r} (did you mean {close[0]!r}?)")
        log(f"franka.launch.py: ignoring launch argument {name!r} (not one of {', '.join(names)})")


def _build(context, *args, **kwargs):
    from launch_ros.actions import Node

    from async_vla_ros.bringup.graph import LAUNCH_ARGS, build_graph
    from async_vla_ros.rosenv import apply_ros_defaults

    check_command_line(context.argv, log=lambda line: print(f"[WARNING] [launch]: {line}", flush=True))
    apply_ros_defaults()
    given = {
        a.name: context.launch_configurations[a.name] for a in LAUNCH_ARGS if a.name in context.launch_configurations
    }
    return node_actions(build_graph("franka", given), Node)


def generate_launch_description():
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from async_vla_ros.bringup.graph import LAUNCH_ARGS
    from launch import LaunchDescription

    declared = [
        DeclareLaunchArgument(
            a.name,
            default_value=a.default,
            description=a.description + (f" ({'|'.join(a.choices)})" if a.choices else ""),
        )
        for a in LAUNCH_ARGS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_build)])
