"""Checkpoint folder manifest and float16 storage of shipped weights."""

from __future__ import annotations

import json

import numpy as np
import torch

from async_vla_ros.checkpoints import available, checkpoint_path
from async_vla_ros.policy.base import load_checkpoint, load_policy
from async_vla_ros.train.base import BaseTrainConfig, train_base
from async_vla_ros.train.manifest import compact_fp16, main

from test_train_base import TINY, synthetic_demos


def test_fp16_storage_is_idempotent_loadable_and_recorded(tmp_path):
    demos = synthetic_demos(n_eps=4, T=10)
    res = train_base(demos, BaseTrainConfig(steps=5, val_every=5, **TINY), tmp_path / "synthetic_base.pt",
                     progress_bar=False, log=lambda s: None)
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
