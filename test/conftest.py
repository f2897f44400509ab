"""Test-session set-up shared by every tier.

Hugging Face libraries are put offline (no hub access), and the ROS environment defaults are
applied before anything imports rclpy, with a domain id unique
to this test session, so tests never talk to another session's nodes nor leave loopback.
"""

from __future__ import annotations

import os
import tempfile

from async_vla_ros.hfenv import apply_hf_offline
from async_vla_ros.rosenv import apply_ros_defaults, free_session_domain_id

# Hugging Face libraries offline with a throw-away HF_HOME, before any test imports them
_early = apply_hf_offline(hf_home=tempfile.mkdtemp(prefix="async_vla_ros_test_hf_"))
assert not _early, f"imported before the offline settings: {_early}"
_LOG_DIR = tempfile.mkdtemp(prefix="async_vla_ros_test_logs_")
os.environ.setdefault("ROS_LOG_DIR", _LOG_DIR)
# a domain no other process on this shared machine is using right now (checked by discovery)
apply_ros_defaults(domain_id=free_session_domain_id(), log_dir=_LOG_DIR, force_domain=True)
os.environ["ROS_LOG_DIR"] = _LOG_DIR
os.environ.setdefault("MUJOCO_GL", "egl")


def pytest_collection_modifyitems(config, items):
    """`realtime` tests run a hard 1 kHz peer (franka-sim) whose deadlines a shared, loaded
    machine cannot promise; they are on demand (ASYNC_VLA_RUN_REALTIME=1), like benchmarks."""
    if os.environ.get("ASYNC_VLA_RUN_REALTIME") == "1":
        return
    import pytest

    skip = pytest.mark.skip(
        reason="real-time peer test: on demand with ASYNC_VLA_RUN_REALTIME=1 (see docs/libfranka.md)"
    )
    for item in items:
        if "realtime" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------- LeRobot fixtures
TINY_SMOLVLA_CAMERAS = {"scene": "observation.images.scene"}  # MuJoCo camera -> LeRobot feature


def _tiny_smolvla(tmp_path_factory, name: str, **overrides):
    """A tiny random SmolVLA policy folder for the track task (state 24, action 8, chunk 8, one
    64x64 camera), built offline once per test session (async_vla_ros/policy/lerobot_tiny.py)."""
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    kw = dict(cameras=TINY_SMOLVLA_CAMERAS, state_dim=24, action_dim=8, chunk=8, n_steps=10, task="track")
    kw.update(overrides)
    return build_tiny_smolvla(tmp_path_factory.mktemp(name), TinySmolVLASpec(**kw))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_smolvla_dir(tmp_path_factory):
    return _tiny_smolvla(tmp_path_factory, "tiny_smolvla")


TWO_CAMERAS = {"scene": "observation.images.scene", "wrist": "observation.images.wrist"}


@pytest.fixture(scope="session")
def tiny_smolvla_2cam_dir(tmp_path_factory):
    """The same tiny SmolVLA with the sim's two cameras (scene and wrist, 64x64 each)."""
    return _tiny_smolvla(tmp_path_factory, "tiny_smolvla_2cam", cameras=TWO_CAMERAS)


@pytest.fixture(scope="session")
def tiny_smolvla_proprio_dir(tmp_path_factory):
    """A multi-task-style tiny SmolVLA: both cameras, the 15 proprioception values as its state
    (``state_input: proprioception``, as ``train vla`` writes it), no task of its own."""
    return _tiny_smolvla(
        tmp_path_factory, "tiny_smolvla_proprio", cameras=TWO_CAMERAS, state_dim=15, proprio_only=True, task=""
    )
