"""Demonstrations: write with the scripted expert, read back, compare with a fresh rollout."""

from __future__ import annotations

import argparse
import functools
import json

import numpy as np
import pytest

from async_vla_ros import names as N
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
    # the execution noise of a seed is what it always was (a driver's draws never enter a recording without one)
    write_demos("intercept", tmp_path / "noisy", 2, seed=3, batch=2, noise=0.01, progress=False)
    noisy = load_demos(tmp_path / "noisy").episodes
    first = np.random.default_rng([3, 0xDA27]).normal(0.0, 0.01, size=(2, 7))
    np.testing.assert_allclose([e.executed[0, :7] - e.actions[0, :7] for e in noisy], first, atol=1e-12)


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


def test_dagger_a_driver_executes_and_the_expert_labels_the_states_it_reaches(tmp_path, capsys):
    """``--driver``: the driver's first action is what the robot got, the label is the expert's
    action at the state reached; its cameras (a previous frame too) come from the recorded frames."""
    ok, reason = S.gl_available()
    if not ok:
        pytest.skip(reason)

    class Stay:  # holds the arm where it is, opens the gripper; records what it was shown
        horizon, action_dim, obs_dim, reads_proprio = 3, 8, 15, True
        camera_hw = {"scene": (16, 16), "scene_prev2": (16, 16)}
        image_style = "collision"

        def __init__(self):
            self.seen = []

        def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None, beta=None):
            assert sampler == "vanilla" and obs["state"].shape == (2, 15) and len(obs["instruction"]) == 2
            self.seen.append(obs)
            q = obs["state"][:, :7]
            return np.repeat(np.concatenate([q, np.full((2, 1), 0.03)], 1)[:, None], self.horizon, 1)

    record = functools.partial(
        write_demos, "track", episodes=2, batch=2, images=("scene",), image_size=16, progress=False
    )
    drv = Stay()
    info = record(tmp_path / "d", driver=drv, driver_spec="stay")
    assert info["driver"] == {"policy": "stay", "expert_share": 0.0}
    ep = load_demos(tmp_path / "d").episodes[0]
    np.testing.assert_array_equal(ep.executed[:, 7], 0.03)  # the driver's command ran
    np.testing.assert_allclose(ep.executed[:, :7], ep.obs[:, :7], atol=0.05)  # held where it was
    assert np.abs(ep.actions[:, :7] - ep.executed[:, :7]).max() > 0.01  # the expert would have moved
    assert not np.allclose(ep.actions[:, 7], 0.03)
    for t, obs in enumerate(drv.seen):
        np.testing.assert_array_equal(obs["images"]["scene"][0], ep.images[t])
        np.testing.assert_array_equal(obs["images"]["scene_prev2"][0], ep.images[max(t - 2, 0)])
        assert set(obs["instruction"]) <= set(N.INSTRUCTIONS["track"])  # training paraphrases only
    # eval.failures --dagger: where the driver and the expert parted, per control period
    from async_vla_ros.eval import failures

    assert failures.main(["--dagger", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "driver stay, 2 episodes" in out and "||expert label - driver's command||" in out
    eps = load_demos(tmp_path / "d", images=False).episodes
    first = np.mean([np.linalg.norm(e.actions[0, :7] - e.executed[0, :7]) for e in eps])
    assert f"{first:.2f}" in out
    # at share 1 the expert executes every step: labels and commands agree
    record(tmp_path / "e", driver=Stay(), expert_share=1.0)
    ep = load_demos(tmp_path / "e").episodes[0]
    np.testing.assert_array_equal(ep.executed, ep.actions)
    write_demos("track", tmp_path / "n", 1, images=(), progress=False)  # the expert alone: nothing to compare
    with pytest.raises(SystemExit, match="not a DAgger round"):
        failures.main(["--dagger", str(tmp_path / "n")])
    with pytest.raises(ValueError, match="record them too"):
        write_demos("track", tmp_path / "f", 1, images=(), progress=False, driver=Stay())
    with pytest.raises(ValueError, match="image-size"):
        write_demos("track", tmp_path / "g", 1, images=("scene",), image_size=32, progress=False, driver=Stay())
    with pytest.raises(ValueError, match="expert_share"):
        write_demos("track", tmp_path / "h", 1, progress=False, driver=Stay(), expert_share=1.5)
    parser = add_demo_arguments(argparse.ArgumentParser())
    assert run_demos(parser.parse_args(["track", "--out", str(tmp_path / "i"), "--expert-share", "0.5"])) == 2


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="demos TASK"):
        load_demos(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_demos(tmp_path)
    with pytest.raises(ValueError, match="camera"):
        write_demos("track", tmp_path / "x", 1, images=["top"], progress=False)
