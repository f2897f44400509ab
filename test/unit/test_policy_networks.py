"""Flow network: shapes, cached-conditioning path == uncached path, training loss."""

from __future__ import annotations

import pytest
import torch

from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.networks import FlowNetConfig, build_network, count_params, flow_matching_loss

OBS, H, A = 12, 8, 5


def randomised(cfg: FlowNetConfig, seed: int = 0):
    """A network with every parameter random (the default zero-init adaLN would hide bugs)."""
    torch.manual_seed(seed)
    net = build_network(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


@pytest.fixture
def cfg():
    return FlowNetConfig(
        obs_dim=OBS, action_dim=A, horizon=H, hidden=32, channel_hidden=48, token_hidden=16, depth=2, obs_hidden=32
    )


def test_default_network_is_small():
    net = build_network(FlowNetConfig(obs_dim=32, action_dim=8, horizon=8))
    assert 100_000 < count_params(net) < 1_000_000


def test_state_network_shapes(cfg):
    net = randomised(cfg)
    obs, x = torch.randn(4, OBS), torch.randn(4, H, A)
    cond = net.encode(obs)
    assert cond.emb.shape == (4, cfg.hidden) and net.latent(cond).shape == (4, net.latent_dim)
    assert net.velocity(x, 0.3, cond).shape == (4, H, A)
    assert net(obs, x, torch.rand(4)).shape == (4, H, A)


def test_image_network_shapes():
    cfg = FlowNetConfig(
        obs_dim=6, action_dim=A, horizon=H, hidden=32, encoder="image", image_size=(64, 80), cnn_channels=(8, 16)
    )
    net = randomised(cfg)
    obs = {"state": torch.randn(2, 6), "image": torch.rand(2, 3, 64, 80)}
    assert net(obs, torch.randn(2, H, A), 0.5).shape == (2, H, A)
    with pytest.raises(ValueError, match="image must have shape"):
        net.encode({"state": torch.randn(2, 6), "image": torch.rand(2, 3, 32, 32)})
    with pytest.raises(ValueError, match="image encoder"):
        net.encode(torch.randn(2, 6))


@pytest.mark.parametrize("tau", [0.0, 0.2, 0.8])
def test_cached_conditioning_equals_uncached_path(cfg, tau):
    net = randomised(cfg)
    obs, x = torch.randn(3, OBS), torch.randn(3, H, A)
    with torch.no_grad():
        ref = net(obs, x, torch.full((3,), tau))
        cond = net.encode(obs, cache=True)
        first = net.velocity(x, tau, cond)
        second = net.velocity(x, tau, cond)  # served from the memo
    assert list(cond.cache) == [tau]
    torch.testing.assert_close(first, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(second, ref, rtol=0, atol=0)


def test_cached_sampling_equals_uncached_sampling(cfg):
    net = randomised(cfg, seed=1)
    obs, x0 = torch.randn(2, OBS), torch.randn(2, H, A)
    with torch.no_grad():
        cond = net.encode(obs, cache=True)
        cached = S.sample_vanilla(net.velocity_fn(cond), x0, 5)
        uncached = S.sample_vanilla(lambda x, t: net(obs, x, t), x0, 5)
    assert sorted(cond.cache) == S.flow_times(5)  # one modulation per Euler time, computed once
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-5)


def test_per_row_tau_matches_scalar_calls(cfg):
    net = randomised(cfg, seed=2)
    obs, x = torch.randn(3, OBS), torch.randn(3, H, A)
    taus = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        out = net(obs, x, taus)
        rows = [net(obs[i : i + 1], x[i : i + 1], float(taus[i])) for i in range(3)]
    torch.testing.assert_close(out, torch.cat(rows), rtol=1e-5, atol=1e-5)


def test_repeat_interleave_cond_matches_repeated_obs(cfg):
    net = randomised(cfg, seed=3)
    obs = torch.randn(2, OBS)
    x = torch.randn(6, H, A)
    with torch.no_grad():
        a = net.velocity(x, 0.4, net.encode(obs, cache=True).repeat_interleave(3))
        b = net(obs.repeat_interleave(3, dim=0), x, 0.4)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_rtc_through_network_differentiates_x_only(cfg):
    net = randomised(cfg, seed=4)
    obs, x0 = torch.randn(2, OBS), torch.randn(2, H, A)
    with torch.no_grad():
        cond = net.encode(obs, cache=True)
        out = S.sample_rtc(net.velocity_fn(cond), x0, 4, torch.zeros(2, H, A), torch.ones(H))
    assert out.shape == (2, H, A) and not out.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_flow_matching_loss_trains_and_masks(cfg):
    net = randomised(cfg, seed=5).train()
    obs, act = torch.randn(16, OBS), torch.randn(16, H, A)
    g = torch.Generator().manual_seed(0)
    loss = flow_matching_loss(net, obs, act, generator=g)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    full = flow_matching_loss(net, obs, act, generator=torch.Generator().manual_seed(1))
    ones = flow_matching_loss(net, obs, act, generator=torch.Generator().manual_seed(1), loss_mask=torch.ones(16, H))
    torch.testing.assert_close(full, ones)


def test_shape_and_config_validation(cfg):
    net = randomised(cfg)
    cond = net.encode(torch.randn(2, OBS))
    with pytest.raises(ValueError, match="x must have shape"):
        net.velocity(torch.randn(3, H, A), 0.1, cond)
    with pytest.raises(ValueError, match="tau"):
        net.velocity(torch.randn(2, H, A), torch.rand(3), cond)
    with pytest.raises(ValueError, match="state must have shape"):
        net.encode(torch.randn(2, OBS + 1))
    with pytest.raises(ValueError, match="hidden"):
        FlowNetConfig(obs_dim=3, action_dim=2, horizon=4, hidden=0)
    with pytest.raises(ValueError, match="encoder"):
        FlowNetConfig(obs_dim=3, action_dim=2, horizon=4, encoder="lidar")
    with pytest.raises(ValueError, match="image_size"):
        FlowNetConfig(obs_dim=3, action_dim=2, horizon=4, encoder="image")
    assert FlowNetConfig.from_dict(cfg.to_dict()) == cfg


def test_batched_precompute_equals_lazy_memo(cfg):
    net = randomised(cfg, seed=6)
    obs, x0 = torch.randn(3, OBS), torch.randn(3, H, A)
    with torch.no_grad():
        lazy = net.encode(obs, cache=True)
        ref = S.sample_vanilla(net.velocity_fn(lazy), x0, 4)
        pre = net.precompute(net.encode(obs, cache=True), S.flow_times(4))
        assert sorted(pre.cache) == S.flow_times(4)
        for t in S.flow_times(4):
            for a, b in zip(pre.cache[t], lazy.cache[t]):
                for ta, tb in zip(a, b):
                    torch.testing.assert_close(ta, tb, rtol=1e-5, atol=1e-6)
        out = S.sample_vanilla(net.velocity_fn(pre), x0, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert net.precompute(net.encode(obs), [0.0]).cache is None  # no memo requested: no-op


def test_remac_prefix_conditioning_in_the_loss(cfg):
    """Frozen slots hold the clean prefix in x_tau and carry no loss."""
    net = randomised(cfg, seed=7)
    seen = {}
    real_velocity = net.velocity

    def spy(x, tau, cond, **kw):
        seen["x"] = x.detach().clone()
        return real_velocity(x, tau, cond, **kw)

    net.velocity = spy
    obs, act = torch.randn(4, OBS), torch.randn(4, H, A)
    prefix = torch.full((4, H, A), 9.0)
    nf = torch.tensor([0, 1, 3, H])
    flow_matching_loss(net, obs, act, generator=torch.Generator().manual_seed(0), cond_prefix=prefix, n_frozen=nf)
    for b, k in enumerate(nf.tolist()):
        assert torch.equal(seen["x"][b, :k], prefix[b, :k])
        assert not torch.any(seen["x"][b, k:] == 9.0)
    # the loss ignores the frozen slots: changing the target there changes nothing
    act2 = act.clone()
    act2[1, 0] += 100.0
    act2[2, :3] -= 50.0
    l1 = flow_matching_loss(net, obs, act, generator=torch.Generator().manual_seed(1), cond_prefix=prefix, n_frozen=nf)
    # same noise/tau draws: the changed targets sit in frozen slots, which x_tau overwrites and the loss masks
    l2 = flow_matching_loss(net, obs, act2, generator=torch.Generator().manual_seed(1), cond_prefix=prefix, n_frozen=nf)
    torch.testing.assert_close(l1, l2)
    with pytest.raises(ValueError, match="together"):
        flow_matching_loss(net, obs, act, cond_prefix=prefix)


def test_rtc_with_inference_mode_cond_explains_the_fix(cfg):
    net = randomised(cfg)
    with torch.inference_mode():  # memoised modulation made of inference tensors
        cond = net.precompute(net.encode(torch.randn(1, OBS), cache=True), S.flow_times(2))
    with pytest.raises(RuntimeError, match="no_grad"):
        S.sample_rtc(net.velocity_fn(cond), torch.randn(1, H, A), 2, torch.zeros(1, H, A), torch.ones(H))
