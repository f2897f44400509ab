"""The VLA's A2C2 head in the running graph (separate processes, built-in launcher): a tiny SmolVLA
(both cameras, proprioception) and a head on its features in tmp, preset rtc_a2c2. The correction
node computes the features of camera_ingestion's observations and adds the head's residual on
the command ticks; every node exits cleanly."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("lerobot")
from async_vla_ros.assets import panda_available  # noqa: E402

if not panda_available():
    pytest.skip("MuJoCo Panda model not fetched (make setup)", allow_module_level=True)

from graph_fixtures import wait_for  # noqa: E402

from async_vla_ros import names as N  # noqa: E402
from async_vla_ros.bringup.graph import build_graph  # noqa: E402
from async_vla_ros.bringup.launcher import Launcher  # noqa: E402

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_the_vla_head_runs_in_the_graph_on_the_observations_cameras(monitor, tiny_smolvla_proprio_dir, tmp_path):
    from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead
    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

    spec = f"vla:{tiny_smolvla_proprio_dir}"
    vla = load_policy_spec(spec, BackendRequest("intercept"))
    head = tmp_path / "vla_head.pt"
    CorrectionHead(CorrectionConfig(N.N_PROPRIO, 8, int(vla.horizon), latent_dim=vla.latent_dim)).save(head)
    graph = build_graph("franka", {"policy": spec, "method": "rtc_a2c2", "task": "intercept", "a2c2": str(head)})
    assert graph.node("correction").parameters["a2c2_policy"] == spec
    lines: list[str] = []
    launcher = Launcher(graph, echo=lines.append)
    launcher.start()
    try:
        ok = wait_for(
            lambda: (
                monitor.diag("correction").get("a2c2_features", 0) >= 10
                and monitor.diag("correction").get("a2c2_ticks", 0) >= 50
            ),
            120.0,
            launcher,
        )
        assert ok, f"{monitor.diag('correction')}\n" + "\n".join(lines[-60:])
    finally:
        codes = launcher.stop()
    corr = monitor.diag("correction")
    drops = {k: v for k, v in corr.items() if k.startswith("dropped.a2c2.")}
    why = f"{drops}\n" + "\n".join(ln for ln in lines if "a2c2" in ln or "camera" in ln)
    # features were computed from every observation that had its cameras: the only drop allowed is an
    # observation camera_ingestion sent without them (its first ones, before a camera's first frame
    # reached it; frames too old under load), which it counts too
    assert set(drops) <= {"dropped.a2c2.no_image"}, why
    if drops:
        ingestion = monitor.diag("camera_ingestion")
        missing = sum(v for k, v in ingestion.items() if k.startswith("images_missing."))
        assert missing > 0, f"{why}\n{ingestion}"
    assert 0 < corr["a2c2_feature_median_s"] <= corr["a2c2_feature_p95_s"] < 1.0
    assert codes == {n.name: 0 for n in graph.nodes}, codes
