import os

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
