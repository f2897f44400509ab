"""Node health without ROS: thresholds, windowed rates, levels, parameter rows (known answers)."""

from __future__ import annotations

import math

import pytest

from async_vla_ros.nodes.health import (
    ERROR,
    OK,
    TELEMETRY_PARAMS,
    WARN,
    HealthMonitor,
    RateWindow,
    Threshold,
    evaluate,
    numeric_values,
    threshold_params,
    thresholds_from_values,
)
from async_vla_ros.nodes.params import ParamError, validate_values

S = 1_000_000_000


def test_threshold_levels_above_and_below():
    t = Threshold("latency_p95_s", 0.1, 0.3)
    assert [t.level(v) for v in (0.05, 0.1, 0.1001, 0.3, 0.31)] == [OK, OK, WARN, WARN, ERROR]
    low = Threshold("rate_hz", 15.0, 5.0, above=False)
    assert [low.level(v) for v in (20.0, 15.0, 14.9, 5.0, 4.0)] == [OK, OK, WARN, WARN, ERROR]
    for missing in (None, math.nan, "n/a"):
        assert t.level(missing) == OK and low.level(missing) == OK  # no data yet: not judged


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(key="x", warn=0.5, error=0.1), "must be >= warn"),
        (dict(key="x", warn=0.1, error=0.5, above=False), "must be <= warn"),
        (dict(key="x", warn=math.inf, error=1.0), "finite"),
        (dict(key="two words", warn=0.1, error=0.2), "without spaces"),
    ],
)
def test_threshold_rejects_bad_rows(kw, needle):
    with pytest.raises(ValueError, match=needle):
        Threshold(**kw)


def test_evaluate_reports_every_breach_worst_first():
    rules = (Threshold("a", 1.0, 2.0), Threshold("b", 1.0, 2.0), Threshold("c", 1.0, 2.0))
    h = evaluate({"a": 1.5, "b": 2.5, "c": 0.5}, rules)
    assert h.level == ERROR
    assert [b.key for b in h.breaches] == ["b", "a"] and [b.level for b in h.breaches] == [ERROR, WARN]
    assert h.message == "b 2.5 > ERROR limit 2; a 1.5 > WARN limit 1"
    assert evaluate({"a": 0.0}, rules).level == OK and evaluate({}, rules).message == "ok"


def test_rate_window_counts_events_of_the_last_window():
    w = RateWindow(10.0)
    assert w.update(0, 0) == 0.0
    assert w.update(1 * S, 5) == pytest.approx(0.5)  # 5 events in the (partial) first window / 10 s
    assert w.update(10 * S, 5) == pytest.approx(0.5)  # baseline 0 at t=0 is exactly the window start
    assert w.update(11 * S, 5) == pytest.approx(0.0)  # the 5 events at t=1 s are now before the window
    assert w.update(12 * S, 25) == pytest.approx(2.0)  # 20 new events in the last 10 s
    assert w.update(13 * S, 3) == pytest.approx(0.3)  # counter went down (restarted): counted from 0 again
    with pytest.raises(ValueError):
        RateWindow(0.0)


def test_health_monitor_derives_rates_and_levels_over_time():
    mon = HealthMonitor(
        (Threshold("dropped_per_s", 1.0, 10.0), Threshold("latency_s", 0.2, 0.5)), ("dropped",), window_s=2.0
    )
    vals, h = mon.update(0, {"dropped": 0, "latency_s": 0.1, "method": "rtc"})
    assert vals["dropped_per_s"] == 0.0 and h.level == OK and vals["method"] == "rtc"
    vals, h = mon.update(1 * S, {"dropped": 3, "latency_s": 0.1})
    assert vals["dropped_per_s"] == pytest.approx(1.5) and h.level == WARN
    vals, h = mon.update(2 * S, {"dropped": 40, "latency_s": 0.6})
    assert vals["dropped_per_s"] == pytest.approx(20.0) and h.level == ERROR
    assert {b.key for b in h.breaches} == {"dropped_per_s", "latency_s"}
    _, h = mon.update(5 * S, {"dropped": 40, "latency_s": 0.1})  # nothing new in the last 2 s
    assert h.level == OK
    with pytest.raises(ValueError, match="duplicate"):
        HealthMonitor((Threshold("x", 1, 2), Threshold("x", 1, 2)))


def test_threshold_parameters_round_trip_and_validation():
    rules = (
        Threshold("latency_p95_s", 0.25, 0.5, description="obs -> chunk"),
        Threshold("rate_hz", 15.0, 5.0, above=False),
    )
    rows = threshold_params(rules)
    assert [r.name for r in rows] == [
        "diag.latency_p95_s.warn",
        "diag.latency_p95_s.error",
        "diag.rate_hz.warn",
        "diag.rate_hz.error",
    ]
    assert "above" in rows[0].description and "below" in rows[2].description
    values = validate_values("n", TELEMETRY_PARAMS + rows, {"diag.latency_p95_s.error": 1})  # ints accepted
    got = thresholds_from_values("n", rules, values)
    assert (got[0].warn, got[0].error) == (0.25, 1.0) and (got[1].warn, got[1].error, got[1].above) == (
        15.0,
        5.0,
        False,
    )
    assert values["metrics_period_s"] == 0.2 and values["diag_window_s"] == 10.0
    # warn beyond error is rejected naming both parameters
    bad = validate_values("n", rows, {"diag.latency_p95_s.warn": 1.0})
    with pytest.raises(
        ParamError, match=r"diag.latency_p95_s.error \(0.5\) must be >= diag.latency_p95_s.warn \(1.0\)"
    ):
        thresholds_from_values("n", rules, bad)
    with pytest.raises(ParamError, match="must be a number"):
        validate_values("n", rows, {"diag.rate_hz.warn": "fast"})


def test_numeric_values_keeps_numbers_and_bools():
    import numpy as np

    got = numeric_values({"a": 1, "b": 0.5, "c": True, "d": "rtc", "e": np.float32(2.0), "f": np.int64(3)})
    assert got == {"a": 1.0, "b": 0.5, "c": 1.0, "e": 2.0, "f": 3.0}
