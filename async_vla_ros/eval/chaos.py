"""``async-vla-ros chaos``: fault injection on the running multi-process graph.

Starts the Franka graph once (built-in launcher; the scripted expert as the chunk policy by
default, so no checkpoint is needed; ``--policy default`` uses the shipped checkpoint), with the
correction node's safety filter on the **FR3** limits, plus a probe node in this process, and runs
the fault cases one after the other on it. Every case checks three things:

1. **safety**: the command stream (every command the correction node publishes, from the probe's
   subscription; :func:`~async_vla_ros.eval.stream_check.check_command_stream`) stays within the FR3 joint position, velocity, acceleration and jerk limits of
   :data:`async_vla_ros.core.safety.FR3_LIMITS`, computed as discrete differences of consecutive
   commands at the command period (the filter's own guarantee), with a relative tolerance of
   ``1e-6`` for float round-off. The stream is split where the correction node announces a filter
   restart (``/correction/command_segment``: start, new episode: the sim resets the arm), and
   each restart must begin at the arm's measured joints (:func:`~async_vla_ros.eval.stream_check.check_restarts`);
2. **no crash**: every node process is alive after the case (the one killed on purpose was
   restarted and is alive);
3. **recovery**: the graph recovers by itself after the fault ends: the time from the end of the
   fault to the first chunk the scheduler accepts again (``/scheduler/chunk_report``), measured.

Cases (``CASES``; each one's expected behaviour is in its ``expected`` text):

* ``policy_killed``: the policy node is SIGKILLed while it computes a chunk and restarted;
* ``latency_spike_x10``: the policy's ``injected_latency_s`` set at runtime (parameter service) so
  the chunk latency is ~10x the measured baseline, then restored;
* ``rogue_chunks``: a rogue publisher on ``/policy/action_chunk`` sends chunks with NaN, Inf,
  wrong shape, wrong joint names, future and stale stamps, duplicate and out-of-order ids, in
  three rounds each judged before the next (a round the episode's end cut short is dropped by the
  scheduler as chunk.other_episode before any check, counted, and done again, at most 3 times);
* ``rogue_observations``: a rogue publisher on ``/observation`` sends malformed observations, then
  one well-formed with a huge episode id and obs_id and a pose 1 rad away (the nodes must follow the
  real ids back, and the command stream restart at the measured joints);
* ``camera_stops`` / ``joint_states_stop``: the sim stops publishing images / joint states
  (runtime fault parameters of the sim node);
* ``clock_jump_forward`` / ``clock_jump_back``: the sim's stamps jump 5 s ahead / behind;
* ``request_flood``: a rogue publisher floods ``/policy/chunk_request`` (bounded count);
* ``bad_params_runtime``: ``set_parameters`` with invalid values and on read-only parameters;
* ``bad_params_start``: every node started with an invalid parameter, and the launcher with an
  invalid launch argument (separate processes; no graph);
* ``bad_bags``: replay on a bag recorded from the running graph, then on truncated, malformed and
  incomplete copies of it.

Bounded: every wait has a deadline, floods have a fixed message count, everything runs on this
machine's loopback (ROS defaults of :mod:`async_vla_ros.rosenv`), and only processes this run
started are signalled (by pid). :func:`write_report` writes the results table
(``reports/reliability.md`` by default). The system test (``test/system/test_chaos.py``) runs the
same cases.

Modules: this one holds the configuration, the runner (:class:`ChaosRun`: graph lifecycle, the
helpers the cases use, the checks common to every graph case), the report and the CLI; the cases
are in :mod:`async_vla_ros.eval.chaos_cases`, the probe node in :mod:`async_vla_ros.eval.graph_probe`,
the pure command-stream checks in :mod:`async_vla_ros.eval.stream_check`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros.core.safety import ROBOT_LIMITS
from async_vla_ros.eval.chaos_cases import CASE_BY_NAME, CASE_NAMES, CASES, CaseResult, counter_delta
from async_vla_ros.eval.graph_probe import make_probe_class
from async_vla_ros.eval.stream_check import NS, check_command_stream, check_restarts
from async_vla_ros.rosenv import apply_ros_defaults

__all__ = [
    "ChaosConfig",
    "ChaosRun",
    "CaseResult",
    "CASES",
    "CASE_NAMES",
    "run_chaos",
    "write_report",
    "with_overrides",
    "add_arguments",
    "run",
]


@dataclass(frozen=True)
class ChaosConfig:
    """Settings of one chaos run."""

    cases: tuple[str, ...] = ()  # case names to run ( (): all, in CASES order)
    method: str = "rtc"  # method preset of the graph
    policy: str = "expert"  # expert | default (shipped checkpoint) | checkpoint path
    task: str = "track"
    command_hz: float = 100.0  # correction rate
    robot: str = "fr3"  # limits of the correction node's safety filter AND of the check
    fault_s: float = 2.5  # how long a timed fault lasts (measured in received commands)
    recovery_timeout_s: float = 20.0  # deadline for the graph to recover after a fault
    restart_timeout_s: float = 90.0  # deadline for a restarted policy node to serve chunks again
    start_timeout_s: float = 120.0  # deadline for the graph to serve its first chunks
    flood_count: int = 2000  # rogue requests in the flood (bounded)
    flood_max_s: float = 5.0  # and at most this long
    clock_jump_s: float = 5.0  # size of the injected clock jumps
    rel_tol: float = 1e-6  # tolerance of the limit check (relative)
    workdir: str = ""  # temp files (bags, params) ('' : a new temp folder)

    def __post_init__(self) -> None:
        unknown = [c for c in self.cases if c not in CASE_NAMES]
        if unknown:
            import difflib

            hints = [
                f"{c!r}"
                + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(c, CASE_NAMES, n=1)) else "")
                for c in unknown
            ]
            raise ValueError(f"unknown chaos case(s) {', '.join(hints)}; known: {', '.join(CASE_NAMES)}")
        if self.robot not in ROBOT_LIMITS:
            raise ValueError(f"robot must be one of {', '.join(ROBOT_LIMITS)}, got {self.robot!r}")
        for name in (
            "command_hz",
            "fault_s",
            "recovery_timeout_s",
            "restart_timeout_s",
            "start_timeout_s",
            "flood_max_s",
            "clock_jump_s",
            "rel_tol",
        ):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"ChaosConfig.{name} must be a positive number, got {v!r}")
        if not (isinstance(self.flood_count, int) and 1 <= self.flood_count <= 100_000):
            raise ValueError(f"ChaosConfig.flood_count must be in [1, 100000], got {self.flood_count!r}")

    @property
    def selected(self) -> tuple[str, ...]:
        return self.cases or CASE_NAMES


def with_overrides(graph, overrides: dict[str, dict[str, Any]]):
    """A copy of ``graph`` with node parameters replaced (``{node: {param: value}}``), also of
    nodes that run in another node's process (``compose``)."""

    def updated(n):
        if n.name not in overrides:
            return n
        return dataclasses.replace(n, parameters={**n.parameters, **overrides[n.name]})

    nodes = [dataclasses.replace(updated(n), hosted=tuple(updated(h) for h in n.hosted)) for n in graph.nodes]
    missing = set(overrides) - {name for n in graph.nodes for name in n.node_names}
    if missing:
        raise ValueError(f"no node(s) {sorted(missing)} in graph {graph.name!r}")
    return dataclasses.replace(graph, nodes=tuple(nodes))


# ====================================================================== the run
class ChaosRun:
    """One graph, one probe, the cases in order (see the module docstring)."""

    def __init__(self, config: ChaosConfig, echo: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.echo = echo or (lambda line: print(line, flush=True))
        self.workdir = Path(config.workdir or tempfile.mkdtemp(prefix="async_vla_ros_chaos_"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.limits = ROBOT_LIMITS[config.robot]
        self.launcher = None
        self.probe = None
        self.graph = None
        self._ctx = None
        self._executor = None
        self._spin = None
        self.node_lines: deque[str] = deque(maxlen=400)
        self.baseline_latency_s: float | None = None
        self.bag_path = self.workdir / "recorded_bag"
        self.dt_cmd = 1.0 / config.command_hz
        self._param_clients: dict[str, Any] = {}
        self._first_pids: dict[str, int] = {}

    # -------------------------------------------------------------- graph lifecycle
    def start(self) -> None:
        apply_ros_defaults()
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from async_vla_ros.bringup.graph import build_graph
        from async_vla_ros.bringup.launcher import Launcher
        from async_vla_ros.nodes.common import SpinThread

        c = self.config
        graph = build_graph(
            "franka",
            {"policy": c.policy, "method": c.method, "task": c.task, "camera": "true", "command_hz": str(c.command_hz)},
        )
        self.graph = with_overrides(graph, {"correction": {"robot": c.robot}})
        self._ctx = rclpy.Context()
        rclpy.init(context=self._ctx)
        probe_cls = make_probe_class()
        iface = self.graph.node("correction").parameters.get("command_interface", "trajectory")
        self.probe = probe_cls(self._ctx, iface, record_bag=str(self.bag_path))
        self._executor = SingleThreadedExecutor(context=self._ctx)
        self._executor.add_node(self.probe)
        self._spin = SpinThread(self._executor, name="chaos-probe")
        self._spin.start()
        (self.workdir / "launch").mkdir(exist_ok=True)
        self.launcher = Launcher(self.graph, echo=self._node_line, workdir=str(self.workdir / "launch"))
        self.launcher.start()
        self._first_pids = {n.spec.name: n.pid for n in self.launcher.nodes}
        t0 = time.monotonic()
        if not self.wait(lambda: self._accepted_within(1.0) and self.probe.n_commands() > 50, c.start_timeout_s):
            raise RuntimeError(
                "the graph did not start serving chunks within "
                f"{c.start_timeout_s:.0f} s:\n" + "\n".join(list(self.node_lines)[-40:])
            )
        self.echo(f"[chaos] graph serving after {time.monotonic() - t0:.1f} s")
        # a clean baseline: recorded into the bag that the bad_bags case corrupts
        t_base = self.probe.now()
        self.wait(lambda: len([r for r in self.probe.reports_since(t_base) if r[2]]) >= 40, 30.0)
        self.probe.stop_bag(self._executor)  # unsubscribes in the spin thread (see stop_bag)
        lat = [r[4] for r in self.probe.reports_since(t_base) if r[2] and r[4] > 0]
        self.baseline_latency_s = float(np.median(lat)) if lat else None

    def stop(self) -> dict[str, int | None]:
        from async_vla_ros.nodes.common import stop_spin

        codes: dict[str, int | None] = {}
        if self.launcher is not None:
            codes = self.launcher.stop()
        if self._executor is not None:
            # the probe's spin thread must be gone before its node and context are: a run that
            # ended with all cases passed once aborted at exit ("terminate called without an
            # active exception", status 134) with the thread still inside the executor
            stop_spin(self._executor, self._spin)
        if self.probe is not None:
            # only now, with nothing spinning the probe: an entity destroyed from this thread
            # during the spin can kill it (see ChaosProbe.stop_bag)
            self.probe.stop_bag()
            for client in self._param_clients.values():  # AsyncParameterClient has no destroy()
                for attr in [a for a in vars(client) if a.endswith("_client")]:
                    self.probe.destroy_client(getattr(client, attr))
            self._param_clients.clear()
            self.probe.destroy_node()
        if self._ctx is not None:
            import rclpy

            if self._ctx.ok():
                rclpy.shutdown(context=self._ctx)
        return codes

    def _node_line(self, line: str) -> None:
        self.node_lines.append(line)

    # -------------------------------------------------------------- helpers
    def _alive(self) -> bool:
        return self.launcher is not None and sorted(self.launcher.alive()) == sorted(n.name for n in self.graph.nodes)

    def wait(self, cond: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
        """Poll ``cond`` until true or ``timeout`` (s); stops early when a node process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            if self.launcher is not None and not self._alive():
                return cond()
            time.sleep(poll)
        return cond()

    def foreign_nodes(self) -> list[str]:
        """ROS nodes on this run's domain besides the graph's and the probe (one each; the ros2 CLI
        daemon aside): another graph sharing the domain -- often with the same node names -- whose
        commands, chunks and diagnostics the probe would count as this graph's. A node this run
        restarted may show twice for a while (the killed process stays in discovery until its
        lease runs out): not counted."""
        from collections import Counter

        # every node of every process (camera_ingestion and the scheduler run in the policy's by default)
        ours = {name for n in self.graph.nodes for name in n.node_names} | {self.probe.get_name()}
        restarted = {
            name
            for n in self.launcher.nodes
            if n.pid != self._first_pids.get(n.spec.name)
            for name in n.spec.node_names
        }
        seen = Counter(name for name, _ns in self.probe.get_node_names_and_namespaces())
        extra = [
            f"{n} (x{k})" if n in ours else n
            for n, k in sorted(seen.items())
            if k > (n in ours) and n not in restarted and not n.startswith("_ros2cli")
        ]
        return extra

    def _check_alone(self, res: CaseResult) -> None:
        if self._spin is not None and not self._spin.is_alive():
            res.fail("the probe stopped listening: its spin thread ended (see the run's stderr)")
        foreign = self.foreign_nodes()
        if foreign:
            res.fail(
                f"other ROS nodes on domain {os.environ.get('ROS_DOMAIN_ID')}: {', '.join(foreign)} "
                "(another graph shares it: the probe cannot tell its messages from this graph's)"
            )

    def _accepted_within(self, window_s: float) -> bool:
        return self.probe.first_accept_after(self.probe.now() - int(window_s * NS)) is not None

    def fault_window(self) -> None:
        """The fault lasts ``fault_s``, counted in commands received (the command stream never
        stops while engaged: it holds), bounded by a deadline of 3x."""
        n0 = self.probe.n_commands()
        n = int(self.config.fault_s * self.config.command_hz)
        self.wait(lambda: self.probe.n_commands() - n0 >= n, 3 * self.config.fault_s)

    def _healthy(self, timeout: float = 30.0) -> bool:
        return self.wait(lambda: self._accepted_within(1.0), timeout)

    def _param_client(self, node: str):
        """One parameter client per remote node (its services keep their names across restarts)."""
        from rclpy.parameter_client import AsyncParameterClient

        if node not in self._param_clients:
            self._param_clients[node] = AsyncParameterClient(self.probe, node)
        return self._param_clients[node]

    def set_param(self, node: str, name: str, value, timeout: float = 10.0):
        """set_parameters on ``node`` through its parameter service; returns (successful, reason)."""
        from rclpy.parameter import Parameter

        client = self._param_client(node)
        if not client.wait_for_services(timeout_sec=timeout):
            return False, f"parameter services of {node} not available"
        fut = client.set_parameters([Parameter(name, value=value)])
        if not self.wait(fut.done, timeout):
            return False, "no answer"
        res = fut.result().results[0]
        return bool(res.successful), str(res.reason)

    def get_param(self, node: str, name: str, timeout: float = 10.0):
        from rclpy.parameter import parameter_value_to_python

        client = self._param_client(node)
        if not client.wait_for_services(timeout_sec=timeout):
            return None
        fut = client.get_parameters([name])
        if not self.wait(fut.done, timeout):
            return None
        return parameter_value_to_python(fut.result().values[0])

    def require(self, res: CaseResult, node: str, name: str, value) -> None:
        ok, why = self.set_param(node, name, value)
        if not ok:
            res.fail(f"could not set {node}.{name}={value!r}: {why}")

    def recovery(
        self, res: CaseResult, t_end: int, timeout: float | None = None, pred: Callable[[tuple], bool] | None = None
    ) -> None:
        ok = self.wait(
            lambda: self.probe.first_accept_after(t_end, pred) is not None, timeout or self.config.recovery_timeout_s
        )
        if ok:
            res.recovery_s = (self.probe.first_accept_after(t_end, pred) - t_end) / NS
        else:
            res.fail(f"no chunk merged within {timeout or self.config.recovery_timeout_s:.0f} s after the fault")

    # -------------------------------------------------------------- running cases
    def run_case(self, name: str) -> CaseResult:
        case = CASE_BY_NAME[name]
        res = CaseResult(name, case.expected)
        t_wall = time.monotonic()
        self.echo(f"[chaos] case {name} ...")
        try:
            if case.needs_graph:
                self._check_alone(res)
                if not self._alive():
                    res.fail("a node was not running before the case")
                elif not self._healthy():
                    res.fail("the graph was not serving chunks before the case")
                if not res.problems:
                    t0 = self.probe.now()
                    diag0 = {
                        n: self.probe.diag_of(n)
                        for n in ("correction", "scheduler", "policy", "camera_ingestion", "sim")
                    }
                    case.run(self, res)
                    # a little normal running after the case: the stream after recovery is checked too
                    n1 = self.probe.n_commands()
                    self.wait(lambda: self.probe.n_commands() - n1 >= int(0.5 * self.config.command_hz), 5.0)
                    t, q, sq = self.probe.commands(t0)
                    res.safety = check_command_stream(
                        t, q, self.dt_cmd, self.limits, self.probe.segment_starts(), self.config.rel_tol, seq=sq
                    )
                    if not res.safety.ok:
                        res.fail("command limits violated: " + "; ".join(res.safety.violations))
                    if res.safety.n_commands == 0:
                        res.fail("no command received during the case")
                    js_t, js_q = self.probe.joint_states(t0 - NS)
                    problems, worst = check_restarts(self.probe.segment_starts(), t, q, js_t, js_q, t0=t0)
                    if np.isfinite(worst):
                        res.details["restart_offset_rad"] = round(worst, 4)
                    if problems and case.strict_restarts:
                        for problem in problems:
                            res.fail(problem)
                    elif problems:
                        res.details["restart_problems"] = problems
                    res.alive = self._alive()
                    if not res.alive:
                        dead = sorted({n.name for n in self.graph.nodes} - set(self.launcher.alive()))
                        res.fail(f"node(s) exited: {', '.join(dead)}")
                    self._check_alone(res)  # a graph that joined the domain during the case
                    holds = counter_delta(diag0["correction"], self.probe.diag_of("correction"), "holds")
                    res.details.setdefault("correction_holds", holds.get("", 0))
            else:
                case.run(self, res)
        except Exception as exc:  # noqa: BLE001 - a case that raises is a failed case, with its reason
            res.fail(f"{type(exc).__name__}: {exc}")
        res.duration_s = time.monotonic() - t_wall
        res.passed = not res.problems
        self.echo(
            f"[chaos] case {name}: {'PASS' if res.passed else 'FAIL'} {res.observed}"
            + (f" | problems: {'; '.join(res.problems)}" if res.problems else "")
        )
        return res


def run_chaos(config: ChaosConfig | None = None, echo: Callable[[str], None] | None = None) -> list[CaseResult]:
    """Run the selected cases (graph cases on one graph start); returns one result per case."""
    config = config or ChaosConfig()
    run_ = ChaosRun(config, echo)
    try:
        return _run_cases(run_, config)
    finally:
        if not config.workdir:  # the temp folder this run made (params files, bags of the cases)
            shutil.rmtree(run_.workdir, ignore_errors=True)


def _run_cases(run_: ChaosRun, config: ChaosConfig) -> list[CaseResult]:
    selected = config.selected
    results: dict[str, CaseResult] = {}
    graph_cases = [n for n in selected if CASE_BY_NAME[n].needs_graph]
    need_bag = "bad_bags" in selected
    if "bad_params_start" in selected:  # before the graph: nothing else competes for the CPU
        results["bad_params_start"] = run_.run_case("bad_params_start")
    if graph_cases or need_bag:
        try:
            run_.start()
        except Exception as exc:  # noqa: BLE001 - report every graph case as failed, with why
            for n in graph_cases:
                results[n] = CaseResult(n, CASE_BY_NAME[n].expected, problems=[f"graph did not start: {exc}"])
            run_.stop()
            graph_cases = []
        else:
            try:
                for n in graph_cases:
                    results[n] = run_.run_case(n)
            finally:
                codes = run_.stop()
            bad_exit = {k: v for k, v in codes.items() if v not in (0, None)}
            if bad_exit and graph_cases:
                last = results[graph_cases[-1]]
                last.fail(f"nodes did not stop cleanly: {bad_exit}")
                last.passed = False
    if need_bag:
        results["bad_bags"] = run_.run_case("bad_bags")
    if "remote_faults" in selected:  # its own graph and server, after the shared graph stopped
        results["remote_faults"] = run_.run_case("remote_faults")
    return [results[n] for n in selected if n in results]


# ====================================================================== report
def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def write_report(
    results: Sequence[CaseResult], path: str | Path, config: ChaosConfig, command: str, elapsed_s: float
) -> Path:
    """The results table (markdown) from an actual run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    passed = sum(r.passed for r in results)
    lines = [
        "# Reliability: fault injection on the running graph",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')} ({elapsed_s:.0f} s). "
        f"{passed}/{len(results)} cases passed.",
        "",
        f"Graph: `franka` (MuJoCo sim, task `{config.task}`, method `{config.method}`, policy `{config.policy}`, "
        f"commands at {config.command_hz:.0f} Hz), the correction node's safety filter on the "
        f"`{config.robot}` limits. Each graph case checks the command stream against the `{config.robot}` position, "
        f"velocity, acceleration and jerk limits (discrete differences of consecutive commands at the command "
        f"period, relative tolerance {config.rel_tol:g}), that every node process is alive afterwards, and the "
        "recovery time: fault end -> first chunk merged again by the scheduler (measured on "
        "`/scheduler/chunk_report`), unless the column says otherwise. See docs/reliability.md.",
        "",
        "| case | expected | observed | recovery | safety (max of limit) | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.recovery_s is None:
            never = any(p.startswith("no chunk merged within") for p in r.problems)
            rec = "never" if never else (r.recovery_note or "-")
        else:
            rec = _fmt_s(r.recovery_s) + (f" ({r.recovery_note})" if r.recovery_note else "")
        saf = (
            "-"
            if r.safety is None
            else (
                f"v {r.safety.max_velocity_ratio:.2f}, a {r.safety.max_acceleration_ratio:.2f}, "
                f"j {r.safety.max_jerk_ratio:.2f} ({r.safety.n_commands} cmds)"
            )
        )
        verdict = "PASS" if r.passed else "FAIL: " + "; ".join(r.problems)
        cells = [r.name, r.expected, r.observed, rec, saf, verdict]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    lines += [
        "",
        "Safety column: the largest |velocity|, |acceleration| and |jerk| over all joints and commands "
        "during the case, as a fraction of the limit (1.00 = at the limit; the filter may ride it).",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# ====================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--cases", nargs="+", default=[], metavar="CASE", help=f"cases to run (default: all): {', '.join(CASE_NAMES)}"
    )
    parser.add_argument("--method", default="rtc", help="method preset of the graph (default rtc)")
    parser.add_argument(
        "--policy",
        default="expert",
        help="expert (default; no checkpoint needed), default (shipped checkpoint) or a path",
    )
    parser.add_argument("--task", default="track", help="task (default track)")
    parser.add_argument("--fault-s", type=float, default=2.5, help="duration of each timed fault (default 2.5 s)")
    parser.add_argument(
        "--out", default="reports/reliability.md", help="results table (default reports/reliability.md; '' : none)"
    )
    return parser


def run(ns: argparse.Namespace) -> int:
    try:
        cfg = ChaosConfig(cases=tuple(ns.cases), method=ns.method, policy=ns.policy, task=ns.task, fault_s=ns.fault_s)
    except ValueError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = run_chaos(cfg)
    elapsed = time.monotonic() - t0
    print()
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.name:20s} recovery {_fmt_s(r.recovery_s):>8s}  {r.observed}")
        for p in r.problems:
            print(f"      problem: {p}")
        if r.safety is not None:
            print(f"      safety: {r.safety.summary()}")
    if ns.out:
        command = (
            "async-vla-ros chaos"
            + (f" --cases {' '.join(ns.cases)}" if ns.cases else "")
            + (f" --policy {ns.policy}" if ns.policy != "expert" else "")
            + (f" --method {ns.method}" if ns.method != "rtc" else "")
        )
        out = write_report(results, ns.out, cfg, command, elapsed)
        print(f"report: {out}")
    return 0 if all(r.passed for r in results) else 1
