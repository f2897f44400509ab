"""Scripted experts: closed-loop success, the ChunkPolicy contract, and the delay sweep."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.assets import panda_available

pytestmark = pytest.mark.skipif(not panda_available(), reason="Panda model not fetched (make setup)")

from async_vla_ros.sim.env import BatchedPandaEnv  # noqa: E402
from async_vla_ros.sim.experts import ScriptedExpert, arm_side, expert_side  # noqa: E402
from async_vla_ros.sim.lockstep import LockstepConfig, run_lockstep  # noqa: E402
from async_vla_ros.sim.tasks import TASKS  # noqa: E402


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_closed_loop_success(task):
    n = 10
    env = BatchedPandaEnv(task, n)
    expert = ScriptedExpert(env.task)
    obs = env.reset(range(100, 100 + n))
    while not env.done:
        obs = env.step(expert.act(obs))
    rate = env.success().mean()
    env.close()
    assert rate >= 0.9, f"{task}: expert success {rate:.2f} < 0.9"


def test_holding_still_fails_where_the_world_moves():
    # The tasks are not solvable by standing still (they need the expert's reactions).
    for task in ("track", "bifurcate", "pick_moving"):
        env = BatchedPandaEnv(task, 6)
        env.reset(range(6))
        while not env.done:
            env.step(env.command)
        assert env.success().mean() <= 0.2, task
        env.close()


def test_expert_chunk_contract_and_samplers():
    ex = ScriptedExpert("track", horizon=8)
    env = BatchedPandaEnv("track", 3, threads=1)
    obs = env.reset([0, 1, 2])
    env.close()
    chunk = ex.infer(obs)
    assert chunk.shape == (3, 8, 8)
    np.testing.assert_array_equal(ex.act(obs), chunk[:, 0])
    prefix = np.zeros((3, 8, 8))
    out = ex.infer(obs, sampler="prefix", prefix=prefix, n_frozen=np.array([0, 2, 8]))
    np.testing.assert_array_equal(out[0], chunk[0])
    np.testing.assert_array_equal(out[1, :2], 0.0)
    np.testing.assert_array_equal(out[1, 2:], chunk[1, 2:])
    np.testing.assert_array_equal(out[2], 0.0)
    w = np.tile(np.linspace(1, 0, 8), (3, 1))
    rtc = ex.infer(obs, sampler="rtc", prefix=prefix, weights=w)
    np.testing.assert_allclose(rtc, (1 - w)[..., None] * chunk)
    with pytest.raises(ValueError, match="sampler"):
        ex.infer(obs, sampler="ddim")
    with pytest.raises(ValueError, match="shape"):
        ex.infer(obs[:, :5])
    noisy = ScriptedExpert("track", noise_std=0.01)
    np.testing.assert_array_equal(noisy.infer(obs, seed=5), noisy.infer(obs, seed=5))
    assert not np.allclose(noisy.infer(obs, seed=5), chunk)


def test_bifurcate_sides_are_bimodal():
    sides = expert_side(np.random.default_rng(0).uniform(-0.08, 0.08, 400))
    assert set(np.unique(sides)) == {-1.0, 1.0}
    assert 0.35 < (sides > 0).mean() < 0.65


def test_arm_side_known_answers():
    tcp = np.array(
        [[0.30, 0.05, 0.15], [0.40, 0.05, 0.15], [0.40, -0.05, 0.15], [0.40, 0.005, 0.15], [0.60, 0.1, 0.15]]
    )
    pole = np.tile([0.52, 0.0, 0.1], (5, 1))
    got = arm_side(tcp, pole, default=np.full(5, 7.0), reach_x=0.175)
    # too far before the pole: the default; near it: the side it is on; in front of its centre: the default
    np.testing.assert_array_equal(got, [7.0, 1.0, -1.0, 7.0, 1.0])


def test_bifurcate_labels_keep_the_side_the_arm_took():
    """DAgger on a bimodal task: a driver passes the pole on the side the goal's expert would not.
    Labelled with keep_arm_side the expert goes on round that side and reaches the goal; the goal's
    expert plans back across the pole, which is what the labels of such a round taught the VLA."""
    n = 10
    env = BatchedPandaEnv("bifurcate", n, threads=1)
    obs = env.reset(range(300, 300 + n))
    sl = env.task.obs_slices
    goal_y = obs[:, sl["goal_pos"]][:, 1]
    # the driver: the expert for a goal 0.1-0.5 mm away whose side is the other one
    nudge = np.array(
        [next(k * 1e-4 for k in range(1, 50) if expert_side(g + k * 1e-4) != expert_side(g)) for g in goal_y]
    )
    driver, keep, goal_side = (
        ScriptedExpert("bifurcate"),
        ScriptedExpert("bifurcate", keep_arm_side=True),
        ScriptedExpert("bifurcate"),
    )
    reach = 0.175  # where the expert starts bending round the pole (experts._plan_bifurcate)
    handed = np.zeros(n, dtype=bool)
    passed_on = np.zeros(n)  # the side of the pole each arm was on when it passed the pole's x
    checked = False
    for _ in range(env.episode_steps):
        if env.done:
            break
        tcp, pole = obs[:, sl["tcp"]], obs[:, sl["pole_pos"]]
        handed |= (tcp[:, 0] > pole[:, 0] - reach + 0.03) & (np.abs(tcp[:, 1] - pole[:, 1]) > 0.02)
        passing = (passed_on == 0) & (tcp[:, 0] >= pole[:, 0])
        passed_on[passing] = np.sign(tcp[passing, 1] - pole[passing, 1])
        if handed.all() and not checked:
            checked = True
            # the arms are on the driver's side; the goal's expert heads back towards the other one
            took = np.sign(tcp[:, 1] - pole[:, 1])
            assert (took == -expert_side(goal_y)).mean() >= 0.8
            other = took != expert_side(goal_y)
            back = goal_side.infer(obs)[:, -1]  # its last waypoint's joints: where it is heading
            stay = keep.infer(obs)[:, -1]
            from async_vla_ros.sim import kinematics as K

            y_back, y_stay = K.fk(back[:, :7])[0][:, 1], K.fk(stay[:, :7])[0][:, 1]
            assert ((y_back - tcp[:, 1]) * took < (y_stay - tcp[:, 1]) * took)[other].all()
        fooled = obs.copy()
        fooled[:, sl["goal_pos"].start + 1] += nudge
        obs = env.step(np.where(handed[:, None], keep.act(obs), driver.act(fooled)))
    assert handed.all() and checked
    assert env.success().mean() >= 0.8  # the labels lead to the goal from where the driver went
    assert (passed_on == -expert_side(goal_y)).mean() >= 0.8  # round the driver's side
    env.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_degrades_with_delay(task):
    """Open-loop chunks (H=8) under naive async: stale chunks fail in every task.

    Success at d=0 is high; at d=4 (s = max(d, 1) = 4) it is clearly lower. Numbers printed.
    """
    ex = ScriptedExpert(task)
    rates = {}
    for d in (0, 4):
        res = run_lockstep(ex, LockstepConfig(task=task, strategy="naive", delay=d, episodes=20, batch=20, seed=1))
        rates[d] = res.success_rate
    print(f"{task}: naive expert success d=0 {rates[0]:.2f}, d=4 {rates[4]:.2f}")
    assert rates[0] >= 0.9
    assert rates[4] <= rates[0] - 0.2


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_delay_sweep_full(task):
    ex = ScriptedExpert(task)
    rates = [
        run_lockstep(
            ex, LockstepConfig(task=task, strategy="naive", delay=d, episodes=50, batch=50, seed=2)
        ).success_rate
        for d in range(5)
    ]
    print(task, rates)
    assert rates[0] >= 0.9
    assert rates[4] <= rates[0] - 0.2
    # Roughly monotone: no delay does better than a smaller one by more than sampling noise.
    assert all(rates[i + 1] <= rates[i] + 0.1 for i in range(4))


def test_lockstep_deterministic_and_stop_when_decided_keeps_outcomes():
    ex = ScriptedExpert("bifurcate", noise_std=0.02)  # noisy chunks: exercises the per-call seeds
    cfg = LockstepConfig(task="bifurcate", strategy="naive", delay=2, episodes=6, batch=3, seed=4)
    a, b = run_lockstep(ex, cfg), run_lockstep(ex, cfg)
    key = lambda r: [(e.seed, e.success, e.success_step, e.acc_max, e.switch_jump_max) for e in r.episodes]  # noqa: E731
    assert key(a) == key(b)
    # Noise-free policy: stopping decided envs early changes no outcome (with a noisy policy the
    # rows of a batched call, hence the noise, depend on which envs are still running).
    clean = ScriptedExpert("bifurcate")
    stop = run_lockstep(clean, cfg)
    full = run_lockstep(
        clean,
        LockstepConfig(
            task="bifurcate", strategy="naive", delay=2, episodes=6, batch=3, seed=4, stop_when_decided=False
        ),
    )
    assert [(e.success, e.success_step) for e in full.episodes] == [(e.success, e.success_step) for e in stop.episodes]
    assert all(e.steps == 40 for e in full.episodes)
    assert any(e.steps < 40 for e in stop.episodes)
