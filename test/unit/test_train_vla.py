"""The multi-task VLA: proprioception-only state, both cameras, instruction per task; trained by
``train vla`` into a LeRobot folder that the backend, the lockstep runner and replay serve on any
task's observation."""

from __future__ import annotations

import json

import numpy as np
import pytest

# torchvision (lerobot) before the first MuJoCo EGL context (docs/lerobot.md, "Known limits")
import torchvision  # noqa: F401, I001

from async_vla_ros import names as N
from async_vla_ros.assets import panda_available
from async_vla_ros.policy.checks import policy_state, reads_proprio
from async_vla_ros.train import vla


class _P:
    def __init__(self, obs_dim, proprio):
        self.obs_dim, self.reads_proprio = obs_dim, proprio


def test_policy_state_gives_a_proprio_policy_the_head_of_any_tasks_state():
    s = np.arange(2 * 24, dtype=float).reshape(2, 24)
    np.testing.assert_array_equal(policy_state(_P(15, True), s), s[:, :15])
    np.testing.assert_array_equal(policy_state(_P(15, True), s[0]), s[0, :15])  # one observation, as the node has
    np.testing.assert_array_equal(policy_state(_P(24, False), s), s)
    with pytest.raises(ValueError, match="proprioception values .* only 10"):
        policy_state(_P(15, True), s[:, :10])
    with pytest.raises(ValueError, match="24 values, the policy needs obs_dim = 30"):
        policy_state(_P(30, False), s)
    assert not reads_proprio(object()) and reads_proprio(_P(15, True))


def test_the_proprioception_prefix_is_the_same_in_the_sim_and_in_camera_ingestion():
    from async_vla_ros.sim.tasks import COMMON_FIELDS

    assert [n for n, _ in COMMON_FIELDS[:3]] == ["q", "qd", "gripper"]
    assert sum(k for _, k in COMMON_FIELDS[:3]) == N.N_PROPRIO


@pytest.mark.skipif(not panda_available(), reason="MuJoCo Panda model not fetched (make setup)")
def test_train_vla_on_two_tasks_serves_every_task_from_cameras_and_proprioception(tmp_path):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec
    from async_vla_ros.sim.demos import write_demos
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner
    from async_vla_ros.train.vla import VLAConfig, load_vla_data, train_vla

    demos = {}
    for task in ("track", "intercept"):
        demos[task] = tmp_path / task
        write_demos(task, demos[task], 2, batch=2, images=("scene", "wrist"), image_size=32, progress=False)
    data = load_vla_data(list(demos.values()), horizon=4, image_size=32)
    assert data.windows.obs_dim == N.N_PROPRIO and set(data.tasks) == {"track", "intercept"}
    with pytest.raises(ValueError, match="frames are .* takes 64x64"):
        load_vla_data([demos["track"]], horizon=4, image_size=64)
    assert data.image_style == N.IMAGE_STYLE
    with pytest.raises(ValueError, match="given twice"):
        load_vla_data([demos["track"], demos["track"]], horizon=4, image_size=32)
    # a second directory of a task adds its episodes (a DAgger round beside the demonstrations)
    write_demos("track", tmp_path / "track2", 1, batch=1, images=("scene", "wrist"), image_size=32, progress=False)
    both = load_vla_data([demos["track"], tmp_path / "track2"], horizon=4, image_size=32)
    assert both.tasks == ("track",) * 3
    write_demos(
        "bifurcate", tmp_path / "vis", 1, images=("scene", "wrist"), image_size=32, image_style="visual", progress=False
    )
    with pytest.raises(ValueError, match="different image styles"):
        load_vla_data([demos["track"], tmp_path / "vis"], horizon=4, image_size=32)
    assert data.scene_camera == N.SCENE_CAMERA  # the demos record where the scene camera stood
    other = next(p for p in ("front_v1", "front_v2") if p != N.SCENE_CAMERA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(N, "SCENE_CAMERA", other)
        write_demos("bifurcate", tmp_path / "elsewhere", 1, images=("scene", "wrist"), image_size=32, progress=False)
    with pytest.raises(ValueError, match="different placements"):
        load_vla_data([demos["track"], tmp_path / "elsewhere"], horizon=4, image_size=32)

    cfg = VLAConfig(
        steps=3,
        batch_size=4,
        warmup=1,
        val_every=3,
        ckpt_every=3,
        chunk=4,
        n_steps=2,
        image_size=32,
        prev_frames="scene",
        action_frame="delta_q",  # REMAC and the A2C2 head below run on a delta_q VLA
        ema=0.5,  # the EMA weights are validated and saved
        pad_dims=0,  # no padding to LeRobot's 32: REMAC, the head and RTC below run on the unpadded sizes
        expert_width=1.0,
    )
    assert VLAConfig().prev_frames == () and cfg.prev_frames == ("scene",)  # off by default (docs/training.md)
    with pytest.raises(ValueError, match="prev_frames"):
        VLAConfig(prev_frames=("front",))
    out = tmp_path / "vla"
    lines = []
    res = train_vla(list(demos.values()), cfg, out, log=lines.append)
    assert res["step"] == 3 and np.isfinite(res["history"][-1]["val_fm"]) and "train_loss" in res["history"][-1]
    assert any("2 thread" in line and "['intercept', 'track']" in line for line in lines)
    SmolVLAPolicy.from_pretrained(str(out))  # LeRobot itself loads it
    lcfg = json.loads((out / "config.json").read_text())
    assert (lcfg["max_state_dim"], lcfg["max_action_dim"], lcfg["expert_width_multiplier"]) == (N.N_PROPRIO, 8, 1.0)
    assert VLAConfig().pad_dims == 32  # LeRobot's padding unless asked
    side = json.loads((out / "async_vla_ros.json").read_text())
    assert side["image_style"] == N.IMAGE_STYLE  # the sim and the lockstep runner draw what training saw
    assert side["scene_camera"] == N.SCENE_CAMERA  # and the scene camera where it stood
    assert side["action_frame"] == "delta_q"
    with pytest.raises(ValueError, match="action_frame"):
        VLAConfig(action_frame="velocity")
    with pytest.raises(ValueError, match="ema"):
        VLAConfig(ema=1.0)
    assert side["state_input"] == "proprioception" and side["cameras"] == {
        "scene": "observation.images.scene",
        "wrist": "observation.images.wrist",
        "scene_prev": "observation.images.scene_prev",  # the previous frame: motion
    }
    assert side["training"]["step"] == 3 and side["training"]["held_out_instructions"]["track"] == list(
        N.HELD_OUT["track"]
    )
    stats = __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        str(next(out.glob("policy_preprocessor_step_*normalizer*.safetensors")))
    )
    std = stats["observation.state.std"].numpy()
    assert np.all(std[7:14] >= 1e5) and np.all(std >= 0.01)  # qd blinded, the rest floored
    _warm_start_continues_the_run_it_names(demos, cfg, out, tmp_path)

    be = load_policy_spec(f"lerobot:{out}", BackendRequest("intercept"))
    assert be.reads_proprio and be.obs_dim == N.N_PROPRIO and be.image_style == N.IMAGE_STYLE
    assert be.camera_hw == {"scene": (32, 32), "wrist": (32, 32), "scene_prev": (32, 32)}
    # the lockstep runner hands it the head of intercept's state (wider than 15) and both cameras
    r = LockstepRunner(be).run(LockstepConfig(task="intercept", strategy="naive", episodes=1, batch=1, delay=0))
    assert len(r.episodes) == 1
    # REMAC LoRA on it, every task's windows with their instructions; the merged folder stays a VLA
    from async_vla_ros.train.remac import RemacConfig
    from async_vla_ros.train.remac_lerobot import train_remac_lerobot

    rcfg = RemacConfig(steps=2, batch_size=4, warmup=1, base_samples=1, d_max=2, lr=1e-2)
    rem = train_remac_lerobot(list(demos.values()), out, rcfg, tmp_path / "vla_remac")
    assert len(rem["history"]) == 2 and rem["lora_params"] > 0 and len(rem["demos"]) == 2
    tuned = load_policy_spec(f"lerobot:{tmp_path / 'vla_remac'}", BackendRequest("track"))
    assert tuned.reads_proprio
    # its A2C2 head: VLA features + proprioception + base action + k, trained on both tasks' frames
    from async_vla_ros.policy.a2c2 import CorrectionHead
    from async_vla_ros.policy.registry import load_models
    from async_vla_ros.presets import get_preset
    from async_vla_ros.train.a2c2 import A2C2Config, train_a2c2_vla

    hcfg = A2C2Config(steps=4, batch_size=16, warmup=1, val_every=2, ckpt_every=4, latent=True, val_fraction=0.25)
    hres = train_a2c2_vla(list(demos.values()), f"lerobot:{out}", hcfg, tmp_path / "head.pt", progress_bar=False)
    assert hres.step == 4 and np.isfinite(hres.val_loss)
    head = CorrectionHead.load(tmp_path / "head.pt")
    assert head.config.obs_dim == N.N_PROPRIO and head.config.latent_dim == be.latent_dim > 0
    m = load_models("intercept", get_preset("rtc_a2c2"), f"lerobot:{out}", a2c2=str(tmp_path / "head.pt"))
    r = LockstepRunner(m.policy, m.head).run(
        LockstepConfig(task="intercept", strategy="rtc", episodes=1, batch=1, delay=2, s_min=2)
    )
    assert r.correction_s > 0 and len(r.episodes) == 1
    # shipped as the manifest ships it: float16 weights, an entry from the training record
    import shutil

    from async_vla_ros.train.manifest import main as manifest_main

    ship = tmp_path / "ckpts"
    shutil.copytree(out, ship / "vla")
    shutil.copytree(tmp_path / "vla_remac", ship / "vla_remac")
    shutil.copy(tmp_path / "head.pt", ship / "vla_a2c2.pt")
    before = be.infer(
        {
            "state": np.zeros((1, 15)),
            "images": {c: np.zeros((1, 32, 32, 3), np.uint8) for c in ("scene", "wrist", "scene_prev")},
        },
        seed=0,
    )
    assert manifest_main([str(ship)]) == 0
    entry, rentry = json.loads((ship / "manifest.json").read_text())["folders"]
    (hentry,) = json.loads((ship / "manifest.json").read_text())["files"]
    assert (
        hentry["kind"] == "vla_a2c2"
        and hentry["tasks"] == ["intercept", "track"]
        and hentry["stored_dtype"] == "float16"
    )
    head_demos = " ".join(d["path"] for d in hentry["demos"])  # the folders it read, none invented
    assert sorted(d["path"] for d in hentry["demos"]) == sorted(str(p) for p in demos.values())
    assert hentry["command"].startswith(f"async-vla-ros train a2c2 --base lerobot:{out} --demos {head_demos} --out")
    assert entry["kind"] == "vla" and entry["stored_dtype"] == "float16" and entry["step"] == 3
    assert rentry["kind"] == "vla_remac" and rentry["base"] == "vla" and rentry["stored_dtype"] == "float16"
    assert "step" not in rentry and rentry["command"].startswith(
        "async-vla-ros train remac --variant clean --base lerobot:"
    )
    # its command, parsed by train vla, gives back the run's folders and configuration
    import argparse
    import dataclasses
    import shlex

    from async_vla_ros.train.base import _config_from_ns

    cli = argparse.ArgumentParser()
    vla.add_arguments(cli)
    ns = cli.parse_args(shlex.split(entry["command"])[3:])
    assert ns.demos == [str(p) for p in demos.values()] and ns.out == "async_vla_ros/checkpoints/vla"
    assert dataclasses.replace(_config_from_ns(ns, VLAConfig), blind_qd=ns.blind_qd) == cfg
    shipped = load_policy_spec(f"vla:{ship / 'vla'}", BackendRequest("track"))
    after = shipped.infer(
        {
            "state": np.zeros((1, 15)),
            "images": {c: np.zeros((1, 32, 32, 3), np.uint8) for c in ("scene", "wrist", "scene_prev")},
        },
        seed=0,
    )
    np.testing.assert_allclose(after, before, atol=5e-3)
    # the shipped (float16) head still serves the VLA's A2C2 presets from the folder's checkpoint dir
    m16 = load_models("track", get_preset("a2c2"), "vla", checkpoint_dir=ship)
    assert m16.head.config.latent_dim == be.latent_dim and "vla_a2c2.pt" in m16.files["a2c2"]
    # a policy that reads the whole state still needs the task's width
    with pytest.raises(ValueError, match="do not match task"):
        LockstepRunner(_FullState(be)).run(LockstepConfig(task="intercept", strategy="naive", episodes=1, batch=1))


def _warm_start_continues_the_run_it_names(demos, cfg, out, tmp_path):
    """``init``: the run's weights, normaliser and tokenizer, on other data; refused where they cannot fit."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from async_vla_ros.train.manifest import _train_seconds, _train_vla_command
    from async_vla_ros.train.vla import VLAConfig, train_vla

    # lr 0: the weights stay the ones it started from, whatever the (other) data and seed say
    cont = dataclasses.replace(
        cfg, init=str(out), seed=cfg.seed + 7, lr=0.0, weight_decay=0.0, ema=0.0, steps=2, val_every=2, ckpt_every=2
    )
    lines = []
    res = train_vla([demos["track"]], cont, tmp_path / "cont", log=lines.append)
    assert res["step"] == 2 and any(f"from {out} (its step 3)" in line for line in lines)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "cont" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    norm = "policy_preprocessor_step_*normalizer*.safetensors"
    sa, sb = (load_file(str(next(d.glob(norm)))) for d in (out, tmp_path / "cont"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # its units, not the track windows' own
    side = json.loads((tmp_path / "cont" / "async_vla_ros.json").read_text())["training"]
    assert side["init"]["path"] == str(out) and side["init"]["training"]["step"] == 3
    # the manifest's command trains the run it started from first, into the folder it names
    first, second = _train_vla_command(side, "async_vla_ros/checkpoints/vla").split(" && ")
    assert f"--out {out} " in first and "--init" not in first and f"--init {out}" in second
    assert second.startswith(f"async-vla-ros train vla --demos {demos['track']} --out async_vla_ros/checkpoints/vla")
    assert _train_seconds(side) == pytest.approx(side["seconds"] + side["init"]["training"]["seconds"], abs=0.2)
    with pytest.raises(ValueError, match="architecture differs: width 64 .this run 32."):
        train_vla([demos["track"]], dataclasses.replace(cont, width=32), tmp_path / "no")
    # the cameras share one vision encoder: a warm start may drop (or add) the previous frame, same weights
    assert cfg.prev_frames == ("scene",)
    # (with failed DAgger episodes drawn more often: these demonstrations have none, so nothing changes)
    train_vla(
        [demos["track"]],
        dataclasses.replace(cont, prev_frames=(), oversample_failed=2.0),
        tmp_path / "noprev",
        log=lines.append,
    )
    assert any(
        "windows of 0 DAgger episodes the driver failed drawn 2 x as often (0.0% of the draws)" in x for x in lines
    )
    c = load_file(str(tmp_path / "noprev" / "model.safetensors"))
    assert c.keys() == a.keys() and all(torch.equal(a[k], c[k]) for k in a)
    cams = json.loads((tmp_path / "noprev" / "async_vla_ros.json").read_text())["cameras"]
    assert sorted(cams) == ["scene", "wrist"]
    with pytest.raises(FileNotFoundError, match="no async_vla_ros.json"):
        train_vla([demos["track"]], dataclasses.replace(cont, init=str(tmp_path / "nothing")), tmp_path / "no")
    with pytest.raises(ValueError, match="the folder this run writes"):
        train_vla([demos["track"]], cont, out)
    assert VLAConfig().init == ""  # a random initialisation unless asked


class _FullState:
    def __init__(self, be):
        self.horizon, self.action_dim, self.obs_dim, self.infer = be.horizon, be.action_dim, be.obs_dim, be.infer


def test_a_vla_trained_with_the_scene_camera_elsewhere_is_refused(tiny_smolvla_proprio_dir, tmp_path, monkeypatch):
    import shutil

    from async_vla_ros.policy.registry import BackendError, BackendRequest, load_policy_spec

    folder = tmp_path / "vla"
    shutil.copytree(tiny_smolvla_proprio_dir, folder)
    side_path = folder / "async_vla_ros.json"
    side = json.loads(side_path.read_text())
    assert "scene_camera" not in side and "training" not in side

    def load(**extra):
        side_path.write_text(json.dumps({**side, **extra}))
        return load_policy_spec(f"lerobot:{folder}", BackendRequest("track"))

    monkeypatch.setattr(N, "SCENE_CAMERA", "front_v2")
    assert load().scene_camera is None  # a folder of unknown origin: unchecked
    assert load(scene_camera="front_v2").scene_camera == "front_v2"
    with pytest.raises(BackendError, match="scene camera at 'front_v1'.*places it at 'front_v2'"):
        load(scene_camera="front_v1")
    # trained on our demonstrations before the placement was recorded: front_v1
    with pytest.raises(BackendError, match="scene camera at 'front_v1'"):
        load(training={"step": 1})
    monkeypatch.setattr(N, "SCENE_CAMERA", "front_v1")
    assert load(training={"step": 1}).scene_camera == "front_v1"


def test_a_delta_q_vla_adds_the_observed_joint_positions_to_its_chunks(tiny_smolvla_proprio_dir, tmp_path):
    import shutil

    from async_vla_ros.policy.registry import BackendError, BackendRequest, load_policy_spec

    absolute = load_policy_spec(f"lerobot:{tiny_smolvla_proprio_dir}", BackendRequest("track"))
    folder = tmp_path / "vla"
    shutil.copytree(tiny_smolvla_proprio_dir, folder)
    side = json.loads((folder / "async_vla_ros.json").read_text())
    (folder / "async_vla_ros.json").write_text(json.dumps({**side, "action_frame": "delta_q"}))
    delta = load_policy_spec(f"lerobot:{folder}", BackendRequest("track"))
    assert absolute.action_frame == "absolute" and delta.action_frame == "delta_q"
    rng = np.random.default_rng(0)
    state = rng.normal(0, 0.5, (2, N.N_PROPRIO))
    obs = {
        "state": state,
        "images": {c: rng.integers(0, 255, (2, *hw, 3), np.uint8) for c, hw in delta.camera_hw.items()},
    }
    a, d = absolute.infer(obs, "vanilla", seed=3), delta.infer(obs, "vanilla", seed=3)
    np.testing.assert_allclose(d[..., : N.N_ARM], a[..., : N.N_ARM] + state[:, None, : N.N_ARM], atol=1e-5)
    np.testing.assert_allclose(d[..., N.N_ARM :], a[..., N.N_ARM :], atol=1e-6)  # the gripper stays absolute
    # a prefix (the previous chunk, robot units) enters the model's frame relative to the new observation
    np.testing.assert_allclose(
        delta._normalize_actions(d, state).numpy(), absolute._normalize_actions(a).numpy(), atol=1e-4
    )
    with pytest.raises(BackendError, match="observation state"):
        delta._normalize_actions(d)
    (folder / "async_vla_ros.json").write_text(json.dumps({**side, "action_frame": "velocity"}))
    with pytest.raises(BackendError, match="action_frame"):
        load_policy_spec(f"lerobot:{folder}", BackendRequest("track"))


def test_the_vla_backend_serves_its_presets_and_its_own_a2c2_head(tiny_smolvla_proprio_dir, tmp_path):
    from async_vla_ros.bringup.graph import build_graph
    from async_vla_ros.checkpoints import checkpoint_path
    from async_vla_ros.policy.lerobot_backend import vla_folder
    from async_vla_ros.policy.registry import BackendError, BackendRequest, load_models
    from async_vla_ros.presets import get_preset

    spec = f"vla:{tiny_smolvla_proprio_dir}"
    g = build_graph("franka", {"policy": spec, "method": "remac_clean", "task": "intercept"})
    assert g.node("policy").parameters["checkpoint_kind"] == "remac_clean"  # vla serves it from vla_remac/
    assert g.node("sim").parameters["cameras"] == ["scene", "wrist"]
    m = load_models("pick_moving", get_preset("rtc_lerobot"), spec)  # one VLA for every task
    # the VLA's head is its own (vla_a2c2.pt), never a task's state head; a missing one says how to make it
    with pytest.raises(BackendError, match="VLA's A2C2 head is not there; train it"):
        load_models("track", get_preset("rtc_a2c2"), spec, checkpoint_dir=tmp_path)
    with pytest.raises(BackendError, match="takes state 24, action 8, H 8; the policy gives state 15"):
        load_models("track", get_preset("rtc_a2c2"), spec, a2c2=str(checkpoint_path("track", "a2c2")))
    with pytest.raises(BackendError, match="no default A2C2 head"):
        load_models("track", get_preset("rtc_a2c2"), f"lerobot:{tiny_smolvla_proprio_dir}")
    assert m.policy.reads_proprio
    with pytest.raises(BackendError, match="has no remac model"):
        load_models("track", get_preset("remac"), spec)
    with pytest.raises(BackendError, match="multi-task VLA is not there; train it"):
        vla_folder("base", tmp_path)
    assert BackendRequest("track").kind == "base"
    # a policy with a previous frame: the sim renders its two cameras at the control rate, ingestion
    # derives the third slot one control period back
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    cams = {c: f"observation.images.{c}" for c in ("scene", "wrist", "scene_prev")}
    prev_dir = build_tiny_smolvla(tmp_path / "prev", TinySmolVLASpec(cameras=cams, state_dim=15, proprio_only=True))
    g = build_graph("franka", {"policy": f"vla:{prev_dir}", "method": "rtc", "task": "track"})
    sim, ing = g.node("sim").parameters, g.node("camera_ingestion").parameters
    assert sim["cameras"] == ["scene", "wrist"] and sim["camera_rate_hz"] == 20.0
    assert ing["camera_names"] == ["scene", "wrist", "scene_prev"] and ing["prev_frame_offset_s"] == 0.05


def test_previous_frames_come_from_one_step_earlier_in_training_and_in_the_lockstep_runner(tmp_path):
    """``<camera>_prev`` is the frame of the step before, ``<camera>_prev3`` three steps before
    (before the episode has that many, its first frame): the same in the training windows and in
    what the lockstep runner hands a policy at every step."""
    from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner
    from async_vla_ros.train.data import ChunkWindows, Episode

    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((4, 2, 2, 3), np.uint8)
    ep = Episode(obs=np.zeros((4, 15)), actions=np.zeros((4, 8)), camera_images={"scene": frames})
    win = ChunkWindows([ep, ep], horizon=2)
    got = win.frames(np.array([0, 1, 3, 4, 6]), ["scene", "scene_prev"])
    assert got["scene"][:, 0, 0, 0].tolist() == [0, 1, 3, 0, 2]
    assert got["scene_prev"][:, 0, 0, 0].tolist() == [0, 0, 2, 0, 1]  # window 4 starts episode 2
    assert win.frames(np.array([0, 2, 3, 7]), ["scene_prev3"])["scene_prev3"][:, 0, 0, 0].tolist() == [0, 0, 0, 0]
    assert win.frames(np.array([3]), ["scene_prev2"])["scene_prev2"][:, 0, 0, 0].tolist() == [1]
    assert [N.frame_source(c) for c in ("scene", "scene_prev", "scene_prev3", "wrist_prev12x")] == [
        ("scene", 0),
        ("scene", 1),
        ("scene", 3),
        ("wrist_prev12x", 0),
    ]
    assert N.prev_frame_name("scene", 1) == "scene_prev" and N.prev_frame_name("scene", 3) == "scene_prev3"
    with pytest.raises(ValueError, match="control periods back"):
        N.frame_source("scene_prev9")  # camera_ingestion keeps 8 frames
    with pytest.raises(ValueError, match="control periods back"):
        vla.VLAConfig(prev_frames="scene", prev_gap=0)
    assert vla.VLAConfig(prev_frames="scene", prev_gap=3).policy_cameras == ("scene", "wrist", "scene_prev3")
    with pytest.raises(KeyError, match="no camera 'wrist'"):
        win.frames(np.array([0]), ["wrist_prev"])
    if not panda_available():
        pytest.skip("MuJoCo Panda model not fetched (make setup)")

    class Recorder:  # a proprioception policy with a previous frame, holding the arm where it is
        horizon, action_dim, obs_dim, reads_proprio = 4, 8, N.N_PROPRIO, True
        camera_hw = {"scene": (16, 16), "scene_prev": (16, 16), "scene_prev3": (16, 16)}

        def __init__(self):
            self.seen = []

        def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None, beta=None):
            self.seen.append({k: v.copy() for k, v in obs["images"].items()})
            q = np.asarray(obs["state"])[:, :7]
            return np.repeat(np.concatenate([q, np.full((len(q), 1), 0.04)], 1)[:, None], self.horizon, 1)

    pol = Recorder()
    LockstepRunner(pol).run(LockstepConfig(task="intercept", strategy="naive", episodes=1, batch=1, delay=0))
    assert len(pol.seen) > 3  # naive at d = 0: a request every step
    np.testing.assert_array_equal(pol.seen[0]["scene_prev"], pol.seen[0]["scene"])
    for before, now in zip(pol.seen, pol.seen[1:]):
        np.testing.assert_array_equal(now["scene_prev"], before["scene"])
    for t, now in enumerate(pol.seen):
        np.testing.assert_array_equal(now["scene_prev3"], pol.seen[max(t - 3, 0)]["scene"])
    assert any(not np.array_equal(a["scene"], b["scene"]) for a, b in zip(pol.seen, pol.seen[1:]))  # the ball moves


def test_the_shipped_vla_matches_the_manifest_and_serves_any_task():
    import hashlib

    from async_vla_ros.checkpoints import DIR
    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

    folder = DIR / "vla"
    (entry,) = [f for f in json.loads((DIR / "manifest.json").read_text())["folders"] if f["folder"] == "vla"]
    assert entry["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert entry["stored_dtype"] == "float16" and entry["tasks"] == sorted(N.TASK_NAMES)
    be = load_policy_spec("vla", BackendRequest("pick_moving"))
    assert be.reads_proprio and be.camera_hw == {"scene": (64, 64), "wrist": (64, 64)}
    obs = {
        "state": np.zeros((2, N.N_PROPRIO)),
        "images": {c: np.zeros((2, 64, 64, 3), np.uint8) for c in ("scene", "wrist")},
        "instruction": [N.INSTRUCTIONS["track"][0], N.HELD_OUT["pick_moving"][0]],
    }
    chunk = be.infer(obs, seed=0)
    assert chunk.shape == (2, 8, 8) and np.isfinite(chunk).all()


def test_the_shipped_vla_remac_serves_the_remac_clean_preset():
    import hashlib

    from async_vla_ros.checkpoints import DIR
    from async_vla_ros.policy.lerobot_backend import vla_folder
    from async_vla_ros.policy.registry import load_models
    from async_vla_ros.presets import get_preset

    assert vla_folder("remac_clean") == DIR / "vla_remac" and vla_folder("base") == DIR / "vla"
    (entry,) = [f for f in json.loads((DIR / "manifest.json").read_text())["folders"] if f["folder"] == "vla_remac"]
    assert entry["kind"] == "vla_remac" and entry["base"] == "vla" and entry["stored_dtype"] == "float16"
    assert entry["sha256"] == hashlib.sha256((DIR / "vla_remac" / "model.safetensors").read_bytes()).hexdigest()
    m = load_models("intercept", get_preset("remac_clean"), "vla")
    base = load_models("intercept", get_preset("naive"), "vla")
    obs = {
        "state": np.zeros((1, N.N_PROPRIO)),
        "images": {c: np.zeros((1, 64, 64, 3), np.uint8) for c in ("scene", "wrist")},
    }
    prev = base.policy.infer(obs, seed=0)
    chunk = m.policy.infer(obs, "prefix", prefix=prev, n_frozen=np.array([2]), seed=1)
    np.testing.assert_allclose(chunk[0, :2], prev[0, :2], atol=1e-5)  # the frozen prefix kept
    assert not np.allclose(m.policy.infer(obs, seed=0), prev)  # another model than the base


def test_word_dropout_keeps_a_subsequence_of_a_training_paraphrase_and_costs_no_draws_when_off():
    tasks = ["track", "bifurcate"] * 200
    plain = vla.sample_instructions(tasks, np.random.default_rng(3))
    assert plain == vla.sample_instructions(tasks, np.random.default_rng(3), 0.0)  # the default's draws unchanged
    dropped = vla.sample_instructions(tasks, np.random.default_rng(3), 0.5)
    assert [d.split() for d in dropped] != [p.split() for p in plain]

    def subsequence(words, of):
        it = iter(of)
        return all(w in it for w in words)

    lengths = []
    for task, text in zip(tasks, dropped, strict=True):
        words = text.split()
        assert words and any(subsequence(words, p.split()) for p in N.INSTRUCTIONS[task])
        assert text not in N.HELD_OUT[task]
        lengths.append(len(words) / max(len(p.split()) for p in N.INSTRUCTIONS[task]))
    assert 0.3 < np.mean(lengths) < 0.7  # about half the words kept
    with pytest.raises(ValueError, match="word_dropout"):
        vla.VLAConfig(word_dropout=1.0)


def test_row_sampler_draws_in_proportion_to_the_weights():
    rows = np.array([10, 20, 30])
    uniform = vla.row_sampler(rows, None)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(uniform(a, 50), rows[b.integers(0, 3, 50)])  # as before the option
    drawn = vla.row_sampler(rows, np.array([1.0, 0.0, 3.0]))(np.random.default_rng(0), 40000)
    assert set(np.unique(drawn)) == {10, 30}  # a weight of 0 is never drawn
    assert abs((drawn == 30).mean() - 0.75) < 0.01  # 3 / (1 + 3), sd ~0.002 at 40,000 draws
    for bad in (np.array([1.0, -1.0, 1.0]), np.zeros(3), np.array([1.0, np.nan, 1.0]), np.ones(2)):
        with pytest.raises(ValueError, match="row weights"):
            vla.row_sampler(rows, bad)


def test_driver_failed_marks_only_failed_dagger_episodes():
    from async_vla_ros.train.data import ChunkWindows, Episode

    metas = [
        {"driven": True, "success": False},  # a DAgger episode its driver failed
        {"driven": True, "success": True},
        {"driven": False, "success": False},  # the expert's own (its failures are not the driver's)
        {},  # recorded before either was kept
    ]
    eps = [Episode(obs=np.zeros((2, 15)), actions=np.zeros((2, 8)), meta=m) for m in metas]
    data = vla.VLAData(ChunkWindows(eps, 2), tasks=("track",) * 4, sources=())
    np.testing.assert_array_equal(data.driver_failed(), [True, False, False, False])
    with pytest.raises(ValueError, match="oversample_failed"):
        vla.VLAConfig(oversample_failed=0.5)
