"""The image+state variant end to end: expert demos with camera frames -> `train base --encoder
image` -> a checkpoint that serves chunks from {state, image} observations."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from async_vla_ros.policy.base import load_policy
from async_vla_ros.sim.demos import load_demos

pytestmark = pytest.mark.slow


def _cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "async_vla_ros.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_image_policy_trains_and_serves_chunks(tmp_path):
    demos = tmp_path / "demos"
    _cli("demos", "track", "--episodes", "4", "--images", "--out", str(demos))
    eps = load_demos(demos).episodes
    assert eps and eps[0].images is not None, "no camera frames recorded"

    ckpt = tmp_path / "img.pt"
    log = _cli(
        "train",
        "base",
        "--task",
        "track",
        "--demos",
        str(demos),
        "--out",
        str(ckpt),
        "--encoder",
        "image",
        "--steps",
        "60",
        "--batch-size",
        "16",
        "--val-every",
        "20",
        "--no-progress",
    )
    # one line per validation: "step 20: val_loss ... train_loss ..." (train.common.train_loop)
    train = [float(line.split("train_loss ")[1].split()[0]) for line in log.splitlines() if line.startswith("step ")]
    assert len(train) == 3 and train[-1] < train[0], log

    policy = load_policy(ckpt)
    state, images = eps[0].obs[:2], eps[0].images[:2]
    chunk = policy.infer({"state": state, "image": images}, seed=0)
    assert chunk.shape == (2, policy.horizon, policy.action_dim)
    assert np.isfinite(chunk).all()
    with pytest.raises(ValueError, match="image"):
        policy.infer(state)
