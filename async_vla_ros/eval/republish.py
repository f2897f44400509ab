"""Republish a recorded bag into a live ROS graph at its original timing (``replay BAG --republish``).

Messages go out in log-time order, each at ``start + (t_log - t_first) / rate`` on the monotonic
clock, from a dedicated thread (no executor callback sleeps). By default the robot side of the
graph is played (``/joint_states``, ``/camera/<name>/image_raw`` and ``camera_info`` per camera,
``/sim/task_state``: what the robot and the task publish), so a running camera_ingestion ->
policy -> scheduler -> correction chain works on recorded inputs; ``topics=None`` plays every
topic of the bag.

Header stamps: a live graph drops data stamped in the past (``max_state_age_s``), so by default
every non-zero ``builtin_interfaces/Time`` in a message (header stamps, image stamps, chunk
timings) is shifted by the same offset, ``ROS time at start - first log time``: relative timing and
ages are kept exactly. ``restamp_stamps=False`` republishes the CDR bytes unchanged.

:func:`playback_plan` and :func:`shift_stamps` are pure (no rclpy); :func:`republish` needs a
running rclpy context.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N

__all__ = [
    "ROBOT_TOPICS",
    "PlaybackItem",
    "PlaybackResult",
    "playback_plan",
    "shift_stamps",
    "restamp",
    "republish",
    "parse_remaps",
]

ROBOT_TOPICS = (
    N.absolute(N.JOINT_STATES),
    *(N.absolute(t) for c in N.CAMERAS for t in (N.camera_image_topic(c), N.camera_info_topic(c))),
    N.absolute(N.TASK_STATE),
)
_TIME = "builtin_interfaces/msg/Time"
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class PlaybackItem:
    """One message to republish: when (ns after the start), where, what (CDR bytes)."""

    offset_ns: int
    topic: str  # topic in the bag
    msgtype: str
    data: bytes


@dataclass(frozen=True)
class PlaybackResult:
    counts: dict[str, int]  # topic (as published) -> messages published
    lateness_ms: dict[str, float]  # median / p99 / max of (actual - scheduled) publish time
    duration_s: float
    stopped: bool  # ended by the stop event before the end of the bag


def shift_stamps(msg: Any, delta_ns: int) -> int:
    """Add ``delta_ns`` to every non-zero ``builtin_interfaces/Time`` inside a ``rosbags``
    message (in place, recursively); returns how many stamps were shifted."""
    n = 0
    for f in fields(msg):
        v = getattr(msg, f.name)
        if is_dataclass(v):
            if getattr(v, "__msgtype__", "") == _TIME:
                total = int(v.sec) * NS_PER_S + int(v.nanosec)
                if total:
                    total = max(0, total + int(delta_ns))
                    setattr(msg, f.name, type(v)(sec=total // NS_PER_S, nanosec=total % NS_PER_S))
                    n += 1
            else:
                n += shift_stamps(v, delta_ns)
        elif isinstance(v, list) and v and is_dataclass(v[0]):
            for item in v:
                n += shift_stamps(item, delta_ns)
    return n


def playback_plan(
    bag: str | Path, topics: Sequence[str] | None = ROBOT_TOPICS, rate: float = 1.0
) -> tuple[list[PlaybackItem], dict[str, str], int]:
    """The messages to publish, in order, with their offsets ``(t_log - t_first) / rate``; the
    type of each played topic; ``t_first`` (ns, log time of the first message). ``topics``: bag
    topics to play (those absent from the bag are skipped; None: all). Raises ``BagError`` for a
    bad bag and ValueError when nothing is left to play."""
    from async_vla_ros.bags import bag_info, read_messages

    if not (np.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be > 0, got {rate!r}")
    info = bag_info(bag)
    wanted = [t for t in (info.topics if topics is None else topics) if t in info.topics and info.counts.get(t, 0)]
    if not wanted:
        raise ValueError(
            f"bag {bag} holds none of the topics to republish ({', '.join(topics or [])}); "
            f"it has {', '.join(sorted(info.topics))}"
        )
    items: list[PlaybackItem] = []
    t_first = None
    for m in read_messages(bag, wanted, raw=True):
        if t_first is None:
            t_first = m.t_ns
        items.append(PlaybackItem(int(round((m.t_ns - t_first) / rate)), m.topic, m.msgtype, bytes(m.msg)))
    return items, {t: info.topics[t] for t in wanted}, int(t_first)


def restamp(data: bytes, msgtype: str, delta_ns: int) -> bytes:
    """CDR bytes with every non-zero stamp shifted by ``delta_ns`` (:func:`shift_stamps`)."""
    from async_vla_ros.bags import make_typestore

    store = make_typestore()
    obj = store.deserialize_cdr(data, msgtype)
    shift_stamps(obj, delta_ns)
    return bytes(store.serialize_cdr(obj, msgtype))


def _message_class(msgtype: str):
    import importlib

    pkg, sub, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def republish(
    node,
    bag: str | Path,
    topics: Sequence[str] | None = ROBOT_TOPICS,
    rate: float = 1.0,
    restamp_stamps: bool = True,
    remap: Mapping[str, str] | None = None,
    wait_for_subscribers_s: float = 0.0,
    stop: threading.Event | None = None,
) -> PlaybackResult:
    """Publish the bag's messages from ``node`` at their original timing (blocking: run it in its
    own thread when the node spins elsewhere). ``remap``: bag topic -> published topic.
    ``wait_for_subscribers_s``: first wait (up to this long) until every publisher is matched.
    ``restamp_stamps``: shift every stamp so the first message is stamped with the ROS time it is
    published at (exact relative timing at ``rate`` 1; with another rate, stamps keep their
    recorded spacing)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    remap = dict(remap or {})
    stop = stop or threading.Event()
    items, types, t_first = playback_plan(bag, topics, rate)
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
    pubs = {t: node.create_publisher(_message_class(ty), remap.get(t, t), qos) for t, ty in types.items()}
    deadline = time.monotonic() + wait_for_subscribers_s
    while time.monotonic() < deadline and not all(p.get_subscription_count() > 0 for p in pubs.values()):
        if stop.wait(0.02):
            break
    counts = {remap.get(t, t): 0 for t in types}
    late: list[float] = []
    lead_ns = 20_000_000  # prepare the first message before its time
    start = time.monotonic_ns() + lead_ns
    delta = node.get_clock().now().nanoseconds + lead_ns - t_first  # stamp shift (restamping)
    stopped = False
    try:
        for it in items:
            data = restamp(it.data, it.msgtype, delta) if restamp_stamps else it.data  # before waiting
            due = start + it.offset_ns
            wait = due - time.monotonic_ns()
            if (wait > 0 and stop.wait(wait / NS_PER_S)) or stop.is_set():
                stopped = True
                break
            late.append((time.monotonic_ns() - due) / 1e6)
            pubs[it.topic].publish(data)
            counts[remap.get(it.topic, it.topic)] += 1
    finally:
        for p in pubs.values():
            node.destroy_publisher(p)
    arr = np.asarray(late or [0.0])
    return PlaybackResult(
        counts,
        {"median": float(np.median(arr)), "p99": float(np.quantile(arr, 0.99)), "max": float(arr.max())},
        (time.monotonic_ns() - start) / NS_PER_S,
        stopped,
    )


def parse_remaps(values: Iterable[str]) -> dict[str, str]:
    """``["/joint_states:=/robot1/joint_states"]`` -> mapping (ValueError on a bad item)."""
    out = {}
    for v in values:
        if ":=" not in v:
            raise ValueError(f"--remap takes FROM:=TO, got {v!r}")
        a, b = v.split(":=", 1)
        if not a.startswith("/") or not b.startswith("/"):
            raise ValueError(f"--remap takes absolute topic names, got {v!r}")
        out[a] = b
    return out
