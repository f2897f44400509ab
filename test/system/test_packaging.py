"""The repository builds the way ROS users build it: `colcon build --base-paths . msg`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.system]


@pytest.mark.skipif(shutil.which("colcon", path=str(VENV_BIN)) is None, reason="colcon not installed in the venv")
def test_colcon_builds_both_packages(tmp_path):
    env = dict(os.environ)
    env.update(
        CMAKE_PREFIX_PATH=sys.prefix,
        AMENT_PREFIX_PATH=sys.prefix,
        PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}",
    )
    cmd = [
        str(VENV_BIN / "colcon"), "--log-base", str(tmp_path / "log"), "build",
        "--base-paths", ".", "msg",
        "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
        "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for pkg in ("async_vla_msgs", "async_vla_ros"):
        assert f"Finished <<< {pkg}" in out.stdout, f"colcon did not build {pkg}"

    inst = tmp_path / "install"
    share = inst / "async_vla_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "async_vla_ros").exists()
    assert (share / "async_vla_ros" / "package.xml").exists()
    for sub in ("launch", "config"):
        src = sorted(p.name for p in (ROOT / sub).glob("*") if p.suffix in {".py", ".yaml", ".perspective", ".xml"})
        got = sorted(p.name for p in (share / "async_vla_ros" / sub).glob("*")) if src else []
        assert got == src, f"share/async_vla_ros/{sub} does not match the repo's {sub}/"
    assert (inst / "async_vla_ros" / "lib" / "async_vla_ros" / "async-vla-ros").exists()
    msgs_pkg = inst / "async_vla_msgs"
    assert (msgs_pkg / "share" / "async_vla_msgs" / "msg" / "ActionChunk.msg").exists()
    assert list(msgs_pkg.glob("lib/python3*/site-packages/async_vla_msgs/msg/_action_chunk.py"))
    if (VENV_BIN / "ros2").exists():
        _ros2_launch_from_the_workspace(inst, env, tmp_path)


def _ros2_launch_from_the_workspace(inst: Path, env: dict, tmp_path: Path) -> None:
    """As a ROS user runs it: source the workspace (install/setup.bash with colcon-bash; colcon-core
    alone writes the POSIX install/setup.sh, which bash sources the same way), `ros2 launch
    async_vla_ros franka.launch.py`
    (package, launch file, executables and Python code from the workspace, which overlays the
    venv), wait for a chunk report, SIGINT the launch (its own process group), status 0."""
    script = f"""
set -m
if [ -f {inst}/setup.bash ]; then source {inst}/setup.bash; else . {inst}/setup.sh; fi
ros2 pkg prefix async_vla_ros
ros2 launch async_vla_ros franka.launch.py policy:=expert fifo:=false > {tmp_path}/launch.log 2>&1 &
LAUNCH=$!
timeout 150 ros2 topic echo --once /scheduler/chunk_report async_vla_msgs/msg/ChunkReport > {tmp_path}/echo.log 2>&1
ECHO=$?
kill -INT -$LAUNCH
wait $LAUNCH
echo "echo=$ECHO launch=$?"
"""
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "launch.log").read_text() if (tmp_path / "launch.log").exists() else ""
    assert out.stdout.splitlines()[0] == str(inst / "async_vla_ros"), out.stdout + out.stderr
    assert out.stdout.strip().endswith("echo=0 launch=0"), out.stdout + out.stderr + log[-3000:]
    assert "chunk_id:" in (tmp_path / "echo.log").read_text()
