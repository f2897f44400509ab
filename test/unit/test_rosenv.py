import os
import subprocess
import sys
import tempfile

from async_vla_ros import rosenv
from async_vla_ros.rosenv import apply_ros_defaults, check_ros_env, session_domain_id


def test_defaults_fill_an_empty_env(tmp_path):
    env: dict[str, str] = {}
    applied = apply_ros_defaults(env, log_dir=str(tmp_path / "logs"))
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"] == "42"
    assert env["ROS_LOG_DIR"] == str(tmp_path / "logs")
    assert (tmp_path / "logs").is_dir()
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert applied["ROS_DOMAIN_ID"] == "42"
    assert check_ros_env(env) == []


def test_user_values_are_kept(tmp_path):
    env = {"ROS_DOMAIN_ID": "7", "ROS_LOG_DIR": str(tmp_path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    apply_ros_defaults(env)
    assert env["ROS_DOMAIN_ID"] == "7"
    assert env["ROS_LOG_DIR"] == str(tmp_path)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    assert any("not limited" in p for p in check_ros_env(env))


def test_force_domain_overrides_for_test_isolation(tmp_path):
    env = {"ROS_DOMAIN_ID": "7", "ROS_LOG_DIR": str(tmp_path)}
    apply_ros_defaults(env, domain_id=33, force_domain=True)
    assert env["ROS_DOMAIN_ID"] == "33"


def test_session_domain_ids_are_valid_and_vary():
    ids = {session_domain_id(seed) for seed in range(200)}
    assert all(10 <= i < 100 for i in ids)
    assert len(ids) == 90


def test_this_test_session_runs_with_safe_defaults():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 10 <= int(os.environ["ROS_DOMAIN_ID"]) < 100
    assert "async_vla_ros_test_logs_" in os.environ["ROS_LOG_DIR"]


def test_a_domain_reserved_by_another_process_is_skipped_until_that_process_ends(tmp_path, monkeypatch):
    """Two test sessions must never share a domain, also while one of them has no node running
    (discovery alone saw such a domain as free): the lock is taken by another process, so this one
    moves on, and the lock is gone with that process."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a lock folder of this test only
    monkeypatch.setattr(rosenv, "domain_in_use", lambda domain_id, wait_s=3.0: False)  # no discovery here
    held = set(rosenv._HELD_DOMAINS)  # this session's own domain (conftest)
    dom = next(d for d in range(10, 99) if d not in held and d + 1 not in held)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DOMAIN, str(dom)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not rosenv.reserve_domain(dom)
        seed = next(s for s in range(1000) if session_domain_id(s) == dom)
        assert rosenv.free_session_domain_id(seed) == dom + 1
        assert rosenv.free_session_domain_id(seed) not in (dom, dom + 1)  # dom + 1 is given out already
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        for d in set(rosenv._HELD_DOMAINS) - held:
            rosenv.release_domain(d)
    assert rosenv.reserve_domain(dom)  # the holder ended: its lock went with it
    rosenv.release_domain(dom)


HOLD_DOMAIN = """
import sys
from async_vla_ros.rosenv import reserve_domain
assert reserve_domain(int(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""
