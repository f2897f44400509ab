"""Checkpoint folder manifest and float16 storage of shipped weights."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_train_base import TINY, synthetic_demos

from async_vla_ros.checkpoints import available, checkpoint_path
from async_vla_ros.policy.base import load_checkpoint, load_policy
from async_vla_ros.train.base import BaseTrainConfig, train_base
from async_vla_ros.train.manifest import compact_fp16, main


def test_fp16_storage_is_idempotent_loadable_and_recorded(tmp_path):
    demos = synthetic_demos(n_eps=4, T=10)
    res = train_base(
        demos,
        BaseTrainConfig(steps=5, val_every=5, **TINY),
        tmp_path / "synthetic_base.pt",
        progress_bar=False,
        log=lambda s: None,
    )
    obs = demos.episodes[0].obs[:3]
    before = load_policy(res.path).infer(obs, seed=0)
    assert compact_fp16(res.path) is True
    assert compact_fp16(res.path) is False  # already float16
    ck = load_checkpoint(res.path)
    assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    after = load_policy(res.path).infer(obs, seed=0)
    np.testing.assert_allclose(after, before, atol=5e-3)
    assert main([str(tmp_path)]) == 0
    man = json.loads((tmp_path / "manifest.json").read_text())
    (entry,) = man["files"]
    assert entry["file"] == "synthetic_base.pt" and entry["kind"] == "base" and entry["stored_dtype"] == "float16"
    assert entry["command"].startswith("async-vla-ros train base --task synthetic")
    assert available(tmp_path) == {"synthetic": ["base"]}
    assert checkpoint_path("synthetic", "base", tmp_path) == res.path


def test_shipped_checkpoints_load_match_their_tasks_and_the_manifest():
    import hashlib

    from async_vla_ros.checkpoints import DIR
    from async_vla_ros.policy.a2c2 import CorrectionHead
    from async_vla_ros.sim.tasks import make_task

    man = {e["file"]: e for e in json.loads((DIR / "manifest.json").read_text())["files"]}
    for task in ("track", "intercept", "bifurcate", "pick_moving"):
        # the authors' REMAC variant ("remac") is trained for the tasks listed in docs/training.md
        kinds = ("base", "base_weak", "remac_clean", "a2c2") + (
            ("remac",) if (DIR / f"{task}_remac.pt").exists() else ()
        )
        for kind in kinds:
            path = checkpoint_path(task, kind)
            entry = man[path.name]
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # manifest is current
            assert entry["task"] == task and entry["seed"] == 0
            if kind == "a2c2":
                head = CorrectionHead.load(path)
                assert head.config.obs_dim == make_task(task).obs_dim
                continue
            tc = load_checkpoint(path)["train_config"]
            assert tc["kind"] == ("base" if kind.startswith("base") else "remac")
            if kind.startswith("remac"):
                assert tc.get("variant", "clean") == ("authors" if kind == "remac" else "clean")
                assert entry["variant"] == tc.get("variant", "clean")
            assert tc["demos"]["episodes"] == 400 and tc["horizon"] == 8 and tc["provenance"]["git_commit"]
            pol = load_policy(path)
            assert (pol.obs_dim, pol.action_dim, pol.horizon) == (make_task(task).obs_dim, 8, 8)
    assert (DIR / "track_remac.pt").exists()  # at least track has the authors' variant
    tasks = ("track", "intercept", "bifurcate", "pick_moving")
    state = [p for p in DIR.glob("*.pt") if p.name.startswith(tasks)]
    assert sum(p.stat().st_size for p in state) < 10e6  # the privileged-state set: "a few MB"
    # everything shipped, the multi-task VLA's folders and head included, stays small for a package
    assert sum(p.stat().st_size for p in DIR.rglob("*") if p.is_file()) < 15e6
    head = man["vla_a2c2.pt"]  # the VLA's head: current in the manifest, on the VLA's 1280 features (width 128)
    assert head["sha256"] == hashlib.sha256((DIR / "vla_a2c2.pt").read_bytes()).hexdigest()
    assert head["kind"] == "vla_a2c2" and CorrectionHead.load(DIR / "vla_a2c2.pt").config.latent_dim == 1280


def test_a_remac_folder_trained_on_a_run_folder_names_the_shipped_base_with_its_weights(tmp_path):
    """scripts/train_vla.sh trains the REMAC fine-tune on a run folder (runs/X_vla) that its ship step
    copies to checkpoints/vla: the manifest names `vla` as the base (same weights), keeps the path
    it was trained on, and gives the command on the shipped folder; a base with other weights, or
    one not on this machine, stays as recorded."""
    from safetensors.torch import save_file

    from async_vla_ros.train.manifest import write_manifest

    def folder(path, weights, side):
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
        save_file({"w": weights}, str(path / "model.safetensors"))
        (path / "async_vla_ros.json").write_text(json.dumps(side))

    w = torch.arange(6, dtype=torch.float16)
    training = {"config": {"steps": 10}, "history": [{"val_fm": 0.2}], "step": 10, "tasks": ["track"]}
    folder(tmp_path / "runs" / "X_vla", w, {"training": training})
    root = tmp_path / "ck"
    folder(root / "vla", w, {"training": training})
    remac = {"base": str(tmp_path / "runs" / "X_vla"), "config": {"steps": 5}, "demos": [{"task": "track"}]}
    folder(root / "vla_remac", w + 1, {"training": training, "remac": remac})
    entries = {e["folder"]: e for e in json.loads(write_manifest(root).read_text())["folders"]}
    r = entries["vla_remac"]
    assert r["base"] == "vla" and r["base_as_trained"] == str(tmp_path / "runs" / "X_vla")
    assert "--base lerobot:async_vla_ros/checkpoints/vla --demos data/demos_vla/track --out" in r["command"]
    assert "_base_path" not in r and "base_as_trained" not in entries["vla"]
    # the run folder with other weights (or gone): the base as recorded
    save_file({"w": w + 2}, str(tmp_path / "runs" / "X_vla" / "model.safetensors"))
    r = {e["folder"]: e for e in json.loads(write_manifest(root).read_text())["folders"]}["vla_remac"]
    assert r["base"] == "X_vla" and "base_as_trained" not in r
