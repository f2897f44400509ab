"""A LeRobot policy folder (tiny random SmolVLA with the sim's two cameras, built offline by the
fixture) served in the running graph (separate processes) with the rtc and remac presets, LeRobot's
own RTC preset: the sim renders both cameras because the policy takes them, camera_ingestion pairs
them with the state, and the instruction set at runtime (``ros2 param set /camera_ingestion
instruction ...``, here through rclpy's parameter client) reaches the backend with both cameras.
Then ``eval`` runs it for a few episodes per preset."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
from async_vla_ros.assets import panda_available  # noqa: E402

if not panda_available():
    pytest.skip("MuJoCo Panda model not fetched (make setup)", allow_module_level=True)


from graph_fixtures import wait_for  # noqa: E402

from async_vla_ros.bringup.graph import build_graph  # noqa: E402
from async_vla_ros.bringup.launcher import Launcher  # noqa: E402

pytestmark = [pytest.mark.system, pytest.mark.slow]


@pytest.mark.parametrize("method, sampler", [("rtc", "rtc"), ("remac_clean", "prefix"), ("rtc_lerobot", "rtc_lerobot")])
def test_lerobot_policy_in_the_running_graph(monitor, tiny_smolvla_2cam_dir, method, sampler):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    graph = build_graph("franka", {"policy": f"lerobot:{tiny_smolvla_2cam_dir}", "method": method, "task": "track"})
    # the policy's cameras, read from its folder: rendered at its image size and ingested
    assert graph.node("sim").parameters["cameras"] == ["scene", "wrist"]
    assert graph.node("camera_ingestion").parameters["camera_names"] == ["scene", "wrist"]
    assert graph.node("camera_ingestion").parameters["image_size"] == 64
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    said = "keep the gripper on the moving target"  # a paraphrase, not the folder's instruction
    try:
        ok = wait_for(lambda: sum(r.sampler == sampler for r in monitor.accepted_reports()) >= 3, 150.0, launcher)
        assert ok, "no guided chunks:\n" + "\n".join(lines[-60:])
        assert wait_for(lambda: monitor.diag("correction").get("commands", 0) > 0, 10.0, launcher)
        # (camera_ingestion runs in the policy's process: its first report may predate the images)
        assert wait_for(lambda: monitor.diag("camera_ingestion").get("images_attached", 0) > 0, 20.0, launcher)
        assert monitor.diag("camera_ingestion").get("cameras") == "scene,wrist"
        assert monitor.diag("sim").get("cameras") == "scene,wrist"
        client = AsyncParameterClient(monitor, "camera_ingestion")
        assert client.wait_for_services(timeout_sec=20.0)
        fut = client.set_parameters([Parameter("instruction", value=said)])
        assert wait_for(fut.done, 20.0, launcher) and fut.result().results[0].successful
        # what the backend itself last fed the model (LeRobot backend's last_info via /diagnostics)
        assert wait_for(
            lambda: (
                monitor.diag("policy").get("instruction") == said
                and monitor.diag("policy").get("cameras_fed") == "scene,wrist"
            ),
            60.0,
            launcher,
        ), monitor.diag("policy")
    finally:
        codes = launcher.stop()
    reps = monitor.accepted_reports()
    assert {r.sampler for r in reps} <= {sampler, "vanilla"}  # first chunk of an episode: vanilla
    pol = monitor.diag("policy")
    assert str(pol.get("policy", "")).startswith("lerobot/track/")
    assert codes == {n.name: 0 for n in graph.nodes}, codes


def test_eval_runs_a_lerobot_policy_for_a_few_episodes(tiny_smolvla_dir, tmp_path, capsys):
    from async_vla_ros.eval.eval_cmd import main

    out = tmp_path / "eval.json"
    rc = main(
        [
            "--task",
            "track",
            "--policy",
            f"lerobot:{tiny_smolvla_dir}",
            "--method",
            "rtc",
            "rtc_jf",
            "remac_clean",
            "rtc_lerobot",
            "bid",
            "--delay",
            "2",
            "--episodes",
            "2",
            "--batch",
            "2",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    rows = json.loads(out.read_text())
    text = json.dumps(rows)
    for method in ("rtc", "rtc_jf", "remac_clean", "rtc_lerobot", "bid"):
        assert f'"{method}"' in text
    assert "lerobot:" in text
