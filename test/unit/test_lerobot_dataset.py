"""LeRobotDataset v3 export of our demonstrations and of a recorded bag, and the import back."""

from __future__ import annotations

import numpy as np
import pytest

# torchvision (imported by lerobot) must load before the first MuJoCo EGL context: the other
# order crashes the process here (docs/lerobot.md, "Known limits")
import torchvision  # noqa: F401, I001

from async_vla_ros.assets import panda_available

pytestmark = pytest.mark.skipif(not panda_available(), reason="MuJoCo Panda model not fetched (make setup)")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from async_vla_ros.sim.demos import write_demos

    out = tmp_path_factory.mktemp("demos") / "track"
    write_demos("track", out, 2, batch=2, noise=0.01, images=("scene", "wrist"), image_size=32, progress=False)
    return out


def test_demos_round_trip_through_lerobot_dataset(demos, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from async_vla_ros.sim.demos import load_demos
    from async_vla_ros.train.lerobot_data import export_lerobot, import_lerobot

    dst = tmp_path / "lr"
    out = export_lerobot(demos, dst)
    assert out["episodes"] == 2 and out["cameras"] == ["scene", "wrist"]
    ds = LeRobotDataset("local/track", root=dst)  # LeRobot itself reads it, offline
    assert ds.num_episodes == 2 and ds.meta.features["observation.images.scene"]["dtype"] == "image"
    f0 = ds[0]
    from async_vla_ros import names as N

    # the task's training paraphrases, one per episode in turn (held-out ones never in data)
    last = ds[ds.num_frames - 1]
    assert (f0["task"], last["task"]) == N.INSTRUCTIONS["track"][:2]
    assert tuple(f0["observation.images.scene"].shape) == (3, 32, 32)
    assert tuple(f0["observation.images.wrist"].shape) == (3, 32, 32)
    back = tmp_path / "back"
    import_lerobot(dst, back)
    a, b = load_demos(demos), load_demos(back)
    assert b.info["task"] == "track" and b.info["obs_fields"] == a.info["obs_fields"]
    for ea, eb in zip(a.episodes, b.episodes, strict=True):
        np.testing.assert_allclose(eb.obs, ea.obs, rtol=1e-6, atol=1e-6)  # float32 in the dataset
        np.testing.assert_allclose(eb.actions, ea.actions, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(eb.executed, ea.executed, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(eb.images, ea.images)  # PNG frames: lossless
        assert sorted(eb.camera_images) == ["scene", "wrist"]
        for c in ("scene", "wrist"):
            np.testing.assert_array_equal(eb.camera_images[c], ea.camera_images[c])
    # what train reads
    from async_vla_ros.train.data import load_episodes

    eps = load_episodes(back).episodes
    assert len(eps) == 2 and sorted(eps[0].camera_images) == ["scene", "wrist"]


def test_export_refuses_non_empty_dst_and_unknown_sources(demos, tmp_path):
    from async_vla_ros.train.lerobot_data import export_lerobot, import_lerobot

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        export_lerobot(demos, tmp_path / "full")
    with pytest.raises(ValueError, match="neither"):
        export_lerobot(tmp_path / "full", tmp_path / "y")
    with pytest.raises(ValueError, match="not a LeRobotDataset"):
        import_lerobot(tmp_path / "full", tmp_path / "z")


def test_recorded_bag_exports_observations_every_camera_the_instruction_and_executed_commands(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from async_vla_ros.bags import BagWriter, default_message
    from async_vla_ros.train.lerobot_data import export_lerobot

    bag = tmp_path / "bag"
    rng = np.random.default_rng(0)
    states, cmds = rng.normal(size=(6, 24)), rng.normal(size=(6, 8))
    with BagWriter(bag) as w:
        w.add_topic("/observation", "async_vla_msgs/msg/Observation")
        w.add_topic("/policy/chunk_request", "async_vla_msgs/msg/ChunkRequest")
        w.add_topic("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray")
        for t in range(6):
            ns = 1_000_000_000 + t * 50_000_000
            sec, nsec = divmod(ns, 1_000_000_000)
            header = default_message(
                "std_msgs/msg/Header", stamp=default_message("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec)
            )
            imgs = [
                default_message(
                    "sensor_msgs/msg/Image", height=4, width=4, encoding="rgb8", step=12, data=np.full(48, v, np.uint8)
                )
                for v in (t, 100 + t)
            ]
            obs = default_message(
                "async_vla_msgs/msg/Observation",
                header=header,
                obs_id=t + 1,
                episode_id=1,
                task="track",
                state_dim=24,
                state=states[t],
                camera_names=["scene", "wrist"],
                images=imgs,
                image_ages_s=np.zeros(2),
                instruction="keep the gripper on the moving target" if t < 3 else "track the target as it moves",
            )
            w.write("/observation", ns, obs)
            req = default_message("async_vla_msgs/msg/ChunkRequest", header=header, request_id=t + 1, dt=0.05)
            w.write("/policy/chunk_request", ns, req)
            cmd = default_message("std_msgs/msg/Float64MultiArray", data=cmds[t])
            w.write("/forward_position_controller/commands", ns + 10_000_000, cmd)
    out = export_lerobot(bag, tmp_path / "lr")
    assert out["source_kind"] == "bag" and out["episodes"] == 1 and out["frames"] == 6
    ds = LeRobotDataset("local/track", root=tmp_path / "lr")
    np.testing.assert_allclose(ds[3]["observation.state"].numpy(), states[3], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds[3]["action"].numpy(), cmds[3], rtol=1e-6, atol=1e-6)
    assert float(ds[3]["observation.images.scene"][0, 0, 0]) == pytest.approx(3 / 255, abs=1e-6)
    assert float(ds[3]["observation.images.wrist"][0, 0, 0]) == pytest.approx(103 / 255, abs=1e-6)
    assert out["cameras"] == ["scene", "wrist"]
    assert ds[1]["task"] == "keep the gripper on the moving target" and ds[4]["task"] == "track the target as it moves"
    # replay feeds the same recorded cameras and instruction to a policy that takes them
    from async_vla_ros.bags import BagError
    from async_vla_ros.eval.replay import load_recording

    run = load_recording(bag)
    x = run.policy_input(4, ["wrist", "scene"])
    assert x["images"]["wrist"].shape == (1, 4, 4, 3) and int(x["images"]["wrist"][0, 0, 0, 0]) == 104
    assert x["instruction"] == "track the target as it moves"
    assert run.policy_input(4, []).shape == (1, 24)  # a state policy: the state only
    with pytest.raises(BagError, match=r"takes cameras \['front', 'scene'\].*carry \['scene', 'wrist'\]"):
        run.policy_input(0, ["front", "scene"])
