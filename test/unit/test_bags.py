"""Bag round-trip of every message type the graph records: rosbags writes, rosbags and
mcap-ros2-support read back the same values; errors for malformed and truncated bags."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from async_vla_ros import bags as B

pytest.importorskip("rosbags")

CUSTOM = sorted(p.stem for p in B.msg_dir().glob("*.msg"))  # every async_vla_msgs message
STANDARD = [
    "sensor_msgs/msg/JointState",
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CameraInfo",
    "trajectory_msgs/msg/JointTrajectory",
    "std_msgs/msg/Float64MultiArray",
    "diagnostic_msgs/msg/DiagnosticArray",
]
ALL_TYPES = [f"async_vla_msgs/msg/{n}" for n in CUSTOM] + STANDARD


def _filled(store, msgtype: str, rng: np.random.Generator, depth: int = 0):
    """A message with every field set to a non-default value (sequences of 1-3 elements)."""
    from rosbags.interfaces import Nodetype

    def value(desc):
        kind, detail = desc
        if kind == Nodetype.BASE:
            name = detail[0]
            if name in ("string", "wstring"):
                return f"s{rng.integers(1000)}"
            if name == "bool":
                return True
            if name.startswith("float"):
                return float(np.float32(rng.normal())) if name == "float32" else float(rng.normal())
            if name in ("int16", "int32", "int64"):
                return int(rng.integers(-1000, 1000))
            if name in ("uint32", "uint64"):
                return int(rng.integers(0, 999_999_999))  # also valid as Time.nanosec
            return int(rng.integers(0, 100))  # fits byte / char / int8 / uint8 / uint16
        if kind == Nodetype.NAME:
            return _filled(store, detail, rng, depth + 1)
        sub, count = detail
        n = count if kind == Nodetype.ARRAY else int(rng.integers(1, 4))
        if sub[0] == Nodetype.BASE and sub[1][0] in B._NUMPY_DTYPES:
            vals = [value(sub) for _ in range(n)]
            return np.array(vals, dtype=B._NUMPY_DTYPES[sub[1][0]])
        return [value(sub) for _ in range(n)]

    _, defs = store.fielddefs[msgtype]
    return store.types[msgtype](**{name: value(desc) for name, desc in defs})


def _plain(x):
    if hasattr(x, "__dataclass_fields__"):
        return {k: _plain(getattr(x, k)) for k in x.__dataclass_fields__ if k != "__msgtype__" and not k.isupper()}
    if hasattr(x, "__slots__") and not isinstance(x, (str, bytes)):  # mcap_ros2 dynamic messages
        return {k: _plain(getattr(x, k)) for k in x.__slots__}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, (bytes, bytearray)):
        return list(x)
    if isinstance(x, float):
        return round(x, 5)
    return x


def _write_all(path: Path) -> dict[str, list]:
    store = B.make_typestore()
    rng = np.random.default_rng(0)
    sent: dict[str, list] = {}
    with B.BagWriter(path) as w:
        for i, t in enumerate(ALL_TYPES):
            topic = "/t_" + t.split("/")[-1].lower()
            w.add_topic(topic, t)
            sent[topic] = [_filled(store, t, rng) for _ in range(3)]
            for j, m in enumerate(sent[topic]):
                w.write(topic, 1_000_000_000 + 1000 * (10 * i + j), m)
        assert dict(w.counts) == {t: 3 for t in sent}
    return sent


def test_roundtrip_rosbags_every_type(tmp_path):
    bag = tmp_path / "bag"
    sent = _write_all(bag)
    info = B.bag_info(bag)
    assert info.counts == {t: 3 for t in sent}
    assert (bag / "metadata.yaml").is_file() and len(list(bag.glob("*.mcap"))) == 1
    got: dict[str, list] = {}
    for m in B.read_messages(bag):
        got.setdefault(m.topic, []).append(m.msg)
    assert set(got) == set(sent)
    for topic in sent:
        assert [_plain(m) for m in got[topic]] == [_plain(m) for m in sent[topic]], topic


def test_roundtrip_mcap_ros2_support_every_type(tmp_path):
    mcap_reader = pytest.importorskip("mcap_ros2.reader")
    bag = tmp_path / "bag"
    sent = _write_all(bag)
    (mcap_file,) = bag.glob("*.mcap")
    got: dict[str, list] = {}
    schemas = {}
    for m in mcap_reader.read_ros2_messages(str(mcap_file)):
        got.setdefault(m.channel.topic, []).append(m.ros_msg)
        schemas[m.channel.topic] = m.schema.name
    assert set(got) == set(sent)
    for topic in sent:
        # mcap_ros2 decodes uint8[] as bytes and float32 exactly like rosbags (rounded in _plain)
        assert [_plain(m) for m in got[topic]] == [_plain(m) for m in sent[topic]], topic
    assert schemas["/t_actionchunk"] == "async_vla_msgs/msg/ActionChunk"


def test_default_message_and_topic_filter(tmp_path):
    bag = tmp_path / "bag"
    with B.BagWriter(bag) as w:
        w.add_topic("/observation", "async_vla_msgs/Observation")
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        w.write(
            "/observation",
            5,
            B.default_message("async_vla_msgs/Observation", obs_id=7, state=np.arange(3.0), state_dim=3),
        )
        w.write("/joint_states", 6, B.default_message("sensor_msgs/JointState"))
    msgs = list(B.read_messages(bag, topics=["/observation"]))
    assert len(msgs) == 1 and msgs[0].msg.obs_id == 7 and msgs[0].t_ns == 5
    assert msgs[0].msg.state.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(B.BagError, match="no topic"):
        list(B.read_messages(bag, topics=["/nope"]))
    with pytest.raises(ValueError, match="has no field"):
        B.default_message("async_vla_msgs/Observation", obsid=1)


def test_writer_errors(tmp_path):
    bag = tmp_path / "bag"
    with B.BagWriter(bag) as w:
        with pytest.raises(B.BagError, match="unknown message type"):
            w.add_topic("/x", "nope_msgs/msg/Nope")
        with pytest.raises(ValueError, match="absolute"):
            w.add_topic("x", "std_msgs/msg/Float64MultiArray")
        with pytest.raises(B.BagError, match="not added"):
            w.write_raw("/y", 0, b"\x00\x01\x00\x00")
    with pytest.raises(B.BagError, match="already exists"):
        B.BagWriter(bag)


def test_malformed_and_truncated_bags(tmp_path):
    with pytest.raises(B.BagError, match="does not exist"):
        list(B.read_messages(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(B.BagError, match="metadata.yaml"):
        B.bag_info(empty)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
    with pytest.raises(B.BagError, match="cannot open"):
        B.bag_info(garbage)

    bag = tmp_path / "bag"
    _write_all(bag)
    trunc = tmp_path / "trunc"
    shutil.copytree(bag, trunc)
    (mcap_file,) = trunc.glob("*.mcap")
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(B.BagError, match="malformed|truncated|cannot open"):
        list(B.read_messages(trunc))
