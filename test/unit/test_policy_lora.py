"""LoRA: trainable-parameter count, merged == unmerged, adapters disabled == base."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from async_vla_ros.policy.lora import (
    adapters_disabled,
    apply_lora,
    count_trainable_params,
    expected_lora_params,
    linear_module_names,
    merge_lora,
)
from async_vla_ros.policy.networks import FlowNetConfig, build_network

OBS, H, A = 10, 6, 4


def _net(seed=0):
    torch.manual_seed(seed)
    net = build_network(
        FlowNetConfig(
            obs_dim=OBS, action_dim=A, horizon=H, hidden=32, channel_hidden=48, token_hidden=16, depth=2, obs_hidden=32
        )
    )
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


def _randomise_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _inputs():
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, OBS, generator=g), torch.randn(3, H, A, generator=g), torch.tensor([0.0, 0.4, 0.8])


def test_trainable_count_matches_hand_count_on_tiny_mlp():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    peft_model = apply_lora(mlp, rank=2, alpha=4)
    assert count_trainable_params(peft_model) == 2 * (4 + 3) + 2 * (3 + 2)


@pytest.mark.parametrize("rank", [1, 4])
def test_trainable_count_matches_analytic_count(rank):
    net = _net()
    expected = sum(rank * (m.in_features + m.out_features) for m in net.modules() if isinstance(m, nn.Linear))
    assert expected_lora_params(net, rank) == expected
    total_before = sum(p.numel() for p in net.parameters())
    peft_model = apply_lora(net, rank=rank)
    assert count_trainable_params(peft_model) == expected
    assert all(not p.requires_grad for n, p in peft_model.named_parameters() if "lora_" not in n)
    assert sum(p.numel() for p in peft_model.parameters()) == total_before + expected


def test_target_subset_and_bad_target():
    net = _net()
    targets = ["blocks.0.channel_in", "out_proj"]
    peft_model = apply_lora(net, rank=3, targets=targets)
    assert count_trainable_params(peft_model) == 3 * (32 + 48) + 3 * (32 + A)
    with pytest.raises(ValueError, match="not found"):
        apply_lora(_net(), rank=2, targets=["no_such_layer"])
    assert "blocks.1.adaln" in linear_module_names(_net())


def test_merged_equals_unmerged_and_disabled_equals_base():
    net = _net()
    base = copy.deepcopy(net)
    peft_model = apply_lora(net, rank=4, alpha=8)
    _randomise_adapters(peft_model)
    obs, x, tau = _inputs()
    with torch.no_grad():
        ref_base = base(obs, x, tau)
        unmerged = peft_model(obs, x, tau)
        with adapters_disabled(peft_model):
            disabled = peft_model(obs, x, tau)
            disabled_cached = peft_model.velocity(x, 0.4, peft_model.encode(obs, cache=True))
        assert (unmerged - ref_base).abs().max() > 1e-2  # adapters really change the output
        torch.testing.assert_close(disabled, ref_base, rtol=0, atol=0)
        torch.testing.assert_close(disabled_cached, base.velocity(x, 0.4, base.encode(obs)), rtol=1e-6, atol=1e-6)
        again = peft_model(obs, x, tau)  # adapters back on after the block
        torch.testing.assert_close(again, unmerged, rtol=0, atol=0)
        merged = merge_lora(peft_model)
        assert type(merged) is type(base)
        torch.testing.assert_close(merged(obs, x, tau), unmerged, rtol=1e-5, atol=1e-5)


def test_helpers_pass_plain_modules_through():
    net = _net()
    with adapters_disabled(net) as m:
        assert m is net
    assert merge_lora(net) is net
