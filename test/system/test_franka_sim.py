"""The libfranka backend against franka-sim (real libfranka protocol, MuJoCo, limit aborts on).

Slow: installs franka-sim into its own venv on first use (scripts/setup_franka_sim.sh, ~30 s),
starts one server on 127.0.0.1 for the module, and streams a bounded session per merge strategy.
Skipped, with the reason, when pylibfranka is missing or franka-sim cannot be installed/started.
"""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.core.strategies import STRATEGIES

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.realtime]

SESSION_S = 5.0


@pytest.fixture(scope="module")
def robot():
    pytest.importorskip("pylibfranka", reason="pylibfranka is not installed (pip install pylibfranka==0.21.3)")
    from async_vla_ros.robot.franka_sim import FrankaSimServer, FrankaSimUnavailable
    from async_vla_ros.robot.libfranka_backend import LibfrankaConfig, LibfrankaRobot

    server = FrankaSimServer(enforce_motion_limits=True)
    try:
        server.start()
    except FrankaSimUnavailable as exc:
        pytest.skip(f"franka-sim unavailable: {exc}")
    try:
        r = LibfrankaRobot(LibfrankaConfig(host=server.host, realtime="ignore"))
        r.connect()
        yield r
        r.close()
    finally:
        server.stop()  # by pid, also when the tests fail


def _home(robot) -> None:
    from async_vla_ros.eval.bench_franka import sim_streamer
    from async_vla_ros.robot.stress import FR3_HOME

    homing = sim_streamer()
    for _ in range(3):
        rep = robot.move_to(np.asarray(FR3_HOME), streamer=homing)
        if not rep.aborted:
            return
        robot.recover()
    assert not rep.aborted, f"homing aborted: {rep.message}"


def _session(strategy: str, delay: int, safety: bool):
    from async_vla_ros.eval.bench_franka import Case, make_session

    return make_session(Case(strategy, delay, safety))


def _run_filtered(robot, strategy: str, delay: int):
    """One session with the filter; retried (at most twice) only after a timing fault of the
    shared machine (our loop late, or the simulator substituting its own extrapolation for a
    command that reached it late), never with a relaxed check."""
    from async_vla_ros.eval.bench_franka import timing_fault

    for attempt in (1, 2, 3):
        _home(robot)
        rep = robot.run(_session(strategy, delay, True), SESSION_S)
        if rep.aborted:
            robot.recover()
        if not (rep.aborted and timing_fault(rep)) or attempt == 3:
            return rep
    return rep


@pytest.mark.parametrize("strategy,delay", [(s, 4) for s in STRATEGIES] + [("naive", 8), ("te", 8)])
def test_every_strategy_streams_without_aborts(robot, strategy, delay):
    rep = _run_filtered(robot, strategy, delay)
    assert not rep.aborted, f"{strategy} d={delay}: {rep.reasons} after {rep.cycles} cycles ({rep.message})"
    assert rep.cycles >= SESSION_S * 1000 and rep.settled
    assert rep.monitor["violations"] == {"position": 0, "velocity": 0, "acceleration": 0, "jerk": 0}
    assert rep.source["scheduler"]["accepted"] >= 5
    assert rep.source["max_switch_jump"] > 0.05  # the chunks really switched discontinuously


@pytest.mark.parametrize("strategy", ["naive", "te"])
def test_without_the_filter_the_same_stress_is_aborted(robot, strategy):
    _home(robot)
    rep = robot.run(_session(strategy, 8, False), SESSION_S)
    if rep.aborted:
        robot.recover()
    assert rep.aborted, "the simulator did not abort an unfiltered stream: its limit check is not active"
    assert any("discontinuity" in r or "limits_violation" in r for r in rep.reasons), rep.reasons
