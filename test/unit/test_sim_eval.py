"""Wilson intervals (known answers) and the `eval` command on the scripted expert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from async_vla_ros.assets import panda_available
from async_vla_ros.eval.stats import format_rate, mean_sem, wilson_interval
from async_vla_ros.sim.lockstep import episode_seeds


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


@pytest.mark.skipif(not panda_available(), reason="Panda model not fetched (make setup)")
def test_eval_steps_out_round_trip_and_the_intercept_failure_table(tmp_path, capsys):
    """``eval --steps-out`` writes every episode step by step; ``eval.failures`` reads it."""
    from async_vla_ros.eval import failures
    from async_vla_ros.eval.eval_cmd import load_steps, main

    out = tmp_path / "steps"  # no suffix: written where asked, not at steps.npz
    argv = ["--task", "intercept", "--method", "naive", "--delay", "0", "2", "--episodes", "4", "--batch", "4"]
    assert (
        main([*argv, "--seed", "5", "--steps-out", str(out), "--json", str(tmp_path / "s.json"), "--no-progress"]) == 0
    )
    conditions, cols, per = load_steps(out)
    assert [(c["preset"], c["delay"]) for c in conditions] == [("naive", 0), ("naive", 2)]
    assert cols["q"] == slice(0, 7) and cols["ball_pos"].stop - cols["ball_pos"].start == 3
    for c, d in zip(conditions, per, strict=True):
        assert list(d["seed"]) == episode_seeds(5, 4) and d["success"].sum() == c["successes"]
        for j, n in enumerate(d["steps"]):
            assert np.isfinite(d["obs"][j, : n + 1]).all() and np.isnan(d["obs"][j, n + 1 :]).all()
            assert np.isfinite(d["commands"][j, :n]).all()
            # the command sent at step t is the joint target the next observation's arm moved towards
            assert np.abs(d["commands"][j, :n, :7] - d["obs"][j, 1 : n + 1, cols["q"]]).max() < 0.5
    assert failures.main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "naive d=0" in text and "reached the line's band" in text


def test_intercept_approach_known_answer():
    """A ball rolling straight at x = 0.45 + 0.05 - 0.03 t, y = 0.02 t; the TCP at y = 0 moving
    0.01 per step: 4 steps before the band the gap is the crossing y (ball y + vy tau) minus the TCP's."""
    from async_vla_ros.eval.failures import intercept_approach

    t = np.arange(12, dtype=float)
    cols = {"tcp": slice(0, 3), "ball_pos": slice(3, 6), "ball_vel": slice(6, 9)}
    obs = np.zeros((1, 12, 9))
    obs[0, :, 1] = 0.01 * t  # TCP y
    obs[0, :, 3] = 0.45 + 0.35 - 0.03 * t  # ball x: reaches 0.50 at t = 10
    obs[0, :, 4] = 0.02 * t  # ball y
    obs[0, :, 6], obs[0, :, 7] = -0.6, 0.4  # velocity (m/s): tau = dx / 0.6
    r = intercept_approach(obs, np.array([11]), np.array([False]), np.array([7]), cols, lookback=4, lead=0.05)
    assert list(r.t_c) == [10] and r.skipped == 0
    # t = 6: ball (0.62, 0.12), 0.17 m from the line -> y 0.12 + 0.4 * 0.17 / 0.6; TCP y 0.06
    np.testing.assert_allclose(r.gap_before, [0.12 + 0.4 * 0.17 / 0.6 - 0.06])
    np.testing.assert_allclose(r.moved, [0.04])  # towards the gap (+y)
    obs[0, :, 1] *= -1  # moving away from it
    assert intercept_approach(obs, np.array([11]), np.array([False]), np.array([7]), cols).moved[0] < 0
    with pytest.raises(ValueError, match="ball_pos"):
        intercept_approach(obs, np.array([11]), np.array([False]), np.array([7]), {"tcp": slice(0, 3)})


def test_disagreement_by_step_known_answer():
    from async_vla_ros.eval.failures import disagreement_by_step

    lab = [np.zeros((3, 8)), np.zeros((2, 8)), np.zeros((3, 8))]
    exe = [np.zeros((3, 8)), np.zeros((2, 8)), np.zeros((3, 8))]
    exe[0][:, 0] = [0.3, 0.4, 0.0]  # norms 0.3, 0.4, 0 (only the 7 joints count)
    exe[0][:, 7] = 9.0
    exe[1][:, :2] = [[0.3, 0.4], [0.0, 0.0]]  # norms 0.5, 0
    exe[2][:, 6] = 0.2
    out = disagreement_by_step(lab, exe, np.array([False, False, True]))
    np.testing.assert_allclose(out["failed"], [0.4, 0.2, 0.0])  # step 2: episode 0 only
    np.testing.assert_allclose(out["succeeded"], [0.2, 0.2, 0.2])
    assert set(disagreement_by_step(lab[:1], exe[:1], np.array([True]))) == {"succeeded"}
    with pytest.raises(ValueError, match="differ"):
        disagreement_by_step([np.zeros((3, 8))], [np.zeros((2, 8))], np.array([True]))


def test_eval_command_rejects_bad_input():
    from async_vla_ros.eval.eval_cmd import main

    with pytest.raises(SystemExit, match="did you mean"):
        main(["--task", "track", "--method", "rtcc", "--no-progress"])
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(["--task", "track", "--policy", "/nonexistent.pt", "--no-progress"])
