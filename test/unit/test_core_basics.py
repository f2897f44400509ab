"""Clocks, cycle timer (fake clock, no sleeps), chunk validation, action timeline, delay
estimator, RTC soft-mask schedules and BID scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from async_vla_ros.core import (
    ActionTimeline,
    Chunk,
    ChunkError,
    CycleTimer,
    DelayConfig,
    DelayEstimator,
    FakeClock,
    MonotonicClock,
    StepClock,
    bid_scores,
    bid_select,
    latency_to_steps,
    prefix_weights,
)

MS = 1_000_000


# ---------------------------------------------------------------------------- clocks
def test_fake_clock_moves_only_forward_by_hand():
    c = FakeClock()
    assert c.now_ns() == 0
    c.advance(0.0125)
    assert c.now_ns() == 12_500_000
    c.sleep_ns(5)
    assert c.now_ns() == 12_500_005 and c.sleep_calls == [5]
    with pytest.raises(ValueError):
        c.advance_ns(-1)
    with pytest.raises(ValueError):
        c.set_ns(0)
    with pytest.raises(ValueError):
        c.advance(float("nan"))


def test_monotonic_clock_is_monotonic():
    c = MonotonicClock()
    a, b = c.now_ns(), c.now_ns()
    assert b >= a


def test_step_clock_maps_time_to_floor_steps():
    c = FakeClock(start_ns=1_000)
    sc = StepClock(c, dt=0.02)
    assert sc.step() == 0
    c.advance_ns(20 * MS - 1)
    assert sc.step() == 0
    c.advance_ns(1)
    assert sc.step() == 1
    assert sc.step(now_ns=1_000 + 95 * MS) == 4
    assert sc.step_start_ns(3) == 1_000 + 60 * MS
    assert sc.step(now_ns=0) == -1  # a stamp before t0 maps to a negative step
    with pytest.raises(ValueError):
        StepClock(c, dt=0.0)


# ---------------------------------------------------------------------------- cycle timer
def test_cycle_timer_paces_on_the_absolute_grid_without_drift():
    c = FakeClock()
    timer = CycleTimer(0.010, c)
    timer.start()
    for _ in range(10):
        c.advance_ns(2 * MS)  # the work of the cycle
        info = timer.wait()
        assert not info.overrun and info.lateness_ns == 0
    assert c.now_ns() == 100 * MS
    assert c.sleep_calls == [8 * MS] * 10
    st = timer.stats()
    assert st.cycles == 10 and st.overruns == 0 and st.period_error_max_s == 0.0


def test_cycle_timer_overrun_skips_missed_grid_points():
    c = FakeClock()
    timer = CycleTimer(0.010, c)
    timer.start()
    c.advance_ns(3 * MS)
    assert not timer.wait().overrun  # t = 10 ms
    c.advance_ns(25 * MS)  # work runs until 35 ms: deadline 20 ms missed, 30 ms also passed
    info = timer.wait()
    assert info.overrun and info.deadline_ns == 20 * MS and info.missed == 1
    assert info.lateness_ns == 15 * MS
    c.advance_ns(1 * MS)
    info = timer.wait()  # back on the grid at 40 ms
    assert not info.overrun and c.now_ns() == 40 * MS and info.deadline_ns == 40 * MS
    st = timer.stats()
    assert st.overruns == 1 and st.missed == 1
    assert st.lateness_max_s == pytest.approx(0.015)


def test_cycle_timer_catch_up_runs_missed_cycles_back_to_back():
    c = FakeClock()
    timer = CycleTimer(0.010, c, catch_up=True)
    timer.start()
    c.advance_ns(25 * MS)
    info = timer.wait()
    assert info.overrun and info.missed == 0 and info.deadline_ns == 10 * MS
    info = timer.wait()  # deadline 20 ms is also in the past: returns at once
    assert info.overrun and info.deadline_ns == 20 * MS and c.now_ns() == 25 * MS
    info = timer.wait()
    assert not info.overrun and c.now_ns() == 30 * MS


def test_cycle_timer_tick_measures_period_error_and_overruns():
    c = FakeClock()
    timer = CycleTimer(0.010, c, overrun_tolerance_s=0.002)
    for step in (0, 10, 10, 11, 14, 10):
        c.advance_ns(step * MS)
        timer.tick()
    st = timer.stats()
    assert st.cycles == 6
    assert st.overruns == 1  # only the 14 ms interval exceeds 10 + 2 ms
    assert st.period_error_max_s == pytest.approx(0.004)
    assert st.period_error_mean_s == pytest.approx((0 + 0 + 1 + 4 + 0) / 5 * 1e-3)


def test_cycle_timer_validation():
    with pytest.raises(ValueError):
        CycleTimer(0.0, FakeClock())
    with pytest.raises(ValueError):
        CycleTimer(0.01, FakeClock(), overrun_tolerance_s=-1)


# ---------------------------------------------------------------------------- chunk
def test_chunk_validates_and_stores_a_read_only_copy():
    src = np.ones((4, 3))
    c = Chunk(1, 2, 5, src)
    src[0, 0] = 7.0
    assert c.actions[0, 0] == 1.0 and c.horizon == 4 and c.action_dim == 3
    with pytest.raises(ValueError):
        c.actions[0, 0] = 2.0
    with pytest.raises(ChunkError) as e:
        Chunk(1, 2, 5, np.ones(4))
    assert e.value.reason == "bad_shape"
    bad = np.ones((4, 3))
    bad[2, 1] = np.inf
    with pytest.raises(ChunkError) as e:
        Chunk(1, 2, 5, bad)
    assert e.value.reason == "non_finite"
    with pytest.raises(ChunkError):
        Chunk(True, 2, 5, np.ones((4, 3)))  # bools are not ids
    with pytest.raises(ChunkError):
        Chunk(1, 2, 5, np.ones((0, 3)))


# ---------------------------------------------------------------------------- timeline
def test_timeline_plan_prefix_and_history():
    tl = ActionTimeline(2)
    tl.set_plan_from(10, np.arange(8.0).reshape(4, 2), 7, np.arange(2, 6))
    assert tl.planned(9) is None
    e = tl.planned(11)
    assert e.chunk_id == 7 and e.k == 3 and e.action.tolist() == [2.0, 3.0]
    y, n_real = tl.prefix(12, 4)
    assert n_real == 2 and y.tolist() == [[4, 5], [6, 7], [6, 7], [6, 7]]
    assert tl.frozen_prefix(11, 2).tolist() == [[2, 3], [4, 5]]
    assert tl.frozen_prefix(20, 2) is None
    cid, acts, ks = tl.remaining_of_chunk(11)
    assert cid == 7 and acts.shape == (3, 2) and ks.tolist() == [3, 4, 5]
    # a second chunk replaces the plan from step 12 on
    tl.set_plan_from(12, np.full((3, 2), 9.0), 8, [4, 5, 6])
    assert tl.remaining_of_chunk(11)[2].tolist() == [3]
    for t in range(10, 16):
        tl.execute(t)
    assert tl.executed_provenance() == [(10, 7, 2), (11, 7, 3), (12, 8, 4), (13, 8, 5), (14, 8, 6)]
    assert [(s.t, s.from_chunk, s.to_chunk, s.k) for s in tl.switch_points] == [(10, None, 7, 2), (12, 7, 8, 4)]
    assert tl.is_standstill(16) and not tl.is_standstill(15)
    with pytest.raises(ValueError):
        tl.execute(3)


# ---------------------------------------------------------------------------- delay
def test_latency_to_steps_is_robust_to_float_noise():
    assert latency_to_steps(0.04, 0.02) == 2
    assert latency_to_steps(0.0401, 0.02) == 3
    assert latency_to_steps(0.0, 0.02) == 0
    assert latency_to_steps(0.06, 0.02) == 3  # 0.06/0.02 = 2.9999999999999996
    with pytest.raises(ValueError):
        latency_to_steps(-0.1, 0.02)


def test_warmup_spike_does_not_inflate_the_forecast():
    est = DelayEstimator(DelayConfig(window=5, warmup=2, d_init=1))
    est.observe_steps(40)  # first inference compiles
    est.observe_steps(30)
    assert est.forecast() == 1 and est.n_warmup_dropped == 2
    for _ in range(3):
        est.observe_steps(2)
    assert est.forecast() == 2


def test_spike_in_window_expires():
    est = DelayEstimator(DelayConfig(window=4, warmup=0))
    for d in (2, 2, 9):
        est.observe_steps(d)
    assert est.forecast() == 9  # max over the window
    for _i in range(3):
        est.observe_steps(2)
        assert est.forecast() == 9
    est.observe_steps(2)  # the 9 leaves the window of 4
    assert est.forecast() == 2


def test_quantile_and_clamps():
    est = DelayEstimator(DelayConfig(window=5, warmup=0, quantile=0.5))
    for d in (1, 2, 3, 4, 100):
        est.observe_steps(d)
    assert est.forecast() == 3
    est = DelayEstimator(DelayConfig(window=5, warmup=0, quantile=0.9, d_min=2, d_max=6))
    est.observe_steps(0)
    assert est.forecast() == 2
    est.observe_steps(50)
    assert est.forecast() == 6
    est = DelayEstimator(DelayConfig(warmup=0), dt=0.02)
    assert est.observe_latency(0.051) == 3 and est.forecast() == 3
    with pytest.raises(ValueError):
        DelayEstimator(DelayConfig()).observe_latency(0.1)  # no dt
    with pytest.raises(ValueError):
        est.observe_steps(-1)
    with pytest.raises(ValueError):
        DelayConfig(quantile=1.5)
    with pytest.raises(ValueError):
        DelayConfig(d_min=3, d_max=2)


# ---------------------------------------------------------------------------- RTC weights
def test_prefix_weights_match_the_rtc_reference_schedules():
    # reference docstring example: start=2, end=6, total=10 -> 1 1 4/5 3/5 2/5 1/5 0 0 0 0
    lin = prefix_weights(2, 4, 10, "linear")
    np.testing.assert_allclose(lin, [1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0, 0, 0])
    c = np.array([0.8, 0.6, 0.4, 0.2])
    np.testing.assert_allclose(prefix_weights(2, 4, 10, "exp")[2:6], c * (np.exp(c) - 1) / (math.e - 1))
    assert prefix_weights(2, 4, 10, "hard").tolist() == [1, 1] + [0] * 8
    assert prefix_weights(2, 4, 10, "ones").tolist() == [1] * 6 + [0] * 4
    assert prefix_weights(2, 4, 10, "zeros").tolist() == [0] * 10
    # the soft region stops at the plan's real actions; the frozen region always stays 1
    np.testing.assert_allclose(prefix_weights(2, 4, 10, "linear", n_real=4), [1, 1, 2 / 3, 1 / 3, 0, 0, 0, 0, 0, 0])
    assert prefix_weights(3, 6, 8, "exp").tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # d + s > H
    assert prefix_weights(0, 4, 8, "exp")[0] < 1.0  # d = 0: nothing frozen
    assert prefix_weights(2, 4, 8, "exp", n_real=0).tolist() == [0] * 8
    w = prefix_weights(2, 2, 16, "exp")
    assert np.all(np.diff(w) <= 0) and w.min() >= 0 and w.max() == 1
    with pytest.raises(ValueError):
        prefix_weights(2, 4, 8, "cosine")


# ---------------------------------------------------------------------------- BID
def test_bid_backward_coherence_picks_the_closest_candidate():
    h, a = 4, 2
    prefix = np.zeros((1, h, a))
    weights = np.array([[1.0, 1.0, 0.0, 0.0]])
    cands = np.stack([np.full((h, a), v) for v in (3.0, 0.5, 1.0, -2.0)])[None]
    s = bid_scores(cands, prefix, weights, forward=False)
    # the two most coherent (ceil(4 / 3) = 2) stay, the others are pruned
    np.testing.assert_allclose(s[0, [1, 2]], [0.5 * math.sqrt(2), 1.0 * math.sqrt(2)])
    assert np.isinf(s[0, [0, 3]]).all()
    s_all = bid_scores(cands, prefix, weights, forward=False, num_mode=1)
    np.testing.assert_allclose(s_all[0], np.array([3.0, 0.5, 1.0, 2.0]) * math.sqrt(2))
    assert bid_select(cands, prefix, weights, forward=False).tolist() == [1]
    # only the overlap (weights > 0) counts
    cands2 = cands.copy()
    cands2[0, 0, 2:] = 100.0
    assert bid_select(cands2, prefix, weights, forward=False, num_mode=1).tolist() == [1]


def test_bid_forward_contrast_prefers_the_mode_and_avoids_the_weak_policy():
    h, a = 3, 1
    vals = np.array([0.0, 0.25, 0.5, 0.75])  # exact in binary: ties stay ties
    cands = (vals[:, None, None] * np.ones((4, h, a)))[None]
    s = bid_scores(cands, None, None, forward=True)
    # positive term: mean distance to the k = 4 // 2 = 2 nearest other candidates
    np.testing.assert_allclose(s[0], [0.375, 0.25, 0.25, 0.375])
    assert bid_select(cands, None, None).tolist() == [1]  # tie 1/2: lowest index
    weak = np.zeros((1, 2, h, a))  # the weak policy proposes 0.0; negative term: distance to it
    s2 = bid_scores(cands, None, None, weak, forward=True)
    np.testing.assert_allclose(s2[0], [0.375, 0.0, -0.25, -0.375])
    assert bid_select(cands, None, None, weak).tolist() == [3]
    assert bid_select(cands, None, None, weak, forward=False).tolist() == [0]  # all scores 0


def test_bid_batched_and_validated():
    rng = np.random.default_rng(0)
    cands = rng.normal(size=(3, 5, 4, 2))
    prefix = cands[:, 2].copy()  # candidate 2 matches the previous plan exactly
    w = np.ones((3, 4))
    assert bid_select(cands, prefix, w, forward=False).tolist() == [2, 2, 2]
    with pytest.raises(ValueError):
        bid_scores(cands, prefix, None)
    with pytest.raises(ValueError):
        bid_scores(cands, prefix[:, :2], w)
    with pytest.raises(ValueError):
        bid_scores(cands, prefix, -w)
