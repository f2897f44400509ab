"""scripts/train_vla.sh, the whole VLA set from no data: its full-size commands (dry run) are the
chain docs/training.md gives and all parse; a tiny run goes end to end, times every step, refuses
to overwrite what it made and reuses it with RESUME=1, which redoes what a kill left unfinished and
everything made after it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from async_vla_ros.cli import build_parser

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_vla.sh"


def _run(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env={**os.environ, "MUJOCO_GL": "egl", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(tsv: Path) -> list[list[str]]:
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == ["step", "seconds", "status", "run"]
    return [line.split("\t") for line in lines[1:]]


def _cli_args(line: str) -> list[str] | None:
    words = shlex.split(line)
    return words[1:] if words and words[0].endswith("async-vla-ros") else None


def test_dry_run_is_the_documented_chain_and_every_command_parses():
    out = _run({}, "--dry-run", timeout=60)
    assert out.returncode == 0, out.stderr
    cmds = [a for a in map(_cli_args, out.stdout.splitlines()) if a is not None]
    for argv in cmds:  # every option exists (argparse exits on an unknown one)
        build_parser(argv).parse_args(argv)
    demos = [a for a in cmds if a[0] == "demos"]
    trains = [a for a in cmds if a[:2] == ["train", "vla"]]
    # 9 expert folders; DAgger: 5 rounds after the run from scratch, 4 after each of the next two
    # restarts, 2 (track) after the third, 4 (track, intercept) after the fourth
    expert = [a for a in demos if "--driver" not in a]
    dagger = [a for a in demos if "--driver" in a]
    assert len(expert) == 9 and len(dagger) == 5 + 4 + 4 + 2 + 4
    seeds = [int(a[a.index("--seed") + 1]) for a in dagger]
    assert len(set(seeds)) == len(seeds) and min(seeds) >= 200000  # no two rounds share episodes
    assert [a[a.index("--steps") + 1] for a in trains] == ["48000", "24000", "24000", "24000", "16000", "16000"]
    for i, a in enumerate(trains[1:], start=1):  # each restart starts from the run before, drives its rounds
        assert a[a.index("--init") + 1] == f"runs/B{i - 1}"
        assert a[a.index("--oversample-failed") + 1] == "8"
        drivers = {d[d.index("--driver") + 1] for d in dagger if d[d.index("--out") + 1] in a}
        assert f"lerobot:runs/B{i - 1}" in drivers
    assert any(a[:2] == ["train", "remac"] for a in cmds) and any(a[:2] == ["train", "a2c2"] for a in cmds)


def test_bad_stages_are_refused_before_anything_runs():
    out = _run({"STAGES": "10 10", "ROUNDS": "intercept"}, "--dry-run", timeout=60)
    assert out.returncode == 2 and "2 STAGES but 1 ROUNDS" in out.stderr, out.stderr
    out = _run({"STAGES": "10", "ROUNDS": "intercept cube"}, "--dry-run", timeout=60)
    assert out.returncode == 2 and "unknown round in 'intercept cube'" in out.stderr, out.stderr


def test_tiny_run_end_to_end_then_refuses_then_resumes(tmp_path):
    env = {
        "DATA": str(tmp_path / "data"),
        "RUNS": str(tmp_path / "runs"),
        "NAME": "t",
        "EXPERT_EPISODES": "4 4 4",
        "DAGGER_EPISODES": "4",
        "S0_STEPS": "6",
        "STAGES": "4",
        "ROUNDS": "intercept intercept2 track pick_moving bifurcate",
        "REMAC_STEPS": "3",
        "HEAD_STEPS": "3",
    }
    out = _run(env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs, data = tmp_path / "runs", tmp_path / "data"
    rows = _rows(runs / "t_times.tsv")
    assert len(rows) == 9 + 1 + 5 + 1 + 3 and all(r[2] == "ran" and int(r[1]) >= 0 for r in rows), rows

    # the restart: from t0, on the expert's data and the five rounds t0 drove, failed episodes 8 x
    t1 = json.loads((runs / "t1" / "async_vla_ros.json").read_text())["training"]
    assert t1["config"]["init"] == str(runs / "t0") and t1["config"]["oversample_failed"] == 8.0
    rounds = [d["path"] for d in t1["demos"] if "dagger_t0" in d["path"]]
    assert len(rounds) == 5
    for r in rounds:
        meta = json.loads((Path(r) / "meta" / "info.json").read_text())
        assert meta["driver"]["policy"] == f"lerobot:{runs / 't0'}"

    from safetensors import safe_open

    with safe_open(str(runs / "t_vla" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {__import__("torch").float16}
    assert (runs / "t_remac" / "model.safetensors").exists() and (runs / "t_a2c2.pt").exists()

    again = _run(env, timeout=120)  # what a run made is not overwritten
    assert again.returncode == 2 and "exists; RESUME=1 reuses it" in again.stderr, again.stderr
    resumed = _run({**env, "RESUME": "1"}, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _rows(runs / "t_times.tsv")
    assert sum(r[2] == "ran" for r in rows) == 19  # the first run's times are kept
    last = [r for r in rows if r[3] == rows[-1][3]]
    assert {r[2] for r in last} == {"reused"} and len(last) == 19
    assert (data / "dagger_t0" / "bifurcate" / "meta" / "info.json").exists()

    # what a kill leaves: a round cut short (no meta/info.json yet) and the restart's last checkpoint
    # short of its steps (train vla writes its folder every ckpt_every steps). Without RESUME: refused,
    # saying so; with it: both redone, and everything made after them (stale) too, the rest reused
    (data / "dagger_t0" / "track" / "meta" / "info.json").unlink()
    side_path = runs / "t1" / "async_vla_ros.json"
    side = json.loads(side_path.read_text())
    side["training"]["step"] = 2
    side_path.write_text(json.dumps(side))
    refused = _run(env, timeout=120)  # the first step that exists (t0, finished) is refused already
    assert refused.returncode == 2 and "exists; RESUME=1" in refused.stderr, refused.stderr
    redone = _run({**env, "RESUME": "1"}, timeout=600)
    assert redone.returncode == 0, redone.stdout[-3000:] + redone.stderr[-3000:]
    said = redone.stdout
    assert "dagger_t0/track exists but is unfinished: no record of a finished run" in said, said
    assert "t1 exists but is unfinished: a checkpoint at step 2 of 4; removed, redone" in said, said
    assert "t_vla exists but is unfinished: made before a step it depends on was redone" in said, said
    rows = _rows(runs / "t_times.tsv")
    last = [r for r in rows if r[3] == rows[-1][3]]
    ran = {r[0] for r in last if r[2] == "ran"}
    assert ran == {str(data / "dagger_t0" / "track")} | {str(runs / n) for n in ("t1", "t_vla", "t_remac", "t_a2c2.pt")}
    assert sum(r[2] == "reused" for r in last) == 14, last  # 9 expert folders, t0, the 4 other rounds
    t1 = json.loads(side_path.read_text())["training"]
    assert t1["step"] == t1["config"]["steps"] == 4
    assert (data / "dagger_t0" / "track" / "meta" / "info.json").exists()
