"""REMAC LoRA fine-tuning of a (tiny) LeRobot SmolVLA, saved back as a LeRobot policy folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# torchvision (lerobot) before the first MuJoCo EGL context (docs/lerobot.md, "Known limits")
import torchvision  # noqa: F401, I001

from async_vla_ros.assets import panda_available

pytestmark = pytest.mark.skipif(not panda_available(), reason="MuJoCo Panda model not fetched (make setup)")


def test_train_remac_on_a_lerobot_policy_saves_a_folder_lerobot_loads(tiny_smolvla_dir, tmp_path):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec
    from async_vla_ros.sim.demos import write_demos
    from async_vla_ros.train.data import load_episodes
    from async_vla_ros.train.remac import RemacConfig
    from async_vla_ros.train.remac_lerobot import train_remac_lerobot

    demos = tmp_path / "demos"
    write_demos("track", demos, 1, batch=1, images=("scene",), image_size=64, progress=False)
    cfg = RemacConfig(steps=4, batch_size=8, warmup=1, base_samples=1, d_max=3, lr=1e-2)
    out = tmp_path / "remac"
    res = train_remac_lerobot(load_episodes(demos), tiny_smolvla_dir, cfg, out)
    assert len(res["history"]) == 4 and all(np.isfinite(h["loss"]) for h in res["history"])
    assert res["lora_params"] > 0
    base = SmolVLAPolicy.from_pretrained(str(tiny_smolvla_dir))
    tuned = SmolVLAPolicy.from_pretrained(str(out))  # LeRobot itself loads the merged folder
    bsd, tsd = base.state_dict(), tuned.state_dict()
    assert set(bsd) == set(tsd)  # merged: no LoRA tensors left
    changed = {k for k in bsd if not torch.equal(bsd[k], tsd[k])}
    assert changed and all(".lm_expert." in k or "action_" in k for k in changed), sorted(changed)[:5]
    # it carries the base's VLM config and tokenizer: moved elsewhere (shipped), it still loads, and
    # serves through our backend with the prefix (REMAC) sampler
    assert (out / "vlm" / "tokenizer.json").is_file() or (out / "vlm" / "config.json").is_file()
    moved = tmp_path / "shipped" / "remac"
    moved.parent.mkdir()
    out.rename(moved)
    for name, key in (("config.json", "vlm_model_name"), ("policy_preprocessor.json", "tokenizer_name")):
        # the path it was built at is gone (a fresh clone): as the shipped checkpoints are
        text = (moved / name).read_text()
        assert key in text
        (moved / name).write_text(text.replace(str(tiny_smolvla_dir), "/nonexistent/built_here"))
    be = load_policy_spec(f"lerobot:{moved}", BackendRequest("track"))
    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(size=(1, 24)), "images": {"scene": rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)}}
    prev = be.infer(obs, "vanilla", seed=0)
    chunk = be.infer(obs, "prefix", prefix=prev, n_frozen=np.array([2]), seed=1)
    np.testing.assert_allclose(chunk[0, :2], prev[0, :2], atol=1e-5)


def test_train_remac_feeds_every_camera_through_a_lerobot_dataset_round_trip(tiny_smolvla_2cam_dir, tmp_path):
    """Demos with both sim cameras -> LeRobotDataset v3 -> imported demos -> REMAC on a two-camera
    SmolVLA: both cameras reach training (the backend refuses a batch that lacks one); demos
    without the wrist camera are refused with the names."""
    from async_vla_ros.sim.demos import write_demos
    from async_vla_ros.train.data import load_episodes
    from async_vla_ros.train.lerobot_data import export_lerobot, import_lerobot
    from async_vla_ros.train.remac import RemacConfig
    from async_vla_ros.train.remac_lerobot import train_remac_lerobot

    demos = tmp_path / "demos"
    write_demos("track", demos, 1, batch=1, images=("scene", "wrist"), image_size=64, progress=False)
    export_lerobot(demos, tmp_path / "lr")
    import_lerobot(tmp_path / "lr", tmp_path / "back")
    eps = load_episodes(tmp_path / "back")
    assert sorted(eps.episodes[0].camera_images) == ["scene", "wrist"]
    cfg = RemacConfig(steps=2, batch_size=4, warmup=1, base_samples=1, d_max=3, lr=1e-2)
    res = train_remac_lerobot(eps, tiny_smolvla_2cam_dir, cfg, tmp_path / "remac")
    assert len(res["history"]) == 2 and all(np.isfinite(h["loss"]) for h in res["history"])
    one = tmp_path / "one"
    write_demos("track", one, 1, batch=1, images=("scene",), image_size=64, progress=False)
    with pytest.raises(ValueError, match=r"takes cameras \['scene', 'wrist'\]; the demos carry \['scene'\]"):
        train_remac_lerobot(load_episodes(one), tiny_smolvla_2cam_dir, cfg, tmp_path / "remac1")
