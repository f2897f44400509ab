"""robot.session + robot.stress: the scheduler-driven 1 kHz stream, without a robot."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.core.strategies import STRATEGIES
from async_vla_ros.robot.session import SessionConfig, StreamingSession, TargetStream
from async_vla_ros.robot.streamer import MotionMonitor, StreamerConfig
from async_vla_ros.robot.stress import FR3_HOME, StressConfig, StressPolicy

HOME = np.asarray(FR3_HOME)


def _run(strategy: str, delay: int, safety: bool, seconds: float, interpolation: str = "linear"):
    sess = StreamingSession(
        StressPolicy(StressConfig()),
        SessionConfig(
            strategy=strategy, delay_steps=delay, streamer=StreamerConfig(interpolation=interpolation, safety=safety)
        ),
    )
    sess.start(HOME)
    mon = MotionMonitor("fr3")
    mon.reset(HOME)
    cmds = []
    for _ in range(int(seconds * 1000)):
        c = sess.advance(1)
        mon.update(c.q_cmd)
        cmds.append(c.q_cmd)
    return sess, mon, np.asarray(cmds)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_streams_within_limits_at_high_delay(strategy):
    sess, mon, _ = _run(strategy, delay=6, safety=True, seconds=2.0)
    assert mon.total_violations == 0, mon.summary()
    st = sess.stats()
    assert st["ticks"] == 2000 and st["steps"] == 40
    assert st["scheduler"]["accepted"] >= 2
    assert st["max_switch_jump"] > 0.05  # the stress source really switches discontinuously


def test_without_the_filter_the_same_stress_breaks_the_limits():
    _, mon, _ = _run("naive", delay=4, safety=False, seconds=2.0)
    assert mon.violations["velocity"] > 0 and mon.violations["acceleration"] > 0


def test_cubic_interpolation_is_also_kept_within_limits():
    _, mon, _ = _run("te", delay=8, safety=True, seconds=1.5, interpolation="cubic")
    assert mon.total_violations == 0


def test_simulated_delay_is_the_measured_delay_and_runs_are_deterministic():
    s1, _, c1 = _run("naive", delay=3, safety=True, seconds=1.5)
    _, _, c2 = _run("naive", delay=3, safety=True, seconds=1.5)
    np.testing.assert_array_equal(c1, c2)
    ds = [m["measured_d"] for m in s1.merges if m["accepted"]]
    assert ds and all(d == 3 for d in ds)
    # nothing moves until the first chunk arrives (3 steps = 150 ticks)
    np.testing.assert_array_equal(c1[:150], np.broadcast_to(HOME, (150, 7)))
    assert not np.allclose(c1[200], HOME)


def test_session_validation():
    with pytest.raises(ValueError, match="unknown strategy"):
        SessionConfig(strategy="rtcc")
    with pytest.raises(ValueError, match="delay_steps"):
        SessionConfig(delay_steps=-1)
    sess = StreamingSession(StressPolicy())
    with pytest.raises(RuntimeError, match="start"):
        sess.advance(1)
    sess.start(HOME)
    with pytest.raises(ValueError, match="n_ticks"):
        sess.advance(0)


def test_target_stream_uses_the_latest_target_per_step():
    ts = TargetStream(StreamerConfig(control_dt=0.005, safety=False))
    ts.start(HOME)
    ts.submit(HOME + 0.01)
    ts.submit(HOME + 0.02)  # latest wins
    out = [ts.advance(1).q_cmd for _ in range(5)]
    np.testing.assert_allclose(out[-1], HOME + 0.02)
    out = [ts.advance(1).q_cmd for _ in range(5)]  # nothing new: hold
    np.testing.assert_allclose(out[-1], HOME + 0.02)
    assert ts.stats()["submitted"] == 2 and ts.stats()["used"] == 1
    with pytest.raises(ValueError, match="7 finite"):
        ts.submit([0.0] * 6)
    ts.stop()
    ts.advance(1)
    assert ts.settled()


# ---------------------------------------------------------------------- stress policy
def test_stress_policy_is_deterministic_and_honours_the_samplers():
    pol = StressPolicy(StressConfig(horizon=6, jump=0.1))
    obs = np.array([[10.0]])
    a = pol.infer(obs, seed=3)
    np.testing.assert_array_equal(a, pol.infer(obs, seed=3))
    assert a.shape == (1, 6, 7)
    assert not np.allclose(a, pol.infer(obs, seed=4))  # another chunk: another offset
    prefix = np.zeros((1, 6, 7)) + HOME
    w = np.array([[1.0, 1.0, 0.5, 0.0, 0.0, 0.0]])
    r = pol.infer(obs, "rtc", prefix, w, seed=3)
    np.testing.assert_allclose(r[0, :2], prefix[0, :2])
    np.testing.assert_allclose(r[0, 2], 0.5 * prefix[0, 2] + 0.5 * a[0, 2])
    np.testing.assert_allclose(r[0, 3:], a[0, 3:])
    p = pol.infer(obs, "prefix", prefix, None, np.array([3]), seed=3)
    np.testing.assert_allclose(p[0, :3], prefix[0, :3])
    np.testing.assert_allclose(p[0, 3:], a[0, 3:])
    # bid: the candidate equal to the prefix wins
    cands = pol.raw_chunk(10, 3 * 1009, pol.config.n_candidates)
    b = pol.infer(obs, "bid", cands[2][None], np.ones((1, 6)), seed=3)
    np.testing.assert_allclose(b[0], cands[2])
    with pytest.raises(ValueError, match="obs"):
        pol.infer(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="jump"):
        StressConfig(jump=1.0)
