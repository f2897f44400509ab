"""The main job as a user runs it: `async-vla-ros demo` with its defaults (the multi-task VLA from
the cameras and an instruction), in a process of its own, for a short bounded time."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("lerobot")
from async_vla_ros.assets import panda_available  # noqa: E402

if not panda_available():
    pytest.skip("MuJoCo Panda model not fetched (make setup)", allow_module_level=True)

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_the_main_job_runs_the_vla_from_cameras_and_an_instruction(tmp_path):
    instruction = "block the ball on its way to the goal"  # a held-out paraphrase of intercept
    out = subprocess.run(
        [sys.executable, "-m", "async_vla_ros.cli", "demo", "--duration", "40", "--instruction", instruction],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "policy vla" in text and "method rtc," in text  # the defaults
    assert "chunks accepted:" in text and "policy vla/intercept:" in text  # chunks flowed from the VLA
    assert f"instruction: '{instruction}'" in text  # the summary names what the policy was told
    assert "cameras scene,wrist:" in text and "image pipeline latency" in text
