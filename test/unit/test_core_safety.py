"""SafetyFilter: the OUTPUT stream never violates position / velocity / acceleration / jerk
limits (discrete differences at the command rate), feasible streams pass unchanged, bad input
is rejected with a held target, and a reachable constant target is reached."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_vla_ros.core.safety import (
    FR3_LIMITS,
    PANDA_LIMITS,
    SafetyConfig,
    SafetyFilter,
    brake_profile,
)

REL_TOL = 1e-7  # numerical tolerance on limit ratios


def mid(lim):
    return (np.asarray(lim.q_min) + np.asarray(lim.q_max)) / 2


def limit_ratios(outputs, f: SafetyFilter, q0):
    """Max |v|/v_max, |a|/a_max, |j|/j_max over the output stream (from rest at q0), and the
    worst position excursion beyond [lo, hi] (<= 0 when inside)."""
    qs = np.vstack([q0, q0, q0, q0] + [np.asarray(o) for o in outputs])
    v = np.diff(qs, axis=0) / f.dt
    a = np.diff(v, axis=0) / f.dt
    j = np.diff(a, axis=0) / f.dt
    out = {
        "v": float(np.max(np.abs(v) / f.v_max)),
        "a": float(np.max(np.abs(a) / f.a_max)),
        "j": float(np.max(np.abs(j) / f.j_max)),
        "pos": float(max(np.max(qs - f._hi), np.max(f._lo - qs))),
    }
    return out


def assert_within_limits(outputs, f, q0):
    r = limit_ratios(outputs, f, q0)
    assert r["v"] <= 1 + REL_TOL, r
    assert r["a"] <= 1 + REL_TOL, r
    assert r["j"] <= 1 + REL_TOL, r
    assert r["pos"] <= 1e-9, r
    return r


def run(f, targets, gripper=None):
    outs, flags = [], []
    for tgt in targets:
        q, g, fl = f.filter(tgt, gripper)
        outs.append(q)
        flags.append(fl)
    return outs, flags


# ---------------------------------------------------------------------------- presets
def test_presets_carry_the_datasheet_values():
    assert FR3_LIMITS.v_max == (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
    assert FR3_LIMITS.q_min[5] == 0.5445 and FR3_LIMITS.q_max[3] == -0.1518
    assert FR3_LIMITS.a_max == (10.0,) * 7 and FR3_LIMITS.j_max == (5000.0,) * 7
    assert PANDA_LIMITS.q_max[0] == 2.8973 and PANDA_LIMITS.a_max[1] == 7.5 and PANDA_LIMITS.j_max[6] == 10000.0
    with pytest.raises(ValueError, match="did you mean 'panda'"):
        SafetyConfig(robot="pandaa")
    with pytest.raises(ValueError):
        SafetyConfig(dt=0.0)
    with pytest.raises(ValueError):
        SafetyConfig(scale_velocity=1.5)
    with pytest.raises(ValueError):
        SafetyConfig(position_margin=2.0)


def test_reset_is_required_and_checks_the_start():
    f = SafetyFilter(SafetyConfig())
    with pytest.raises(RuntimeError):
        f.filter(mid(FR3_LIMITS))
    with pytest.raises(ValueError):
        f.reset(np.zeros(7))  # FR3 joint 4 must be negative, joint 6 >= 0.5445
    with pytest.raises(ValueError):
        f.reset(np.full(6, 0.1))


# ---------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("robot", ["fr3", "panda"])
@pytest.mark.parametrize("dt", [0.001, 0.02])
def test_feasible_stream_passes_through_unchanged(robot, dt):
    f = SafetyFilter(SafetyConfig(robot=robot, dt=dt))
    q0 = mid(f.config.joint_limits)
    f.reset(q0)
    t = np.arange(1, int(2.0 / dt)) * dt
    # starts at rest: q0 + 0.2 (1 - cos 2t) has bounded velocity, acceleration and jerk
    targets = [q0 + 0.2 * (1 - np.cos(2 * ti)) * np.linspace(0.5, 1.0, 7) for ti in t]
    outs, flags = run(f, targets)
    assert np.max(np.abs(np.array(outs) - np.array(targets))) < 1e-12
    assert not any(fl.limited for fl in flags)


@pytest.mark.parametrize("robot", ["fr3", "panda"])
@pytest.mark.parametrize("dt", [0.001, 0.02])
def test_step_becomes_a_limited_ramp_that_settles_exactly(robot, dt):
    f = SafetyFilter(SafetyConfig(robot=robot, dt=dt))
    q0 = mid(f.config.joint_limits)
    f.reset(q0)
    target = q0 + 0.8
    outs, flags = run(f, [target] * int(2.5 / dt))
    assert_within_limits(outs, f, q0)
    assert flags[0].limited
    np.testing.assert_allclose(outs[-1], target, atol=1e-9)
    assert not flags[-1].limited
    # it is a ramp, not a jump: the first output moved by at most a_max * dt^2
    assert np.all(np.abs(outs[0] - q0) <= f.a_max * dt**2 * (1 + 1e-9))
    # no overshoot beyond the step
    assert np.max(np.array(outs) - target) <= 1e-9


@pytest.mark.parametrize("robot", ["fr3", "panda"])
@pytest.mark.parametrize("dt", [0.001, 0.004, 0.02])
def test_adversarial_streams_never_violate_limits(robot, dt):
    f = SafetyFilter(SafetyConfig(robot=robot, dt=dt))
    lim = f.config.joint_limits
    q0 = mid(lim)
    f.reset(q0)
    n = int(0.6 / dt) + 30
    rng = np.random.default_rng(1)
    targets = []
    for k in range(n):  # steps
        targets.append(q0 + (1.2 if (k // 40) % 2 else -1.2))
    for k in range(n):  # single-tick spikes on a constant target
        targets.append(q0 + (3.0 if k % 17 == 0 else 0.0))
    for k in range(n):  # oscillation at the Nyquist rate
        targets.append(q0 + (0.4 if k % 2 else -0.4))
    for k in range(n):  # beyond the position limits, alternating ends
        targets.append(np.asarray(lim.q_max) + 1.0 if (k // 60) % 2 == 0 else np.asarray(lim.q_min) - 1.0)
    for _ in range(n):  # white noise of large amplitude
        targets.append(q0 + rng.normal(scale=1.5, size=7))
    for k in range(n):  # NaN / Inf bursts and wrong shapes inside a moving stream
        if 10 <= k % 50 < 20:
            targets.append(np.full(7, np.nan))
        elif k % 50 == 25:
            targets.append(np.full(6, 0.1))
        elif k % 50 == 30:
            targets.append(np.array([np.inf] + [0.0] * 6))
        else:
            targets.append(q0 + 0.5 * np.sin(0.05 * k))
    outs, flags = run(f, targets)
    assert_within_limits(outs, f, q0)
    assert f.counts["input_rejected"] == sum(fl.input_rejected for fl in flags) > 0


@pytest.mark.parametrize("robot", ["fr3", "panda"])
def test_target_beyond_limit_stops_at_the_limit_without_overshoot(robot):
    dt = 0.001
    f = SafetyFilter(SafetyConfig(robot=robot, dt=dt, position_margin=0.02))
    lim = f.config.joint_limits
    q0 = mid(lim)
    f.reset(q0)
    outs, flags = run(f, [np.asarray(lim.q_max) + 0.5] * int(4.0 / dt))
    assert_within_limits(outs, f, q0)
    assert all(fl.position_clamped for fl in flags)
    hi = np.asarray(lim.q_max) - 0.02
    np.testing.assert_allclose(outs[-1], hi, atol=1e-9)
    assert np.max(np.array(outs) - hi) <= 1e-9
    # the full-speed approach starts braking ahead: the velocity is ~0 on arrival
    _, v, a = f.state
    assert np.all(np.abs(v) < 1e-6) and np.all(np.abs(a) < 1e-6)


def test_brake_ahead_when_the_stream_runs_into_a_limit_at_full_speed():
    # the target itself moves at the velocity limit straight through the upper limit
    dt = 0.001
    f = SafetyFilter(SafetyConfig(robot="fr3", dt=dt))
    lim = f.config.joint_limits
    q0 = mid(lim)
    f.reset(q0)
    t = np.arange(1, 3000) * dt
    targets = [q0 + np.minimum(t_ * 2.5, t_ * 2.5) for t_ in t]
    outs, flags = run(f, targets)
    assert_within_limits(outs, f, q0)
    assert any(fl.position_clamped for fl in flags)


def test_nan_burst_holds_the_last_valid_target():
    dt = 0.01
    f = SafetyFilter(SafetyConfig(robot="fr3", dt=dt))
    q0 = mid(FR3_LIMITS)
    f.reset(q0, gripper_init=0.04)
    goal = q0 + 0.3
    outs, flags = run(f, [goal] * 5 + [np.full(7, np.nan)] * 300 + ["garbage"] * 3, gripper=0.02)
    assert all(fl.input_rejected for fl in flags[5:])
    assert not any(fl.input_rejected for fl in flags[:5])
    np.testing.assert_allclose(outs[-1], goal, atol=1e-9)  # settled on the last valid target
    assert_within_limits(outs, f, q0)


def test_gripper_clamped_and_nan_held():
    f = SafetyFilter(SafetyConfig())
    q0 = mid(FR3_LIMITS)
    f.reset(q0, gripper_init=0.05)
    assert f.filter(q0, 0.03)[1] == 0.03
    _, g, fl = f.filter(q0, 0.2)
    assert g == 0.08 and fl.gripper_clamped
    _, g, fl = f.filter(q0, -1.0)
    assert g == 0.0 and fl.gripper_clamped
    _, g, fl = f.filter(q0, float("nan"))
    assert g == 0.0 and fl.gripper_rejected and f.counts["gripper_rejected"] == 1
    _, g, fl = f.filter(q0, None)  # no gripper command: keep
    assert g == 0.0 and not fl.any


def test_start_inside_the_margin_band_can_move_back_in():
    f = SafetyFilter(SafetyConfig(robot="panda", dt=0.004, position_margin=0.05))
    q0 = mid(PANDA_LIMITS)
    q0[0] = PANDA_LIMITS.q_max[0] - 0.01  # inside the margin band
    f.reset(q0)
    outs, _ = run(f, [mid(PANDA_LIMITS)] * 800)
    assert_within_limits(outs, f, q0)
    np.testing.assert_allclose(outs[-1], mid(PANDA_LIMITS), atol=1e-9)


# ---------------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(
    v0=st.floats(-3.0, 3.0),
    a0=st.floats(-20.0, 20.0),
    amax=st.floats(1.0, 20.0),
    jmax=st.floats(50.0, 10000.0),
    dt=st.sampled_from([0.001, 0.004, 0.02]),
)
def test_brake_profile_stops_exactly_within_acc_and_jerk(v0, a0, amax, jmax, dt):
    a0 = float(np.clip(a0, -amax, amax))
    acc, n = brake_profile(np.array([v0]), np.array([a0]), np.array([amax]), np.array([jmax]), dt)
    acc = acc[0, : n[0]]
    assert np.all(np.abs(acc) <= amax * (1 + 1e-12))
    jerk = np.diff(np.concatenate([[a0], acc])) / dt
    assert np.all(np.abs(jerk) <= jmax * (1 + 1e-9))
    assert acc[-1] == 0.0
    assert abs(v0 + dt * acc.sum()) <= 1e-9 * max(1.0, abs(v0))


_target_kind = st.sampled_from(["hold", "jump", "noise", "nan", "beyond", "sine"])


@st.composite
def streams(draw):
    robot = draw(st.sampled_from(["fr3", "panda"]))
    dt = draw(st.sampled_from([0.001, 0.004, 0.01, 0.02]))
    seed = draw(st.integers(0, 2**31 - 1))
    kinds = draw(st.lists(_target_kind, min_size=3, max_size=8))
    seg = draw(st.integers(5, 40))
    return robot, dt, seed, kinds, seg


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_property_output_never_violates_limits(params):
    robot, dt, seed, kinds, seg = params
    f = SafetyFilter(SafetyConfig(robot=robot, dt=dt))
    lim = f.config.joint_limits
    lo, hi = np.asarray(lim.q_min), np.asarray(lim.q_max)
    rng = np.random.default_rng(seed)
    q0 = lo + (hi - lo) * rng.uniform(0.05, 0.95, size=7)
    f.reset(q0)
    targets, cur = [], q0.copy()
    for kind in kinds:
        for k in range(seg):
            if kind == "jump" and k == 0:
                cur = lo + (hi - lo) * rng.uniform(0, 1, size=7)
            if kind == "noise":
                targets.append(cur + rng.normal(scale=0.5, size=7))
            elif kind == "nan":
                targets.append(np.where(rng.uniform(size=7) < 0.5, np.nan, cur))
            elif kind == "beyond":
                targets.append(np.where(rng.uniform(size=7) < 0.5, hi + 0.3, lo - 0.3))
            elif kind == "sine":
                targets.append(cur + 0.3 * np.sin(rng.uniform(0.5, 30) * k * dt))
            else:
                targets.append(cur.copy())
    outs, _ = run(f, targets)
    assert_within_limits(outs, f, q0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    robot=st.sampled_from(["fr3", "panda"]),
    dt=st.sampled_from([0.004, 0.01, 0.02]),
    start=st.lists(st.floats(0.02, 0.98), min_size=7, max_size=7),
    goal=st.lists(st.floats(-0.2, 1.2), min_size=7, max_size=7),
)
def test_property_converges_to_a_reachable_constant_target(robot, dt, start, goal):
    f = SafetyFilter(SafetyConfig(robot=robot, dt=dt))
    lim = f.config.joint_limits
    lo, hi = np.asarray(lim.q_min), np.asarray(lim.q_max)
    q0 = lo + (hi - lo) * np.asarray(start)
    target = lo + (hi - lo) * np.asarray(goal)  # may lie beyond a limit: reach the clamp
    f.reset(q0)
    # worst case: ~6 rad at >= 2.17 rad/s plus ramps: 4 s is ample
    outs, _ = run(f, [target] * int(4.0 / dt))
    assert_within_limits(outs, f, q0)
    np.testing.assert_allclose(outs[-1], np.clip(target, f._lo, f._hi), atol=1e-6)
