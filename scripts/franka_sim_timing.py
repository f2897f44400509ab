"""Replay our 1 kHz libfranka loop against franka-sim's own limit checker, offline, under scripted
timing faults: which faults end in a reflex abort, in seconds instead of real-time bench runs.

Run it with the franka-sim venv's Python (it imports ``franka_sim``; see
scripts/setup_franka_sim.sh), from anywhere:

    ~/.cache/async_vla_ros/franka-sim-venv/bin/python scripts/franka_sim_timing.py single
    ~/.cache/async_vla_ros/franka-sim-venv/bin/python scripts/franka_sim_timing.py random --sessions 8

What is real and what is modelled:

* real: our code end to end (``LibfrankaRobot.run`` with a StreamingSession and the safety
  filter, exactly as ``async-vla-ros bench franka`` builds it), and franka-sim 1.1.7's
  ``MotionLimitChecker``, the object that decides its aborts: backward differences over the
  interval it observed, extrapolation of missed cycles, the rewind when a late command arrives;
* modelled (from franka-sim's server code, 1 ms = 1 unit): the publish loop (close the cycle,
  extrapolate it when no command answered it in time, publish ``q_d``/``dq_d``/``ddq_d``), its UDP
  receive thread (drains the socket and processes the newest datagram only; a datagram counts as
  fresh when it echoes the newest published state), libfranka's ``readOnce`` (newest state), and
  the timing of our loop (0.05 ms from read to write, 0.4 ms compute) plus the faults below.

Faults (``single``: one fault of length L ms at one cycle, swept over positions in the motion):

* ``T1`` our loop stalls between reading a state and writing its command (the command is late);
* ``T2`` our loop stalls after writing, before the next read (states are skipped);
* ``T3`` franka-sim's receive thread stalls (our commands queue; the newest one wins).

``random`` draws stalls of both sides at a rate per call, like a loaded machine.
Violations are counted, not enforced, so one session shows every cycle that would abort.
"""

from __future__ import annotations

import argparse
import random
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from franka_sim.control_modes import ControlMode
    from franka_sim.limits.checker import MotionLimitChecker
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    sys.exit(f"run this with the franka-sim venv's python (scripts/setup_franka_sim.sh): {exc}")

from async_vla_ros.eval.bench_franka import FRANKA_SIM_SCALES, Case, make_session  # noqa: E402
from async_vla_ros.robot.libfranka_backend import LibfrankaConfig, LibfrankaRobot  # noqa: E402
from async_vla_ros.robot.stress import FR3_HOME  # noqa: E402

RESPOND = 0.05  # ms from readOnce returning to writeOnce
COMPUTE = 0.4  # ms computing the next command after writeOnce


# ---------------------------------------------------------------------- the fake pylibfranka
class ControlException(RuntimeError):
    pass


class _Duration:
    def __init__(self, s: float) -> None:
        self.s = s

    def to_sec(self) -> float:
        return self.s


class _JointPositions:
    def __init__(self, q) -> None:
        self.q = list(q)
        self.motion_finished = False


class _State:
    def __init__(self, mid: int, q_d, dq_d, ddq_d) -> None:
        self.message_id = mid
        self.q, self.q_d, self.dq_d, self.ddq_d = list(q_d), list(q_d), list(dq_d), list(ddq_d)
        self.dq = [0.0] * 7
        self.time = _Duration(mid / 1000)
        self.control_command_success_rate = 1.0
        self.last_motion_errors = "[]"


class Faults:
    """Extra delay (ms) of each timing point; the base class adds none."""

    def read_to_write(self, p: int) -> float:
        return 0.0

    def write_to_read(self, p: int) -> float:
        return 0.0

    def receive(self, p: int) -> float:
        return 0.0


class OneFault(Faults):
    def __init__(self, kind: str, at: int, length: float) -> None:
        self.kind, self.at, self.length = kind, at, length

    def read_to_write(self, p):
        return self.length if self.kind == "T1" and p == self.at else 0.0

    def write_to_read(self, p):
        return self.length if self.kind == "T2" and p == self.at else 0.0

    def receive(self, p):
        return self.length if self.kind == "T3" and p == self.at else 0.0


class RandomFaults(Faults):
    def __init__(self, seed: int, rate: float, client=(1.0, 4.0), receive=(0.5, 3.0)) -> None:
        self.rng, self.rate, self.client, self.rx = random.Random(seed), rate, client, receive

    def _draw(self, span):
        return self.rng.uniform(*span) if self.rng.random() < self.rate else 0.0

    def read_to_write(self, p):
        return self._draw(self.client)

    def write_to_read(self, p):
        return self._draw(self.client)

    def receive(self, p):
        return self._draw(self.rx)


def _describe(violation) -> str:
    text = violation.describe() if hasattr(violation, "describe") else str(violation)
    return text.split(" -- ")[0]


class SimModel:
    """franka-sim's publish loop and receive thread around its real MotionLimitChecker."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.checker = MotionLimitChecker(enforce=False)
        self.published = 0
        self.socket: list[tuple[float, dict]] = []
        self.rx_busy_until = 0.0
        self.answered: set[int] = set()
        self.q_d, self.dq_d, self.ddq_d = list(FR3_HOME), [0.0] * 7, [0.0] * 7
        self.states: dict[int, _State] = {}
        self.violations: list[tuple[int, str]] = []
        self.counts = {"extrapolated": 0, "late": 0, "dropped": 0}

    def start(self) -> None:
        self.checker.start_motion(ControlMode.POSITION, {"q_d": list(self.q_d), "dq_d": [0.0] * 7, "ddq_d": [0.0] * 7})
        self.checker.note_published(0)
        self.states[0] = _State(0, self.q_d, self.dq_d, self.ddq_d)

    def _dispatch(self, q) -> None:
        self.q_d = list(q)
        d = self.checker.applied_derivatives()
        if d is not None:
            self.dq_d, self.ddq_d = d

    def _receive(self, t: float) -> None:
        arrived = [c for c in self.socket if c[0] <= t]
        self.socket = [c for c in self.socket if c[0] > t]
        self.counts["dropped"] += len(arrived) - 1
        cmd = arrived[-1][1]  # the newest datagram wins
        fresh = cmd["message_id"] == self.published
        if fresh:
            self.answered.add(self.published)
        else:
            self.counts["late"] += 1
        out = self.checker.absorb_command(cmd, self.q_d, fresh=fresh, enforce=False)
        if out.violation is not None:
            self.violations.append((self.published, _describe(out.violation)))
        if out.accepted:
            self._dispatch(cmd["q_c"])

    def run_until(self, t: float) -> None:
        while True:
            nxt = self.published + 1
            pending = [c for c in self.socket if c[0] < min(t, nxt)]
            if pending:
                when = max(pending[0][0], self.rx_busy_until)
                if when < min(t, nxt):
                    self._receive(when)
                    continue
            if nxt > t:
                return
            lost = self.published not in self.answered
            self.published = nxt
            self.checker.note_published(nxt)
            if lost:
                ext = self.checker.extrapolate(nxt - 1)
                if ext is not None:
                    cmd, violation = ext
                    self.counts["extrapolated"] += 1
                    if violation is not None:
                        self.violations.append((nxt, "extrapolated: " + _describe(violation)))
                    self._dispatch(cmd["q_c"])
            self.states[nxt] = _State(nxt, self.q_d, self.dq_d, self.ddq_d)

    def send(self, t: float, q, mid: int, finished: bool) -> None:
        stall = self.faults.receive(mid)
        if stall:
            self.rx_busy_until = max(self.rx_busy_until, t + stall)
        self.socket.append(
            (
                t,
                {
                    "message_id": mid,
                    "q_c": list(q),
                    "dq_c": [0.0] * 7,
                    "O_T_EE_c": [0.0] * 16,
                    "O_dP_EE_c": [0.0] * 6,
                    "elbow_c": [0.0] * 2,
                    "valid_elbow": False,
                    "motion_generation_finished": finished,
                    "tau_J_d": [0.0] * 7,
                    "torque_command_finished": False,
                },
            )
        )


class _Control:
    def __init__(self, sim: SimModel) -> None:
        self.sim, self.t, self.last = sim, 0.0, None

    def readOnce(self):
        sim = self.sim
        sim.run_until(self.t)
        if self.last is not None and sim.published <= self.last:
            self.t = self.last + 1 + 1e-6  # block for the next state
            sim.run_until(self.t)
        p = sim.published
        n = 0 if self.last is None else p - self.last
        self.last = p
        self.t += RESPOND + sim.faults.read_to_write(p)
        return sim.states[p], _Duration(n / 1000)

    def writeOnce(self, jp) -> None:
        sim = self.sim
        sim.run_until(self.t)
        sim.send(self.t, jp.q, self.last, jp.motion_finished)
        self.t += COMPUTE + sim.faults.write_to_read(self.last)


def _module(sim: SimModel):
    class Robot:
        def __init__(self, host, rt) -> None:
            pass

        def start_joint_position_control(self, mode):
            sim.start()
            return _Control(sim)

    return types.SimpleNamespace(
        Robot=Robot,
        ControlException=ControlException,
        JointPositions=_JointPositions,
        RealtimeConfig=types.SimpleNamespace(kEnforce=0, kIgnore=1),
        ControllerMode=types.SimpleNamespace(JointImpedance=0, CartesianImpedance=1),
    )


def session(
    faults: Faults,
    strategy: str = "naive",
    delay: int = 4,
    duration_s: float = 1.5,
    scales: tuple[float, float] = FRANKA_SIM_SCALES,
):
    """One streamed session against the model; returns (RunReport, SimModel)."""
    sim = SimModel(faults)
    robot = LibfrankaRobot(LibfrankaConfig(realtime="ignore", gc_every=0), module=_module(sim))
    robot.connect()
    return robot.run(make_session(Case(strategy, delay, True), scales=scales), duration_s), sim


# ---------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("single", help="one fault per session, swept over kinds, lengths and positions")
    s.add_argument("--lengths", default="0.5,1,2,3", help="fault lengths in ms (default 0.5,1,2,3)")
    s.add_argument("--positions", type=int, default=8, help="fault positions per kind and length (default 8)")
    s.add_argument("--kinds", default="T1,T2,T3", help="fault kinds (default T1,T2,T3)")
    s.add_argument("--strategy", default="naive")
    r = sub.add_parser("random", help="random stalls on both sides")
    r.add_argument("--sessions", type=int, default=4)
    r.add_argument("--rate", type=float, default=0.0007, help="stall probability per timing point (default 0.0007)")
    r.add_argument("--strategy", default="naive")
    r.add_argument("--duration", type=float, default=6.0)
    for p in (s, r):
        p.add_argument(
            "--scales",
            default=",".join(map(str, FRANKA_SIM_SCALES)),
            help="the filter's fractions of the acceleration and jerk limits (default: the bench's)",
        )
    ns = ap.parse_args(argv)
    scales = tuple(float(x) for x in ns.scales.split(","))
    if len(scales) != 2:
        ap.error("--scales takes two numbers: acceleration,jerk")
    if ns.mode == "single":
        lengths = [float(x) for x in ns.lengths.split(",")]
        positions = [400 + i * 1000 // max(1, ns.positions) for i in range(ns.positions)]  # in motion
        print("| fault | length (ms) | sessions with a violation | first violation (example) |")
        print("|---|---|---|---|")
        for kind in ns.kinds.split(","):
            if kind not in ("T1", "T2", "T3"):
                ap.error(f"unknown fault kind {kind!r} (T1, T2, T3)")
            for length in lengths:
                bad, example = 0, "-"
                for at in positions:
                    _, sim = session(OneFault(kind, at, length), ns.strategy, scales=scales)
                    if sim.violations:
                        bad += 1
                        example = sim.violations[0][1]
                print(f"| {kind} | {length:g} | {bad} / {len(positions)} | {example} |", flush=True)
    else:
        for seed in range(ns.sessions):
            rep, sim = session(RandomFaults(seed, ns.rate), ns.strategy, duration_s=ns.duration, scales=scales)
            first = sim.violations[0] if sim.violations else None
            print(
                f"seed {seed}: late iterations {rep.late_iterations}, substituted {rep.diverged}, "
                f"sim: {sim.counts}, violations {len(sim.violations)}; first: {first}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
