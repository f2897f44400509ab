"""Shared pieces of the ROS nodes: stamps, drop counting, diagnostics, the ``main`` runner.

The ROS environment defaults (:func:`async_vla_ros.rosenv.apply_ros_defaults`: localhost
discovery, own domain, log folder) are applied by the entry points: :func:`run_node` (every node
executable) before ``rclpy.init``, the CLI, the launchers and the tests. rclpy reads them at
``init``, not at import, so importing this module has no side effect.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from async_vla_ros.core.clock import NS_PER_S, stamp_to_ns
from async_vla_ros.nodes.params import ParamError
from async_vla_ros.rosenv import STACK_DUMP_SIGNAL, apply_ros_defaults

__all__ = [
    "NS_PER_S",
    "stamp_to_ns",
    "ns_to_stamp",
    "RosClock",
    "DropCounter",
    "make_qos",
    "Diagnostics",
    "run_node",
    "shutting_down",
    "enable_crash_tracebacks",
    "stop_spin",
    "SpinThread",
    "build_node",
]


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    ns = int(ns)
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


class RosClock:
    """A :class:`async_vla_ros.core.clock.Clock` over a node's ROS clock (system time unless
    ``use_sim_time``): the time base of every header stamp, so steps computed from stamps and
    from ``now`` agree across processes. Not for pacing loops (see ``CycleTimer`` on monotonic)."""

    def __init__(self, node) -> None:
        self._clock = node.get_clock()

    def now_ns(self) -> int:
        return int(self._clock.now().nanoseconds)


class EchoFilter:
    """Messages a node took in process (a hand-over within ``policy_container``) whose published copy
    then comes back on the topic it also subscribes to: that copy is skipped, once. A second copy (a
    rogue re-send of the same message) is taken and checked like any other. Bounded: past
    ``capacity`` keys the oldest are forgotten (a copy that never came back, e.g. a failed publish).
    Thread-safe (hand-overs come in on the sender's thread)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._taken: OrderedDict[Any, None] = OrderedDict()
        self._lock = threading.Lock()
        self.n_echoes = 0

    def taken(self, key) -> None:
        """A message with ``key`` was taken in process."""
        with self._lock:
            self._taken[key] = None
            while len(self._taken) > self.capacity:
                self._taken.popitem(last=False)

    def is_echo(self, key) -> bool:
        """True (and counted) for the first copy from the topic of a message taken in process."""
        with self._lock:
            if self._taken.pop(key, False) is None:
                self.n_echoes += 1
                return True
            return False


class DropCounter:
    """Counts dropped inputs by reason; logs the first drop of each reason once (warning)."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def drop(self, reason: str, detail: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            first = self.counts[reason] == 1
        if first:
            self._logger.warning(
                f"dropped input ({reason}){': ' + detail if detail else ''} "
                "[logged once per reason; see /diagnostics for counts]"
            )

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def make_qos(reliability: str = "reliable", depth: int = 10, transient_local: bool = False) -> QoSProfile:
    """QoS from parameter strings (``reliable`` | ``best_effort``); franka_ros2's convenience
    state topics are BEST_EFFORT: a RELIABLE subscriber would never match them."""
    rel = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=rel,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


class Diagnostics:
    """Publishes one ``DiagnosticStatus`` per node on ``/diagnostics`` at a low rate.

    ``collect()`` returns the key/values (numbers formatted with repr so they parse back exactly).
    """

    def __init__(self, node, collect: Callable[[], dict[str, Any]], period_s: float = 1.0, callback_group=None) -> None:
        self._node = node
        self._collect = collect
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self.publish, callback_group=callback_group)
        self.level = DiagnosticStatus.OK
        self.message = "ok"

    def status(self) -> DiagnosticStatus:
        values = self._collect()
        kv = [KeyValue(key=str(k), value=repr(v) if isinstance(v, float) else str(v)) for k, v in values.items()]
        return DiagnosticStatus(
            level=self.level,
            name=self._node.get_fully_qualified_name(),
            message=self.message,
            hardware_id="async_vla_ros",
            values=kv,
        )

    def publish(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self._node.get_clock().now().to_msg()
        arr.status = [self.status()]
        self._pub.publish(arr)


EXECUTORS = ("events", "single", "multi")


def make_executor(kind: str | None = None):
    """The executor nodes spin on: ``ASYNC_VLA_ROS_EXECUTOR`` = events (rclpy's EventsExecutor,
    the cheapest on CPU; default where available) | single | multi. Heavy work never runs in
    callbacks (inference, the command loop and physics have their own threads), so one
    executor thread is enough."""
    kind = kind or os.environ.get("ASYNC_VLA_ROS_EXECUTOR", "events")
    if kind not in EXECUTORS:
        raise ValueError(f"ASYNC_VLA_ROS_EXECUTOR={kind!r}: choose one of {', '.join(EXECUTORS)}")
    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor

            return EventsExecutor()
        except ImportError:
            kind = "single"
    return SingleThreadedExecutor() if kind == "single" else MultiThreadedExecutor(num_threads=2)


def shutting_down(context=None, wait_s: float = 1.0) -> bool:
    """True when the ROS ``context`` is shut down or becomes so within ``wait_s``.

    rclpy handles SIGINT/SIGTERM on a thread of its own: an executor or a publisher can fail
    (``RuntimeError``, "publisher's context is invalid", a pybind11 conversion error) a moment
    *before* ``context.ok()`` turns False. Code that must tell such a stop from a real error asks
    this instead of ``context.ok()``: a real error leaves the context up and costs ``wait_s``
    before it is reported.
    """
    ok = rclpy.ok if context is None else context.ok
    deadline = time.monotonic() + wait_s
    while ok():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


class SpinThread(threading.Thread):
    """Spins ``executor`` (``spin_once`` in a loop) until :meth:`stop`, which ends the loop and
    joins the thread before it shuts the executor down. ``executor.spin`` in a thread can only be
    ended by ``Executor.shutdown``, which returns at once (its wait for running work never happens
    once it set its own shut-down flag) and destroys the executor's guard condition under the live
    spin (the spin then dies with AttributeError / InvalidHandle); and a node destroyed while the
    spin still builds its wait set kills the spin ("InvalidHandle: cannot use Destroyable because
    destruction was requested")."""

    def __init__(self, executor, name: str = "spin", period_s: float = 0.1) -> None:
        super().__init__(name=name, daemon=True)
        self.executor = executor
        self.error: BaseException | None = None  # what ended the spin early (a raising callback)
        self._halt = threading.Event()
        self._period_s = period_s

    def run(self) -> None:
        context = self.executor.context
        while not self._halt.is_set() and context.ok():
            try:
                self.executor.spin_once(timeout_sec=self._period_s)
            except ExternalShutdownException:
                return  # the context was shut down
            except BaseException as exc:  # kept for the owner to report, then the thread dies with it
                self.error = exc
                raise

    def stop(self, timeout_s: float = 10.0) -> None:
        self._halt.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout_s)
        self.executor.shutdown(timeout_sec=0)


def stop_spin(executor, thread: threading.Thread | None, timeout_s: float = 10.0) -> None:
    """Stop the spin of ``executor`` in ``thread`` and wait for that thread to end; call it before
    destroying the executor's nodes or their entities (see :class:`SpinThread`). A plain thread
    running ``executor.spin`` can only be stopped by shutting the executor down first."""
    if isinstance(thread, SpinThread):
        thread.stop(timeout_s)
        return
    executor.shutdown(timeout_sec=2.0)
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout_s)


def enable_crash_tracebacks() -> None:
    """On a fatal signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) print the Python traceback of
    every thread to stderr (the node's log under a launcher) before the process dies: the frame
    that was running in each thread is what a bug report about a crashed node needs. Permanent,
    costs nothing until a crash. A process that enabled it already (pytest, ``python -X
    faulthandler``, ``PYTHONFAULTHANDLER``) keeps its own setting."""
    if not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)
    register_stack_dump()


def register_stack_dump() -> None:
    """``kill -USR1 PID`` prints the Python stack of every thread of this node to stderr, from a
    C-level handler: it answers also while the main thread is stuck inside a C call (an executor's
    wait, a lock, DDS), where Python-level signal handlers -- rclpy's SIGINT/SIGTERM included --
    never run. The built-in launcher sends it before it SIGKILLs a node that ignored SIGINT and
    SIGTERM, so a hung stop leaves where it hung in the log."""
    with contextlib.suppress(ValueError, RuntimeError, AttributeError):  # no such signal / not main thread
        faulthandler.register(STACK_DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=False)


def build_node(factory: Callable[..., Any], **kwargs: Any):
    """``factory(**kwargs)``; when it is a node class whose constructor fails half-way (a bad parameter is
    found after rclpy's ``Node.__init__`` made the node, its parameter services and publishers),
    the half-built node is destroyed with rclpy's ``destroy_node`` (entities first, the node last)
    before the error propagates. Left to reference counting, it was freed implicitly when
    ``run_node`` dropped the exception, with the DDS threads running, and the process died of
    SIGSEGV there: 1 in 240 exits of scheduler nodes started six at a time with a bad parameter
    (faulthandler pointed at the ``return 2`` that drops the exception). Tests that expect a
    constructor to fail build through it too."""
    if not isinstance(factory, type):
        return factory(**kwargs)
    node = factory.__new__(factory)
    try:
        node.__init__(**kwargs)
    except BaseException:
        destroy = getattr(node, "destroy_node", None)
        if destroy is not None:
            with contextlib.suppress(Exception):  # Node.__init__ itself failed: nothing to destroy
                destroy()
        raise
    return node


STOP_TRACE_AFTER_S = 3.0  # run_node: a stop slower than this prints every thread's traceback


class _SpinSafeInterrupt:
    """Python's SIGINT handler for :func:`run_node`. rclpy's own handler (installed by
    ``rclpy.init``) shuts the context down and chains to the handler it found, this one. While the
    node starts (imports, checkpoints) it raises ``KeyboardInterrupt`` as Python's default does, so
    a Ctrl-C aborts a long start. Once the node spins it only notes the signal: the context going
    down ends the spin between two callbacks. A ``KeyboardInterrupt`` raised between two statements
    of a callback would leave its work half done (the recorder counted a message it then never
    queued for the bag)."""

    def __init__(self) -> None:
        self.spinning = False

    @classmethod
    def install(cls) -> _SpinSafeInterrupt:
        handler = cls()
        with contextlib.suppress(ValueError):  # not the main thread (in-process tests): leave it
            signal.signal(signal.SIGINT, handler)
        return handler

    def __call__(self, signum, frame) -> None:
        if not self.spinning:
            raise KeyboardInterrupt


def run_node(factory: Callable[..., Any], args: Sequence[str] | None = None) -> int:
    """``main`` of every node executable: init, build (parameters validated), spin, clean exit.

    A :class:`ParamError` (or any ``ValueError`` / ``FileNotFoundError`` raised while building the
    node from its parameters) prints a clear message and returns 2. Ctrl-C / SIGTERM -- also while
    the node is still starting (importing torch, loading a checkpoint) -- end it cleanly with 0.
    A node sets ``exit_code`` (non-zero on a fatal error in one of its threads) and
    ``shutdown_requested`` to end the spin itself.
    """
    enable_crash_tracebacks()
    argv = list(sys.argv if args is None else args)
    apply_ros_defaults()  # before init: rclpy reads the environment there
    interrupt = _SpinSafeInterrupt.install()  # before init: rclpy's handler chains to it
    rclpy.init(args=argv)
    node = None
    name = getattr(factory, "NODE_NAME", factory.__name__)
    try:
        try:
            node = build_node(factory)
        except (ParamError, ValueError, FileNotFoundError) as exc:
            print(f"[{name}] cannot start: {exc}", file=sys.stderr, flush=True)
            return 2
        except Exception:
            # SIGINT while a C extension initialises (mujoco, torch) surfaces as
            # "ImportError: initialization failed", not as KeyboardInterrupt
            if not shutting_down():
                raise
            return 0
        executor = make_executor()
        for member in getattr(node, "nodes", None) or (node,):  # a container (nodes/policy_container.py) spins all
            executor.add_node(member)
        try:
            interrupt.spinning = True  # from here a SIGINT ends the spin through the context only
            while rclpy.ok() and not getattr(node, "shutdown_requested", False):
                executor.spin_once(timeout_sec=0.2)
        except ExternalShutdownException:
            pass
        except Exception:
            if not shutting_down():
                raise  # a real error in a callback: exit non-zero with its traceback
            # the context was (being) shut down by SIGINT/SIGTERM while the executor ran: a clean stop
        return int(getattr(node, "exit_code", 0) or 0)
    except KeyboardInterrupt:
        return int(getattr(node, "exit_code", 0) or 0) if node is not None else 0
    finally:
        # Stopping from here on. Ctrl-C in a terminal signals the whole process group and
        # `ros2 launch` then forwards a second SIGINT: that one must not interrupt close() (a
        # KeyboardInterrupt in a thread join, exit code -2) or the interpreter's exit handlers.
        # launch escalates to SIGTERM / SIGKILL itself if a close hangs.
        # SIGTERM, from here on, ends the process at once (launch's escalation when a stop hangs):
        # rclpy's handlers only shut the context down, which a hung close() never looks at, and
        # the EventsExecutor's own handler answers only the first of SIGINT / SIGTERM at all; a
        # hung close() could then only be SIGKILLed.
        with contextlib.suppress(ValueError):  # not the main thread (in-process tests): leave them
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # a stop that takes longer than STOP_TRACE_AFTER_S prints where every thread is (launch
        # escalates to SIGTERM after 5 s: without this a hung stop leaves nothing to go on)
        faulthandler.dump_traceback_later(STOP_TRACE_AFTER_S, exit=False, file=sys.stderr)
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - report, still shut down
                    print(f"[{name}] error while closing: {exc}", file=sys.stderr)
            try:
                node.destroy_node()
            except Exception as exc:  # noqa: BLE001 - already shutting down
                print(f"[{name}] error while destroying the node: {exc}", file=sys.stderr)
        if rclpy.ok():
            rclpy.shutdown()
        # still armed through the interpreter's exit, which joins every non-daemon thread (a thread
        # pool's workers) before it runs atexit callbacks: a stop that hangs there is traced too
        # (a sim node once outlived launch's 30 s grace with nothing in its log to say where)
        atexit.register(faulthandler.cancel_dump_traceback_later)


def set_realtime(priority: int, logger) -> bool:
    """SCHED_FIFO for the calling thread when permitted; warns and returns False otherwise."""
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (PermissionError, OSError, AttributeError) as exc:
        logger.warning(f"SCHED_FIFO priority {priority} not permitted ({exc}); running with the default scheduler")
        return False
