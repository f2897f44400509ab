"""The optional observability nodes of the bringup graph: record:=DIR adds the recorder (first to
start, last to stop), dashboard:=true the dashboard; their parameters are declared by the nodes."""

from __future__ import annotations

import pytest

from async_vla_ros.bringup.graph import GraphError, _when_matches, build_graph


def test_recorder_and_dashboard_are_optional_nodes(tmp_path):
    base = [n.name for n in build_graph("franka", {"policy": "expert"}).nodes]
    assert "recorder" not in base and "dashboard" not in base
    g = build_graph(
        "franka",
        {
            "policy": "expert",
            "record": str(tmp_path / "run1"),
            "dashboard": "true",
            "dashboard_port": "9000",
            "command": "forward",
            "namespace": "/robot1",
        },
    )
    names = [n.name for n in g.nodes]
    assert names[0] == "recorder" and names[-1] == "dashboard" and names[1:-1] == base
    rec = g.node("recorder").parameters
    assert rec["output"] == str((tmp_path / "run1").resolve()) and rec["stats_file"].endswith("run1.counts.json")
    dash = g.node("dashboard").parameters
    assert dash["port"] == 9000 and dash["command_topic"] == "forward_position_controller/commands"
    assert dash["trajectory_topic"] == "" and g.node("dashboard").namespace == "/robot1"


def test_optional_node_parameters_are_declared_by_the_nodes(tmp_path):
    pytest.importorskip("rclpy")
    from async_vla_ros.nodes import dashboard, recorder
    from async_vla_ros.nodes.params import validate_values

    g = build_graph("franka", {"policy": "expert", "record": str(tmp_path / "r"), "dashboard": "true"})
    validate_values("recorder", recorder.PARAMS, g.node("recorder").parameters)
    validate_values("dashboard", dashboard.PARAMS, g.node("dashboard").parameters)


def test_bad_recording_arguments_and_when_conditions(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(GraphError, match="already exists"):
        build_graph("franka", {"policy": "expert", "record": str(tmp_path / "exists")})
    with pytest.raises(GraphError, match="must lie in"):
        build_graph("franka", {"policy": "expert", "dashboard_port": "0"})
    args = {"record": "", "sim": "mujoco"}
    assert _when_matches({"record": {"not": ""}}, {**args, "record": "x"})
    assert not _when_matches({"record": {"not": ""}}, args)
    assert _when_matches({"sim": "mujoco"}, args) and not _when_matches({"sim": "none"}, args)
    with pytest.raises(GraphError, match="unknown launch argument"):
        _when_matches({"nope": 1}, args)
    with pytest.raises(GraphError, match="must be a value or"):
        _when_matches({"sim": {"is": "x"}}, args)


def test_launch_refuses_a_policy_that_cannot_serve_the_preset():
    # the scripted expert has no REMAC model: one clear line at launch, not a policy node dying later
    with pytest.raises(GraphError, match="policy:=expert cannot serve method:=remac: .*no remac model"):
        build_graph("franka", {"policy": "expert", "method": "remac"})
    build_graph("franka", {"policy": "expert", "method": "naive"})  # a preset it serves starts
    with pytest.raises(GraphError, match="no backend of that name and no such checkpoint file"):
        build_graph("franka", {"policy": "nosuch:x"})
