"""A2C2 correction head: features, shapes, units, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead, position_features
from async_vla_ros.policy.lora import count_trainable_params
from async_vla_ros.policy.normalize import DimNorm, Normalizer

OBS, A, H, LAT = 7, 3, 8, 5


def _head(latent_dim=0, normalizer=None):
    torch.manual_seed(0)
    head = CorrectionHead(
        CorrectionConfig(obs_dim=OBS, action_dim=A, horizon=H, latent_dim=latent_dim, hidden=32, depth=2), normalizer
    )
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0.0, 0.3)
    return head.eval()


def test_default_head_is_small():
    head = CorrectionHead(CorrectionConfig(obs_dim=32, action_dim=8, horizon=8, latent_dim=128))
    assert count_trainable_params(head) < 500_000


def test_position_features_sin_cos():
    f = position_features(torch.tensor([0, 2, 4, 6]), 8)
    expected = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])
    torch.testing.assert_close(f, expected, rtol=0, atol=1e-6)


def test_feature_layout():
    head = _head(latent_dim=LAT)
    obs, base, lat = torch.randn(2, OBS), torch.randn(2, A), torch.randn(2, LAT)
    k = torch.tensor([1, 3])
    f = head.features(obs, base, k, lat)
    assert f.shape == (2, OBS + A + 2 + LAT)
    torch.testing.assert_close(f[:, :OBS], obs)
    torch.testing.assert_close(f[:, OBS : OBS + A], base)
    ang = 2 * math.pi * k.double() / H
    torch.testing.assert_close(f[:, OBS + A], torch.sin(ang).float())
    torch.testing.assert_close(f[:, OBS + A + 1], torch.cos(ang).float())
    torch.testing.assert_close(f[:, -LAT:], lat)


def test_untrained_head_is_identity_correction():
    head = CorrectionHead(CorrectionConfig(obs_dim=OBS, action_dim=A, horizon=H))
    r = head.residual(np.random.randn(4, OBS), np.random.randn(4, A), np.array([0, 1, 2, 7]), H)
    assert r.shape == (4, A) and np.all(r == 0.0)


def test_residual_is_in_robot_units():
    scale = np.array([0.5, 2.0, 4.0])
    norm = Normalizer(DimNorm("meanstd", np.zeros(OBS), np.ones(OBS)), DimNorm("meanstd", np.ones(A), scale))
    head = _head(normalizer=norm)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.copy_(torch.tensor([1.0, -1.0, 0.5]))
    r = head.residual(np.zeros((2, OBS)), np.zeros((2, A)), np.array([0, 5]), H)
    np.testing.assert_allclose(r, np.tile(np.array([0.5, -2.0, 2.0]), (2, 1)), atol=1e-6)


def test_residual_depends_on_position_and_matches_torch_path():
    head = _head(latent_dim=LAT)
    obs, base, lat = np.random.randn(1, OBS), np.random.randn(1, A), np.random.randn(1, LAT)
    r0 = head.residual(obs, base, np.array([0]), H, latent=lat)
    r3 = head.residual(obs, base, np.array([3]), H, latent=lat)
    assert not np.allclose(r0, r3)
    with torch.no_grad():
        t = head(
            torch.tensor(obs, dtype=torch.float32),
            torch.tensor(base, dtype=torch.float32),
            torch.tensor([3]),
            torch.tensor(lat, dtype=torch.float32),
        ).numpy()
    np.testing.assert_allclose(r3, t, rtol=1e-6, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    head = _head(latent_dim=LAT)
    args = (np.random.randn(3, OBS), np.random.randn(3, A), np.array([0, 4, 7]), H)
    lat = np.random.randn(3, LAT)
    path = head.save(tmp_path / "a2c2.pt")
    loaded = CorrectionHead.load(path)
    assert loaded.config == head.config
    np.testing.assert_array_equal(loaded.residual(*args, latent=lat), head.residual(*args, latent=lat))


def test_input_validation(tmp_path):
    head = _head(latent_dim=LAT)
    obs, base, lat = np.zeros((2, OBS)), np.zeros((2, A)), np.zeros((2, LAT))
    k = np.array([0, 1])
    with pytest.raises(ValueError, match="H="):
        head.residual(obs, base, k, H + 1, latent=lat)
    with pytest.raises(ValueError, match="k must be"):
        head.residual(obs, base, np.array([0, H]), H, latent=lat)
    with pytest.raises(ValueError, match="latent"):
        head.residual(obs, base, k, H)
    with pytest.raises(ValueError, match="obs must have shape"):
        head.residual(np.zeros((2, OBS + 1)), base, k, H, latent=lat)
    with pytest.raises(ValueError, match="NaN"):
        head.residual(obs * np.nan, base, k, H, latent=lat)
    with pytest.raises(ValueError, match="latent_dim"):
        CorrectionConfig(obs_dim=1, action_dim=1, horizon=2, latent_dim=-1)
    with pytest.raises(FileNotFoundError):
        CorrectionHead.load(tmp_path / "missing.pt")
