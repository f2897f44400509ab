"""The shipped rqt perspective and PlotJuggler layout plot fields that exist on the topics the
graph publishes (checked against the message definitions), and /diagnostics has a monitor."""

from __future__ import annotations

import ast
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from async_vla_ros import bags as B

pytest.importorskip("rosbags")
CONFIG = Path(__file__).resolve().parents[2] / "config"


def _field_exists(path: str) -> bool:
    """``/topic/name/field`` (a numeric field of a recorded topic's message)."""
    from rosbags.interfaces import Nodetype

    store = B.make_typestore()
    for topic, msgtype in B.DEFAULT_TOPICS.items():
        if path.startswith(topic + "/"):
            field = path[len(topic) + 1 :]
            names = {n: d for n, d in store.fielddefs[msgtype][1]}
            return field in names and names[field][0] == Nodetype.BASE  # a plain number / bool
    return False


def test_rqt_perspective_plots_existing_fields_and_monitors_diagnostics():
    data = json.loads((CONFIG / "async_vla_ros.perspective").read_text())
    manager = data["groups"]["pluginmanager"]
    running = ast.literal_eval(manager["keys"]["running-plugins"]["repr"])
    assert set(running) == {"rqt_plot/Plot", "rqt_runtime_monitor/RuntimeMonitor"}
    expected = {f"plugin__{name.replace('/', '__')}__{i}" for name, ids in running.items() for i in ids}
    assert set(manager["groups"]) == expected
    plotted = []
    for i in running["rqt_plot/Plot"]:
        keys = manager["groups"][f"plugin__rqt_plot__Plot__{i}"]["groups"]["plugin"]["keys"]
        topics = ast.literal_eval(keys["topics"]["repr"])
        assert topics and ast.literal_eval(keys["autoscroll"]["repr"]) is True
        plotted += topics
    missing = [p for p in plotted if not _field_exists(p)]
    assert not missing, missing
    assert any(p.startswith("/correction/command_metrics/") for p in plotted)
    assert any(p.endswith("/predicted_delay_steps") for p in plotted) and any(
        p.endswith("/measured_delay_steps") for p in plotted
    )


def test_plotjuggler_layout_curves_exist():
    root = ET.parse(CONFIG / "async_vla_ros.plotjuggler.xml").getroot()
    curves = [c.get("name") for c in root.iter("curve")]
    assert len(curves) >= 10
    missing = [c for c in curves if not _field_exists(c)]
    assert not missing, missing
