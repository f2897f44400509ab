"""Delay distributions of simulated runs: parsing, seeded per-scheduler sources, traces, tallies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from async_vla_ros.core.delay import DelaySpec, ForecastTally, load_delay_trace, parse_delay


def test_parse_fixed_and_uniform():
    assert parse_delay("3").fixed == 3 and parse_delay(2).fixed == 2
    u = parse_delay("1:4")
    assert (u.lo, u.hi, u.fixed, u.label, u.mean) == (1, 4, None, "U{1..4}", 2.5)
    for bad in ("4:1", "a", "1:x", "-1"):
        with pytest.raises(ValueError):
            parse_delay(bad)


def test_uniform_source_is_seeded_per_stream_and_covers_the_range():
    spec = parse_delay("1:4")
    sa, sb, sc = spec.source(0, 3), spec.source(0, 3), spec.source(0, 4)
    a = [sa() for _ in range(400)]
    b = [sb() for _ in range(400)]
    c = [sc() for _ in range(400)]
    assert a == b and a != c
    counts = np.bincount(a, minlength=5)
    assert counts[0] == 0 and all(60 < k < 140 for k in counts[1:])  # ~100 each


def test_trace_source_cycles_in_order_from_a_seeded_offset():
    spec = DelaySpec(trace=(1, 2, 3, 5))
    assert (spec.lo, spec.hi, spec.fixed) == (1, 5, None)
    src = spec.source(7, 0)
    first = [src() for _ in range(8)]
    i = (1, 2, 3, 5).index(first[0])
    assert first == [(1, 2, 3, 5)[(i + k) % 4] for k in range(8)]
    assert parse_delay("2").source(0)() == 2


def test_load_trace_formats(tmp_path):
    dt = 0.05
    (tmp_path / "a.txt").write_text("# latency s\n0.04\n0.051, x\n0.1\n0.0\n")
    assert load_delay_trace(tmp_path / "a.txt", dt).trace == (1, 2, 2, 0)
    (tmp_path / "b.json").write_text(json.dumps({"latency_s": [0.12, 0.2]}))
    assert load_delay_trace(tmp_path / "b.json", dt).trace == (3, 4)
    (tmp_path / "c.json").write_text(json.dumps([40, 160]))
    assert load_delay_trace(tmp_path / "c.json", dt, unit="ms").trace == (1, 4)
    (tmp_path / "d.json").write_text(json.dumps({"delay_steps": [2, 3]}))
    spec = load_delay_trace(tmp_path / "d.json", dt)
    assert spec.trace == (2, 3) and spec.label == "trace:d"
    (tmp_path / "e.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no latencies"):
        load_delay_trace(tmp_path / "e.txt", dt)
    with pytest.raises(FileNotFoundError):
        load_delay_trace(tmp_path / "missing.txt", dt)


def test_forecast_tally():
    t = ForecastTally()
    for f, a in [(2, 2), (2, 4), (3, 1), (1, 2)]:
        t.add(f, a)
    d = t.as_dict()
    assert (d["requests"], d["under"], d["over"]) == (4, 2, 1)
    assert d["mean_under_steps"] == 1.5 and d["mean_over_steps"] == 2.0
    assert ForecastTally().merge([t, t]).as_dict()["under"] == 4
