"""Two processes exchange an ActionChunk over Fast DDS on loopback; every field is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")

from async_vla_ros.msgdict import message_to_dict  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from chunk_peer import make_chunk  # noqa: E402

pytestmark = pytest.mark.system
PEER = Path(__file__).with_name("chunk_peer.py")


def test_action_chunk_crosses_processes_intact():
    env = dict(os.environ)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    listener = subprocess.Popen(
        [sys.executable, str(PEER), "listener", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    talker = subprocess.Popen(
        [sys.executable, str(PEER), "talker", "--timeout", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = listener.communicate(timeout=45)
    finally:
        for p in (listener, talker):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
    assert listener.returncode == 0, f"listener got nothing: {err[-2000:]}"
    received = json.loads(out.strip().splitlines()[-1])
    expected = json.loads(json.dumps(message_to_dict(make_chunk()), default=list))
    # every field, nested timing included
    assert set(received) == set(expected)
    for key, value in expected.items():
        if key == "actions":
            assert received[key] == pytest.approx(value, abs=0, rel=0), key
        else:
            assert received[key] == value, key
