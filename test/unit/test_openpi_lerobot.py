"""openpi remote inference with a LeRobot policy: a tiny SmolVLA (random weights, built offline by the
session fixture ``tiny_smolvla_dir``) served by openpi's ``WebsocketPolicyServer`` through
:class:`ServedPolicy`, queried with the ``openpi://`` backend on 127.0.0.1: camera images and the
instruction reach the policy, and our guided samplers through the server equal local ones.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openpi_server")
pytest.importorskip("lerobot")

from test_openpi_remote import ThreadServer  # noqa: E402  (same folder, pytest prepend import mode)

from async_vla_ros.policy.openpi_backend import OpenpiPolicy  # noqa: E402
from async_vla_ros.policy.openpi_serve import ServedPolicy  # noqa: E402
from async_vla_ros.policy.registry import BackendRequest, load_policy_spec  # noqa: E402


def test_tiny_smolvla_through_openpi_equals_local(tiny_smolvla_dir):
    local = load_policy_spec(f"lerobot:{tiny_smolvla_dir}", BackendRequest("track", num_threads=1))
    served = ServedPolicy(local, task="track", spec=f"lerobot:{tiny_smolvla_dir}")
    assert served.needs_image and served.cameras == tuple(local.cameras)
    srv = ThreadServer(served)
    try:
        remote = OpenpiPolicy(f"127.0.0.1:{srv.port}", "track")
        assert (remote.horizon, remote.action_dim, remote.obs_dim) == (local.horizon, local.action_dim, local.obs_dim)
        assert remote.needs_image and remote.cameras == served.cameras
        rng = np.random.default_rng(0)
        state = rng.normal(size=(1, local.obs_dim)) * 0.1
        images = {c: rng.integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8) for c in served.cameras}
        obs = {"state": state, "images": images}
        h, a = local.horizon, local.action_dim
        prefix = local.infer(obs, "vanilla", seed=1)
        weights = np.r_[np.ones(2), np.linspace(1, 0, h - 2)][None]
        for sampler, kw in {
            "vanilla": {},
            "rtc": {"prefix": prefix, "weights": weights},
            "prefix": {"prefix": prefix, "n_frozen": np.array([2])},
        }.items():
            want = local.infer(obs, sampler, seed=5, **kw)
            got = remote.infer(obs, sampler, seed=5, **kw)
            assert got.shape == (1, h, a)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=sampler)
        # the images matter: other pixels give another chunk (they reach the policy through the server)
        other = {"state": state, "images": {c: 255 - v for c, v in images.items()}}
        assert not np.allclose(remote.infer(other, seed=5), remote.infer(obs, seed=5))
        remote.close()
    finally:
        srv.stop()
