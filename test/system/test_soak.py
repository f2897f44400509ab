"""Reduced soak: the full graph + recorder for 30 s under one CPU stress process.

The on-demand form is ``async-vla-ros soak --duration 600`` (reports/soak.md). Here: nothing
dies, every node stops cleanly, the bag holds every message the publishers counted up to the same
instant (at most the few in flight then), the recorder drops nothing, the command stream stays
within the joint limits, and no node's memory grows grossly (30 s cannot resolve a slow leak; the
10-minute run's slope is in the report).
"""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("mujoco")
from async_vla_ros.assets import panda_available  # noqa: E402

if not panda_available():
    pytest.skip("MuJoCo Panda model not fetched (make setup)", allow_module_level=True)

from async_vla_ros.eval.soak import SoakConfig, format_report, read_cpu_s, read_rss_kb, run_soak  # noqa: E402

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_proc_readers_on_this_process():
    import os

    assert read_rss_kb(os.getpid()) > 1000  # this Python process holds more than 1 MB
    assert read_cpu_s(os.getpid()) > 0.0
    assert read_rss_kb(2**22 + 7) is None and read_cpu_s(2**22 + 7) is None  # no such pid


def test_soak_reduced(tmp_path):
    res = run_soak(
        SoakConfig(duration_s=30.0, stress=1, warmup_s=8.0, sample_s=2.0, workdir=str(tmp_path)),
        echo=lambda _line: None,
    )
    report = format_report(res)
    assert not res.problems, report
    assert res.alive_to_end and all(v == 0 for v in res.exit_codes.values()), report
    assert res.cpu_pct["stress"] > 0.0, report  # the stress process ran
    # bag vs publishers: every topic with a publisher-side counter was compared
    for topic, b in res.bag.items():
        assert b["published"] is not None and b["published"] > 0, (topic, report)
        assert abs(b["missing"]) <= 3, (topic, report)  # in flight at the counter's instant (or counted just after)
    assert all(v["dropped"] == 0 and v["received"] == v["written"] for v in res.recorder.values()), report
    assert res.safety is not None and res.safety.ok and res.safety.n_commands > 1000, report
    assert res.period["rate_hz"] == pytest.approx(100.0, rel=0.05), report
    for node, m in res.memory.items():
        assert m["growth_mb"] < 50.0, (node, report)
    assert res.chunks["accepted"] > 100, report
