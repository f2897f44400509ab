"""The graph-building function shared by the built-in launcher and launch/franka.launch.py, and the
launch file itself (its launch_ros part is skipped where launch_ros is not installed)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from async_vla_ros.bringup.graph import (
    LAUNCH_ARGS,
    GraphError,
    NodeLaunch,
    build_graph,
    parse_launch_args,
    resolve_args,
)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "franka.launch.py"


def _load_launch_file():
    spec = importlib.util.spec_from_file_location("franka_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # must not need launch / launch_ros at import time
    return mod


def test_default_graph_nodes_and_parameters():
    g = build_graph("franka", {"policy": "expert"})
    # composed (the default): camera_ingestion and the scheduler run in the policy's process
    assert [n.name for n in g.nodes] == ["sim", "policy", "correction"]
    proc = g.process_of("camera_ingestion")
    assert proc is g.process_of("scheduler") and proc.name == "policy"
    assert proc.node_names == ("policy", "camera_ingestion", "scheduler")
    from async_vla_ros.nodes.policy_container import NODE_NAMES

    assert set(proc.node_names) == set(NODE_NAMES)  # graph.yaml's hosts are what the container builds
    assert proc.module == "async_vla_ros.nodes.policy_container" and proc.executable == "policy_container"
    assert "__node:=policy" not in proc.ros_arguments("P.yaml")  # each node keeps its own name
    assert set(g.params_file_content()) == {"sim", "camera_ingestion", "policy", "scheduler", "correction"}
    assert set(proc.params_file_content()) == {"policy", "camera_ingestion", "scheduler"}
    flat = build_graph("franka", {"policy": "expert", "compose": "false"})
    assert [n.name for n in flat.nodes] == ["sim", "camera_ingestion", "policy", "scheduler", "correction"]
    assert flat.node("policy").module == "async_vla_ros.nodes.policy_node" and not flat.node("policy").hosted
    assert g.node("camera_ingestion").parameters == flat.node("camera_ingestion").parameters
    assert g.node("policy").parameters["policy"] == "expert"
    assert g.node("scheduler").parameters["strategy"] == "rtc" and g.node("scheduler").parameters["dt"] == 0.05
    assert g.node("correction").parameters["rate_hz"] == 100.0
    assert g.node("correction").parameters["robot"] == "panda"  # the MuJoCo scene is a Panda
    assert g.node("sim").parameters["task"] == "track"


def test_launch_arguments_map_to_node_parameters():
    g = build_graph(
        "franka",
        parse_launch_args(
            [
                "method:=naive",  # the expert serves base presets only (bringup refuses remac)
                "policy:=expert",
                "task:=intercept",
                "control_hz:=25",
                "command_hz:=250",
                "latency_ms:=100",
                "namespace:=/robot1",
                "camera:=false",
                "fifo:=false",
                "command:=forward",
                "episodes:=3",
                "seed:=9",
            ]
        ),
    )
    assert g.node("scheduler").parameters["strategy"] == "naive"
    assert g.node("scheduler").parameters["dt"] == pytest.approx(0.04)
    assert g.node("policy").parameters["injected_latency_s"] == pytest.approx(0.1)
    assert g.node("policy").parameters["task"] == "intercept" == g.node("sim").parameters["task"]
    assert "cameras" not in g.node("sim").parameters and "camera_names" not in g.node("camera_ingestion").parameters
    assert g.node("correction").parameters["sched_fifo_priority"] == 0
    assert g.node("correction").parameters["command_interface"] == "forward"
    assert (g.node("sim").parameters["episodes"], g.node("sim").parameters["seed"]) == (3, 9)
    assert all(n.namespace == "/robot1" for n in g.nodes)
    cmd = g.node("scheduler").command("/tmp/p.yaml", python="py")
    assert cmd[:3] == ["py", "-m", "async_vla_ros.nodes.scheduler_node"]
    assert cmd[3:] == ["--ros-args", "-r", "__node:=scheduler", "-r", "__ns:=/robot1", "--params-file", "/tmp/p.yaml"]


def test_cameras_follow_the_policy_state_policies_render_none(tmp_path):
    """A state policy gets no camera (the sim renders none: no cost); ``camera:=true`` adds the
    scene camera (recording); a policy that takes cameras gets exactly those, at its size."""
    g = build_graph("franka", {"policy": "expert"})
    assert "cameras" not in g.node("sim").parameters and "camera_names" not in g.node("camera_ingestion").parameters
    g = build_graph("franka", {"policy": "expert", "camera": "true"})
    assert g.node("sim").parameters["cameras"] == ["scene"] == g.node("camera_ingestion").parameters["camera_names"]
    g = build_graph("franka", {"policy": "expert", "camera": "true", "instruction": "track it"})
    assert g.node("camera_ingestion").parameters["instruction"] == "track it"
    # a LeRobot folder's cameras from its config.json + sidecar alone (no lerobot import)
    folder = tmp_path / "vla"
    folder.mkdir()
    feats = {
        "observation.state": {"type": "STATE", "shape": [24]},
        "observation.images.scene": {"type": "VISUAL", "shape": [3, 96, 96]},
        "observation.images.wrist": {"type": "VISUAL", "shape": [3, 96, 96]},
    }
    (folder / "config.json").write_text(json.dumps({"type": "smolvla", "input_features": feats}))
    g = build_graph("franka", {"policy": f"lerobot:{folder}"})
    assert g.node("sim").parameters["cameras"] == ["scene", "wrist"]
    assert (g.node("sim").parameters["image_width"], g.node("sim").parameters["image_height"]) == (96, 96)
    assert g.node("camera_ingestion").parameters["camera_names"] == ["scene", "wrist"]
    assert g.node("camera_ingestion").parameters["image_size"] == 96
    with pytest.raises(GraphError, match=r"cameras:= gives \['scene'\], the policy takes \['scene', 'wrist'\]"):
        build_graph("franka", {"policy": f"lerobot:{folder}", "cameras": "scene"})
    (folder / "async_vla_ros.json").write_text(json.dumps({"cameras": {"front": "observation.images.scene"}}))
    with pytest.raises(GraphError, match="the sim scene does not have"):
        build_graph("franka", {"policy": f"lerobot:{folder}"})


def test_franka_bridge_overlay_and_sim_none():
    g = build_graph("franka", {"sim": "none", "bridge": "franka", "policy": "expert"})
    assert "sim" not in [n.name for n in g.nodes]
    c = g.node("correction").parameters
    assert (c["robot"], c["gripper_mode"], c["trajectory_topic"]) == (
        "fr3",
        "franka_action",
        "/fr3_arm_controller/joint_trajectory",
    )
    assert g.node("camera_ingestion").parameters["image_reliability"] == "best_effort"
    with pytest.raises(GraphError, match="sim:=none"):
        build_graph("franka", {"bridge": "franka", "policy": "expert"})


@pytest.mark.parametrize(
    "tokens, needle",
    [
        (["methd:=rtc"], "did you mean 'method'"),
        (["method:=rtcc", "policy:=expert"], "did you mean 'rtc'"),
        (["sim:=gazebo"], "must be one of mujoco, none"),
        (["command_hz:=5"], "must lie in"),
        (["camera:=maybe"], "must be one of auto, true, false"),
        (["policy:=expert", "cameras:=scene,wrist"], "the policy takes []"),
        (["policy:=expert", "camera:=false", "cameras:=scene"], "choose one"),
        (["policy:=/no/such/file.pt"], "no such checkpoint file"),
        (["method"], "name:=value"),
    ],
)
def test_bad_launch_arguments_are_clear_errors(tokens, needle):
    with pytest.raises(GraphError, match=None) as exc:
        build_graph("franka", parse_launch_args(tokens))
    assert needle in str(exc.value)


def test_every_node_parameter_in_the_graph_is_declared_by_its_node():
    """params.yaml / overlays / launch arguments may only set parameters the node declares."""
    from async_vla_ros.nodes.params import validate_values

    tables = {}
    for module in ("sim_node", "camera_ingestion", "policy_node", "scheduler_node", "correction_node"):
        mod = importlib.import_module(f"async_vla_ros.nodes.{module}")
        tables[mod.NODE_NAME] = mod.PARAMS
    for args in (
        {"policy": "expert"},
        {"sim": "none", "bridge": "franka", "policy": "expert"},
        {"policy": "expert", "camera": "false", "fifo": "false", "method": "bid"},
        {"policy": "expert", "camera": "true", "instruction": "track it"},
    ):
        for proc in build_graph("franka", args).nodes:
            for node in (proc, *proc.hosted):
                validate_values(node.name, tables[node.name], node.parameters)  # raises on any problem


def test_launch_file_builds_node_actions_from_the_same_graph(tmp_path):
    mod = _load_launch_file()

    class FakeNode:  # records what launch_ros.actions.Node would receive
        def __init__(self, **kw):
            self.kw = kw

    g = build_graph("franka", {"policy": "expert", "namespace": "/arm", "compose": "false"})
    actions = mod.node_actions(g, FakeNode)
    assert [a.kw["name"] for a in actions] == [n.name for n in g.nodes]
    for a, n in zip(actions, g.nodes):
        assert a.kw["package"] == "async_vla_ros" and a.kw["executable"] == n.executable
        assert a.kw["parameters"] == [n.parameters] and a.kw["namespace"] == "/arm"
    # composed: the container process keeps its nodes' names and gets a params file keyed by them
    g = build_graph("franka", {"policy": "expert", "namespace": "/arm"})
    actions = {a.kw["executable"]: a.kw for a in mod.node_actions(g, FakeNode, params_dir=tmp_path)}
    kw = actions["policy_container"]
    assert kw["name"] is None and kw["namespace"] == "/arm"
    (path,) = kw["parameters"]
    content = yaml.safe_load(Path(path).read_text())
    assert content["camera_ingestion"]["ros__parameters"] == g.node("camera_ingestion").parameters
    assert content["policy"]["ros__parameters"]["policy"] == "expert"


def test_launch_file_generates_description_with_launch_ros():
    pytest.importorskip("launch_ros", reason="launch_ros (ROS 2 launch tools) is not installed here")
    from launch import LaunchContext

    mod = _load_launch_file()
    ld = mod.generate_launch_description()
    names = {a.name for a in ld.entities if hasattr(a, "name") and hasattr(a, "default_value")}
    assert {a.name for a in LAUNCH_ARGS} <= names
    ctx = LaunchContext()
    for a in LAUNCH_ARGS:
        ctx.launch_configurations[a.name] = a.default
    ctx.launch_configurations["policy"] = "expert"
    nodes = mod._build(ctx)
    assert len(nodes) == len(build_graph("franka", {"policy": "expert"}).nodes)


def test_console_scripts_match_the_graph_executables():
    text = (ROOT / "setup.py").read_text()
    for node in build_graph("franka", {"policy": "expert"}).nodes:
        assert f'"{node.executable}": f"{{PACKAGE}}.nodes.' in text, node.executable
    assert isinstance(resolve_args({}), dict) and all(
        isinstance(n, NodeLaunch) for n in build_graph("franka", {"policy": "expert"}).nodes
    )
