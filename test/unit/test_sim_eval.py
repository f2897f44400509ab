"""Wilson intervals (known answers) and the `eval` command on the scripted expert."""

from __future__ import annotations

import json

import pytest

from async_vla_ros.assets import panda_available
from async_vla_ros.eval.stats import format_rate, mean_sem, wilson_interval


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        (0, 10, 0.0, 0.2775),  # 95 % Wilson interval, textbook values
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), example 1 (method 3): 0.2553, 0.3662
    ],
)
def test_wilson_known_answers(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    assert a == pytest.approx(lo, abs=1e-4)
    assert b == pytest.approx(hi, abs=1e-4)


def test_wilson_properties_and_errors():
    lo99, hi99 = wilson_interval(30, 50, 0.99)
    lo95, hi95 = wilson_interval(30, 50, 0.95)
    assert lo99 < lo95 < 0.6 < hi95 < hi99
    assert format_rate(5, 10).startswith("0.500 [0.237, 0.763] (5/10)")
    for bad in [(11, 10), (-1, 10), (0, 0)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)
    m, s = mean_sem([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0 / 3**0.5)


@pytest.mark.skipif(not panda_available(), reason="Panda model not fetched (make setup)")
def test_eval_command_expert(tmp_path, capsys):
    from async_vla_ros.eval.eval_cmd import main

    out = tmp_path / "res.json"
    rc = main(
        [
            "--task",
            "bifurcate",
            "--method",
            "naive",
            "rtc",
            "--delay",
            "0",
            "3",
            "--episodes",
            "6",
            "--batch",
            "6",
            "--seed",
            "3",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "naive" in text and "rtc" in text and "Wilson" in text
    res = json.loads(out.read_text())
    assert [(r["preset"], r["delay"]) for r in res] == [("naive", 0), ("naive", 3), ("rtc", 0), ("rtc", 3)]
    for r in res:
        assert r["n"] == 6 and 0 <= r["success_ci95"][0] <= r["success_rate"] <= r["success_ci95"][1] <= 1
        assert r["episodes_per_s"] > 0 and r["infer_calls"] > 0


def test_eval_command_rejects_bad_input():
    from async_vla_ros.eval.eval_cmd import main

    with pytest.raises(SystemExit, match="did you mean"):
        main(["--task", "track", "--method", "rtcc", "--no-progress"])
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(["--task", "track", "--policy", "/nonexistent.pt", "--no-progress"])
