"""The env can drive the arm as the running graph does: each step's command ramped at 100 Hz
through the FR3 safety filter before the servos (sim/env.py); the lockstep runner asks for it with
``LockstepConfig(safety_filter=True)``."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.assets import panda_available
from async_vla_ros.core.safety import SafetyConfig

pytestmark = pytest.mark.skipif(not panda_available(), reason="Panda model not fetched (make setup)")


def _moved(safety):
    from async_vla_ros.sim.env import BatchedPandaEnv

    with BatchedPandaEnv("bifurcate", 1, threads=1, safety=safety) as env:
        obs = env.reset([3])
        q0 = obs[0, :7].copy()
        hold = np.r_[q0, obs[0, 14]][None]
        env.step(hold)  # the command it already holds: nothing to limit
        held_dev = list(env.filter_deviation)
        jump = hold.copy()
        jump[0, 0] += 0.3  # a 0.3 rad step change of joint 1, as a policy's chunk switch can be
        obs = env.step(jump)
        return abs(obs[0, 0] - q0[0]), held_dev, list(env.filter_deviation)


def test_the_filter_slows_a_step_change_that_the_servos_alone_would_follow():
    free, _, _ = _moved(None)
    limited, held_dev, dev = _moved(SafetyConfig(robot="fr3"))
    assert held_dev and max(held_dev) < 1e-9  # 5 ticks per 50 ms step, none moved a held command
    assert len(dev) == 10 and max(dev) > 0.01  # the jump's ticks were limited
    assert limited < 0.8 * free  # so the arm got less far in the step


def test_a_command_rate_that_does_not_divide_the_step_is_refused():
    from async_vla_ros.sim.env import BatchedPandaEnv

    with pytest.raises(ValueError, match="whole number of ticks"):
        BatchedPandaEnv("track", 1, threads=1, safety=SafetyConfig(), command_rate_hz=130.0)


def test_lockstep_asks_for_the_filtered_env_and_reports_it():
    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec
    from async_vla_ros.sim.env import BatchedPandaEnv
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner

    seen = []

    def factory(task, n, threads=None, **kw):
        seen.append(kw)
        return BatchedPandaEnv(task, n, threads=threads, **kw)

    pol = load_policy_spec("expert", BackendRequest("bifurcate"))
    runner = LockstepRunner(pol, env_factory=factory)
    res = runner.run(LockstepConfig(task="bifurcate", episodes=2, batch=2, safety_filter=True, threads=1))
    assert isinstance(seen[0]["safety"], SafetyConfig) and res.summary()["safety_filter"] is True
    runner.run(LockstepConfig(task="bifurcate", episodes=1, batch=1, threads=1))
    assert seen[1] == {}  # off by default: the env as before
