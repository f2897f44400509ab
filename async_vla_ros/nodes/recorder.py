"""recorder node: records topics into a rosbag2 directory (MCAP storage) through ``rosbags``.

Subscriptions are ``raw=True``: rclpy hands over the CDR bytes, which go unchanged into the bag
(no deserialisation on the executor thread). A writer thread owns the
:class:`~async_vla_ros.bags.BagWriter`; callbacks only stamp the receive time and put
``(topic, t_ns, bytes)`` on a bounded queue. A full queue counts a drop for that topic (never
blocks the executor); at the default rates the queue never fills (docs/observability.md has the
measured numbers). Counts per topic (received, written, dropped) are published on
``/diagnostics`` and logged on shutdown; ``stats_file`` also writes them as JSON.

Topics: ``topics`` (names, relative names resolve in the node's namespace like the other nodes'
topics) with their types from :data:`~async_vla_ros.bags.DEFAULT_TOPICS`; a topic whose type
is not known there is subscribed once it appears in the ROS graph (``get_topic_names_and_types``,
checked every ``discovery_period_s``), so metrics topics that come later are recorded too.
``record_all``: every topic in the graph with a type the bag typestore knows.

Lock order: ``_lock`` guards the counters only; the queue has its own lock; the writer thread
never takes ``_lock`` while writing.

Run: ``python -m async_vla_ros.nodes.recorder --ros-args -p output:=/tmp/run1``.
"""

from __future__ import annotations

import importlib
import json
import queue
import threading
import time
from collections import Counter
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from async_vla_ros.bags import DEFAULT_TOPICS, BagWriter, make_typestore, normalize_type
from async_vla_ros.nodes.common import Diagnostics, make_qos, run_node
from async_vla_ros.nodes.params import Param, declare_params

NODE_NAME = "recorder"


def _relative(topic: str) -> str:
    """A default topic as the nodes name it: relative (resolved in the recorder's namespace, like
    the graph's own), except ``/diagnostics``, which every node publishes absolute."""
    return topic if topic == "/diagnostics" else topic.lstrip("/")


PARAMS = (
    Param("output", "", "rosbag2 directory to create (must not exist); '' : ./bags/run_<local time>"),
    Param(
        "topics",
        [_relative(t) for t in DEFAULT_TOPICS],
        "topics to record (relative names resolve in the node's namespace)",
    ),
    Param("record_all", False, "also record every other topic in the graph whose type is known"),
    Param("best_effort_topics", [], "topics to subscribe BEST_EFFORT (franka_ros2 convenience topics)", elem=str),
    Param("depth", 100, "subscription history depth", min=1, max=100000),
    Param("queue_size", 20000, "writer queue capacity (messages); a full queue counts drops", min=10, max=10_000_000),
    Param(
        "discovery_period_s",
        0.5,
        "how often topics of not-yet-known type are looked up in the graph",
        min=0.05,
        max=60.0,
    ),
    Param("stats_file", "", "write the per-topic counts as JSON here on shutdown ('' : no file)"),
)

_STOP = object()


def _message_class(msgtype: str):
    """``pkg/msg/Name`` -> the generated rclpy class (ImportError / AttributeError if missing)."""
    pkg, sub, name = normalize_type(msgtype).split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


class RecorderNode(Node):
    """See the module docstring."""

    NODE_NAME = NODE_NAME

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        out = p["output"] or str(Path("bags") / time.strftime("run_%Y%m%d-%H%M%S"))
        self.path = Path(out)
        if self.path.exists():
            raise ValueError(f"output {self.path} already exists (rosbag2 never overwrites): choose a new name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = make_typestore()
        self.writer = BagWriter(self.path)
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._queue: queue.Queue = queue.Queue(maxsize=p["queue_size"])
        self.exit_code = 0
        self.shutdown_requested = False
        self._closing = False
        self.writer_error: BaseException | None = None
        self._subs: dict[str, object] = {}
        self._best_effort = {self.resolve_topic_name(t) for t in p["best_effort_topics"]}
        self._cb_group = ReentrantCallbackGroup()
        defaults = {self.resolve_topic_name(_relative(t)): ty for t, ty in DEFAULT_TOPICS.items()}
        self._wanted: dict[str, str | None] = {}
        for t in p["topics"]:
            name = self.resolve_topic_name(t)
            self._wanted[name] = defaults.get(name)
        self._thread = threading.Thread(target=self._write_loop, name="bag_writer", daemon=True)
        self._thread.start()
        for name, ty in self._wanted.items():
            if ty is not None:
                self._subscribe(name, ty)
        group = MutuallyExclusiveCallbackGroup()
        self.create_timer(p["discovery_period_s"], self._discover, callback_group=group)
        self.diagnostics = Diagnostics(self, self._diag_values, callback_group=group)
        self.get_logger().info(
            f"recording {len(self._subs)} topic(s) into {self.path} "
            f"({sum(v is None for v in self._wanted.values())} waiting for their type)"
        )

    # ------------------------------------------------------------------ subscriptions
    def _subscribe(self, topic: str, msgtype: str) -> bool:
        msgtype = normalize_type(msgtype)
        if topic in self._subs:
            return True
        if msgtype not in self.typestore.fielddefs:
            self.get_logger().warning(f"not recording {topic}: type {msgtype} unknown to the bag typestore")
            return False
        try:
            cls = _message_class(msgtype)
        except (ImportError, AttributeError) as exc:
            self.get_logger().warning(f"not recording {topic}: cannot import {msgtype} ({exc})")
            return False
        self.writer_add(topic, msgtype)
        qos = make_qos("best_effort" if topic in self._best_effort else "reliable", self.p["depth"])
        self._subs[topic] = self.create_subscription(
            cls, topic, self._callback(topic), qos, raw=True, callback_group=self._cb_group
        )
        return True

    def writer_add(self, topic: str, msgtype: str) -> None:
        # registered through the queue so the writer thread is the only one touching the writer
        done = threading.Event()
        self._queue.put((topic, msgtype, done))
        if not done.wait(5.0):
            raise RuntimeError(f"bag writer did not register {topic} within 5 s")

    def _callback(self, topic: str):
        clock = self.get_clock()

        def on_message(data: bytes) -> None:
            try:
                t_ns = clock.now().nanoseconds
            except Exception:  # noqa: BLE001 - the context went down under a callback (shutdown)
                if self.context.ok():
                    raise
                return
            # counted and queued (or counted dropped) as one step, and never after close() queued
            # the writer's stop: every message counted received is written or counted dropped
            with self._lock:
                if self._closing:
                    return
                self.received[topic] += 1
                try:
                    self._queue.put_nowait((topic, t_ns, data))
                except queue.Full:
                    self.dropped[topic] += 1

        return on_message

    def _discover(self) -> None:
        pending = [t for t, ty in self._wanted.items() if ty is None and t not in self._subs]
        if not pending and not self.p["record_all"]:
            return
        graph = dict(self.get_topic_names_and_types())
        for t in pending:
            types = graph.get(t)
            if types:
                self._wanted[t] = types[0]
                if self._subscribe(t, types[0]):
                    self.get_logger().info(f"recording {t} ({types[0]})")
        if self.p["record_all"]:
            for t, types in graph.items():
                if t not in self._subs and t not in ("/rosout", "/parameter_events") and types:
                    if normalize_type(types[0]) in self.typestore.fielddefs:
                        self._subscribe(t, types[0])
        if self.writer_error is not None and not self.shutdown_requested:
            self.get_logger().error(f"bag writer failed: {self.writer_error}")
            self.exit_code = 1
            self.shutdown_requested = True

    # ------------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if isinstance(item[2], threading.Event):
                    self.writer.add_topic(item[0], item[1])
                    item[2].set()
                    continue
                self.writer.write_raw(item[0], item[1], item[2])
        except BaseException as exc:  # noqa: BLE001 - surfaced through writer_error / exit_code
            self.writer_error = exc

    # ------------------------------------------------------------------ counts
    def counts(self) -> dict[str, dict[str, int]]:
        """Per topic: received (callbacks), written (into the bag), dropped (queue full)."""
        with self._lock:
            recv, drop = dict(self.received), dict(self.dropped)
        written = dict(self.writer.counts)
        topics = sorted(set(recv) | set(written) | set(self._subs))
        return {
            t: {"received": recv.get(t, 0), "written": written.get(t, 0), "dropped": drop.get(t, 0)} for t in topics
        }

    def _diag_values(self) -> dict[str, object]:
        c = self.counts()
        values: dict[str, object] = {"bag": str(self.path), "queue": self._queue.qsize()}
        for t, v in c.items():
            values[f"{t} received"] = v["received"]
            values[f"{t} dropped"] = v["dropped"]
        dropped = sum(v["dropped"] for v in c.values())
        if self.writer_error is not None:
            self.diagnostics.level, self.diagnostics.message = (
                DiagnosticStatus.ERROR,
                f"writer failed: {self.writer_error}",
            )
        elif dropped:
            self.diagnostics.level, self.diagnostics.message = DiagnosticStatus.WARN, f"{dropped} message(s) dropped"
        else:
            self.diagnostics.level, self.diagnostics.message = DiagnosticStatus.OK, "recording"
        return values

    def close(self, timeout_s: float = 30.0) -> dict[str, dict[str, int]]:
        """Stop subscriptions, drain the queue into the bag, close it; returns :meth:`counts`."""
        with self._lock:  # a callback still running (a multi-threaded executor) queues first
            self._closing = True
        for sub in list(self._subs.values()):
            self.destroy_subscription(sub)
        self._subs.clear()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"bag writer did not drain within {timeout_s} s")
        self.writer.close()
        counts = self.counts()
        total = {k: sum(v[k] for v in counts.values()) for k in ("received", "written", "dropped")}
        self.get_logger().info(
            f"bag {self.path} closed: {total['written']} written, {total['dropped']} dropped "
            f"of {total['received']} received"
        )
        if self.p["stats_file"]:
            Path(self.p["stats_file"]).write_text(
                json.dumps({"bag": str(self.path), "topics": counts, "total": total}, indent=1)
            )
        if self.writer_error is not None:
            raise RuntimeError(f"bag writer failed: {self.writer_error}") from self.writer_error
        return counts


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
