"""FlowPolicyBackend: ChunkPolicy contract, normalisation, determinism, checkpoints, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from async_vla_ros.policy.base import (
    ChunkPolicy,
    FlowPolicyBackend,
    SamplerSettings,
    load_checkpoint,
    load_policy,
    make_flow_backend,
    save_checkpoint,
)
from async_vla_ros.policy.lora import apply_lora
from async_vla_ros.policy.networks import FlowNetConfig, build_network
from async_vla_ros.policy.normalize import DimNorm, Normalizer
from async_vla_ros.policy.registry import Backend, available_backends, register_backend

OBS, H, A, B = 9, 6, 4, 2
CFG = FlowNetConfig(
    obs_dim=OBS, action_dim=A, horizon=H, hidden=32, channel_hidden=48, token_hidden=16, depth=2, obs_hidden=32
)
RNG = np.random.default_rng(0)
NORM = Normalizer.from_data(RNG.normal(2.0, 3.0, (500, OBS)), RNG.uniform(-1.5, 0.5, (500, H, A)), action_mode="minmax")


def first_candidate(c, p, w, weak):
    return np.zeros(c.shape[0], dtype=np.int64)


def _backend(settings=None, **kw):
    be = make_flow_backend(
        CFG,
        NORM,
        settings or SamplerSettings(n_steps=3, bid_n=3),
        init_seed=0,
        task="unit",
        bid_select=first_candidate,
        **kw,
    )
    with torch.no_grad():  # non-trivial weights (adaLN starts at zero)
        g = torch.Generator().manual_seed(1)
        for p in be.network.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return be


def _request():
    obs = RNG.normal(2.0, 3.0, (B, OBS))
    prefix = RNG.uniform(-1.5, 0.5, (B, H, A))
    weights = np.tile(np.linspace(1.0, 0.0, H), (B, 1))
    return obs, prefix, weights, np.array([1, 3])


ALL = {"vanilla": {}, "rtc": {"p": 1, "w": 1}, "prefix": {"p": 1, "nf": 1}, "bid": {"p": 1, "w": 1}}


def _call(be, sampler, obs, prefix, weights, nf, seed):
    need = ALL[sampler]
    return be.infer(
        obs,
        sampler,
        prefix=prefix if "p" in need else None,
        weights=weights if "w" in need else None,
        n_frozen=nf if "nf" in need else None,
        seed=seed,
    )


def test_backend_is_a_chunk_policy():
    be = _backend()
    assert isinstance(be, ChunkPolicy)
    assert (be.horizon, be.action_dim, be.obs_dim) == (H, A, OBS)


@pytest.mark.parametrize("sampler", list(ALL))
def test_shapes_determinism_and_seed(sampler):
    be = _backend()
    obs, prefix, weights, nf = _request()
    a1 = _call(be, sampler, obs, prefix, weights, nf, seed=11)
    a2 = _call(be, sampler, obs, prefix, weights, nf, seed=11)
    a3 = _call(be, sampler, obs, prefix, weights, nf, seed=12)
    assert a1.shape == (B, H, A) and a1.dtype == np.float64 and np.isfinite(a1).all()
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, a3)
    assert be.last_info["sampler"] == sampler and be.last_info["latency_ms"] > 0


def test_own_noise_stream_is_reproducible_across_instances():
    obs = _request()[0]
    a, b = _backend(), _backend()
    np.testing.assert_array_equal(a.infer(obs), b.infer(obs))
    np.testing.assert_array_equal(a.infer(obs), b.infer(obs))


def test_prefix_sampler_returns_prefix_in_robot_units():
    be = _backend()
    obs, prefix, _, nf = _request()
    out = be.infer(obs, "prefix", prefix=prefix, n_frozen=nf, seed=0)
    for b, k in enumerate(nf):
        np.testing.assert_allclose(out[b, :k], prefix[b, :k], rtol=0, atol=1e-5)  # float32 round trip
        assert not np.allclose(out[b, k:], prefix[b, k:])


def test_rtc_zero_weights_equals_vanilla_and_guidance_pulls_to_prefix():
    be = _backend()
    obs, prefix, weights, _ = _request()
    van = be.infer(obs, seed=5)
    np.testing.assert_allclose(
        be.infer(obs, "rtc", prefix=prefix, weights=np.zeros((B, H)), seed=5), van, rtol=0, atol=1e-5
    )
    rtc = be.infer(obs, "rtc", prefix=prefix, weights=weights, seed=5)
    assert np.abs(rtc[:, 0] - prefix[:, 0]).mean() < np.abs(van[:, 0] - prefix[:, 0]).mean()


def test_bid_uses_the_injected_selector_and_first_chunk_without_prefix():
    be = _backend()
    obs, prefix, weights, _ = _request()
    out = be.infer(obs, "bid", prefix=prefix, weights=weights, seed=3)
    assert be.last_info["bid_index"] == [0, 0] and be.last_info["bid_n"] == 3
    assert be.infer(obs, "bid", seed=3).shape == (B, H, A)  # no previous plan
    np.testing.assert_array_equal(out, be.infer(obs, "bid", prefix=prefix, weights=weights, seed=3))


def test_checkpoint_round_trip_gives_identical_chunks(tmp_path):
    be = _backend()
    obs, prefix, weights, nf = _request()
    path = save_checkpoint(
        tmp_path / "ckpt" / "policy.pt",
        be.network,
        be.normalizer,
        task="unit",
        settings=be.settings,
        train_config={"steps": 10, "lr": 1e-3, "note": "x"},
    )
    ckpt = load_checkpoint(path)
    assert (ckpt["obs_dim"], ckpt["horizon"], ckpt["action_dim"], ckpt["task"]) == (OBS, H, A, "unit")
    assert ckpt["train_config"] == {"steps": 10, "lr": 1e-3, "note": "x"}
    loaded = load_policy(path, bid_select=first_candidate)
    assert isinstance(loaded, FlowPolicyBackend) and loaded.settings == be.settings
    for sampler in ALL:
        np.testing.assert_array_equal(
            _call(loaded, sampler, obs, prefix, weights, nf, 21), _call(be, sampler, obs, prefix, weights, nf, 21)
        )


def test_lora_model_is_merged_into_the_checkpoint(tmp_path):
    be = _backend()
    peft_model = apply_lora(be.network, rank=2)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    live = FlowPolicyBackend(peft_model, NORM, be.settings)
    path = save_checkpoint(tmp_path / "lora.pt", peft_model, NORM, task="unit")
    loaded = load_policy(path, settings=be.settings)
    obs = _request()[0]
    np.testing.assert_allclose(loaded.infer(obs, seed=4), live.infer(obs, seed=4), rtol=1e-4, atol=1e-4)


def test_image_backend_accepts_uint8_hwc_and_float_chw():
    cfg = FlowNetConfig(
        obs_dim=OBS, action_dim=A, horizon=H, hidden=32, encoder="image", image_size=(32, 40), cnn_channels=(8, 8)
    )
    be = make_flow_backend(cfg, settings=SamplerSettings(n_steps=2))
    img = RNG.integers(0, 256, (B, 32, 40, 3), dtype=np.uint8)
    state = RNG.normal(size=(B, OBS))
    a = be.infer({"state": state, "image": img}, seed=1)
    b = be.infer({"state": state, "image": img.transpose(0, 3, 1, 2).astype(np.float32) / 255.0}, seed=1)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="image"):
        be.infer(state)
    with pytest.raises(ValueError, match="uint8 image"):
        be.infer({"state": state, "image": img[:, :16]})


def test_input_validation_errors():
    be = _backend()
    obs, prefix, weights, nf = _request()
    with pytest.raises(ValueError, match=r"\(B, obs_dim\)"):
        be.infer(np.zeros((B, OBS + 1)))
    with pytest.raises(ValueError, match=r"\(B, obs_dim\)"):
        be.infer(np.zeros(OBS))
    bad = obs.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        be.infer(bad)
    with pytest.raises(ValueError, match="did you mean 'rtc'"):
        be.infer(obs, "rtcc")
    with pytest.raises(ValueError, match="needs prefix"):
        be.infer(obs, "rtc", weights=weights)
    with pytest.raises(ValueError, match="needs weights"):
        be.infer(obs, "rtc", prefix=prefix)
    with pytest.raises(ValueError, match="prefix must have shape"):
        be.infer(obs, "rtc", prefix=prefix[:, :-1], weights=weights)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        be.infer(obs, "rtc", prefix=prefix, weights=weights * 2)
    with pytest.raises(ValueError, match="n_frozen"):
        be.infer(obs, "prefix", prefix=prefix)
    with pytest.raises(ValueError, match="n_frozen"):
        be.infer(obs, "prefix", prefix=prefix, n_frozen=np.array([0, H + 1]))
    with pytest.raises(ValueError, match="seed"):
        be.infer(obs, seed=1.5)


def test_registry_and_checkpoint_errors(tmp_path):
    assert "flow" in available_backends()
    be = _backend()
    path = save_checkpoint(tmp_path / "p.pt", be.network, be.normalizer, task="unit")
    with pytest.raises(ValueError, match="did you mean 'flow'"):
        load_policy(path, backend="flw")
    with pytest.raises(ValueError, match="unknown policy backend"):
        save_checkpoint(tmp_path / "q.pt", be.network, be.normalizer, task="unit", backend="onnx")
    with pytest.raises(ValueError, match="already registered"):
        register_backend(Backend("flow", lambda req: None))
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "r.pt", be.network, be.normalizer, task="unit", train_config={"f": object()})
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_policy(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="normalizer dims"):
        FlowPolicyBackend(build_network(CFG), Normalizer.identity(OBS + 1, A))


def test_normalizer_modes_and_round_trip():
    x = RNG.normal(3.0, 2.0, (1000, 3))
    x[:, 2] = 7.0  # constant dimension
    ms = DimNorm.from_data(x, "meanstd")
    z = ms.normalize(x)
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-9)
    np.testing.assert_allclose(z[:, 2], 0.0)
    mm = DimNorm.from_data(x, "minmax")
    z = mm.normalize(x)
    np.testing.assert_allclose(z[:, :2].min(0), -1, atol=1e-12)
    np.testing.assert_allclose(z[:, :2].max(0), 1, atol=1e-12)
    np.testing.assert_allclose(mm.unnormalize(z), x, atol=1e-12)
    assert DimNorm.from_dict(mm.to_dict()) == mm and mm != ms
    assert Normalizer.from_dict(NORM.to_dict()) == NORM
    with pytest.raises(ValueError, match="mode"):
        DimNorm.from_data(x, "zscore")
    with pytest.raises(ValueError, match="NaN"):
        DimNorm.from_data(x * np.nan)


def test_settings_validation():
    with pytest.raises(ValueError, match="n_steps"):
        SamplerSettings(n_steps=0)
    with pytest.raises(ValueError, match="prefix_mode"):
        SamplerSettings(prefix_mode="noisy")
    with pytest.raises(ValueError, match="beta"):
        SamplerSettings(beta=float("inf"))
    with pytest.raises(ValueError, match="unknown SamplerSettings"):
        SamplerSettings.from_dict({"n_step": 3})
