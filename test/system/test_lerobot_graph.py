"""A LeRobot policy folder (tiny random SmolVLA, built offline by the fixture) served in the
running graph (separate processes, camera on) with the rtc and remac presets, LeRobot's own RTC
preset, and evaluated by ``eval`` for a few episodes per preset."""

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
def test_lerobot_policy_in_the_running_graph(monitor, tiny_smolvla_dir, method, sampler):
    graph = build_graph(
        "franka", {"policy": f"lerobot:{tiny_smolvla_dir}", "method": method, "task": "track", "camera": "true"}
    )
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    try:
        ok = wait_for(lambda: sum(r.sampler == sampler for r in monitor.accepted_reports()) >= 3, 150.0, launcher)
        assert ok, "no guided chunks:\n" + "\n".join(lines[-60:])
        assert wait_for(lambda: monitor.diag("correction").get("commands", 0) > 0, 10.0, launcher)
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
