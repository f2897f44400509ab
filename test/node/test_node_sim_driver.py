"""The sim node's physics driver steps the same task as ``PandaEnv.step`` at 1 ms granularity:
with a command held for whole control steps it must reproduce the env bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")
from async_vla_ros.assets import panda_available  # noqa: E402

if not panda_available():
    pytest.skip("MuJoCo Panda model not fetched (make setup)", allow_module_level=True)

from async_vla_ros.nodes.sim_driver import PhysicsDriver  # noqa: E402
from async_vla_ros.sim.env import PandaEnv  # noqa: E402
from async_vla_ros.sim.experts import ScriptedExpert  # noqa: E402


def _obs(drv: PhysicsDriver) -> np.ndarray:
    q, qd, f, _ = drv.joints()
    return np.concatenate([q, qd, [f.sum()], drv.task_obs()])


def test_driver_in_blocks_matches_env_step():
    env, drv = PandaEnv("track"), PhysicsDriver("track", seed=3)
    expert = ScriptedExpert("track")
    o_env = env.reset(3)
    drv.reset()
    assert drv.seed == 3 and drv.episode_id == 1
    np.testing.assert_array_equal(_obs(drv), o_env)
    for _ in range(12):
        a = expert.act(o_env[None])[0]
        o_env = env.step(a)
        drv.set_command(a[:7], a[7])
        crossed = sum(drv.advance(n) for n in (7, 13, 5, 25))  # 50 physics steps in uneven blocks
        assert crossed == 1
        np.testing.assert_array_equal(_obs(drv), o_env)
    assert drv.step_index == env._env.t == 12


def test_driver_episode_ends_and_reports_success_like_env():
    drv = PhysicsDriver("track", seed=0)
    drv.reset()
    expert = ScriptedExpert("track")
    while not drv.done:
        a = expert.act(_obs(drv)[None])[0]
        drv.set_command(a[:7], a[7])
        drv.advance(drv.substeps)
    assert drv.step_index == drv.task.episode_steps
    assert drv.advance(100) == 0  # physics stops at the end of the episode
    assert drv.success() == (drv.state.success_step >= 0)
    assert drv.state.info["on_target_fraction"] > 0.5
    assert drv.reset() == 2 and drv.seed == 1 and drv.step_index == 0


def test_driver_rejects_non_finite_command():
    drv = PhysicsDriver("track")
    drv.reset()
    with pytest.raises(ValueError):
        drv.set_command(np.full(7, np.nan))
    with pytest.raises(ValueError):
        drv.set_command(None, float("inf"))
