"""REMAC: loss ignores the masked prefix, LoRA-off == base, prefixes, a few steps reduce the loss;
the authors' variant: mask-gated adapters, its loss against hand-computed values, schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_base import TINY, synthetic_demos

from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.base import load_checkpoint, load_policy
from async_vla_ros.policy.lora import adapters_disabled, apply_lora
from async_vla_ros.policy.networks import FlowNetConfig, build_network
from async_vla_ros.train.base import BaseTrainConfig, train_base
from async_vla_ros.train.data import ChunkWindows
from async_vla_ros.train.remac import (
    RemacAuthorsConfig,
    RemacConfig,
    build_prefixes,
    charbonnier,
    remac_authors_loss,
    remac_loss,
    train_remac,
    train_remac_authors,
)

OBS, H, A = 4, 6, 3


def _net(seed=0):
    torch.manual_seed(seed)
    return build_network(
        FlowNetConfig(
            obs_dim=OBS, action_dim=A, horizon=H, hidden=16, channel_hidden=32, token_hidden=8, depth=1, obs_hidden=16
        )
    )


def _lora(seed=0):
    model = apply_lora(_net(seed), rank=2, alpha=4)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _batch(b=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, OBS, generator=g),
        torch.randn(b, H, A, generator=g),
        torch.randn(b, H, A, generator=g),
        torch.tensor([0, 1, 2, 4, 6][:b]),
    )


@pytest.mark.parametrize("align", [False, True])
def test_loss_ignores_masked_prefix_targets(align):
    model = _lora()
    obs, act, prefix, d = _batch()
    lam = 0.5 if align else 0.0
    ref, parts = remac_loss(
        model, obs, act, prefix, d, lambda_m=lam, lambda_delta=lam, generator=torch.Generator().manual_seed(0)
    )
    changed = act.clone()
    for b, n in enumerate(d.tolist()):
        changed[b, :n] += 10.0  # targets of the frozen slots
    out, _ = remac_loss(
        model, obs, changed, prefix, d, lambda_m=lam, lambda_delta=lam, generator=torch.Generator().manual_seed(0)
    )
    assert ref.item() == out.item()
    assert (parts["m"] > 0) == align
    # without the mask the same change does alter the loss (the test can fail)
    nm_ref, _ = remac_loss(model, obs, act, prefix, d, mask=False, generator=torch.Generator().manual_seed(0))
    nm_out, _ = remac_loss(model, obs, changed, prefix, d, mask=False, generator=torch.Generator().manual_seed(0))
    assert nm_ref.item() != nm_out.item()


def test_prefix_is_written_clean_into_the_input_like_sample_prefix():
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, obs, x, tau):
            calls.append(x.detach().clone())
            return torch.zeros_like(x)

    obs, act, prefix, d = _batch()
    remac_loss(Spy(), obs, act, prefix, d, lambda_m=0, lambda_delta=0, generator=torch.Generator().manual_seed(0))
    x = calls[0]
    for b, n in enumerate(d.tolist()):
        torch.testing.assert_close(x[b, :n], prefix[b, :n], rtol=0, atol=0)
        if n < H:
            assert not torch.allclose(x[b, n:], prefix[b, n:])


def test_lora_off_equals_base_model():
    base = _net(1)
    model = _lora(1)  # same base weights (seed), random adapters
    obs, act, _, _ = _batch()
    tau = torch.rand(5)
    with torch.no_grad():
        assert (model(obs, act, tau) - base(obs, act, tau)).abs().max() > 1e-3
        with adapters_disabled(model):
            torch.testing.assert_close(model(obs, act, tau), base(obs, act, tau), rtol=0, atol=0)


def test_build_prefixes_shifts_base_chunk_by_execution_horizon():
    demos = synthetic_demos(n_eps=2, T=10)
    w = ChunkWindows(demos.episodes, horizon=H)
    chunks = torch.as_tensor(w.chunks, dtype=torch.float32)
    # base chunk of window i: every entry = flat index i * 100 + k (recognisable)
    n = len(w)
    base = (torch.arange(n)[:, None, None] * 100.0 + torch.arange(H)[None, :, None]).expand(n, H, A)[None].clone()
    rows = w.index_of(np.array([0, 0, 1, 1]), np.array([5, 1, 7, 9]))
    d = np.array([2, 3, 0, 4])
    rng = np.random.default_rng(0)
    p, used = build_prefixes(w, chunks, base, rows, d, s_min=1, sigma=0.0, rng=rng)
    assert used.tolist() == [True, False, True, True]  # row 1: t - s = 1 - 3 < 0 -> ground truth
    prev0 = w.index_of(np.array([0]), np.array([3]))[0]  # s = max(2, 1) = 2
    assert p[0, 0, 0] == prev0 * 100 + 2 and p[0, 1, 0] == prev0 * 100 + 3
    torch.testing.assert_close(p[1], chunks[rows[1]])
    prev2 = w.index_of(np.array([1]), np.array([6]))[0]  # d = 0 -> s = s_min = 1
    assert p[2, 0, 0] == prev2 * 100 + 1
    prev3 = w.index_of(np.array([1]), np.array([5]))[0]  # s = 4: indices 4, 5, 5, 5 ... (clipped)
    assert [p[3, i, 0].item() for i in range(4)] == [prev3 * 100 + 4, prev3 * 100 + 5, prev3 * 100 + 5, prev3 * 100 + 5]
    p1, used1 = build_prefixes(w, chunks, base, rows, d, s_min=1, sigma=1.0, rng=rng)
    assert not used1.any()
    torch.testing.assert_close(p1, chunks[torch.as_tensor(rows)])


def test_sigma_schedule_and_ablation_switches():
    cfg = RemacConfig(steps=100, curriculum_frac=0.5)
    assert cfg.sigma(0) == 1.0 and cfg.sigma(25) == pytest.approx(0.5) and cfg.sigma(60) == 0.0
    assert RemacConfig(curriculum=False).sigma(1000) == 1.0
    assert RemacConfig(align=False).effective_lambdas == (0.0, 0.0)
    assert RemacConfig().effective_lambdas == (0.01, 0.01)
    with pytest.raises(ValueError):
        RemacConfig(curriculum_frac=0.0)


def test_training_reduces_masked_loss_and_saves_merged_weights(tmp_path):
    demos = synthetic_demos()
    base_cfg = BaseTrainConfig(steps=60, val_every=60, ckpt_every=1000, **{**TINY, "horizon": H})
    base = train_base(demos, base_cfg, tmp_path / "base.pt", progress_bar=False, log=lambda s: None)
    cfg = RemacConfig(
        steps=80,
        batch_size=32,
        lr=1e-2,
        warmup=5,
        d_max=2,
        val_every=40,
        lora_rank=2,
        val_fraction=0.25,
        base_samples=1,
    )
    res = train_remac(demos, base.path, cfg, tmp_path / "remac.pt", progress_bar=False, log=lambda s: None)
    last = res.history[-1]
    assert last["val_masked_fm"] < last["val_masked_fm_base"]  # fine-tuning helps under prefix conditioning
    ck = load_checkpoint(res.path)
    assert not any("lora" in k for k in ck["state_dict"])  # merged, plain network
    assert ck["train_config"]["kind"] == "remac" and ck["sampler_settings"]["prefix_mode"] == "clean"
    assert ck["train_config"]["base_checkpoint"] == str(base.path)
    pol = load_policy(res.path)
    obs = demos.episodes[0].obs[:3]
    prefix = np.repeat(demos.episodes[0].actions[None, :H], 3, axis=0)
    out = pol.infer(obs, sampler="prefix", prefix=prefix, n_frozen=np.array([0, 1, 2]), seed=0)
    np.testing.assert_allclose(out[2, :2], prefix[2, :2], atol=1e-5)


# ----------------------------------------------------------------------------- authors' variant
def _masked_net(seed=0, rank=2):
    """A tiny masked-adapter network with random adaLN weights (zero-initialised gates would make
    every mixer block the identity)."""
    torch.manual_seed(seed)
    net = build_network(
        FlowNetConfig(
            obs_dim=OBS,
            action_dim=A,
            horizon=H,
            hidden=16,
            channel_hidden=32,
            token_hidden=8,
            depth=2,
            obs_hidden=16,
            mask_lora_rank=rank,
        )
    ).eval()
    with torch.no_grad():
        for blk in net.blocks:
            blk.adaln.weight.normal_(0.0, 0.3)
        net.final_adaln.weight.normal_(0.0, 0.3)
    return net


def test_masked_adapters_off_equal_the_backbone_and_gate_rows():
    net = _masked_net()
    plain = build_network(dataclasses_replace(net.config, mask_lora_rank=0)).eval()
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert not missing and all(k.startswith("adapters.") for k in unexpected)
    obs, x = torch.randn(3, OBS), torch.randn(3, H, A)
    tau = torch.tensor([0.1, 0.5, 0.9])
    m = torch.ones(3, H)
    m[:, :2] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(net(obs, x, tau, mask=m, adapters=False), plain(obs, x, tau), rtol=0, atol=0)
        on = net(obs, x, tau, mask=m)
        assert float((on - plain(obs, x, tau)).abs().max()) > 1e-3  # random A and B: adapters act at once
        # a gated adapter adds nothing on rows with m = 0 (the prefix); an ungated one (token mixing) acts everywhere
        ad = net.adapters["blocks"][0].channel_in
        h_in = torch.randn(3, H, 16)
        delta = ad(h_in, m.unsqueeze(-1))
        assert float(delta[:, :2].abs().max()) == 0.0 and float(delta[:, 2:].abs().max()) > 1e-3
        tok = net.adapters["blocks"][0].token_in(torch.randn(3, 16, H), None)
        assert float(tok.abs().min()) > 0.0
        with pytest.raises(ValueError, match="mask must have shape"):
            net(obs, x, tau, mask=torch.ones(3, H + 1))


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_authors_loss_matches_hand_computation():
    net = _masked_net(rank=2)
    obs, act, base_pred, _ = _batch(b=4)
    d = torch.tensor([0, 1, 3, 6])
    g = torch.Generator().manual_seed(7)
    loss, parts = remac_authors_loss(net, obs, act, base_pred, d, 0.5, generator=g)
    # the same draws by hand
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(act.shape, generator=g)
    tau = torch.rand((4,), generator=g)
    gt = (tau < 0.5).double() if act.dtype == torch.float64 else (tau < 0.5).float()
    end = gt[:, None, None] * act + (1 - gt[:, None, None]) * base_pred
    x = (1 - tau[:, None, None]) * x0 + tau[:, None, None] * end
    u = act - x0
    m = (torch.arange(H)[None, :] >= d[:, None]).float()
    with torch.no_grad():
        v = net(obs, x, tau, mask=m)
        v_off = net(obs, x, tau, mask=m, adapters=False)
    rows = m.sum(1).clamp_min(1)
    charb = ((torch.sqrt((u - v) ** 2 + 1e-6) * m[..., None]).sum((1, 2)) / rows).mean()
    delta = ((((u - v) ** 2) * m[..., None]).sum((1, 2)) / rows).mean()  # the delta loss is the masked MSE
    consist = (((v - v_off) ** 2) * (1 - m[..., None])).mean()
    assert parts["charb"] == pytest.approx(float(charb), rel=1e-5)
    assert parts["delta"] == pytest.approx(float(delta), rel=1e-5)
    assert parts["consist"] == pytest.approx(float(consist), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.01 * float(charb + delta + consist), rel=1e-5)
    assert parts["consist"] > 0  # row d = 6 is all prefix
    # ablations
    _, p2 = remac_authors_loss(net, obs, act, base_pred, d, 0.5, mask=False, generator=torch.Generator().manual_seed(7))
    assert p2["consist"] == 0.0
    l3, p3 = remac_authors_loss(
        net, obs, act, base_pred, d, 0.5, delta=False, generator=torch.Generator().manual_seed(7)
    )
    assert float(l3.detach()) == pytest.approx(0.01 * (p3["charb"] + p3["consist"]), rel=1e-5)


def test_authors_loss_curriculum_end_point():
    """p = 1: x_tau interpolates to the ground truth; p = 0: to the base prediction (target unchanged)."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, obs, x, tau, mask=None, adapters=True):
            seen.append((x.clone(), tau.clone()))
            return torch.zeros_like(x, requires_grad=True)

    obs, act, base_pred, d = _batch(b=4)
    for p in (1.0, 0.0):
        seen.clear()
        g = torch.Generator().manual_seed(1)
        remac_authors_loss(Probe(), obs, act, base_pred, d[:4], p, generator=g)
        g = torch.Generator().manual_seed(1)
        x0 = torch.randn(act.shape, generator=g)
        tau = torch.rand((4,), generator=g)
        end = act if p == 1.0 else base_pred
        torch.testing.assert_close(seen[0][0], (1 - tau[:, None, None]) * x0 + tau[:, None, None] * end)


def test_authors_schedules():
    cfg = RemacAuthorsConfig(steps=320, epochs=32)
    assert cfg.p_ground_truth(0) == 1.0
    assert cfg.p_ground_truth(319) == pytest.approx(np.exp(-5 * 31 / 32))
    assert cfg.d_min(0) == 4 and cfg.d_min(319) == 0 and cfg.d_min(160) == 2
    assert RemacAuthorsConfig(curriculum=False).p_ground_truth(1999) == 1.0
    assert RemacAuthorsConfig(delay_curriculum=False).d_min(0) == 0
    assert float(charbonnier(torch.tensor(0.0))) == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        RemacAuthorsConfig(ema=1.0)


def test_authors_training_saves_masked_network_that_keeps_the_prefix(tmp_path):
    demos = synthetic_demos()
    base_cfg = BaseTrainConfig(steps=60, val_every=60, ckpt_every=1000, **{**TINY, "horizon": H})
    base = train_base(demos, base_cfg, tmp_path / "base.pt", progress_bar=False, log=lambda s: None)
    cfg = RemacAuthorsConfig(
        steps=40, batch_size=32, lr=3e-3, d_max=2, val_every=20, epochs=4, val_fraction=0.25, base_samples=1
    )
    res = train_remac_authors(demos, base.path, cfg, tmp_path / "remac.pt", progress_bar=False, log=lambda s: None)
    ck = load_checkpoint(res.path)
    assert ck["network_config"]["mask_lora_rank"] == 4
    assert ck["train_config"]["variant"] == "authors" and ck["train_config"]["kind"] == "remac"
    assert all(np.isfinite(e["val_masked_fm"]) for e in res.history)
    pol = load_policy(res.path)
    obs = demos.episodes[0].obs[:3]
    prefix = np.repeat(demos.episodes[0].actions[None, :H], 3, axis=0)
    w = np.ones((3, H))
    out = pol.infer(obs, sampler="remac", prefix=prefix, weights=w, n_frozen=np.array([0, 1, 2]))
    np.testing.assert_allclose(out[2, :2], prefix[2, :2], atol=1e-5)
    np.testing.assert_allclose(out[1, :1], prefix[1, :1], atol=1e-5)
    again = pol.infer(obs, sampler="remac", prefix=prefix, weights=w, n_frozen=np.array([0, 1, 2]))
    np.testing.assert_array_equal(out, again)  # deterministic: no noise
    assert S.SAMPLER_INPUTS["remac"] == ("prefix", "weights", "n_frozen")
