"""ChunkScheduler + merge strategies driven in lockstep: which action (chunk id, k) executes at
every step, what each request carries, and validation of arriving chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from async_vla_ros.core import (
    Chunk,
    ChunkScheduler,
    DelayConfig,
    DelayEstimator,
    SchedulerConfig,
    make_strategy,
    prefix_weights,
)

H, A = 8, 2


def encode(request_id: int, k: int) -> float:
    """Action value that identifies its source: chunk/request id and index k."""
    return 100.0 * request_id + k


def make_chunk(spec, chunk_id=None, horizon=H, t_obs=None):
    acts = np.array([[encode(spec.request_id, k), -encode(spec.request_id, k)] for k in range(horizon)])
    return Chunk(
        spec.request_id if chunk_id is None else chunk_id, spec.request_id, spec.t_obs if t_obs is None else t_obs, acts
    )


def simulate(name, d, s_min, steps=24, horizon=H, delays=None, ahead=False, **kw):
    """Lockstep run with a fixed true delay d (or per-request ``delays``); the delay estimator
    knows d from the start. ``ahead``: each request is issued one step before its observation
    (``maybe_request(t, ahead=1)``), its chunk computed from step t_obs on.
    Returns (sched, executed [(cid, k) | None], specs, results)."""
    sched = ChunkScheduler(
        SchedulerConfig(horizon, A, s_min=s_min),
        name,
        DelayEstimator(DelayConfig(warmup=0, d_init=d)),
        **kw,
    )
    pending: list[tuple[int, Chunk]] = []
    executed, specs, results = [], [], []
    for t in range(steps):
        for item in [p for p in pending if p[0] == t]:
            pending.remove(item)
            results.append(sched.on_chunk(item[1], t))
        spec = sched.maybe_request(t)
        if spec is None and ahead:
            spec = sched.maybe_request(t, ahead=1)
            if spec is not None:
                assert spec.t_obs == t + 1
                specs.append(spec)
                dd = d if delays is None else delays[spec.request_id]
                pending.append((spec.t_obs + dd, make_chunk(spec, horizon=horizon)))
                spec = None
        if spec is not None:
            specs.append(spec)
            dd = d if delays is None else delays[spec.request_id]
            chunk = make_chunk(spec, horizon=horizon)
            if dd == 0:
                results.append(sched.on_chunk(chunk, t))
            else:
                pending.append((t + dd, chunk))
        act = sched.action_at(t)
        if act is None:
            executed.append(None)
        else:
            rid, k = divmod(int(round(act[0])), 100)
            assert act[1] == -act[0]
            executed.append((rid, k))
    return sched, executed, specs, results


def seq(*segments):
    """Build an expected list from (count None) ints and (cid, k_start, n) triples."""
    out = []
    for s in segments:
        if isinstance(s, int):
            out += [None] * s
        else:
            cid, k0, n = s
            out += [(cid, k0 + i) for i in range(n)]
    return out


# ---------------------------------------------------------------------------- execution
@pytest.mark.parametrize("name", ["naive", "rtc", "rtc_hard", "remac", "bid"])
def test_async_switching_d2_s4(name):
    # first chunk from standstill starts at its own index 0 when it arrives (t=2); each next
    # request goes out when s - d = 2 actions of the current chunk have executed and arrives
    # after s = 4 of them, skipping its first d = 2 actions
    _, ex, specs, res = simulate(name, d=2, s_min=4, steps=14)
    assert ex == seq(2, (0, 0, 4), (1, 2, 4), (2, 2, 4))
    assert [s.t_obs for s in specs] == [0, 4, 8, 12]
    assert [r.k_start for r in res] == [0, 2, 2]
    assert [r.measured_d for r in res] == [2, 2, 2]


@pytest.mark.parametrize("name", ["naive", "rtc", "rtc_hard", "remac", "bid", "sync", "te"])
@pytest.mark.parametrize("d, s_min", [(0, 1), (1, 1), (2, 4), (3, 2), (5, 1)])
def test_a_request_issued_one_step_ahead_is_the_request_of_its_step(name, d, s_min):
    # the scheduler node sends each request one control step before its observation
    # (request_ahead): the same request, the same chunks executed at the same steps
    base = simulate(name, d=d, s_min=s_min, steps=30)
    early = simulate(name, d=d, s_min=s_min, steps=30, ahead=True)
    assert early[1] == base[1]
    issued = [r for r in early[2] if r.t_obs < 30]  # (one may be issued at step 29 for step 30)
    assert len(issued) == len(base[2]) > 1
    for a, b in zip(issued, base[2]):
        assert (a.request_id, a.t_obs, a.d, a.s, a.sampler, a.n_frozen, a.n_real) == (
            b.request_id,
            b.t_obs,
            b.d,
            b.s,
            b.sampler,
            b.n_frozen,
            b.n_real,
        )
        np.testing.assert_array_equal(a.prefix, b.prefix)
        np.testing.assert_array_equal(a.weights, b.weights)
    # the first request of an episode has no step before it: it goes out with its observation
    assert base[2][0].t_obs == early[2][0].t_obs == 0


def test_maybe_request_ahead_is_validated():
    sched = ChunkScheduler(SchedulerConfig(H, A), "naive", DelayEstimator(DelayConfig()))
    with pytest.raises(ValueError, match="ahead"):
        sched.maybe_request(0, ahead=-1)


def test_naive_d0_executes_from_index_0_without_holding():
    _, ex, specs, _ = simulate("naive", d=0, s_min=4, steps=12)
    assert ex == seq((0, 0, 4), (1, 0, 4), (2, 0, 4))
    assert [s.t_obs for s in specs] == [0, 4, 8]


def test_naive_d_equals_s_equals_half_horizon():
    # d = s = H/2: the next chunk is requested the moment the previous one arrives and lands
    # exactly when the old plan ends; it must NOT be mistaken for a start from standstill
    _, ex, specs, _ = simulate("naive", d=4, s_min=4, steps=20)
    assert ex == seq(4, (0, 0, 4), (1, 4, 4), (2, 4, 4), (3, 4, 4))
    assert [s.t_obs for s in specs] == [0, 4, 8, 12, 16]


def test_sync_executes_s_then_holds_d_and_restarts_at_index_0():
    _, ex, specs, res = simulate("sync", d=2, s_min=1, steps=22)
    assert ex == seq(2, (0, 0, 8), 2, (1, 0, 8), 2)
    assert [s.t_obs for s in specs] == [0, 10, 20]
    assert all(r.k_start == 0 for r in res)
    _, ex, _, _ = simulate("sync", d=2, s_min=1, steps=14, s=4)
    assert ex == seq(2, (0, 0, 4), 2, (1, 0, 4), 2)


def test_sync_d0_never_holds():
    _, ex, _, _ = simulate("sync", d=0, s_min=1, steps=16)
    assert ex == seq((0, 0, 8), (1, 0, 8))


def test_first_chunk_from_standstill_starts_at_index_0_with_long_delay():
    sched, ex, _, res = simulate("naive", d=5, s_min=5, steps=8)
    assert ex[:5] == [None] * 5 and ex[5] == (0, 0)
    assert res[0].measured_d == 5 and res[0].k_start == 0
    assert sched.timeline.switch_points[0].t == 5 and sched.timeline.switch_points[0].k == 0


def test_plan_running_dry_restarts_the_late_chunk_at_index_0():
    # request 1 is answered after the plan ran out (robot held): start at its index 0
    delays = {0: 0, 1: 9, **{i: 1 for i in range(2, 20)}}
    _, ex, specs, res = simulate("naive", d=1, s_min=2, steps=16, delays=delays)
    # chunk 0 runs k=0..7 at t=0..7 and its measured delay (0) becomes the forecast, so
    # request 1 goes out at t=2 (s = s_min = 2); it arrives at t=11 after three hold steps
    assert specs[1].t_obs == 2
    assert ex[:12] == seq((0, 0, 8), 3, (1, 0, 1))
    assert res[1].k_start == 0 and res[1].measured_d == 9


def test_te_ensembles_all_covering_chunks_with_act_weights():
    m = 0.05
    sched = ChunkScheduler(SchedulerConfig(4, 1, s_min=1), "te", DelayEstimator(DelayConfig(warmup=0)), m=m)
    got = []
    for t in range(12):
        spec = sched.maybe_request(t)
        # chunk c predicts the constant value c for every step
        sched.on_chunk(Chunk(spec.request_id, spec.request_id, t, np.full((4, 1), float(spec.request_id))), t)
        got.append(float(sched.action_at(t)[0]))
    for t in range(12):
        cover = list(range(max(0, t - 3), t + 1))  # chunks requested at t-3..t predict step t
        w = np.exp(-m * np.arange(len(cover)))  # i = 0 is the oldest
        assert got[t] == pytest.approx(float(np.dot(w, cover) / w.sum()), abs=1e-12)
    # plan provenance: newest contributing chunk and its index (k = 0 here)
    assert sched.timeline.executed_provenance()[5] == (5, 5, 0)


def test_te_with_m_zero_is_the_plain_mean():
    sched = ChunkScheduler(SchedulerConfig(4, 1, s_min=1), "te", m=0.0)
    vals = []
    for t in range(6):
        spec = sched.maybe_request(t)
        sched.on_chunk(Chunk(t, spec.request_id, t, np.full((4, 1), float(t))), t)
        vals.append(float(sched.action_at(t)[0]))
    assert vals == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.5, 3.5])


# ---------------------------------------------------------------------------- requests
def test_rtc_request_carries_prefix_and_soft_mask():
    _, _, specs, res = simulate("rtc", d=2, s_min=4, steps=10)
    first, second, third = specs[:3]
    assert first.sampler == "rtc" and first.n_real == 0 and not first.weights.any()
    # request at t=4: chunk 0 (started at index 0 at t=2) has k=2..7 left for t=4..9
    assert second.t_obs == 4 and second.d == 2 and second.s == 4 and second.n_real == 6
    assert second.prefix[:, 0].tolist() == [encode(0, k) for k in (2, 3, 4, 5, 6, 7, 7, 7)]
    np.testing.assert_allclose(second.weights, prefix_weights(2, 4, H, "exp", n_real=6))
    c = np.array([2 / 3, 1 / 3])
    np.testing.assert_allclose(second.weights, [1, 1, *(c * np.expm1(c) / (math.e - 1)), 0, 0, 0, 0])
    assert second.n_frozen == 2
    # steady state: chunk 1 (k=2..7 at t=6..11) leaves H - s = 4 real actions at t=8
    assert third.n_real == 4 and third.prefix[:, 0].tolist() == [encode(1, k) for k in (4, 5, 6, 7, 7, 7, 7, 7)]
    assert (res[1].n_frozen, res[1].n_soft, res[1].n_free) == (2, 2, 4)


def test_remac_and_bid_requests():
    _, _, specs, _ = simulate("remac_clean", d=3, s_min=4, steps=10)
    s = specs[1]
    assert s.sampler == "prefix" and s.n_frozen == 3 and s.weights.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    _, _, specs, _ = simulate("remac", d=3, s_min=4, steps=10)  # the authors' variant: the whole old plan
    s = specs[1]
    assert s.sampler == "remac" and s.n_frozen == 3
    assert s.weights.tolist() == [1.0 if i < s.n_real else 0.0 for i in range(8)]
    _, _, specs, _ = simulate("bid", d=2, s_min=4, steps=10, rho=0.5)
    s = specs[1]
    assert s.sampler == "bid" and s.n_frozen == 0
    np.testing.assert_allclose(s.weights, [1, 0.5, 0.25, 0.125, 1 / 16, 1 / 32, 0, 0])
    _, _, specs, _ = simulate("naive", d=2, s_min=4, steps=10)
    assert specs[1].sampler == "vanilla" and not specs[1].weights.any()


def test_only_one_request_in_flight_and_timeout_reissues():
    sched = ChunkScheduler(SchedulerConfig(H, A, request_timeout=5), "naive")
    first = sched.maybe_request(0)
    assert first is not None
    assert all(sched.maybe_request(t) is None for t in range(1, 5))
    second = sched.maybe_request(5)  # 5 steps without answer: abandoned, re-issued
    assert second is not None and second.request_id == first.request_id + 1 and second.t_obs == 5
    assert sched.n_timeouts == 1
    r = sched.on_chunk(make_chunk(first), 6)
    assert not r.accepted and r.reason == "stale"
    assert sched.on_chunk(make_chunk(second, chunk_id=99), 6).accepted


def test_request_spec_arrays_are_read_only_copies():
    _, _, specs, _ = simulate("rtc", d=2, s_min=4, steps=6)
    with pytest.raises(ValueError):
        specs[1].prefix[0, 0] = 1.0
    with pytest.raises(ValueError):
        specs[1].weights[0] = 0.0


# ---------------------------------------------------------------------------- validation
def test_rejects_are_reasoned_and_counted():
    sched = ChunkScheduler(SchedulerConfig(H, A), "naive")
    spec = sched.maybe_request(0)
    good = make_chunk(spec, chunk_id=10)
    bad_shape = Chunk(11, spec.request_id, 0, np.zeros((H - 1, A)))
    assert sched.on_chunk(bad_shape, 1).reason == "bad_shape"
    nan = np.zeros((H, A))
    nan[3, 1] = np.nan
    assert sched.on_message(12, spec.request_id, 0, nan, 1).reason == "non_finite"
    assert sched.on_message(13, spec.request_id, 0, np.zeros((H, A)), 1, latency_s=-1.0).reason == "bad_field"
    assert sched.on_chunk(Chunk(14, 999, 0, np.zeros((H, A))), 1).reason == "unknown_request"
    assert sched.on_chunk(Chunk(15, spec.request_id, 1, np.zeros((H, A))), 1).reason == "t_obs_mismatch"
    r = sched.on_chunk(good, 1)
    assert r.accepted and r.measured_d == 1
    assert sched.on_chunk(good, 2).reason == "duplicate"  # same chunk id again
    assert sched.on_chunk(make_chunk(spec, chunk_id=16), 2).reason == "duplicate"  # request answered
    assert sched.stats()["rejected"] == {
        "bad_shape": 1,
        "non_finite": 1,
        "bad_field": 1,
        "unknown_request": 1,
        "t_obs_mismatch": 1,
        "duplicate": 2,
    }
    assert sched.stats()["accepted"] == 1


def test_out_of_order_after_a_newer_request_was_accepted():
    sched = ChunkScheduler(SchedulerConfig(H, A, request_timeout=2), "naive", DelayEstimator(DelayConfig(warmup=0)))
    s0 = sched.maybe_request(0)
    s1 = sched.maybe_request(2)  # s0 abandoned after 2 steps
    assert s1 is not None and s1.request_id == s0.request_id + 1
    assert sched.on_chunk(make_chunk(s1, chunk_id=1), 2).accepted  # d = 0 is allowed
    r = sched.on_chunk(make_chunk(s0, chunk_id=0), 3)
    assert not r.accepted and r.reason == "out_of_order"


def test_time_going_backwards_is_a_programming_error():
    sched = ChunkScheduler(SchedulerConfig(H, A), "naive")
    sched.action_at(0)
    spec = sched.maybe_request(3)
    with pytest.raises(ValueError, match="backwards"):
        sched.on_chunk(Chunk(0, spec.request_id, 3, np.zeros((H, A))), 2)


def test_expired_chunk_is_rejected_when_the_plan_still_runs():
    # chunk 0 starts late (t=3, k=0..3 at t=3..6); chunk 1 requested at t=3 arrives at t=7 with
    # measured delay 4 = H: all its actions are in the past while the plan still covers t=6
    h = 4
    sched = ChunkScheduler(SchedulerConfig(h, A, s_min=1), "naive", DelayEstimator(DelayConfig(warmup=0)))
    s0 = sched.maybe_request(0)
    for t in range(3):
        sched.action_at(t)
    assert sched.on_chunk(make_chunk(s0, horizon=h), 3).k_start == 0
    s1 = sched.maybe_request(3)
    assert s1 is not None and s1.t_obs == 3
    for t in range(3, 7):
        sched.action_at(t)
    r = sched.on_chunk(make_chunk(s1, horizon=h), 7)
    assert not r.accepted and r.reason == "expired"
    assert sched.outstanding is None  # a new request may go out


def test_boundary_jump_and_chunk_arriving_after_action_at():
    sched = ChunkScheduler(SchedulerConfig(4, 1, s_min=2), "naive", DelayEstimator(DelayConfig(warmup=0)))
    s0 = sched.maybe_request(0)
    sched.on_chunk(Chunk(0, s0.request_id, 0, np.arange(4.0)[:, None]), 0)
    assert sched.action_at(0)[0] == 0.0
    assert sched.action_at(1)[0] == 1.0
    s1 = sched.maybe_request(2)
    assert sched.action_at(2)[0] == 2.0
    # arrives after action_at(2): merged from step 3 (k = 1), jump vs. executed action 2.0
    r = sched.on_chunk(Chunk(1, s1.request_id, 2, np.array([[10.0], [20.0], [30.0], [40.0]])), 2)
    assert r.accepted and r.t_switch == 3 and r.k_start == 1 and r.measured_d == 1
    assert r.boundary_jump == pytest.approx(18.0)
    assert sched.action_at(3)[0] == 20.0


def test_action_at_returns_copies_and_time_is_monotonic():
    sched, _, _, _ = simulate("naive", d=0, s_min=4, steps=2)
    a = sched.action_at(2)
    a[0] = 12345.0
    assert sched.action_at(2)[0] != 12345.0
    with pytest.raises(ValueError):
        sched.action_at(1)


def test_make_strategy_did_you_mean_and_bad_options():
    with pytest.raises(ValueError, match="did you mean 'naive'"):
        make_strategy("naiv")
    with pytest.raises(ValueError, match="did you mean 'remac'"):
        make_strategy("remak")
    with pytest.raises(ValueError, match="bad options"):
        make_strategy("naive", m=0.1)
    with pytest.raises(ValueError):
        make_strategy("rtc", schedule="cosine")
    with pytest.raises(ValueError):
        make_strategy("rtc_hard", schedule="exp")
    assert make_strategy("rtc_hard").schedule == "hard" and make_strategy("rtc_hard").name == "rtc_hard"
    samplers = {
        n: make_strategy(n).sampler for n in ["sync", "naive", "te", "rtc", "rtc_hard", "remac", "remac_clean", "bid"]
    }
    assert samplers == {
        "sync": "vanilla",
        "naive": "vanilla",
        "te": "vanilla",
        "rtc": "rtc",
        "rtc_hard": "rtc",
        "remac": "remac",
        "remac_clean": "prefix",
        "bid": "bid",
    }


def test_scheduler_config_validation():
    with pytest.raises(ValueError):
        SchedulerConfig(0, 2)
    with pytest.raises(ValueError):
        SchedulerConfig(8, 2, s_min=9)
    with pytest.raises(ValueError):
        SchedulerConfig(8, 2, request_timeout=0)
    with pytest.raises(TypeError):
        ChunkScheduler(SchedulerConfig(8, 2), 42)  # type: ignore[arg-type]


def test_reset_starts_a_new_episode_and_rejects_late_chunks_of_the_old_one():
    sched, _, specs, _ = simulate("rtc", d=2, s_min=4, steps=10)
    old_spec = sched.outstanding
    assert old_spec is not None
    sched.reset()
    assert sched.timeline.planned(10) is None and sched.outstanding is None
    assert sched.delay.forecast() == 2  # delay statistics survive the episode boundary
    r = sched.on_chunk(make_chunk(old_spec, chunk_id=500), 0)  # time may restart at 0
    assert not r.accepted and r.reason == "unknown_request"
    spec = sched.maybe_request(0)
    assert spec.request_id == old_spec.request_id + 1 and spec.n_real == 0
    sched.reset(keep_delay_stats=False)
    assert sched.delay.samples == []
