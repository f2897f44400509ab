"""robot.libfranka_backend against a fake pylibfranka (the adapter's logic, no simulator).

The fake robot differences every command like the FCI does and raises libfranka's
ControlException on the next read when one breaks the FR3 limits.
"""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from async_vla_ros.robot.base import MotionAborted, Robot, RobotError
from async_vla_ros.robot.libfranka_backend import LibfrankaConfig, LibfrankaRobot, parse_reflex_reasons
from async_vla_ros.robot.session import SessionConfig, StreamingSession
from async_vla_ros.robot.streamer import MotionMonitor, StreamerConfig
from async_vla_ros.robot.stress import FR3_HOME, StressPolicy

HOME = np.asarray(FR3_HOME)


class ControlException(RuntimeError):
    pass


class Duration:
    def __init__(self, s: float) -> None:
        self.s = s

    def to_sec(self) -> float:
        return self.s


class JointPositions:
    def __init__(self, q) -> None:
        assert len(q) == 7
        self.q = list(q)
        self.motion_finished = False


class State:
    def __init__(self, q, t_ms, dq_d=None, ddq_d=None) -> None:
        self.q = list(q)
        self.q_d = list(q)
        self.dq_d = [0.0] * 7 if dq_d is None else list(dq_d)
        self.ddq_d = [0.0] * 7 if ddq_d is None else list(ddq_d)
        self.dq = [0.0] * 7
        self.time = Duration(t_ms / 1000)
        self.control_command_success_rate = 1.0
        self.last_motion_errors = "[]"


class FakeControl:
    def __init__(self, robot) -> None:
        self.robot = robot
        self.first = True

    def readOnce(self):
        r = self.robot
        if r.pace_s:
            time.sleep(r.pace_s)
        if r.pending_error:
            r.motion_errors = r.pending_error
            raise ControlException(f'libfranka: Move command aborted: motion aborted by reflex! ["{r.pending_error}"]')
        first, self.first = self.first, False
        n = 0 if first else (r.durations.pop(0) if r.durations else 1)
        m = r.monitor
        # cycles without an answer: the ones not read, and the last one read if it went unanswered
        # (the motion's first state is read before any command is due)
        fill = 0 if first else max(0, n - 1) + (0 if r.answered else 1)
        r.answered = first
        if not first:
            r.now += r.waits.pop(0) if r.waits else 0.0005  # the loop's clock: how long readOnce blocked
        r.gap = 1
        if r.extrapolate_missed:
            for _ in range(fill):  # missed cycles: extrapolate at constant acceleration, like the FCI
                v = m._v + m._a * 0.001
                r.q = list(m._q + v * 0.001)
                m.update(r.q)
                r.filled += 1
        else:  # nothing filled in (a simulator whose own loop fell behind): next command differenced over n
            r.gap = max(1, fill + 1)
        r.t_ms += n
        return State(r.q, r.t_ms, m._v, m._a), Duration(n / 1000)

    def writeOnce(self, jp) -> None:
        r = self.robot
        r.now += r.write_s
        r.answered = True
        r.commands.append(np.asarray(jp.q))
        r.monitor.update(jp.q, r.gap)
        v = r.monitor.violations
        if not r.enforce_limits:
            pass
        elif v["velocity"]:
            r.pending_error = "joint_motion_generator_velocity_limits_violation"
        elif v["acceleration"]:
            r.pending_error = "joint_motion_generator_velocity_discontinuity"
        elif v["jerk"]:
            r.pending_error = "joint_motion_generator_acceleration_discontinuity"
        r.q = list(jp.q)
        if jp.motion_finished:
            r.finished += 1


class FakeRobot:
    def __init__(self, host, rt) -> None:
        self.host, self.rt = host, rt
        self.q = list(HOME)
        self.t_ms = 0
        self.commands: list[np.ndarray] = []
        self.durations: list[int] = []
        self.pending_error = None
        self.motion_errors = None
        self.finished = 0
        self.recovered = 0
        self.pace_s = 0.0
        self.extrapolate_missed = True  # the FCI's behaviour; False: differences over the real interval
        self.enforce_limits = True  # abort on a limit violation, like the robot
        self.gap = 1
        self.monitor = MotionMonitor("fr3")
        self.now = 0.0  # the loop's clock (s), advanced by readOnce (waits) and writeOnce (write_s)
        self.waits: list[float] = []  # per readOnce: how long it blocks (default 0.5 ms: a fresh state)
        self.write_s = 2e-5
        self.answered = True
        self.filled = 0  # cycles the fake filled in itself
        FAKE.last = self

    def read_once(self):
        st = State(self.q, self.t_ms)
        if self.motion_errors:
            st.last_motion_errors = f'["{self.motion_errors}"]'
        return st

    def start_joint_position_control(self, mode):
        self.monitor.reset(self.q)
        self.pending_error = None
        return FakeControl(self)

    def automatic_error_recovery(self) -> None:
        self.recovered += 1
        self.pending_error = None


FAKE = types.SimpleNamespace(
    Robot=FakeRobot,
    ControlException=ControlException,
    JointPositions=JointPositions,
    RealtimeConfig=types.SimpleNamespace(kEnforce="enforce", kIgnore="ignore"),
    ControllerMode=types.SimpleNamespace(JointImpedance="ji", CartesianImpedance="ci"),
    last=None,
)


def _robot(**kw) -> LibfrankaRobot:
    r = LibfrankaRobot(LibfrankaConfig(realtime="ignore", **kw), module=FAKE, clock=lambda: FAKE.last.now)
    r.connect()
    return r


def _session(strategy="rtc", safety=True):
    return StreamingSession(
        StressPolicy(), SessionConfig(strategy=strategy, delay_steps=4, streamer=StreamerConfig(safety=safety))
    )


def test_filtered_session_runs_without_abort_and_ends_at_rest():
    r = _robot(start_hold_cycles=5)
    assert FAKE.last.host == "127.0.0.1" and FAKE.last.rt == "ignore"
    rep = r.run(_session(), 1.0)
    fake = FAKE.last
    assert not rep.aborted and rep.reasons == ()
    assert rep.settled and fake.finished == 1
    assert rep.cycles >= 1000 and rep.late_iterations == 0
    assert fake.monitor.total_violations == 0 and rep.monitor["violations"] == fake.monitor.violations
    np.testing.assert_array_equal(np.asarray(fake.commands[:5]), np.broadcast_to(HOME, (5, 7)))  # start hold
    assert rep.source["scheduler"]["accepted"] >= 3
    assert isinstance(r, Robot)


def test_unfiltered_session_is_aborted_and_reported():
    r = _robot()
    rep = r.run(_session(safety=False), 1.0)
    assert rep.aborted
    assert rep.reasons == ("joint_motion_generator_velocity_limits_violation",)
    assert "aborted by reflex" in rep.message and rep.cycles < 1000
    r.recover()
    assert FAKE.last.recovered == 1
    assert r.move_to(HOME, 0.5).aborted is False


def test_late_cycles_are_caught_up_on_the_robot_clock():
    r = _robot(start_hold_cycles=0)
    # late twice while the stream holds (the first chunk arrives after 4 steps = 200 cycles)
    FAKE.last.durations = [1] * 100 + [3] + [1] * 50 + [2] + [1] * 2000
    sess = _session()
    rep = r.run(sess, 0.6)
    assert rep.late_iterations == 2 and rep.max_cycles_per_iteration == 3
    assert rep.cycles >= 600 and rep.loop_iterations == rep.cycles - 3
    # the source ran on the robot's clock: exactly one tick per robot cycle
    assert sess.n_ticks == rep.cycles
    assert not rep.aborted and FAKE.last.monitor.total_violations == 0


@pytest.mark.parametrize(
    "durations",
    [
        [1] * 400 + [2] + [1] * 3000,  # one missed cycle in motion
        [1] * 400 + [5] + [1] * 3000,  # four in a row
        [1] * 300 + ([1] * 37 + [2]) * 20 + [1] * 3000,  # a late iteration every 38 ms
        [1] * 250 + ([1] * 9 + [3]) * 40 + [1] * 3000,  # and every 10 ms, two missed each time
    ],
    ids=["one", "four_in_a_row", "every_38ms", "every_10ms"],
)
def test_late_cycles_in_motion_continue_from_the_robots_extrapolation(durations):
    """The fake does what the FCI does for a missed cycle (keep acceleration constant and
    integrate; its q_d then is that extrapolation, not our command) and differences the next
    command against that. Catching up on our own path made the first command after a single
    2-cycle gap a 1.8x acceleration (reflex abort); resyncing on the extrapolation keeps every
    command within the filter's limits."""
    r = _robot(start_hold_cycles=0)
    FAKE.last.durations = list(durations)
    sess = _session()
    rep = r.run(sess, 1.0)
    fake = FAKE.last
    assert rep.late_iterations >= 1 and not rep.aborted, (rep.reasons, fake.monitor.summary())
    assert fake.monitor.total_violations == 0, fake.monitor.summary()
    assert fake.monitor.summary()["max_acceleration_frac"] <= 0.9 + 1e-9  # the filter's own scale
    assert sess.n_ticks == rep.cycles  # plan time stayed on the robot's clock
    assert rep.resynced == rep.late_iterations == rep.source["filter"]["rebased"]
    assert fake.filled == rep.cycles - rep.loop_iterations  # it filled in exactly the missed cycles
    # the run's own monitor mirrored the robot's differencing
    assert rep.monitor["violations"] == fake.monitor.violations


def test_late_cycles_without_fill_in_are_answered_over_the_whole_interval():
    """A robot that did not fill the missed cycles in (its q_d still our last answer) differences
    the next answer over all of them: the loop finds that interval in the reported history and
    answers with the robot's own next step over it (zero jerk), then continues on the plan."""
    r = _robot(start_hold_cycles=0)
    fake = FAKE.last
    fake.durations = [1] * 400 + [3] + [1] * 100 + [2] + [1] * 3000
    fake.extrapolate_missed = False
    rep = r.run(_session(), 0.7)
    assert rep.late_iterations == 2 and rep.resynced == 2 and rep.unmatched == 0
    assert not rep.aborted and fake.monitor.total_violations == 0, fake.monitor.summary()
    assert rep.monitor["violations"] == fake.monitor.violations


def _gaps(rep):
    return [c["gap"] for c in rep.trace if c["gap"] != 1]


def test_history_behind_the_cycles_passed_is_answered_over_its_own_interval():
    """franka-sim, after applying a late answer, can fill in fewer cycles than passed: its history
    then sits a cycle behind, and it differences the next answer over two cycles. The loop counts
    the fill-in steps in the reported history (steps_since) and answers over that interval."""
    r = _robot(start_hold_cycles=0, trace_cycles=5000)
    fake = FAKE.last
    fake.durations = [1] * 400 + [3] + [1] * 3000
    real_read = FakeControl.readOnce

    def lagging(self):
        st, d = real_read(self)
        if d.to_sec() > 0.0025 and fake.extrapolate_missed:  # undo one of the two fill-in steps
            m = fake.monitor
            v = m._v - m._a * 0.001
            m._q, m._v = m._q - m._v * 0.001, v
            fake.q = list(m._q)
            fake.gap = 2  # it differences the next answer over two cycles
            st = State(fake.q, fake.t_ms, m._v, m._a)
        return st, d

    FakeControl.readOnce = lagging
    try:
        rep = r.run(_session(), 0.8)
    finally:
        FakeControl.readOnce = real_read
    assert _gaps(rep) == [2]
    assert not rep.aborted and fake.monitor.total_violations == 0, fake.monitor.summary()


def test_reason_parsing_and_config_validation():
    assert parse_reflex_reasons('aborted! ["a_b", "c1"] ["a_b"]') == ("a_b", "c1")
    assert parse_reflex_reasons("no names") == ()
    with pytest.raises(ValueError, match="realtime"):
        LibfrankaConfig(realtime="maybe")
    with pytest.raises(ValueError, match="sched_fifo_priority"):
        LibfrankaConfig(sched_fifo_priority=120)
    with pytest.raises(ValueError, match="command_dt"):
        LibfrankaConfig(command_dt=0.002)
    with pytest.raises(ValueError, match="gc_every"):
        LibfrankaConfig(gc_every=-1)
    with pytest.raises(ValueError, match="cpus"):
        LibfrankaConfig(cpus=(10_000,))
    with pytest.raises(ValueError, match="cpus"):
        LibfrankaConfig(cpus=())
    with pytest.raises(RobotError, match="connect"):
        LibfrankaRobot(module=FAKE).run(_session(), 1.0)
    with pytest.raises(ValueError, match="duration_s"):
        _robot().run(_session(), 0.0)
    with pytest.raises(ValueError, match="trace_cycles"):
        LibfrankaConfig(trace_cycles=-1)


def test_robot_interface_streams_commands_from_another_thread():
    r = _robot(start_hold_cycles=0)
    FAKE.last.pace_s = 0.0002
    with pytest.raises(RobotError, match="start_streaming"):
        r.command(HOME)
    r.start_streaming()
    goal = HOME + 0.05
    deadline = time.monotonic() + 5.0
    while len(FAKE.last.commands) < 400 and time.monotonic() < deadline:
        r.command(goal)
        time.sleep(0.005)
    obs = r.observe()
    assert obs.q.shape == (7,)
    rep = r.stop_streaming()
    assert not rep.aborted and rep.settled
    np.testing.assert_allclose(FAKE.last.commands[-1], goal, atol=1e-6)
    assert rep.source["used"] >= 1


def test_abort_while_streaming_surfaces_on_command():
    r = _robot(start_hold_cycles=0)
    FAKE.last.pace_s = 0.0002
    r.start_streaming(StreamerConfig(safety=False))
    r.command(HOME + 0.3)  # unfiltered jump: the fake aborts
    deadline = time.monotonic() + 5.0
    with pytest.raises(MotionAborted) as info:
        while time.monotonic() < deadline:
            r.command(HOME + 0.3)
            time.sleep(0.005)
    assert info.value.reasons
    r._thread = None  # the loop already ended


def test_loop_pins_its_thread_and_pauses_automatic_gc_only_while_streaming():
    import gc
    import os

    cpu = min(os.sched_getaffinity(0))
    seen = {}

    class Source:  # records where and how each cycle ran
        def __init__(self):
            self.inner = _session()

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def advance(self, n=1):
            seen.setdefault("affinity", os.sched_getaffinity(0))
            seen.setdefault("gc", gc.isenabled())
            return self.inner.advance(n)

    before = os.sched_getaffinity(0)
    assert gc.isenabled()
    rep = _robot(start_hold_cycles=0, cpus=(cpu,), gc_every=50).run(Source(), 0.3)
    assert not rep.aborted
    assert seen == {"affinity": {cpu}, "gc": False}
    assert os.sched_getaffinity(0) == before and gc.isenabled()  # both restored afterwards


def test_bench_pins_server_and_loop_to_separate_cores():
    import os

    from async_vla_ros.robot.cpus import split_cpus
    from async_vla_ros.robot.franka_sim import FrankaSimServer

    server, loop = split_cpus()
    avail = os.sched_getaffinity(0)
    if len(avail) < 2:
        assert (server, loop) == (None, None)
    else:
        assert set(server) | set(loop) == avail and not set(server) & set(loop)
    with pytest.raises(ValueError, match="cpus"):
        FrankaSimServer(cpus=(max(avail) + 1,))
