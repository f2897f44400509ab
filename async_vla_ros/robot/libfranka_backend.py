"""Drive a Franka FR3 / Panda over the real libfranka protocol (``pylibfranka``), without ROS.

A thin adapter: all the logic (plan sampling, interpolation, the safety filter) lives in the
pure :mod:`.session` / :mod:`.streamer` modules. This module only runs libfranka's 1 kHz
joint-position loop (``start_joint_position_control`` + ``readOnce`` / ``writeOnce``) and asks a
command source for each command.

Time comes from the robot: ``readOnce`` reports how many 1 ms cycles passed since the previous
read, and the robot fills in every cycle we do not answer (the FCI keeps the acceleration
constant and integrates) and reports, in ``q_d``/``dq_d``/``ddq_d``, the history it differences
the next answer against: its last applied command and that command's backward differences.

After missed cycles (``n > 1``) the command computed ahead is stale. The answer is then the
robot's own next step from its reported history (zero jerk against it), written at once, with no
catch-up computing before it; the source then takes that history (``source.resync(n,
robot=...)``) and plans on from there. The interval the robot will difference the answer over is
found in the report too (:func:`~async_vla_ros.robot.fci.steps_since`: how many fill-in steps
its history is beyond our last answer): the FCI fills in every cycle, so one; franka-sim, after it
applied a late answer of ours, can have filled in fewer, and then differences over more.
Continuing from our own model of the fill-in instead, and assuming one cycle, were each traced
ending in franka-sim aborts (docs/libfranka.md). :class:`MotionMonitor` mirrors the robot's
differencing, so its summary is what the robot judged.

Two ways to use it:

* ``LibfrankaRobot.run(source, duration_s)``: blocking, the stack's plan from a
  :class:`~.session.StreamingSession` (ChunkScheduler + policy), used by tests and
  ``async-vla-ros bench franka``;
* the :class:`~.base.Robot` interface: ``start_streaming()`` runs the loop on a thread, the
  caller's control loop calls ``observe()`` and ``command(q_target)`` at the control rate, and
  ``stop_streaming()`` brings the arm to rest and ends the motion.

``pylibfranka`` is imported lazily (``module=`` injects a fake for unit tests). Connect only to
the robot's FCI address; for franka-sim that is ``127.0.0.1``.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import importlib
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import MotionAborted, RobotError, RobotState
from .cpus import check_cpus
from .fci import history_step, steps_since
from .session import CommandSource, TargetStream
from .streamer import MotionMonitor, StreamerConfig

__all__ = ["LibfrankaConfig", "RunReport", "LibfrankaRobot", "parse_reflex_reasons"]

_MAX_FILL_IN = 64  # cycles: past this, a robot's reported history is not searched for our last answer
_REASON_RE = re.compile(r'"([a-z0-9_]+)"')


def _timing_summary(report: RunReport, compute: list[float], respond: list[float]) -> None:
    """Percentiles (ms) of the per-cycle compute and respond times into the report."""
    if compute:
        c = np.asarray(compute) * 1e3
        report.compute_ms_p50 = float(np.percentile(c, 50))
        report.compute_ms_p99 = float(np.percentile(c, 99))
        report.compute_ms_max = float(c.max())
        r = np.asarray(respond) * 1e3
        report.respond_ms_p99 = float(np.percentile(r, 99))
        report.respond_ms_max = float(r.max())


def parse_reflex_reasons(text: str) -> tuple[str, ...]:
    """Error names from a libfranka message or ``Errors`` string, e.g.
    ``'... ["joint_motion_generator_velocity_discontinuity"]'`` -> that name."""
    return tuple(dict.fromkeys(_REASON_RE.findall(str(text))))


@dataclass(frozen=True)
class LibfrankaConfig:
    """Connection and loop settings."""

    host: str = "127.0.0.1"  # FCI address of the robot (franka-sim: 127.0.0.1 only)
    realtime: str = "enforce"  # "enforce" (hardware: needs an RT kernel) | "ignore" (franka-sim)
    controller: str = "joint_impedance"  # robot-side controller: "joint_impedance" | "cartesian_impedance"
    sched_fifo_priority: int | None = None  # SCHED_FIFO priority of the loop thread (1-99), None: leave
    stop_timeout_s: float = 2.0  # longest wait for the arm to come to rest before the motion ends
    command_dt: float = 0.001  # libfranka's cycle, s (fixed by the protocol)
    start_hold_cycles: int = 20  # cycles q_d is sent unchanged before the source starts
    diverge_tol: float = 5e-6  # rad; q_d (float32 on the wire) further than this from our last command: diverged
    cpus: tuple[int, ...] | None = None  # CPU cores for the 1 kHz loop thread (keep the robot/sim off them); None: any
    gc_every: int = 100  # cycles between young-generation collections in the loop (automatic GC off); 0: leave GC on
    trace_cycles: int = 0  # keep the last N loop iterations in RunReport.trace (timing, ids, commands); 0: off

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"LibfrankaConfig.host must be a non-empty address, got {self.host!r}")
        if self.realtime not in ("enforce", "ignore"):
            raise ValueError(f"LibfrankaConfig.realtime must be 'enforce' or 'ignore', got {self.realtime!r}")
        if self.controller not in ("joint_impedance", "cartesian_impedance"):
            raise ValueError(
                f"LibfrankaConfig.controller must be 'joint_impedance' or 'cartesian_impedance', got {self.controller!r}"
            )
        if self.sched_fifo_priority is not None and (
            isinstance(self.sched_fifo_priority, bool)
            or not isinstance(self.sched_fifo_priority, int)
            or not 1 <= self.sched_fifo_priority <= 99
        ):
            raise ValueError(
                f"LibfrankaConfig.sched_fifo_priority must be None or 1..99, got {self.sched_fifo_priority!r}"
            )
        if not (math.isfinite(self.stop_timeout_s) and self.stop_timeout_s > 0):
            raise ValueError(f"LibfrankaConfig.stop_timeout_s must be > 0, got {self.stop_timeout_s!r}")
        if (
            isinstance(self.start_hold_cycles, bool)
            or not isinstance(self.start_hold_cycles, int)
            or self.start_hold_cycles < 0
        ):
            raise ValueError(f"LibfrankaConfig.start_hold_cycles must be an int >= 0, got {self.start_hold_cycles!r}")
        if not (math.isfinite(self.diverge_tol) and self.diverge_tol > 0):
            raise ValueError(f"LibfrankaConfig.diverge_tol must be > 0, got {self.diverge_tol!r}")
        if self.cpus is not None:
            object.__setattr__(self, "cpus", check_cpus(self.cpus, "LibfrankaConfig.cpus"))
        if isinstance(self.gc_every, bool) or not isinstance(self.gc_every, int) or self.gc_every < 0:
            raise ValueError(f"LibfrankaConfig.gc_every must be an int >= 0, got {self.gc_every!r}")
        if isinstance(self.trace_cycles, bool) or not isinstance(self.trace_cycles, int) or self.trace_cycles < 0:
            raise ValueError(f"LibfrankaConfig.trace_cycles must be an int >= 0, got {self.trace_cycles!r}")
        if self.command_dt != 0.001:
            raise ValueError("LibfrankaConfig.command_dt is fixed at 0.001 s by the libfranka protocol")


@dataclass
class RunReport:
    """What one streamed motion did."""

    aborted: bool = False  # the robot aborted the motion (reflex)
    reasons: tuple[str, ...] = ()  # the robot's error names when aborted
    message: str = ""  # the exception text when aborted
    cycles: int = 0  # robot cycles (1 ms) covered, by the robot's own clock
    loop_iterations: int = 0  # readOnce/writeOnce pairs
    late_iterations: int = 0  # iterations that covered more than one cycle (loop was late)
    resynced: int = 0  # ... answered from the history the robot reported (it filled the cycles in)
    unmatched: int = 0  # answers after fill-ins whose reported history did not extend our last answer
    diverged: int = 0  # cycles whose reported q_d was not our last command (the robot substituted its own)
    max_cycles_per_iteration: int = 0
    compute_ms_p50: float = 0.0  # our time per cycle computing the next command (ahead of time)
    compute_ms_p99: float = 0.0
    compute_ms_max: float = 0.0
    respond_ms_p99: float = 0.0  # readOnce returned -> command written (catch-up included)
    respond_ms_max: float = 0.0
    wall_s: float = 0.0  # wall-clock duration of the loop
    success_rate: float | None = None  # robot's control_command_success_rate at the end
    settled: bool = False  # came to rest before the motion was finished
    monitor: dict[str, Any] = field(default_factory=dict)  # MotionMonitor.summary() of the commands sent
    source: dict[str, Any] = field(default_factory=dict)  # the source's stats()
    # the last LibfrankaConfig.trace_cycles iterations, oldest first: t_read / t_write
    # (ns, the loop's clock), id (robot time in ms: the state's message id), n, gap (interval the
    # answer is differenced over), q_d, dq_d, ddq_d, q_cmd
    trace: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _MoveTo:
    """Command source holding one target (a :class:`TargetStream` given ``q_goal`` at start)."""

    def __init__(self, q_goal, streamer: StreamerConfig | None = None) -> None:
        self.q_goal = np.array(q_goal, dtype=np.float64, copy=True)
        if self.q_goal.shape != (7,) or not np.all(np.isfinite(self.q_goal)):
            raise ValueError(f"q_goal must be 7 finite joint positions, got {q_goal!r}")
        self.stream = TargetStream(streamer)

    def start(self, q_init, gripper=None) -> None:
        self.stream.start(q_init, gripper)
        self.stream.submit(self.q_goal)

    def advance(self, n_ticks: int = 1):
        return self.stream.advance(n_ticks)

    def resync(self, missed: int, robot=None) -> None:
        self.stream.resync(missed, robot)

    def stop(self) -> None:
        # keep the goal (do not freeze on the way): the filter stops on it
        self.stream.streamer.freeze(self.q_goal)

    def settled(self) -> bool:
        return self.stream.settled()

    def stats(self):
        return self.stream.stats()


class LibfrankaRobot:
    """A Franka over libfranka; implements :class:`~.base.Robot` (module docstring)."""

    def __init__(self, config: LibfrankaConfig | None = None, module: Any = None, clock=None) -> None:
        self.config = config or LibfrankaConfig()
        self._fr = module
        # seconds, monotonic; the loop's timing rules read it (a fake robot injects its own)
        self._clock = clock or time.perf_counter
        self._robot = None
        self._thread: threading.Thread | None = None
        self._stream: TargetStream | None = None
        self._stop_event = threading.Event()
        self._state_lock = threading.Lock()
        self._last_state: RobotState | None = None
        self._thread_report: RunReport | None = None
        self._thread_error: BaseException | None = None

    # ------------------------------------------------------------------ connection
    @property
    def module(self):
        if self._fr is None:
            try:
                self._fr = importlib.import_module("pylibfranka")
            except ImportError as exc:
                raise RobotError(f"pylibfranka is not installed ({exc}): pip install pylibfranka==0.21.3") from exc
        return self._fr

    def connect(self) -> None:
        """Open the FCI connection (idempotent)."""
        if self._robot is not None:
            return
        fr = self.module
        rt = fr.RealtimeConfig.kEnforce if self.config.realtime == "enforce" else fr.RealtimeConfig.kIgnore
        try:
            self._robot = fr.Robot(self.config.host, rt)
        except Exception as exc:  # libfranka raises NetworkException / IncompatibleVersionException / ...
            raise RobotError(f"cannot connect to a Franka at {self.config.host}: {exc}") from exc

    def close(self) -> None:
        """Stop streaming (if running) and drop the connection."""
        if self._thread is not None:
            self.stop_streaming()
        self._robot = None

    def __enter__(self) -> LibfrankaRobot:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require(self):
        if self._robot is None:
            raise RobotError("not connected: call connect() first")
        return self._robot

    def _to_state(self, st) -> RobotState:
        t = st.time
        t_ns = int(round(t.to_sec() * 1e9)) if hasattr(t, "to_sec") else int(t)
        return RobotState(
            q=np.asarray(st.q), dq=np.asarray(st.dq), q_cmd=np.asarray(st.q_d), gripper=None, time_ns=t_ns
        )

    def read_state(self) -> RobotState:
        """One state read outside a motion (``Robot::readOnce``)."""
        return self._to_state(self._require().read_once())

    def recover(self) -> None:
        """Clear a reflex (``automatic_error_recovery``)."""
        try:
            self._require().automatic_error_recovery()
        except Exception as exc:
            raise RobotError(f"error recovery failed: {exc}") from exc

    def last_errors(self) -> tuple[str, ...]:
        """Error names of the last motion (``last_motion_errors``)."""
        return parse_reflex_reasons(str(self._require().read_once().last_motion_errors))

    # ------------------------------------------------------------------ the 1 kHz loop
    def run(
        self,
        source: CommandSource,
        duration_s: float,
        monitor: MotionMonitor | None = None,
        stop_event: threading.Event | None = None,
    ) -> RunReport:
        """Stream ``source`` for ``duration_s`` seconds of robot time, then stop it and wait (at
        most ``stop_timeout_s``) until the commands are at rest before finishing the motion.

        An abort by the robot is returned in the report (``aborted``, ``reasons``), not raised;
        connection errors raise :class:`~.base.RobotError`. Call :meth:`recover` after an abort.
        """
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
        robot = self._require()
        fr = self.module
        mode = (
            fr.ControllerMode.JointImpedance
            if self.config.controller == "joint_impedance"
            else fr.ControllerMode.CartesianImpedance
        )
        monitor = monitor or MotionMonitor("fr3", dt=self.config.command_dt)
        report = RunReport()
        total = int(round(duration_s / self.config.command_dt))
        compute: list[float] = []  # per cycle: computing the next command (after writeOnce)
        respond: list[float] = []  # per cycle: readOnce returned -> writeOnce called
        trace = collections.deque(maxlen=self.config.trace_cycles) if self.config.trace_cycles else None
        clock = self._clock
        with self._realtime():
            t_wall = clock()
            try:
                self._control_loop(robot, mode, source, monitor, report, total, stop_event, compute, respond, trace)
            except Exception as exc:
                if not isinstance(exc, getattr(fr, "ControlException", ())):
                    raise RobotError(f"libfranka loop failed: {type(exc).__name__}: {exc}") from exc
                self._record_abort(exc, report)
            finally:
                report.wall_s = clock() - t_wall
                if trace is not None:
                    report.trace = list(trace)
        _timing_summary(report, compute, respond)
        report.monitor = monitor.summary()
        report.source = source.stats()
        return report

    @contextlib.contextmanager
    def _realtime(self):
        """For the motion: SCHED_FIFO, the configured CPUs, and no automatic garbage collection
        (a collector pause inside a 1 ms cycle): the youngest generation is collected off the
        critical path every ``gc_every`` cycles instead. All restored afterwards."""
        old_sched = self._enter_fifo()
        old_cpus = None
        if self.config.cpus and hasattr(os, "sched_setaffinity"):
            old_cpus = os.sched_getaffinity(0)  # this thread's (Linux: per thread)
            os.sched_setaffinity(0, self.config.cpus)
        gc_was_enabled = gc.isenabled()
        if self.config.gc_every:
            gc.collect()
            gc.disable()
        try:
            yield
        finally:
            self._leave_fifo(old_sched)
            if old_cpus is not None:
                os.sched_setaffinity(0, old_cpus)
            if gc_was_enabled:
                gc.enable()

    def _record_abort(self, exc: Exception, report: RunReport) -> None:
        """The robot aborted the motion (a ``ControlException``): reasons into the report."""
        report.aborted = True
        report.message = str(exc)
        reasons = parse_reflex_reasons(str(exc))
        if not reasons:
            try:
                reasons = self.last_errors()
            except Exception:  # noqa: BLE001 - keep the original abort
                reasons = ()
        report.reasons = reasons

    def _control_loop(self, robot, mode, source, monitor, report, total, stop_event, compute, respond, trace) -> None:
        """The 1 kHz loop: read the robot state, answer it, compute the next command off the
        critical path; stop the source after ``total`` cycles (or ``stop_event``) and finish the
        motion once it has settled (at most ``stop_timeout_s`` later)."""
        fr, clock = self.module, self._clock
        stop_limit = int(round(self.config.stop_timeout_s / self.config.command_dt))
        ctrl = robot.start_joint_position_control(mode)
        state, _ = ctrl.readOnce()
        # the motion's q_d is where the robot's checks start from: begin there, at rest
        q_start = np.asarray(state.q_d, dtype=np.float64)
        source.start(q_start)
        monitor.reset(q_start)
        last_rate = getattr(state, "control_command_success_rate", None)
        # hold the start exactly for a few cycles: the robot arms its checks from q_d
        hold = fr.JointPositions(q_start.tolist())
        for _ in range(self.config.start_hold_cycles):
            ctrl.readOnce()
            ctrl.writeOnce(hold)
        stopping_at = None
        sent, sent_id = q_start, None  # our last answer and the robot cycle it answered
        cmd = source.advance(1)  # computed ahead: the command for the next cycle
        while True:
            t_call = clock() if trace is not None else 0.0
            state, dur = ctrl.readOnce()
            t0 = clock()
            state_id = self._time_ms(state)
            n = max(1, int(round(dur.to_sec() / self.config.command_dt)))
            q_d = np.asarray(state.q_d, dtype=np.float64)
            if np.max(np.abs(q_d - sent)) > self.config.diverge_tol:
                report.diverged += 1  # the robot's last applied command is not our last answer
            report.cycles += n
            report.loop_iterations += 1
            report.max_cycles_per_iteration = max(report.max_cycles_per_iteration, n)
            finished = stopping_at is not None and (source.settled() or report.cycles - stopping_at >= stop_limit)
            follow = None
            if n > 1:
                # cycles passed without an answer of ours: the command computed ahead is stale.
                # Answer against the history the robot reports, over the interval it will
                # difference the answer over: its own next step (zero jerk against it), at once;
                # the source takes the same history after the write
                report.late_iterations += 1
                hist = (q_d, np.asarray(state.dq_d, dtype=np.float64), np.asarray(state.ddq_d, dtype=np.float64))
                gap = self._interval(sent, sent_id, hist, state_id, report)
                follow = history_step(*hist, gap * self.config.command_dt)
                q_cmd = follow[0]
            else:
                q_cmd, gap = cmd.q_cmd, 1
            jp = fr.JointPositions(q_cmd.tolist())
            if finished:
                jp.motion_finished = True
                report.settled = source.settled()
            t_write = int(clock() * 1e9) if trace is not None else 0
            ctrl.writeOnce(jp)
            sent, sent_id = q_cmd, state_id
            t1 = clock()
            if follow is not None:  # off the critical path
                monitor.rebase(*hist)
                source.resync(n, robot=follow)
                report.resynced += 1
            monitor.update(q_cmd, gap)
            if trace is not None:
                trace.append(
                    {
                        "t_read": int(t0 * 1e9),
                        "wait_us": (t0 - t_call) * 1e6,
                        "t_write": t_write,
                        "id": state_id,
                        "n": n,
                        "gap": gap,
                        "t_sent": int(t1 * 1e9),
                        "q_d": q_d.tolist(),
                        "dq_d": list(state.dq_d),
                        "ddq_d": list(state.ddq_d),
                        "q_cmd": q_cmd.tolist(),
                    }
                )
            if finished:
                break
            # off the critical path: state, stop decision, the next cycle's command
            self._publish_state(state)
            last_rate = getattr(state, "control_command_success_rate", last_rate)
            if stopping_at is None and (report.cycles >= total or (stop_event is not None and stop_event.is_set())):
                source.stop()
                stopping_at = report.cycles
            cmd = source.advance(1)
            respond.append(t1 - t0)
            compute.append(clock() - t1)
            if self.config.gc_every and report.loop_iterations % self.config.gc_every == 0:
                gc.collect(0)
        report.success_rate = None if last_rate is None else float(last_rate)

    def move_to(self, q_goal, duration_s: float = 4.0, streamer: StreamerConfig | None = None) -> RunReport:
        """Bring the arm to ``q_goal (7,)`` through the safety filter (a held target), then
        stop. Returns the report; check ``aborted``."""
        return self.run(_MoveTo(q_goal, streamer), duration_s)

    def _enter_fifo(self):
        prio = self.config.sched_fifo_priority
        if prio is None or not hasattr(os, "sched_setscheduler"):
            return None
        try:
            old = (os.sched_getscheduler(0), os.sched_getparam(0))
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
            return old
        except (PermissionError, OSError):
            return None  # not allowed here: run at normal priority

    @staticmethod
    def _leave_fifo(old) -> None:
        if old is not None:
            try:
                os.sched_setscheduler(0, old[0], old[1])
            except OSError:
                pass

    def _interval(self, sent, sent_id, hist, state_id: int, report: RunReport) -> int:
        """Robot cycles over which the robot will difference the answer to state ``state_id``:
        from the last command it applied. That is our last answer (``sent`` for cycle ``sent_id``)
        plus the cycles it filled in since, which its reported history ``hist`` tells
        (:func:`steps_since`). The FCI fills in every cycle, so 1; franka-sim may have filled in
        fewer after it applied a late answer (module docstring). 1 when nothing matches."""
        if sent_id is None:
            return 1
        span = state_id - sent_id  # cycles from our last answer to this one
        if span > _MAX_FILL_IN:  # the robot stops filling in (and aborts) long before this
            report.unmatched += 1
            return 1
        s = steps_since(sent, *hist, self.config.command_dt, span - 1, self.config.diverge_tol)
        if s is None:
            report.unmatched += 1
            return 1
        return span - s

    @staticmethod
    def _time_ms(st) -> int:
        """The state's robot time in ms (libfranka: the state's message id)."""
        t = st.time
        return int(round(t.to_sec() * 1e3)) if hasattr(t, "to_sec") else int(t)

    def _publish_state(self, st) -> None:
        try:
            rs = self._to_state(st)
        except ValueError:
            return
        with self._state_lock:
            self._last_state = rs

    # ------------------------------------------------------------------ Robot interface
    def start_streaming(self, streamer: StreamerConfig | None = None, max_duration_s: float = 3600.0) -> None:
        """Start the 1 kHz loop on a thread, following targets given to :meth:`command`."""
        if self._thread is not None:
            raise RobotError("already streaming")
        self._require()
        self._stream = TargetStream(streamer or StreamerConfig(control_dt=0.05, command_dt=self.config.command_dt))
        self._stop_event.clear()
        self._thread_report, self._thread_error = None, None

        def _loop() -> None:
            try:
                self._thread_report = self.run(self._stream, max_duration_s, stop_event=self._stop_event)
            except BaseException as exc:  # surfaced by stop_streaming / command
                self._thread_error = exc

        self._thread = threading.Thread(target=_loop, name="libfranka-1khz", daemon=True)
        self._thread.start()

    def command(self, q_target, gripper: float | None = None) -> None:
        """Joint position target ``(7,)`` (rad) for the next control step (needs streaming)."""
        if self._thread is None or self._stream is None:
            raise RobotError("command() needs start_streaming() first")
        if self._thread_error is not None:
            raise RobotError(f"the 1 kHz loop failed: {self._thread_error}") from self._thread_error
        if not self._thread.is_alive():
            rep = self._thread_report
            if rep is not None and rep.aborted:
                raise MotionAborted(f"motion aborted: {rep.message}", rep.reasons)
            raise RobotError("the 1 kHz loop has ended")
        self._stream.submit(q_target, gripper)

    def observe(self) -> RobotState:
        """Latest state (from the running loop, else one read)."""
        if self._thread is not None:
            with self._state_lock:
                if self._last_state is not None:
                    return self._last_state
        return self.read_state()

    def stop_streaming(self, timeout_s: float = 10.0) -> RunReport:
        """Bring the arm to rest, end the motion, join the loop thread; returns its report."""
        if self._thread is None:
            raise RobotError("not streaming")
        self._stop_event.set()
        self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        self._thread = None
        if alive:
            raise RobotError(f"the 1 kHz loop did not stop within {timeout_s} s")
        if self._thread_error is not None:
            raise RobotError(f"the 1 kHz loop failed: {self._thread_error}") from self._thread_error
        assert self._thread_report is not None
        return self._thread_report
