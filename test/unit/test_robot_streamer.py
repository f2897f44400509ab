"""robot.streamer: interpolation, the 1 kHz plan streamer, the stream monitor (no robot)."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.core.safety import FR3_LIMITS
from async_vla_ros.robot.fci import fci_extrapolate
from async_vla_ros.robot.streamer import MotionMonitor, PlanStreamer, StreamerConfig, interpolate
from async_vla_ros.robot.stress import FR3_HOME

HOME = np.asarray(FR3_HOME)


# ---------------------------------------------------------------------- interpolate
def test_linear_and_hold_known_answers():
    a, b = np.array([0.0, 1.0]), np.array([1.0, 3.0])
    np.testing.assert_allclose(interpolate(a, a, b, b, 0.25, "linear"), [0.25, 1.5])
    np.testing.assert_allclose(interpolate(a, a, b, b, 1.0, "linear"), b)
    np.testing.assert_allclose(interpolate(a, a, b, b, 0.25, "hold"), b)


def test_cubic_reproduces_a_quadratic_and_hits_knots():
    f = lambda x: 0.3 * x**2 - 0.7 * x + 0.1  # noqa: E731
    knots = [np.array([f(k)]) for k in (-2, -1, 0, 1)]  # a[t-2], a[t-1], a[t], a[t+1] with t = 0
    for u in (0.0, 0.1, 0.5, 0.77, 1.0):
        # phase u of step 0 lies at x = -1 + u between a[-1] and a[0]
        assert interpolate(*knots, u, "cubic")[0] == pytest.approx(f(-1 + u), abs=1e-12)


def test_interpolate_rejects_bad_input():
    z = np.zeros(2)
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolate(z, z, z, z, 0.5, "spline")
    with pytest.raises(ValueError, match="phase"):
        interpolate(z, z, z, z, 1.5)


# ---------------------------------------------------------------------- config
def test_config_validation():
    assert StreamerConfig(control_dt=0.05, command_dt=0.001).ticks_per_step == 50
    with pytest.raises(ValueError, match="whole multiple"):
        StreamerConfig(control_dt=0.0505)
    with pytest.raises(ValueError, match="interpolation"):
        StreamerConfig(interpolation="quintic")
    with pytest.raises(ValueError, match="unknown robot"):
        StreamerConfig(robot="fr4")
    with pytest.raises(ValueError, match="scale_jerk"):
        StreamerConfig(scale_jerk=1.5)


# ---------------------------------------------------------------------- streamer
def _raw(interp="linear", r=5):
    return PlanStreamer(StreamerConfig(control_dt=0.001 * r, interpolation=interp, safety=False))


def test_linear_ramp_reaches_each_knot_at_the_end_of_its_step():
    s = _raw(r=5)
    s.reset(HOME)
    goal = HOME + 0.01
    assert s.at_step_start and s.step == 0
    s.set_knot(0, goal)
    outs = [s.tick() for _ in range(5)]
    for k, o in enumerate(outs):
        np.testing.assert_allclose(o.q_cmd, HOME + 0.01 * (k + 1) / 5, atol=1e-15)
        assert o.step == 0 and o.flags is None
    assert s.at_step_start and s.step == 1
    # no knot for step 1: hold the last one
    s.set_knot(1, None)
    for _ in range(5):
        np.testing.assert_allclose(s.tick().q_cmd, goal)


def test_gripper_rides_along_and_past_knots_are_rejected():
    s = _raw(r=2)
    s.reset(HOME, gripper=0.04)
    s.set_knot(0, np.append(HOME, 0.02))
    assert s.tick().gripper == pytest.approx(0.02)
    s.tick()
    s.set_knot(1, HOME)  # 7-d knot: gripper held
    assert s.tick().gripper == pytest.approx(0.02)
    with pytest.raises(ValueError, match="in the past"):
        s.set_knot(0, HOME)
    with pytest.raises(ValueError, match="7 .* or 8"):
        s.set_knot(2, np.zeros(6))
    with pytest.raises(RuntimeError, match="reset"):
        PlanStreamer().tick()


def test_filtered_stream_keeps_the_limits_through_a_step_and_settles():
    cfg = StreamerConfig()
    s = PlanStreamer(cfg)
    s.reset(HOME)
    mon = MotionMonitor(FR3_LIMITS)
    mon.reset(HOME)
    goal = HOME + np.array([0.3, -0.2, 0.3, 0.2, -0.3, 0.2, 0.3])
    for t in range(40):  # 2 s
        s.set_knot(t, goal)
        for _ in range(cfg.ticks_per_step):
            mon.update(s.tick().q_cmd)
    assert mon.total_violations == 0
    summ = mon.summary()
    assert (
        summ["max_jerk_frac"] <= cfg.scale_jerk + 1e-9
        and summ["max_acceleration_frac"] <= cfg.scale_acceleration + 1e-9
    )
    assert summ["max_jerk_frac"] > 0.9  # the step really was limited
    np.testing.assert_allclose(s.last_command, goal, atol=1e-9)
    s.freeze()
    for _ in range(10):
        s.tick()
    assert s.settled()


def test_unfiltered_step_breaks_the_limits():
    s = _raw(r=50)
    s.reset(HOME)
    mon = MotionMonitor("fr3")
    mon.reset(HOME)
    s.set_knot(0, HOME + 0.2)
    for _ in range(50):
        mon.update(s.tick().q_cmd)
    # 0.2 rad in 50 ms is 4 rad/s, from rest in one cycle
    assert mon.violations["velocity"] == 50 and mon.violations["acceleration"] >= 1
    assert mon.first_violation == (1, "velocity")


# ---------------------------------------------------------------------- monitor
def test_monitor_known_answers_and_late_cycles():
    mon = MotionMonitor("fr3", dt=0.001)
    mon.reset(np.zeros(7) + HOME)
    mon.update(HOME + 0.001)  # 1 rad/s from rest: a = 1000, j = 1e6
    s = mon.summary()
    assert s["max_velocity"] == pytest.approx(1.0) and s["max_acceleration"] == pytest.approx(1000.0)
    assert mon.violations == {"position": 0, "velocity": 0, "acceleration": 1, "jerk": 1}
    mon.reset(HOME)
    mon.update(HOME + 0.002, cycles=2)  # the same distance over 2 ms: half the velocity
    assert mon.summary()["max_velocity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cycles"):
        mon.update(HOME, cycles=0)
    bad = HOME.copy()
    bad[3] = 0.0  # joint 4 must stay below -0.15 rad
    mon.reset(HOME)
    mon.update(bad)
    assert mon.violations["position"] == 1


# ---------------------------------------------------------------------- late cycles (resync)
def _moving_streamer():
    s = PlanStreamer(StreamerConfig(control_dt=0.05, command_dt=0.001))
    s.reset(HOME)
    for t in range(0, 40):
        s.set_knot(t, HOME + 0.02 * t * np.array([1, -1, 1, 1, -1, 1, 1]))
    for _ in range(180):  # well into the motion
        s.tick()
    return s


def test_filter_save_restore_repeats_the_same_outputs():
    s = _moving_streamer()
    f = s.filter
    saved = f.save()
    targets = [HOME + 0.5 + 0.001 * k for k in range(20)]
    first = [f.filter(t)[0] for t in targets]
    f.restore(saved)
    again = [f.filter(t)[0] for t in targets]
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_extrapolate_keeps_acceleration_constant_and_integrates():
    s = _moving_streamer()
    f = s.filter
    q0, v0, a0 = f.state
    m = 4
    q = f.extrapolate(np.broadcast_to(HOME, (m, 7)), fill_in=fci_extrapolate)
    # v_k = v0 + k a dt, q_m = q0 + sum_k v_k dt (the FCI law: v += a dt, then q += v dt)
    dt = 0.001
    np.testing.assert_allclose(q, q0 + dt * sum(v0 + k * a0 * dt for k in range(1, m + 1)), rtol=0, atol=1e-12)
    q1, v1, a1 = f.state
    np.testing.assert_allclose(v1, v0 + m * a0 * dt, atol=1e-12)
    np.testing.assert_array_equal(a1, a0)
    assert f.counts["extrapolated"] == m


def test_resync_continues_from_the_robots_extrapolation_on_the_robots_clock():
    s = _moving_streamer()
    ref = _moving_streamer()  # the same stream without the gap, for plan time
    before = s.filter.state
    s.tick()  # computed ahead, never sent
    steps = []
    s.resync(3, on_step_start=lambda: steps.append(s.step))
    # three missed cycles: the unsent tick stood for the first, two more were skipped
    for _ in range(3):
        ref.tick()
    assert s.next_tick == ref.next_tick == 180 + 3
    q, v, a = s.filter.state
    dt = 0.001
    q0, v0, a0 = before
    np.testing.assert_allclose(q, q0 + dt * sum(v0 + k * a0 * dt for k in range(1, 4)), atol=1e-12)
    np.testing.assert_allclose(s.last_command, q)
    # the next command is one ordinary filter step from there: within the limits over one cycle
    nxt = s.tick().q_cmd
    v_n = (nxt - q) / dt
    a_n = (v_n - v) / dt
    j_n = (a_n - a) / dt
    lim = s.filter
    assert np.all(np.abs(v_n) <= lim.v_max * (1 + 1e-9)) and np.all(np.abs(a_n) <= lim.a_max * (1 + 1e-9))
    assert np.all(np.abs(j_n) <= lim.j_max * (1 + 1e-9))
    assert steps == []  # no control-step boundary in cycles 181..182
    # a gap across a step boundary still runs that step's hook (tick 199 -> step 4 starts at 200)
    while s.next_tick < 199:
        s.tick()
    s.tick()
    s.resync(3, on_step_start=lambda: steps.append(s.step))
    assert steps == [4] and s.next_tick == 202


def test_resync_rejects_bad_use():
    s = PlanStreamer(StreamerConfig())
    s.reset(HOME)
    with pytest.raises(RuntimeError, match="tick"):
        s.resync(1)
    s.tick()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="missed"):
            s.resync(bad)


def test_steps_since_counts_fill_in_steps_and_history_step_has_zero_jerk():
    from async_vla_ros.robot.fci import history_step, steps_since

    dt = 0.001
    q0 = HOME.copy()
    v0 = np.array([0.3, -0.2, 0.1, 0.4, -0.5, 0.2, 0.6])
    a0 = np.array([2.0, -3.0, 1.0, 0.5, -1.0, 4.0, -2.0])
    for s in range(6):
        q, v = fci_extrapolate(q0, v0, a0, dt, s)
        # a history s fill-in steps beyond our command q0 (v is the last fill-in's velocity)
        assert steps_since(q0, q, v, a0, dt, 8, 1e-9) == s
    assert steps_since(q0 + 1e-3, q0, v0, a0, dt, 8, 5e-6) is None  # not an extension of q0
    # at rest every count matches: the largest is taken (the robot filled every cycle in)
    assert steps_since(q0, q0, np.zeros(7), np.zeros(7), dt, 4, 5e-6) == 4
    # over T the next command's backward differences are v + a T, a, 0
    T = 2 * dt
    qn, vn, an = history_step(q0, v0, a0, T)
    first = (qn - q0) / T
    np.testing.assert_allclose(first, v0 + a0 * T, atol=1e-12)
    np.testing.assert_allclose((first - v0) / T, a0, atol=1e-9)
    np.testing.assert_allclose(vn, first, atol=1e-12)
    np.testing.assert_array_equal(an, a0)


def test_resync_takes_the_robots_reported_history():
    s = _moving_streamer()
    s.tick()  # computed ahead, never sent
    q, v, a = s.filter.state
    robot = (q + 1e-5, v * 0.9, a * 0.5)  # the robot's history after the missed cycles
    s.resync(2, robot=robot)
    np.testing.assert_array_equal(s.filter.state[0], robot[0])
    np.testing.assert_allclose(s.filter.state[1], robot[1])
    np.testing.assert_allclose(s.filter.state[2], robot[2])
    assert s.filter.counts["rebased"] == 1 and s.filter.counts["extrapolated"] == 2
    # the next command is one filter step from it: within the filter's limits over one cycle
    dt = 0.001
    lim = s.filter.config.joint_limits
    nxt = s.tick().q_cmd
    v_n = (nxt - robot[0]) / dt
    a_n = (v_n - robot[1]) / dt
    assert np.all(np.abs((a_n - robot[2]) / dt) <= np.asarray(lim.j_max) * 0.9 + 1e-3)
    # a history beyond the robot's limits is clipped into them (the brake plans stay bounded)
    s2 = _moving_streamer()
    s2.tick()
    s2.resync(1, robot=(q, np.full(7, 100.0), np.full(7, 1e4)))
    assert s2.filter.counts["history_clipped"] == 1
    assert np.all(np.abs(s2.filter.state[1]) <= np.asarray(lim.v_max) + 1e-12)
