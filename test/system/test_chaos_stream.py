"""The command-stream limit check of the chaos suite against known answers (pure numpy, no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.core.safety import FR3_LIMITS, SafetyConfig, SafetyFilter
from async_vla_ros.eval.chaos import ChaosConfig, with_overrides
from async_vla_ros.eval.stream_check import check_command_stream, check_restarts

DT = 0.01
Q0 = np.array([0.0, 0.2, 0.0, -2.0, 0.0, 2.2, 0.7])


def _stamps(n: int, t0: int = 10**18) -> np.ndarray:
    return t0 + np.arange(n, dtype=np.int64) * int(DT * 1e9)


def test_constant_velocity_ramp_has_known_ratios():
    v = 1.31  # rad/s on joint 1 = half of the FR3 limit 2.62
    q = np.tile(Q0, (50, 1))
    q[:, 0] += v * DT * np.arange(50)
    r = check_command_stream(_stamps(50), q, DT, FR3_LIMITS)
    assert r.ok and r.n_segments == 1 and r.n_commands == 50
    assert r.max_velocity_ratio == pytest.approx(0.5, rel=1e-9)
    assert r.max_acceleration_ratio == pytest.approx(0.0, abs=1e-6)
    assert r.max_jerk_ratio == pytest.approx(0.0, abs=1e-3)


def test_a_step_violates_velocity_acceleration_and_jerk():
    q = np.tile(Q0, (10, 1))
    q[5:, 2] += 0.1  # 0.1 rad in one 10 ms tick: 10 rad/s
    r = check_command_stream(_stamps(10), q, DT, FR3_LIMITS)
    assert not r.ok
    assert r.max_velocity_ratio == pytest.approx(10.0 / 2.62, rel=1e-9)
    assert r.max_acceleration_ratio == pytest.approx(1000.0 / 10.0, rel=1e-9)
    assert r.max_jerk_ratio == pytest.approx(2e5 / 5000.0, rel=1e-9)  # j: +1e5, -2e5, +1e5 around the step
    assert any("joint 3 v" in v for v in r.violations)


def test_segment_boundary_is_not_a_difference():
    # two streams at rest, 0.3 rad apart: a jump unless a filter restart sits between them
    q = np.vstack([np.tile(Q0, (20, 1)), np.tile(Q0 + 0.3, (20, 1))])
    t = _stamps(40)
    assert not check_command_stream(t, q, DT, FR3_LIMITS).ok
    r = check_command_stream(t, q, DT, FR3_LIMITS, segment_starts_ns=[int(t[19]) + 1])
    assert r.ok and r.n_segments == 2 and r.max_velocity_ratio == 0.0


def test_position_outside_limits_and_non_finite_are_violations():
    q = np.tile(Q0, (5, 1))
    q[:, 3] = -0.05  # joint 4 upper limit is -0.1518
    r = check_command_stream(_stamps(5), q, DT, FR3_LIMITS)
    assert not r.ok and any("joint 4" in v for v in r.violations)
    assert r.min_position_margin == pytest.approx(-0.1518 - (-0.05), rel=1e-9)
    q2 = np.tile(Q0, (5, 1))
    q2[2, 0] = np.nan
    assert any("not finite" in v for v in check_command_stream(_stamps(5), q2, DT, FR3_LIMITS).violations)


def test_the_safety_filter_output_passes_and_its_input_does_not():
    """The check agrees with the filter's own guarantee: a step target filtered at 100 Hz is within
    every limit (riding some of them), the raw step target is not."""
    f = SafetyFilter(SafetyConfig(robot="fr3", dt=DT))
    f.reset(Q0)
    target = Q0 + np.array([0.8, -0.5, 0.6, 0.5, 1.0, -0.7, 1.2])
    out = np.array([f.filter(target, None)[0] for _ in range(300)])
    r = check_command_stream(_stamps(300), out, DT, FR3_LIMITS)
    assert r.ok, r.violations
    assert r.max_acceleration_ratio > 0.99 and r.max_velocity_ratio > 0.5  # it does ride the limits
    raw = np.vstack([np.tile(Q0, (5, 1)), np.tile(target, (5, 1))])
    assert not check_command_stream(_stamps(10), raw, DT, FR3_LIMITS).ok


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="q must be"):
        check_command_stream(_stamps(3), np.zeros((3, 6)), DT, FR3_LIMITS)
    with pytest.raises(ValueError, match="dt"):
        check_command_stream(_stamps(3), np.zeros((3, 7)), 0.0, FR3_LIMITS)
    with pytest.raises(ValueError, match="did you mean 'policy_killed'"):
        ChaosConfig(cases=("policy_kiled",))
    with pytest.raises(ValueError, match="flood_count"):
        ChaosConfig(flood_count=0)


def test_with_overrides_replaces_only_the_named_parameters():
    from async_vla_ros.bringup.graph import build_graph

    g = build_graph("franka", {"policy": "expert"})
    g2 = with_overrides(g, {"correction": {"robot": "fr3"}})
    assert g2.node("correction").parameters["robot"] == "fr3"
    assert g.node("correction").parameters["robot"] == "panda"  # the original is untouched
    assert g2.node("policy").parameters == g.node("policy").parameters
    # a node in another node's process (the scheduler, composed into the policy's by default)
    g3 = with_overrides(g, {"scheduler": {"s_min": 2}})
    assert g3.node("scheduler").parameters["s_min"] == 2 and g.node("scheduler").parameters["s_min"] == 1
    assert g3.process_of("scheduler").params_file_content()["scheduler"]["ros__parameters"]["s_min"] == 2
    with pytest.raises(ValueError, match="no node"):
        with_overrides(g, {"nope": {}})


def test_publication_sequence_gaps_are_not_differences():
    """Commands the listener missed (sequence gap) must not turn into a fake jump: 20 commands of a
    1 rad/s ramp with 10 in the middle lost look like 11 rad/s across the hole without ``seq``."""
    q = np.tile(Q0, (30, 1))
    q[:, 0] += 1.0 * DT * np.arange(30)
    keep = np.r_[0:10, 20:30]
    t, qk, seq = _stamps(30)[keep], q[keep], np.arange(1, 31)[keep]
    assert not check_command_stream(t, qk, DT, FR3_LIMITS).ok
    r = check_command_stream(t, qk, DT, FR3_LIMITS, seq=seq)
    assert r.ok and r.missed == 10 and r.n_segments == 2
    assert r.max_velocity_ratio == pytest.approx(1.0 / 2.62, rel=1e-9)


def test_restarts_must_begin_at_the_measured_joints():
    ms = 1_000_000
    q_arm = np.zeros((5, 7))
    q_arm[:, 0] = [0.0, 0.1, 0.2, 0.3, 0.4]  # the arm moving on joint 1, joint states every 10 ms
    js_t = np.arange(5) * 10 * ms
    # commands every 10 ms starting at 5 ms; restarts announced at 15 ms and 35 ms
    cmd_t = np.arange(5) * 10 * ms + 5 * ms
    cmd_q = q_arm.copy()
    cmd_q[:, 0] += 0.01  # 0.01 rad from a joint state of the window: fine
    problems, worst = check_restarts([15 * ms, 35 * ms], cmd_t, cmd_q, js_t, q_arm)
    assert problems == [] and worst == pytest.approx(0.01)
    # the restart at 35 ms begins 1 rad away from every recent joint state (a rogue pose): reported
    cmd_q[3, 2] += 1.0
    problems, worst = check_restarts([15 * ms, 35 * ms], cmd_t, cmd_q, js_t, q_arm)
    assert len(problems) == 1 and "1.000 rad away" in problems[0] and worst == pytest.approx(1.0)
    # a pose the arm had only long before the command is outside the window
    cmd_q = q_arm.copy()
    cmd_q[4] = q_arm[0]  # the command at 45 ms restarts where the arm was at 0 ms
    problems, _ = check_restarts([45 * ms], cmd_t, cmd_q, js_t, q_arm, window_ns=20 * ms)
    assert len(problems) == 1 and "0.300 rad away" in problems[0]
    # restarts before t0, or with no command / no joint state in the window, are not judged
    assert check_restarts([35 * ms], cmd_t, cmd_q, js_t, q_arm, t0=40 * ms)[0] == []
    assert check_restarts([100 * ms], cmd_t, cmd_q, js_t, q_arm)[0] == []
    problems, worst = check_restarts([0], cmd_t, cmd_q, js_t[3:], q_arm[3:])
    assert problems == [] and np.isnan(worst)  # the first command (5 ms) precedes every joint state kept
