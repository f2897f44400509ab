"""core.motion_check: backward differences of a command stream and the limit comparison, against
known answers; the streaming monitor and the batch chaos check agree with it."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.core.motion_check import (
    DERIVATIVES,
    backward_differences,
    check_differences,
    limit_bounds,
    position_margin,
)
from async_vla_ros.core.safety import FR3_LIMITS, JointLimits
from async_vla_ros.eval.stream_check import check_command_stream
from async_vla_ros.robot.streamer import MotionMonitor

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
WIDE = JointLimits(
    name="wide", q_min=(-1e3,) * 7, q_max=(1e3,) * 7, v_max=(1e3,) * 7, a_max=(1e3,) * 7, j_max=(1e3,) * 7
)


def test_constant_acceleration_is_exact():
    # q = a t^2 / 2 with a = 4, dt = 1/8: every value below is a binary fraction, so exact
    dt, acc = 0.125, 4.0
    k = np.arange(10, dtype=np.float64)
    q = np.tile((0.5 * acc * (k * dt) ** 2)[:, None], (1, 7))
    d = backward_differences(q, dt)
    assert d["velocity"].shape == (9, 7) and d["acceleration"].shape == (8, 7) and d["jerk"].shape == (7, 7)
    np.testing.assert_array_equal(d["velocity"][:, 0], (2 * k[1:] - 1) / 4)  # backward: v[k] = acc (k - 1/2) dt
    np.testing.assert_array_equal(d["acceleration"], acc)
    np.testing.assert_array_equal(d["jerk"], 0.0)


def test_single_step_from_rest():
    dt, x = 0.001, 0.002
    q = np.tile(HOME, (5, 1))
    q[2:, 4] += x  # a step of x rad at sample 2
    d = backward_differences(q, dt)
    np.testing.assert_allclose(d["velocity"][:, 4], [0.0, x / dt, 0.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(d["acceleration"][:, 4], [x / dt**2, -x / dt**2, 0.0], rtol=1e-9)
    np.testing.assert_allclose(d["jerk"][:, 4], [-2 * x / dt**3, x / dt**3], rtol=1e-9)
    assert not d["velocity"][:, [0, 1, 2, 3, 5, 6]].any()


def test_initial_state_gives_every_sample_all_three():
    """With v0 = a0 = 0 (at rest) the first command already has an acceleration and a jerk."""
    q = np.vstack([HOME, HOME + 0.001])
    d = backward_differences(q, 0.001, v0=np.zeros(7), a0=np.zeros(7))
    assert all(d[kind].shape == (1, 7) for kind, _ in DERIVATIVES)
    np.testing.assert_allclose(d["velocity"][0], 1.0, rtol=1e-9)
    np.testing.assert_allclose(d["acceleration"][0], 1e3, rtol=1e-9)
    np.testing.assert_allclose(d["jerk"][0], 1e6, rtol=1e-9)
    # a single sample with a state: nothing to difference
    assert backward_differences(HOME[None], 0.001, np.zeros(7), np.zeros(7))["jerk"].shape == (0, 7)


def test_late_cycles_difference_over_the_real_interval():
    """h per interval: 2 mm over 2 ms is 1 rad/s, not 2."""
    q = np.vstack([HOME, HOME + 0.001, HOME + 0.003])
    d = backward_differences(q, np.array([0.001, 0.002]))
    np.testing.assert_allclose(d["velocity"][:, 0], [1.0, 1.0], rtol=1e-9)
    np.testing.assert_allclose(d["acceleration"][:, 0], [0.0], atol=1e-6)
    with pytest.raises(ValueError, match="one interval per difference"):
        backward_differences(q, np.array([0.001]))
    with pytest.raises(ValueError, match="> 0"):
        backward_differences(q, 0.0)
    with pytest.raises(ValueError, match="both"):
        backward_differences(q, 0.001, v0=np.zeros(7))


def test_limit_comparison_is_relative():
    v_max = FR3_LIMITS.v_max[0]
    for excess, rel_tol, expected in ((1e-3, 1e-6, True), (1e-9, 1e-6, False), (1e-9, 0.0, True), (0.0, 0.0, False)):
        q = np.tile(HOME, (2, 1))
        q[1, 0] += v_max * (1 + excess) * 0.5  # over dt = 0.5 s: v = v_max (1 + excess)
        chk = check_differences(q, 0.5, FR3_LIMITS, rel_tol)
        assert bool(chk.over["velocity"][0, 0]) is expected, (excess, rel_tol)
        assert chk.ratios["velocity"][0, 0] == pytest.approx(1 + excess, rel=1e-12)


def test_position_margin_and_bounds():
    q = np.array(HOME)
    q[3] = -0.05  # FR3 joint 4 upper limit -0.1518: outside by 0.1018
    m = position_margin(q, FR3_LIMITS)
    assert m.shape == (7,) and m[3] == pytest.approx(-0.1018, abs=1e-12) and (np.delete(m, 3) > 0).all()
    b = limit_bounds(FR3_LIMITS)
    np.testing.assert_array_equal(b["jerk"], FR3_LIMITS.j_max)
    with pytest.raises(ValueError):
        b["jerk"][0] = 0.0  # cached, read-only


def test_streaming_monitor_equals_the_batch_from_rest():
    """MotionMonitor (one command at a time, late cycles) = backward_differences over the whole
    stream with per-interval h and v0 = a0 = 0."""
    rng = np.random.default_rng(3)
    q = HOME + np.cumsum(np.cumsum(rng.normal(0, 2e-7, (200, 7)), 0), 0)
    cycles = rng.integers(1, 4, 199)
    mon = MotionMonitor(FR3_LIMITS, dt=0.001)
    mon.reset(q[0])
    for row, c in zip(q[1:], cycles):
        mon.update(row, int(c))
    chk = check_differences(q, cycles * 0.001, FR3_LIMITS, 1e-6, v0=np.zeros(7), a0=np.zeros(7))
    for kind, _ in DERIVATIVES:
        np.testing.assert_array_equal(mon.max_abs[kind], np.abs(chk.diffs[kind]).max(axis=0))
        assert mon.violations[kind] == int(chk.over[kind].any(axis=1).sum())


def test_batch_check_uses_the_same_differences():
    """check_command_stream of one segment reports the maxima of check_differences."""
    rng = np.random.default_rng(4)
    q = HOME + np.cumsum(np.cumsum(rng.normal(0, 1e-6, (100, 7)), 0), 0)
    r = check_command_stream(np.arange(100, dtype=np.int64) * 1_000_000, q, 0.001, FR3_LIMITS)
    chk = check_differences(q, 0.001, FR3_LIMITS)
    assert r.max_velocity_ratio == chk.ratios["velocity"].max()
    assert r.max_acceleration_ratio == chk.ratios["acceleration"].max()
    assert r.max_jerk_ratio == chk.ratios["jerk"].max()
    assert r.min_position_margin == chk.margin.min()
    assert r.ok == (not any(chk.over[kind].any() for kind, _ in DERIVATIVES))
