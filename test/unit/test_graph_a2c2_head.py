"""bringup gives the correction node the A2C2 head of the policy that runs (the registry's rule) and,
for a head that reads the policy's features, the policy spec that computes them."""

from __future__ import annotations

import pytest

from async_vla_ros import names as N
from async_vla_ros.bringup.graph import GraphError, build_graph

pytest.importorskip("torch")


def _head(path, obs_dim: int, latent_dim: int):
    from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead

    CorrectionHead(CorrectionConfig(obs_dim=obs_dim, action_dim=8, horizon=8, latent_dim=latent_dim)).save(path)
    return path


def test_a_vla_with_its_head_gives_the_correction_node_the_head_and_the_policy_for_its_features(
    tiny_smolvla_proprio_dir, tmp_path
):
    spec = f"vla:{tiny_smolvla_proprio_dir}"
    head = _head(tmp_path / "vla_head.pt", N.N_PROPRIO, 640)
    g = build_graph("franka", {"policy": spec, "method": "rtc_a2c2", "task": "intercept", "a2c2": str(head)})
    corr, pol = g.node("correction").parameters, g.node("policy").parameters
    assert corr["a2c2_head"] == str(head.resolve())
    # the same spec and checkpoint kind as the policy node, for the task
    assert corr["a2c2_policy"] == pol["policy"] == spec
    assert corr["a2c2_policy_kind"] == pol["checkpoint_kind"] == "base" and corr["task"] == "intercept"
    # the correction node reads camera_ingestion's observations: they carry both cameras
    assert g.node("camera_ingestion").parameters["camera_names"] == ["scene", "wrist"]
    # a LeRobot folder with a head given: the same
    g = build_graph(
        "franka",
        {"policy": f"lerobot:{tiny_smolvla_proprio_dir}", "method": "a2c2", "task": "track", "a2c2": str(head)},
    )
    assert g.node("correction").parameters["a2c2_policy"] == f"lerobot:{tiny_smolvla_proprio_dir}"


def test_a_head_the_policy_cannot_run_is_one_line_before_anything_starts(tiny_smolvla_proprio_dir, tmp_path):
    from async_vla_ros.checkpoints import checkpoint_path

    spec = f"vla:{tiny_smolvla_proprio_dir}"
    state_head = str(checkpoint_path("intercept", "a2c2"))  # reads the task's privileged state (24)
    with pytest.raises(GraphError) as exc:
        build_graph("franka", {"policy": spec, "method": "rtc_a2c2", "task": "intercept", "a2c2": state_head})
    msg = str(exc.value)
    assert "\n" not in msg and "takes a state of 24 values" in msg and "reads 15" in msg and "train a2c2" in msg
    with pytest.raises(GraphError, match=r"^a2c2:=default with policy:=lerobot:.*no default A2C2 head.*train one"):
        build_graph("franka", {"policy": f"lerobot:{tiny_smolvla_proprio_dir}", "method": "rtc_a2c2"})
    with pytest.raises(GraphError, match=r"^a2c2:=.*nope.pt: no such A2C2 head file; train one"):
        build_graph("franka", {"policy": spec, "method": "rtc_a2c2", "a2c2": str(tmp_path / "nope.pt")})
    (tmp_path / "junk.pt").write_bytes(b"not a head")
    with pytest.raises(GraphError, match="not an A2C2 head"):
        build_graph("franka", {"policy": spec, "method": "rtc_a2c2", "a2c2": str(tmp_path / "junk.pt")})


def test_the_task_policy_keeps_its_state_head_and_the_node_reads_the_observation_state():
    from async_vla_ros.checkpoints import checkpoint_path

    g = build_graph("franka", {"method": "rtc_a2c2", "task": "track", "camera": "false"})
    corr = g.node("correction").parameters
    assert corr["a2c2_head"] == str(checkpoint_path("track", "a2c2").resolve())
    assert "a2c2_policy" not in corr  # a state head of a flow checkpoint: no features to compute


def test_state_names_the_privileged_state_baseline_and_the_vla_is_the_demos_default():
    import argparse

    from async_vla_ros.checkpoints import checkpoint_path
    from async_vla_ros.demo import add_arguments
    from async_vla_ros.policy.registry import parse_policy_spec

    assert parse_policy_spec("state").is_default
    g = build_graph("franka", {"policy": "state", "method": "rtc_a2c2", "task": "track"})
    assert g.node("policy").parameters["policy"] == str(checkpoint_path("track", "base"))
    assert g.node("correction").parameters["a2c2_head"] == str(checkpoint_path("track", "a2c2").resolve())
    assert "cameras" not in g.node("sim").parameters or not g.node("sim").parameters["cameras"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args([])
    assert ns.policy == "vla"  # the main job runs the VLA from the cameras and an instruction
    g = build_graph("franka", {"policy": ns.policy, "method": ns.method, "task": ns.task})
    assert g.node("sim").parameters["cameras"] == ["scene", "wrist"]
