"""Demonstrations: write with the scripted expert, read back, compare with a fresh rollout."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from async_vla_ros.assets import panda_available

pytestmark = pytest.mark.skipif(not panda_available(), reason="Panda model not fetched (make setup)")

from async_vla_ros.sim import scene as S  # noqa: E402
from async_vla_ros.sim.demos import FORMAT, add_demo_arguments, load_demos, load_info, run_demos, write_demos  # noqa: E402
from async_vla_ros.sim.env import BatchedPandaEnv  # noqa: E402
from async_vla_ros.sim.experts import ScriptedExpert  # noqa: E402


def test_demos_round_trip(tmp_path):
    out = tmp_path / "demos"
    info = write_demos("intercept", out, 3, seed=10, batch=2, progress=False)
    assert info["format"] == FORMAT and info["total_episodes"] == 3
    demos = load_demos(out)
    assert demos.info == load_info(out)
    assert [e.seed for e in demos.episodes] == [10, 11, 12]
    # Re-simulate episode 1 (seed 11) with the clean expert: identical observations and labels.
    env = BatchedPandaEnv("intercept", 1)
    expert = ScriptedExpert(env.task)
    obs = env.reset([11])
    ep = demos.episodes[1]
    assert ep.obs.shape == (env.episode_steps, env.obs_dim) and ep.actions.shape == (env.episode_steps, 8)
    for t in range(env.episode_steps):
        np.testing.assert_array_equal(ep.obs[t], obs[0])
        a = expert.act(obs)
        np.testing.assert_array_equal(ep.actions[t], a[0])
        obs = env.step(a)
    assert ep.meta["success"] == bool(env.success()[0])
    assert ep.meta["task"] == "intercept"
    env.close()
    np.testing.assert_array_equal(ep.executed, ep.actions)  # no noise requested
    names = [n for n, _ in info["obs_fields"]]
    assert names[:4] == ["q", "qd", "gripper", "tcp"] and "ball_pos" in names


def test_demos_noise_images_and_cli(tmp_path):
    ok, reason = S.gl_available()
    cams = ["scene"] if ok else []
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    argv = [
        "bifurcate",
        "--episodes",
        "2",
        "--batch",
        "2",
        "--out",
        str(tmp_path / "d"),
        "--noise",
        "0.01",
        "--no-progress",
        "--image-size",
        "32",
    ] + (["--images"] if ok else [])
    assert run_demos(parser.parse_args(argv)) == 0
    demos = load_demos(tmp_path / "d")
    ep = demos.episodes[0]
    assert not np.allclose(ep.executed[:, :7], ep.actions[:, :7])  # noisy execution, clean labels
    assert np.abs(ep.executed - ep.actions).max() < 0.1
    assert ep.meta["expert_side"] in (-1, 1)
    if cams:
        assert ep.images.shape == (ep.length, 32, 32, 3) and ep.images.dtype == np.uint8
        assert ep.images.std() > 5
    # A second write into the same directory is refused (exit code 2), --overwrite replaces it.
    assert run_demos(parser.parse_args(argv)) == 2
    no_img = [a for a in argv if a != "--images"]
    assert run_demos(parser.parse_args(no_img + ["--overwrite"])) == 0
    assert load_demos(tmp_path / "d").episodes[0].images is None
    lines = (tmp_path / "d" / "meta" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["file"] == "data/episode_000000.parquet"


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="demos TASK"):
        load_demos(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_demos(tmp_path)
    with pytest.raises(ValueError, match="camera"):
        write_demos("track", tmp_path / "x", 1, images=["top"], progress=False)
