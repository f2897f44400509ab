"""A2C2: dataset pairs each step with the right chunk and in-chunk index; training reduces the loss."""

from __future__ import annotations

import numpy as np
import pytest
from test_train_base import TINY, synthetic_demos

from async_vla_ros.policy.a2c2 import CorrectionHead
from async_vla_ros.train.a2c2 import A2C2Config, build_a2c2_dataset, train_a2c2
from async_vla_ros.train.base import BaseTrainConfig, train_base
from async_vla_ros.train.data import Episode


class StampPolicy:
    """Chunk from obs_t: action k = [t_obs (read from obs[:, 0]), k, 7]; latent = [t_obs, -t_obs]."""

    horizon, action_dim, obs_dim = 4, 3, 2

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        o = np.asarray(obs)
        out = np.zeros((o.shape[0], self.horizon, self.action_dim))
        out[:, :, 0] = o[:, :1]
        out[:, :, 1] = np.arange(self.horizon)[None, :]
        out[:, :, 2] = 7.0
        return out

    def latent(self, obs):
        o = np.asarray(obs)
        return np.stack([o[:, 0], -o[:, 0]], axis=1)


def test_dataset_pairs_base_action_with_chunk_and_index():
    T = 7
    obs = np.stack([np.arange(T, dtype=float), np.zeros(T)], axis=1)  # obs[t, 0] = t
    expert = np.stack([np.arange(T) * 10.0, np.ones(T), np.zeros(T)], axis=1)
    ds = build_a2c2_dataset(StampPolicy(), [Episode(obs=obs, actions=expert)], latent=True)
    h = StampPolicy.horizon
    assert len(ds) == sum(min(t + 1, h) for t in range(T))  # every (t, k) with t - k >= 0
    for m in range(len(ds)):
        t, k = ds.t[m], ds.k[m]
        assert 0 <= k < h and t - k >= 0
        np.testing.assert_array_equal(ds.base[m], [t - k, k, 7.0])  # chunk made at t - k, its index k
        np.testing.assert_array_equal(ds.obs[m], obs[t])  # latest observation
        np.testing.assert_array_equal(ds.target[m], expert[t] - ds.base[m])
        np.testing.assert_array_equal(ds.latent[m], [t, -t])  # latent of obs_t (what the runner feeds)
    pairs = {(int(t), int(k)) for t, k in zip(ds.t, ds.k)}
    assert (3, 3) in pairs and (2, 3) not in pairs


def test_config_validation():
    with pytest.raises(ValueError, match="hidden"):
        A2C2Config(hidden=0)


def test_training_reduces_residual_error(tmp_path):
    demos = synthetic_demos()
    base = train_base(
        demos,
        BaseTrainConfig(steps=40, val_every=40, **TINY),
        tmp_path / "base.pt",
        progress_bar=False,
        log=lambda s: None,
    )
    cfg = A2C2Config(steps=200, batch_size=128, lr=3e-3, warmup=5, hidden=32, depth=2, val_every=50, val_fraction=0.25)
    res = train_a2c2(demos, base.path, cfg, tmp_path / "a2c2.pt", progress_bar=False, log=lambda s: None)
    last = res.history[-1]
    assert last["val_mse"] < 0.5 * last["val_mse_zero"], last  # corrected better than uncorrected
    head = CorrectionHead.load(res.path)
    o = demos.episodes[0].obs[:3]
    r = head.residual(o, np.zeros((3, 3)), np.array([0, 1, 3]), 4)
    assert r.shape == (3, 3) and np.isfinite(r).all()
