"""`async-vla-ros bench lerobot --policy vla`: the samplers timed on the shipped trained VLA, and the
RTC-vs-vanilla time ratio printed beside the paper's 1.28x (a few rounds: seconds)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lerobot")

pytestmark = pytest.mark.slow


def test_bench_lerobot_times_the_shipped_vla_and_prints_the_rtc_ratio(tmp_path, capsys):
    from async_vla_ros.cli import main

    out_json = tmp_path / "b.json"
    assert main(["bench", "lerobot", "--policy", "vla", "--reps", "2", "--trials", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "checkpoints/vla" in out and "cameras {'scene': (64, 64), 'wrist': (64, 64)}, state 15" in out
    line = next(x for x in out.splitlines() if x.startswith("RTC / vanilla inference time"))
    assert "(paper: 1.28x)" in line
    doc = json.loads(out_json.read_text())
    assert doc["paper_rtc_over_vanilla"] == 1.28 and doc["rtc_over_vanilla"] > 0 and doc["prefix_median_ms"] > 0
    assert f"{doc['rtc_over_vanilla']:.2f}x" in line
    assert {r["method"] for r in doc["rows"]} >= {"vanilla_v", "rtc"}
