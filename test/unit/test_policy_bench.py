"""Sampler benchmark: runs end to end on a tiny configuration and reports every method."""

from __future__ import annotations

import argparse

import pytest

from async_vla_ros.eval import bench_samplers


def _ns(*argv):
    return bench_samplers.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_bench_reports_all_methods(capsys):
    ns = _ns(
        "--obs-dim",
        "6",
        "--horizon",
        "4",
        "--action-dim",
        "3",
        "--hidden",
        "16",
        "--depth",
        "1",
        "--steps",
        "2",
        "--bid-n",
        "2",
        "--delay",
        "1",
        "--reps",
        "3",
        "--warmup",
        "1",
    )
    res = bench_samplers.measure(ns)
    assert set(res) == {"vanilla", "rtc", "rtc_jf", "prefix", "remac", "bid", "a2c2", "step fwd", "step fwd+vjp"}
    assert res["vanilla"]["ratio"] == 1.0 and res["vanilla"]["paired_ratio"] == 1.0
    assert all(r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] for r in res.values())
    out = capsys.readouterr().out
    assert "median ms" in out and "a2c2 head" in out and "forward + VJP" in out


def test_bench_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        bench_samplers.run(_ns("--delay", "9", "--horizon", "8"))
    with pytest.raises(SystemExit):
        bench_samplers.run(_ns("--reps", "0"))


def test_report_shows_checkpoints_relative_to_the_repository():
    """The benchmark report never names a machine's checkout (it once showed /work/wt/<who>/...)."""
    from async_vla_ros.eval.bench_paper import REPO_ROOT, display_path

    assert display_path("/work/wt/i15/async_vla_ros/checkpoints/track_base.pt (b80aade52592)") == (
        "async_vla_ros/checkpoints/track_base.pt (b80aade52592)"
    )
    assert display_path(str(REPO_ROOT / "runs" / "x.pt") + " (abc)") == "runs/x.pt (abc)"
    assert display_path("async_vla_ros/checkpoints/a.pt (1)") == "async_vla_ros/checkpoints/a.pt (1)"
    assert display_path("/elsewhere/x.pt") == "/elsewhere/x.pt"  # outside the project: said as it is
