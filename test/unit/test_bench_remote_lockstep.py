"""bench pipeline --remote, part 2: the measured round trips replayed as delay traces in lockstep.

No server here: the round-trip table is given (what ``round_trips`` returns), the rest is the real
path -- json traces on disk, ``async-vla-ros eval --delay-trace`` over them with the shipped
checkpoints, the rows and the table the bench prints.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from async_vla_ros.eval.bench_remote import format_absorption, lockstep_absorption, write_traces


@pytest.mark.slow
def test_round_trips_become_traces_replayed_in_lockstep(tmp_path):
    rng = np.random.default_rng(3)
    # two added delays: round trips ~12 ms (1 step at 20 Hz) and ~212 ms (5 steps: ceil(0.212 / 0.05))
    rt = {
        0.0: {"round_trips_s": list(0.012 + rng.uniform(0, 0.002, 40))},
        100.0: {"round_trips_s": list(0.212 + rng.uniform(0, 0.02, 40))},
    }
    traces = write_traces(rt, [0.0, 100.0], "openpi", tmp_path / "traces")
    assert sorted(p.name for p in traces.values()) == ["remote_openpi_plus0ms.json", "remote_openpi_plus100ms.json"]
    stored = json.loads(traces[100.0].read_text())
    assert stored["latency_s"] == rt[100.0]["round_trips_s"] and stored["added_one_way_ms"] == 100.0

    rows = lockstep_absorption(traces, "track", ["naive", "rtc"], episodes=4, batch=4, json_out=tmp_path / "rows.json")
    assert [(r["added_one_way_ms"], r["method"]) for r in rows] == [
        (0.0, "naive"),
        (0.0, "rtc"),
        (100.0, "naive"),
        (100.0, "rtc"),
    ]
    for r in rows:
        lat = np.asarray(rt[r["added_one_way_ms"]]["round_trips_s"])
        steps = np.ceil(lat / 0.05 - 1e-9)
        assert r["d_steps_median"] == float(np.median(steps))
        assert r["d_steps_max"] == int(steps.max())
        assert r["n"] == 4 and 0 <= r["successes"] <= 4
        lo, hi = r["success_ci95"]
        assert lo <= r["successes"] / 4 <= hi
        assert math.isfinite(r["switch_jump_max"]) and r["switch_jump_max"] > 0
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    table = format_absorption(rows)
    assert len(table) == 1 + len(rows) and "+100" in table[-1] and "rtc" in table[-1]
