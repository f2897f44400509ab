"""Base flow-matching BC: data windows, loss goes down, checkpoint contents, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from async_vla_ros.policy.base import FlowPolicyBackend, load_checkpoint, load_policy
from async_vla_ros.train.base import BaseTrainConfig, train_base
from async_vla_ros.train.data import ChunkWindows, DemoSet, Episode, split_episodes


def synthetic_demos(n_eps: int = 12, T: int = 24, obs_dim: int = 4, A: int = 3, seed: int = 0) -> DemoSet:
    """Episodes of a known linear system: obs x_{t+1} = R x_t (two planar rotations), action
    tanh(W x_t). The whole future chunk is a function of obs_t, so the task is learnable."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(obs_dim, A)) * 0.8
    R = np.zeros((obs_dim, obs_dim))
    for j, w in enumerate((0.25, 0.4)[: obs_dim // 2]):
        c, s_ = np.cos(w), np.sin(w)
        R[2 * j : 2 * j + 2, 2 * j : 2 * j + 2] = [[c, -s_], [s_, c]]
    eps = []
    for i in range(n_eps):
        x = rng.normal(size=obs_dim)
        obs = np.empty((T, obs_dim))
        for t in range(T):
            obs[t] = x
            x = R @ x
        eps.append(Episode(obs=obs, actions=np.tanh(obs @ W), seed=i))
    return DemoSet(episodes=tuple(eps), path="", task="synthetic", metadata={"obs_fields": [["x", obs_dim]]})


TINY = dict(
    horizon=4,
    batch_size=32,
    hidden=16,
    channel_hidden=32,
    token_hidden=8,
    depth=1,
    obs_hidden=16,
    warmup=5,
    ema_decay=0.0,
    val_fraction=0.25,
    lr=3e-3,
    ignore_obs=(),
)


def test_windows_pad_with_last_action_and_index():
    demos = synthetic_demos(n_eps=2, T=5)
    w = ChunkWindows(demos.episodes, horizon=3)
    assert len(w) == 10 and w.chunks.shape == (10, 3, 3)
    e1 = demos.episodes[1]
    i = w.index_of(np.array([1]), np.array([4]))[0]
    assert i == 9 and w.t[i] == 4 and w.ep[i] == 1
    np.testing.assert_array_equal(w.chunks[i], np.stack([e1.actions[4]] * 3))  # padded past the end
    np.testing.assert_array_equal(w.chunks[w.index_of(np.array([1]), np.array([2]))[0]], e1.actions[2:5])
    with pytest.raises(IndexError):
        w.index_of(np.array([0]), np.array([5]))


def test_windows_hold_the_camera_frames_once():
    """The episodes' frames become views of the windows' own: read once, not held twice."""
    from async_vla_ros.train.data import Episode

    rng = np.random.default_rng(0)
    eps = [
        Episode(
            obs=np.zeros((t, 2)),
            actions=np.zeros((t, 1)),
            images=rng.integers(0, 255, (t, 2, 2, 3), dtype=np.uint8),
            camera_images={c: rng.integers(0, 255, (t, 2, 2, 3), dtype=np.uint8) for c in ("scene", "wrist")},
        )
        for t in (3, 5)
    ]
    before = [({c: f.copy() for c, f in e.camera_images.items()}, e.images.copy()) for e in eps]
    w = ChunkWindows(eps, horizon=2)
    for e, (cams, img) in zip(eps, before, strict=True):
        np.testing.assert_array_equal(e.images, img)  # the same values
        assert np.shares_memory(e.images, w.images)
        for c in ("scene", "wrist"):
            np.testing.assert_array_equal(e.camera_images[c], cams[c])
            assert np.shares_memory(e.camera_images[c], w.camera_images[c])
    np.testing.assert_array_equal(w.frames(np.array([3, 7]), ["wrist"])["wrist"], before[1][0]["wrist"][[0, 4]])


_GATHER_SCRIPT = """
import json, numpy as np
from async_vla_ros.train.data import ChunkWindows, Episode

def hwm():  # peak resident set (kB) since the last reset
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

t, n = 40, 200
eps = [Episode(obs=np.full((t, 2), float(i)), actions=np.zeros((t, 1)),
               camera_images={c: np.full((t, 64, 64, 3), i % 251, dtype=np.uint8) for c in ("scene", "wrist")})
       for i in range(n)]
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to what is resident now
except OSError as exc:
    print(json.dumps({"skip": f"cannot reset the peak resident size: {exc}"}))
    raise SystemExit(0)
before = hwm()
w = ChunkWindows(eps, horizon=2)
ok = all(e.camera_images[c].base is w.camera_images[c] for e in eps for c in ("scene", "wrist"))
ok = ok and all((w.camera_images["wrist"][i * t:(i + 1) * t] == i % 251).all() for i in range(n))
print(json.dumps({"added_kb": hwm() - before, "frames_kb": 2 * n * t * 64 * 64 * 3 // 1024, "views": ok}))
"""


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="Linux /proc peak reset")
def test_windows_gather_frames_without_holding_them_twice():
    """Each episode's frames are freed as soon as they are copied, so gathering them adds little to
    the peak resident size, where a concatenation added the frames once more (what kept two VLA
    trainings on the whole data set from fitting beside each other: docs/training.md, "Memory").
    Measured in a fresh process: the peak resident size before and after gathering 200 episodes'
    frames of two cameras (~190 MB)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _GATHER_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if "skip" in r:
        pytest.skip(r["skip"])
    assert r["views"], "the episodes' frames must be views of the windows' arrays"
    # a concatenation adds ~1.0 x the frames; copying and freeing episode by episode ~one episode
    assert r["added_kb"] < 0.25 * r["frames_kb"], r


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_os():
    """What load_vla_data calls once the frames are concatenated (docs/training.md, "Memory")."""
    from async_vla_ros.train import data

    assert data.release_freed_memory() is True


def test_split_is_by_episode_and_keeps_training_data():
    tr, va = split_episodes(10, 0.2, seed=3)
    assert len(va) == 2 and len(tr) == 8 and not set(tr) & set(va)
    tr, va = split_episodes(1, 0.5, seed=0)
    assert list(tr) == [0] and len(va) == 0


def test_ignored_fields_are_blinded_and_unknown_fields_rejected():
    from async_vla_ros.policy.normalize import Normalizer
    from async_vla_ros.train.base import IGNORED_SCALE, ignore_fields

    obs = np.random.default_rng(0).normal(size=(50, 5)) * 3 + 1
    norm = Normalizer.from_data(obs, np.zeros((50, 2)))
    new, dims = ignore_fields(norm, [["a", 2], ["qd", 2], ["b", 1]], ("qd",))
    assert dims == [2, 3]
    z = new.obs.normalize(obs)
    assert np.abs(z[:, 2:4]).max() < 20 / IGNORED_SCALE  # ~0 whatever the velocity
    np.testing.assert_allclose(z[:, [0, 1, 4]], norm.obs.normalize(obs)[:, [0, 1, 4]])
    with pytest.raises(ValueError, match="unknown observation field"):
        ignore_fields(norm, [["a", 5]], ("qd",))
    assert BaseTrainConfig(ignore_obs="qd,tcp").ignore_obs == ("qd", "tcp")
    assert BaseTrainConfig(ignore_obs="").ignore_obs == ()


def test_floor_scales_protects_near_constant_features():
    from async_vla_ros.policy.normalize import Normalizer
    from async_vla_ros.train.base import floor_scales

    rng = np.random.default_rng(1)
    obs = np.c_[rng.normal(size=100), 1e-5 * rng.normal(size=100)]  # second feature ~constant
    acts = np.c_[rng.normal(size=100), np.zeros(100)]  # second action never varies
    norm = floor_scales(Normalizer.from_data(obs, acts), acts, obs_scale_min=1e-2, const_action_scale=1e-3)
    assert norm.obs.scale[1] == 1e-2 and norm.obs.scale[0] == pytest.approx(obs[:, 0].std())
    assert abs(norm.obs.normalize(np.array([0.0, 0.005]))[1]) < 1.0  # 5 mm is not a 500-sigma input
    assert norm.action.scale[1] == 1e-3 and norm.action.scale[0] == pytest.approx(acts[:, 0].std())


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="steps"):
        BaseTrainConfig(steps=0)
    with pytest.raises(ValueError, match="encoder"):
        BaseTrainConfig(encoder="lidar")


def test_training_reduces_validation_loss_and_writes_full_config(tmp_path):
    demos = synthetic_demos()
    cfg = BaseTrainConfig(steps=120, val_every=15, ckpt_every=1000, **{**TINY, "lr": 8e-3})
    res = train_base(demos, cfg, tmp_path / "base.pt", progress_bar=False, log=lambda s: None)
    first, last = res.history[0]["val_loss"], res.history[-1]["val_loss"]
    assert last < 0.65 * first, (first, last)
    ckpt = load_checkpoint(res.path)
    tc = ckpt["train_config"]
    assert tc["kind"] == "base" and tc["task"] == "synthetic" and tc["seed"] == 0
    assert tc["config"]["steps"] == 120 and tc["demos"]["episodes"] == 12 and tc["horizon"] == 4
    assert tc["obs_fields"] == [["x", 4]] and "git_commit" in tc["provenance"]
    pol = load_policy(res.path)
    assert isinstance(pol, FlowPolicyBackend) and (pol.horizon, pol.action_dim, pol.obs_dim) == (4, 3, 4)
    out = pol.infer(demos.episodes[0].obs[:2], seed=1)
    assert out.shape == (2, 4, 3) and np.isfinite(out).all()


def test_resume_continues_exactly(tmp_path):
    demos = synthetic_demos(n_eps=4, T=12)
    full = BaseTrainConfig(steps=30, val_every=10, ckpt_every=15, **TINY)
    a = train_base(demos, full, tmp_path / "a.pt", progress_bar=False, log=lambda s: None)
    stopped = train_base(demos, full, tmp_path / "b.pt", stop_at=15, progress_bar=False, log=lambda s: None)
    assert stopped.step == 15 and load_checkpoint(stopped.path)["train_config"]["step"] == 15
    b = train_base(demos, full, tmp_path / "b.pt", resume=True, progress_bar=False, log=lambda s: None)
    assert b.step == 30
    sa, sb = load_checkpoint(a.path)["state_dict"], load_checkpoint(b.path)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="differs"):
        train_base(
            demos,
            BaseTrainConfig(steps=30, **{**TINY, "lr": 1e-2}),
            tmp_path / "b.pt",
            resume=True,
            progress_bar=False,
            log=lambda s: None,
        )


def test_unfinished_reads_the_mark_each_command_writes_last(tmp_path):
    """train.common.unfinished (train_vla.sh's RESUME check): a demos folder is finished once its
    meta/info.json is written; a policy folder or an A2C2 head file once its recorded step reached
    its steps; anything else is not a result."""
    import json

    from async_vla_ros.train.common import unfinished

    assert unfinished(tmp_path / "nothing") == "missing"
    demos = tmp_path / "round"
    (demos / "meta").mkdir(parents=True)
    assert unfinished(demos).startswith("no record of a finished run")  # episodes written, no info.json
    (demos / "meta" / "info.json").write_text("{}")
    assert unfinished(demos) is None
    run = tmp_path / "run"
    # what `train vla` leaves when it is killed before its first checkpoint: the folder as built
    # (config, weights, processors, a sidecar without a training record). RESUME=1 once reused it
    from async_vla_ros.policy.lerobot_tiny import TinySmolVLASpec, build_tiny_smolvla

    build_tiny_smolvla(run, TinySmolVLASpec(image_hw=(32, 32)))
    assert (run / "async_vla_ros.json").is_file() and (run / "model.safetensors").is_file()
    assert unfinished(run) == "no training record (a `train vla` ended before its first checkpoint)"
    remac = tmp_path / "remac"
    remac.mkdir()
    (remac / "async_vla_ros.json").write_text(json.dumps({"remac": {"base": "x"}}))
    assert unfinished(remac) is None
    side = {"training": {"step": 5000, "config": {"steps": 48000}}}
    (run / "async_vla_ros.json").write_text(json.dumps(side))
    assert unfinished(run) == "a checkpoint at step 5000 of 48000"
    side["training"]["step"] = 48000
    (run / "async_vla_ros.json").write_text(json.dumps(side))
    assert unfinished(run) is None
    head = tmp_path / "head.pt"
    torch.save({"extra": {"train_config": {"step": 1000, "config": {"steps": 3000}}}}, head)
    assert unfinished(head) == "a checkpoint at step 1000 of 3000"
    torch.save({"extra": {"train_config": {"step": 3000, "config": {"steps": 3000}}}}, head)
    assert unfinished(head) is None
    head.write_bytes(b"cut short")
    assert unfinished(head).startswith("unreadable")
