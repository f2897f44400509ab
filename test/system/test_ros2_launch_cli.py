"""The venv as an install space (scripts/install_space.py, run by `make setup`) and the real
`ros2` command line on it, without starting the graph: `ros2 launch async_vla_ros
franka.launch.py` finds the file and its arguments, `ros2 pkg executables` lists every node
executable, a bad launch argument is one clear line and a non-zero exit."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from async_vla_ros.bringup.graph import build_graph

ROOT = Path(__file__).resolve().parents[2]
ros_cli = pytest.importorskip("ros_cli")
pytestmark = [pytest.mark.system]
needs_ros2 = pytest.mark.skipif(not Path(ros_cli.ROS2).exists(), reason="ros2 CLI not installed (make setup)")


def _install_space():
    spec = importlib.util.spec_from_file_location("install_space", ROOT / "scripts" / "install_space.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_install_space_layout_links_files_and_follows_the_repo(tmp_path):
    mod = _install_space()
    root = tmp_path / "repo"
    for sub in ("launch", "config"):
        shutil.copytree(ROOT / sub, root / sub)
    shutil.copy(ROOT / "package.xml", root / "package.xml")
    prefix = tmp_path / "prefix"
    n = mod.share_files(prefix, root)
    share = prefix / "share" / "async_vla_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "async_vla_ros").is_file()
    for sub in ("launch", "config"):
        assert (share / sub).is_dir() and not (share / sub).is_symlink()  # ros2launch does not follow those
    launch = share / "launch" / "franka.launch.py"
    assert launch.is_symlink() and launch.resolve() == (root / "launch" / "franka.launch.py").resolve()
    assert n == len(list((share / "launch").iterdir())) + len(list((share / "config").iterdir()))
    # an edit in the repo shows at once; a new file appears and a removed one goes on the next run
    (root / "launch" / "franka.launch.py").write_text("# edited\n")
    assert launch.read_text() == "# edited\n"
    (root / "launch" / "other.launch.py").write_text("")
    (root / "config" / "graph.yaml").unlink()
    mod.share_files(prefix, root)
    assert (share / "launch" / "other.launch.py").is_symlink() and not (share / "config" / "graph.yaml").exists()
    # executables: one per console script, run with this interpreter
    exes = mod.executables(prefix)
    for node in build_graph("franka", {"policy": "expert"}).nodes:
        assert node.executable in exes
        exe = prefix / "lib" / "async_vla_ros" / node.executable
        assert os.access(exe, os.X_OK) and exe.read_text().startswith(f"#!{sys.executable}\n")


@needs_ros2
def test_ros2_finds_the_package_its_launch_file_and_executables():
    out = ros_cli.ros2("pkg", "executables", "async_vla_ros")
    assert out.returncode == 0, out.stdout
    for node in build_graph("franka", {"policy": "expert"}).nodes:
        assert f"async_vla_ros {node.executable}" in out.stdout
    args = ros_cli.ros2("launch", "async_vla_ros", "franka.launch.py", "--show-args")
    assert args.returncode == 0, args.stdout
    assert "'method':" in args.stdout and "'latency_ms':" in args.stdout


@needs_ros2
@pytest.mark.parametrize(
    "arg, reason",
    [
        ("methd:=rtc", "unknown launch argument 'methd' (did you mean 'method'?)"),
        ("method:=rtcc", "unknown method preset 'rtcc' (did you mean 'rtc'?)"),
        ("sim:=gazebo", "sim:=gazebo: must be one of mujoco, none"),
    ],
)
def test_bad_launch_argument_is_one_clear_line_and_a_non_zero_exit(arg, reason):
    out = ros_cli.ros2("launch", "async_vla_ros", "franka.launch.py", arg, "policy:=expert", timeout=120)
    assert out.returncode != 0
    errors = [ln for ln in out.stdout.splitlines() if "[ERROR]" in ln]
    assert len(errors) == 1 and reason in errors[0], out.stdout
    assert "Traceback" not in out.stdout and "process started" not in out.stdout
