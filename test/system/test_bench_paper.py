"""`async-vla-ros bench paper --tiny` end to end on tiny random checkpoints (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from async_vla_ros.cli import main
from async_vla_ros.eval import bench_paper as B
from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead
from async_vla_ros.policy.base import save_checkpoint
from async_vla_ros.policy.networks import FlowNetConfig, build_network
from async_vla_ros.policy.normalize import DimNorm, Normalizer
from async_vla_ros.sim.tasks import Q_REST, make_task


def _write_tiny_checkpoints(d, task="track", weak=True):
    obs_dim = make_task(task).obs_dim
    norm = Normalizer(
        DimNorm.identity(obs_dim), DimNorm("meanstd", np.r_[Q_REST, 0.04], np.full(8, 0.01))
    )  # actions near the rest pose
    cfg = FlowNetConfig(
        obs_dim=obs_dim, action_dim=8, horizon=8, hidden=16, channel_hidden=16, token_hidden=8, depth=1, obs_hidden=16
    )
    kinds = ["base", "remac", "remac_clean"] + (["base_weak"] if weak else [])
    for i, kind in enumerate(kinds):
        torch.manual_seed(i)
        save_checkpoint(d / f"{task}_{kind}.pt", build_network(cfg), norm, task=task)
    CorrectionHead(CorrectionConfig(obs_dim, 8, 8, hidden=16, depth=1), norm).save(d / f"{task}_a2c2.pt")


def _write_tiny_vla(d, folder):
    """The VLA condition's files in ``d``: a tiny VLA as vla/ and vla_remac/, and its A2C2 head."""
    import shutil

    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

    shutil.copytree(folder, d / "vla")
    shutil.copytree(folder, d / "vla_remac")
    be = load_policy_spec(f"vla:{folder}", BackendRequest("track"))
    cfg = CorrectionConfig(15, 8, be.horizon, latent_dim=be.latent_dim, hidden=16, depth=1)
    CorrectionHead(cfg, Normalizer.identity(15, 8)).save(d / "vla_a2c2.pt")


def test_tiny_benchmark_runs_both_conditions_end_to_end(tmp_path, tiny_smolvla_proprio_dir):
    _write_tiny_checkpoints(tmp_path)
    _write_tiny_vla(tmp_path, tiny_smolvla_proprio_dir)
    out = tmp_path / "rep" / "benchmark.md"
    rc = main(
        [
            "bench",
            "paper",
            "--tiny",
            "--ckpt-dir",
            str(tmp_path),
            "--out",
            str(out),
            "--no-progress",
            "--json",
            str(tmp_path / "b.json"),
            "--ablations",
        ]
    )
    assert rc == 0
    text = out.read_text()
    from async_vla_ros.presets import preset_names

    # the VLA condition first, then the privileged-state one, each a section with its own tables
    vla_at, state_at = text.index("# 1. The VLA"), text.index("# 2. Privileged state")
    assert vla_at < state_at
    vla, state = text[vla_at:state_at], text[state_at:]
    for m in ("naive", "rtc", "rtc_lerobot", "remac_clean", "a2c2", "rtc_a2c2", "bid"):
        assert f"| {m} |" in vla
    assert "remac on track (" in vla and "rtc_lerobot" not in state  # what the VLA cannot serve is reported
    assert "benchmark_vla_track.png" in vla and (out.parent / "benchmark_vla_track.png").is_file()
    assert "--policy vla" in vla and "## The papers' claims" in vla
    assert (tmp_path / "b.vla.json").is_file() and (tmp_path / "b.state.json").is_file()
    text = state
    for m in preset_names():
        assert f"| {m} |" in text
    assert "torch" in out.read_text() and "bench paper" in out.read_text()  # the header, once for both
    assert "95 % Wilson" in text and "d=4" in text
    assert "## The papers' claims" in text and "B=1 chunk" in text
    png = out.parent / "benchmark_track.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "benchmark_track.png" in text
    assert "remac_nomask on track (no track_remac_nomask.pt)" in text  # absent ablations are reported, not run
    assert "d ~ U{1..3}" in text and "forecast under / over" in text  # the jittered-delay column and its table
    assert "J = I" in text
    # each condition names the machine and commit it was measured on; so does a report merged later
    # from the dumps, and a dump without that record (older runs) says so instead of borrowing the
    # merging machine's
    whole = out.read_text()
    assert "- Machine (vla): " in whole and "- Machine (state): " in whole and "not recorded" not in whole
    vla_dump = json.loads((tmp_path / "b.vla.json").read_text())
    assert vla_dump["machine"]["git"] and vla_dump["machine"]["cpu"]
    del vla_dump["machine"]
    (tmp_path / "old.vla.json").write_text(json.dumps(vla_dump))
    merged = tmp_path / "merged.md"
    rc = main(
        [
            "bench",
            "paper",
            "--merge",
            str(tmp_path / "old.vla.json"),
            str(tmp_path / "b.state.json"),
            "--out",
            str(merged),
        ]
    )
    assert rc == 0
    head = merged.read_text().split("# 1. The VLA")[0]
    assert "- Machine (vla): not recorded in its dump" in head and "- Machine (state): " in head
    assert "- This report written on: " in head


def test_missing_checkpoint_and_bad_method_give_clear_errors(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "paper",
                "--tiny",
                "--condition",
                "state",
                "--ckpt-dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "r.md"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    rc = main(["bench", "paper", "--tiny", "--ckpt-dir", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert rc == 2 and "multi-task VLA is not there; train it" in capsys.readouterr().err
    assert main(["bench", "paper", "--tiny", "--methods", "rtcc", "--out", str(tmp_path / "r.md")]) == 2
    assert "did you mean 'rtc'" in capsys.readouterr().err


def test_claim_verdicts_follow_the_numbers():
    cfg = B.BenchConfig(tasks=("track",), methods=("naive", "rtc"), delays=(0, 2), episodes=100)
    res = B.BenchResults(cfg)

    def add(m, d, k):
        res.summaries.append(
            {
                "task": "track",
                "preset": m,
                "delay": d,
                "successes": k,
                "n": 100,
                "per_episode": {"switch_jump_max": [0.1] * 100},
            }
        )

    add("naive", 0, 90), add("naive", 2, 40), add("rtc", 0, 90), add("rtc", 2, 80)
    claims = {c.text: c.verdict for c in B.check_claims(res)}
    assert claims["RTC (soft mask) beats naive async under delay (d in [2])"] == "supported"
    assert claims["naive async success drops as the delay grows (d=0 vs d=2)"] == "supported"
    res.summaries[3]["successes"] = 20  # rtc now worse than naive at d=2
    claims = {c.text: c.verdict for c in B.check_claims(res)}
    assert claims["RTC (soft mask) beats naive async under delay (d in [2])"].startswith("not supported")
    res.summaries[3]["successes"] = 42
    claims = {c.text: c.verdict for c in B.check_claims(res)}
    assert claims["RTC (soft mask) beats naive async under delay (d in [2])"].startswith("not resolved")


def test_the_safety_filter_condition_is_said_and_its_plots_are_named_after_the_report(tmp_path):
    _write_tiny_checkpoints(tmp_path)
    out = tmp_path / "sf.md"
    argv = ["bench", "paper", "--tiny", "--condition", "state", "--methods", "naive", "rtc", "--safety-filter"]
    rc = main(
        argv + ["--ckpt-dir", str(tmp_path), "--out", str(out), "--no-progress", "--json", str(tmp_path / "sf.json")]
    )
    assert rc == 0
    text = out.read_text()
    assert "through the FR3 safety filter" in text and "sf_track.png" in text and (tmp_path / "sf_track.png").is_file()
    # its dump does not merge with an unfiltered one of the same condition
    import json

    dump = json.loads((tmp_path / "sf.json").read_text())
    assert dump["config"]["safety_filter"] is True and all(s["safety_filter"] for s in dump["summaries"])
    dump["config"]["safety_filter"] = False
    (tmp_path / "plain.json").write_text(json.dumps(dump))
    with pytest.raises(ValueError, match="different safety_filter"):
        B.merge_results([tmp_path / "sf.json", tmp_path / "plain.json"])
    # without --out a filtered run writes its own report, never over the unfiltered one
    run = tmp_path / "run"
    (run / "reports").mkdir(parents=True)
    (run / "reports" / "benchmark.md").write_text("the unfiltered report\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run)
        assert main(["bench", "paper", "--merge", str(tmp_path / "sf.json")]) == 0
    assert (run / "reports" / "benchmark.md").read_text() == "the unfiltered report\n"
    assert "through the FR3 safety filter" in (run / "reports" / "benchmark_safety_filter.md").read_text()
    assert (run / "reports" / "benchmark_safety_filter_track.png").is_file()


def test_parallel_workers_end_when_bench_paper_is_killed(tmp_path):
    """A SIGKILL (or SIGTERM) to ``bench paper --jobs N`` ends it without a pool shutdown; its
    workers must not keep simulating, orphaned: they watch their parent and exit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "pool.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from async_vla_ros.eval.bench_paper import _exit_with_parent\n"
        "def work(_):\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(2, mp_context=mp.get_context('spawn'), initializer=_exit_with_parent,\n"
        "                             initargs=(os.getpid(),)) as pool:\n"
        "        futs = [pool.submit(work, i) for i in range(2)]\n"
        "        while len(pool._processes) < 2 or not all(f.running() for f in futs):\n"
        "            time.sleep(0.05)\n"
        "        print(' '.join(map(str, pool._processes)), flush=True)\n"
        "        time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        def alive(pid: int) -> bool:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
            except FileNotFoundError:
                return False

        deadline = time.monotonic() + 15.0
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in workers if alive(p)]
        for p in left:  # only the workers this test started
            os.kill(p, signal.SIGKILL)
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
