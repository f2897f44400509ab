"""rosbag2 directories (MCAP storage) for the project's topics, written and read with ``rosbags``.

No ROS install is needed: ``rosbags`` (pure Python) serialises CDR and writes the rosbag2 layout
(``metadata.yaml`` + one ``.mcap`` file). Every connection carries its full message definition
(``ros2msg`` schema with the nested definitions) and its RIHS01 type hash, so ``ros2 bag``,
Foxglove, PlotJuggler and ``mcap-ros2-support`` read our custom ``async_vla_msgs`` types too.

* :func:`make_typestore` - the Kilted standard types plus ``async_vla_msgs`` parsed from the
  ``.msg`` files (the repo's ``msg/`` or the installed share folder).
* :class:`BagWriter` - add topics, write CDR bytes (from an ``rclpy`` ``raw=True`` subscription)
  or message objects; counts messages per topic.
* :func:`read_messages` / :func:`bag_info` - iterate / summarise a bag; malformed or truncated
  bags raise :class:`BagError` with what is wrong.

Topic names are absolute (``/observation``); :data:`DEFAULT_TOPICS` lists what the recorder
records by default with the types the nodes publish (docs/observability.md).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from async_vla_ros import names as N

__all__ = [
    "BagError",
    "CUSTOM_PACKAGE",
    "DEFAULT_TOPICS",
    "BagMessage",
    "BagInfo",
    "BagWriter",
    "make_typestore",
    "msg_dir",
    "read_messages",
    "bag_info",
    "default_message",
    "normalize_type",
]

CUSTOM_PACKAGE = "async_vla_msgs"

# topic -> ROS type of what the graph publishes (names from async_vla_ros/nodes, config/*.yaml)
DEFAULT_TOPICS: dict[str, str] = {
    N.absolute(N.OBSERVATION): "async_vla_msgs/msg/Observation",
    N.absolute(N.TASK_STATE): "async_vla_msgs/msg/Observation",
    N.absolute(N.CHUNK_REQUEST): "async_vla_msgs/msg/ChunkRequest",
    N.absolute(N.ACTION_CHUNK): "async_vla_msgs/msg/ActionChunk",
    N.absolute(N.ACTION_PLAN): "async_vla_msgs/msg/ActionPlan",
    N.absolute(N.CHUNK_REPORT): "async_vla_msgs/msg/ChunkReport",
    N.absolute(N.TRAJECTORY_COMMAND): "trajectory_msgs/msg/JointTrajectory",
    N.absolute(N.FORWARD_COMMAND): "std_msgs/msg/Float64MultiArray",
    N.absolute(N.JOINT_STATES): "sensor_msgs/msg/JointState",
    **{N.absolute(N.camera_image_topic(c)): "sensor_msgs/msg/Image" for c in N.CAMERAS},
    **{N.absolute(N.camera_info_topic(c)): "sensor_msgs/msg/CameraInfo" for c in N.CAMERAS},
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    N.absolute(N.EPISODE_RESULT): "diagnostic_msgs/msg/DiagnosticStatus",
    # metrics (async_vla_ros.nodes.metrics): every node's ~/metrics, the correction node's per-tick topic
    "/sim/metrics": "async_vla_msgs/msg/NodeMetrics",
    "/camera_ingestion/metrics": "async_vla_msgs/msg/NodeMetrics",
    "/policy/metrics": "async_vla_msgs/msg/NodeMetrics",
    "/scheduler/metrics": "async_vla_msgs/msg/NodeMetrics",
    "/correction/metrics": "async_vla_msgs/msg/NodeMetrics",
    N.absolute(N.COMMAND_METRICS): "async_vla_msgs/msg/CommandMetrics",
}


class BagError(RuntimeError):
    """A bag that cannot be written or read (missing, malformed, truncated, unknown type)."""


def msg_dir() -> Path:
    """Folder with the ``async_vla_msgs`` ``.msg`` files: the source tree's ``msg/`` if present,
    else the installed ``share/async_vla_msgs/msg``. FileNotFoundError names both places."""
    here = Path(__file__).resolve().parents[1] / "msg"
    share = Path(sys.prefix) / "share" / CUSTOM_PACKAGE / "msg"
    candidates = [here, share]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / CUSTOM_PACKAGE / "msg")
    for c in candidates:
        if (c / "ActionChunk.msg").is_file():
            return c
    raise FileNotFoundError(f"{CUSTOM_PACKAGE} .msg files not found in: {', '.join(map(str, candidates))}")


_TYPESTORE = None


def make_typestore():
    """A ``rosbags`` typestore: ROS 2 Kilted standard types + every ``async_vla_msgs`` message.

    Built once per process and shared (the typestore is only read after construction)."""
    global _TYPESTORE
    if _TYPESTORE is not None:
        return _TYPESTORE
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    folder = msg_dir()
    for path in sorted(folder.glob("*.msg")):
        name = f"{CUSTOM_PACKAGE}/msg/{path.stem}"
        types.update(get_types_from_msg(path.read_text(), name))
    if not types:
        raise FileNotFoundError(f"no .msg files in {folder}")
    store.register(types)
    _TYPESTORE = store
    return store


def _check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not topic.startswith("/") or topic.endswith("/") or " " in topic:
        raise ValueError(f"topic must be an absolute ROS name like '/observation', got {topic!r}")
    return topic


class BagWriter:
    """Writes one rosbag2 directory with MCAP storage.

    ``path`` must not exist (rosbag2 never overwrites). Use as a context manager or call
    :meth:`close`; a bag that is not closed lacks its metadata and MCAP summary.
    Not thread-safe: one thread writes (the recorder node has a writer thread with a queue).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag path {self.path} already exists (rosbag2 does not overwrite)")
        self.typestore = make_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"cannot open bag {self.path}: {exc}") from exc
        self._connections: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()
        self.closed = False

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register ``topic`` with ROS type ``msgtype`` (``pkg/msg/Name`` or ``pkg/Name``)."""
        _check_topic(topic)
        msgtype = normalize_type(msgtype)
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise BagError(f"topic {topic} already added with type {self._connections[topic].msgtype}")
            return
        if msgtype not in self.typestore.fielddefs:
            raise BagError(
                f"unknown message type {msgtype!r} for {topic} (not a Kilted standard type nor {CUSTOM_PACKAGE})"
            )
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)

    @property
    def topics(self) -> dict[str, str]:
        return {t: c.msgtype for t, c in self._connections.items()}

    def write_raw(self, topic: str, t_ns: int, data: bytes | memoryview) -> None:
        """Append CDR bytes (with their 4-byte encapsulation header) received at ``t_ns``."""
        if self.closed:
            raise BagError("bag writer is closed")
        conn = self._connections.get(topic)
        if conn is None:
            raise BagError(f"topic {topic} was not added")
        if len(data) < 4:
            raise BagError(f"{topic}: CDR data of {len(data)} bytes is too short")
        self._writer.write(conn, int(t_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, t_ns: int, msg: Any) -> None:
        """Serialise a ``rosbags`` message object (see :meth:`new`) and append it."""
        conn = self._connections.get(topic)
        if conn is None:
            raise BagError(f"topic {topic} was not added")
        self.write_raw(topic, t_ns, self.typestore.serialize_cdr(msg, conn.msgtype))

    def new(self, msgtype: str):
        """The ``rosbags`` dataclass of ``msgtype`` (construct messages for :meth:`write`)."""
        return self.typestore.types[normalize_type(msgtype)]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def normalize_type(msgtype: str) -> str:
    """``pkg/Name`` or ``pkg/msg/Name`` -> ``pkg/msg/Name``."""
    parts = str(msgtype).split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS message type name: {msgtype!r}")
    return "/".join(parts)


_NUMPY_DTYPES = {
    "bool": "bool",
    "byte": "uint8",
    "char": "uint8",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
    "float32": "float32",
    "float64": "float64",
}


def _default_value(store, desc):
    import numpy as np
    from rosbags.interfaces import Nodetype

    kind, detail = desc
    if kind == Nodetype.BASE:
        name = detail[0]
        if name in ("string", "wstring"):
            return ""
        if name == "bool":
            return False
        return 0.0 if name.startswith("float") else 0
    if kind == Nodetype.NAME:
        return default_message(detail)
    sub, count = detail
    n = count if kind == Nodetype.ARRAY else 0
    if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY_DTYPES:
        return np.zeros(n, dtype=_NUMPY_DTYPES[sub[1][0]])
    return [_default_value(store, sub) for _ in range(n)]


def default_message(msgtype: str, **fields: Any):
    """A ``rosbags`` message of ``msgtype`` with every field zero / empty (fixed arrays zero-filled,
    nested messages defaulted), then the top-level ``fields`` given set. Unknown field names raise
    ValueError. Numeric sequences are numpy arrays of the field's dtype."""
    store = make_typestore()
    msgtype = normalize_type(msgtype)
    if msgtype not in store.fielddefs:
        raise ValueError(f"unknown message type {msgtype!r}")
    _, defs = store.fielddefs[msgtype]
    names = [n for n, _ in defs]
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"{msgtype} has no field(s) {', '.join(sorted(unknown))}; fields: {', '.join(names)}")
    values = {n: fields[n] if n in fields else _default_value(store, d) for n, d in defs}
    return store.types[msgtype](**values)


@dataclass(frozen=True)
class BagMessage:
    """One message read from a bag: ``msg`` is a ``rosbags`` dataclass (arrays as numpy)."""

    topic: str
    msgtype: str
    t_ns: int  # log (receive) time
    msg: Any


@dataclass(frozen=True)
class BagInfo:
    path: Path
    storage: str
    start_ns: int
    end_ns: int
    topics: dict[str, str]  # topic -> type
    counts: dict[str, int]  # topic -> message count (from the metadata)

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def n_messages(self) -> int:
        return sum(self.counts.values())


def _open_reader(path: str | os.PathLike):
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if not p.exists():
        raise BagError(f"bag {p} does not exist")
    if not p.is_dir():
        raise BagError(f"bag {p} is not a rosbag2 directory (expected a folder with metadata.yaml)")
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"bag {p} has no metadata.yaml (not a rosbag2 directory, or the recorder did not close it)")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, yaml / KeyError / struct errors on garbage
        raise BagError(f"cannot open bag {p}: {type(exc).__name__}: {exc}") from exc
    return reader


def bag_info(path: str | os.PathLike) -> BagInfo:
    """Topics, types, counts and time span from the bag's metadata."""
    reader = _open_reader(path)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        counts: Counter[str] = Counter()
        for c in reader.connections:
            counts[c.topic] += int(c.msgcount)
        storage = "mcap" if any(Path(path).glob("*.mcap")) else "sqlite3"
        return BagInfo(Path(path), storage, int(reader.start_time), int(reader.end_time), topics, dict(counts))
    finally:
        reader.close()


def read_messages(
    path: str | os.PathLike, topics: Iterable[str] | None = None, raw: bool = False
) -> Iterator[BagMessage]:
    """Messages of ``topics`` (all if None) in log-time order. ``raw=True``: ``msg`` is the CDR
    bytes. Raises :class:`BagError` for a missing, malformed or truncated bag, and for a topic
    asked for that the bag does not hold."""
    store = make_typestore()
    reader = _open_reader(path)
    try:
        conns = list(reader.connections)
        if topics is not None:
            wanted = set(topics)
            missing = wanted - {c.topic for c in conns}
            if missing:
                raise BagError(
                    f"bag {path} has no topic(s) {', '.join(sorted(missing))}; it has "
                    f"{', '.join(sorted({c.topic for c in conns})) or 'none'}"
                )
            conns = [c for c in conns if c.topic in wanted]
        for c in conns:
            if not raw and c.msgtype not in store.fielddefs:
                raise BagError(f"bag {path}: topic {c.topic} has unknown type {c.msgtype}")
        n_expected = sum(int(c.msgcount) for c in conns)
        n = 0
        try:
            for conn, t_ns, data in reader.messages(connections=conns):
                msg = bytes(data) if raw else store.deserialize_cdr(data, conn.msgtype)
                n += 1
                yield BagMessage(conn.topic, conn.msgtype, int(t_ns), msg)
        except BagError:
            raise
        except Exception as exc:  # truncated chunks, bad CDR, ...
            raise BagError(
                f"bag {path} is malformed or truncated after {n} messages: {type(exc).__name__}: {exc}"
            ) from exc
        if n != n_expected:
            raise BagError(f"bag {path} is truncated: metadata lists {n_expected} messages, read {n}")
    finally:
        reader.close()
