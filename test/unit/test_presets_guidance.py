"""Presets carry the RTC guidance variant, its schedule and beta; strategies map to samplers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from async_vla_ros.core.chunk import Chunk
from async_vla_ros.core.requests import infer_specs, sampler_call, spec_call, takes_beta
from async_vla_ros.core.scheduler import ChunkScheduler, SchedulerConfig
from async_vla_ros.core.strategies import make_strategy, strategy_sampler
from async_vla_ros.presets import MethodPreset, PresetError, get_preset


def test_rtc_variants_and_remac_variants_map_to_their_samplers():
    assert get_preset("rtc").sampler == "rtc" and get_preset("rtc_jf").sampler == "rtc_jf"
    assert get_preset("remac").sampler == "remac" and get_preset("remac_clean").sampler == "prefix"
    assert get_preset("remac").checkpoint == "remac" and get_preset("remac_clean").checkpoint == "remac_clean"
    assert get_preset("rtc_jf").strategy_options == (("schedule", "exp"), ("beta", 5.0))
    assert strategy_sampler("rtc_jf") == "rtc_jf"
    s = make_strategy("rtc_jf", schedule="linear")
    assert s.name == "rtc_jf" and s.sampler == "rtc_jf" and s.schedule == "linear"


def test_remac_guidance_marks_real_rows_and_freezes_d():
    g = make_strategy("remac").guidance(n_real=5, d=2, s=2, horizon=8)
    assert g.n_frozen == 2 and list(g.weights) == [1, 1, 1, 1, 1, 0, 0, 0]
    assert make_strategy("remac").guidance(n_real=0, d=2, s=2, horizon=8).n_frozen == 0
    g = make_strategy("remac_clean").guidance(n_real=5, d=2, s=2, horizon=8)
    assert g.n_frozen == 2 and list(g.weights) == [1, 1, 0, 0, 0, 0, 0, 0]


def test_bad_guidance_parameters_are_refused():
    with pytest.raises(PresetError, match="schedule"):
        MethodPreset(name="x", strategy="rtc_jf", schedule="cubic")
    with pytest.raises(PresetError, match="beta"):
        MethodPreset(name="x", strategy="rtc", beta=-1.0)
    with pytest.raises(PresetError, match="rtc / rtc_jf"):
        MethodPreset(name="x", strategy="naive", beta=5.0)


class _Recorder:
    """A ChunkPolicy that records the infer kwargs (with or without a per-request beta)."""

    horizon, action_dim, obs_dim = 8, 2, 3

    def __init__(self, takes_beta: bool):
        self.calls: list[dict] = []
        if not takes_beta:
            self.infer = self._infer_no_beta  # type: ignore[method-assign]

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None, beta=None):
        self.calls.append({"sampler": sampler, "beta": beta})
        return np.zeros((len(obs), 8, 2))

    def _infer_no_beta(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        self.calls.append({"sampler": sampler, "beta": "absent"})
        return np.zeros((len(obs), 8, 2))


def _second_request(strategy: str, **options):
    """The scheduler's second request (the first has no prefix) for ``strategy``."""
    sched = ChunkScheduler(SchedulerConfig(horizon=8, action_dim=2), strategy, **options)
    spec = sched.maybe_request(0)
    assert sched.on_chunk(Chunk(1, spec.request_id, spec.t_obs, np.ones((8, 2))), 0).accepted
    for t in range(8):
        spec2 = sched.maybe_request(t)
        if spec2 is not None:
            return spec, spec2
        sched.action_at(t)
    raise AssertionError("no second request")


def test_a_presets_beta_travels_with_each_request_to_infer():
    """The one mechanism of the lockstep runner and the nodes: preset beta -> strategy option ->
    Guidance.beta -> RequestSpec.beta -> infer(beta=) (ChunkRequest.guidance_beta in the nodes)."""
    opts = dict(get_preset("rtc").strategy_options)
    first, spec = _second_request("rtc", **opts)
    assert spec.beta == 5.0 and spec.n_real > 0 and first.beta == 5.0
    pol = _Recorder(takes_beta=True)
    infer_specs(pol, np.zeros((1, 3)), [spec])
    assert pol.calls[-1] == {"sampler": "rtc", "beta": 5.0}
    infer_specs(pol, np.zeros((1, 3)), [first])  # first chunk: vanilla, no clip to pass
    assert pol.calls[-1] == {"sampler": "vanilla", "beta": None}
    _, other = _second_request("rtc_jf", schedule="exp", beta=2.5)
    infer_specs(pol, np.zeros((1, 3)), [other])
    assert pol.calls[-1] == {"sampler": "rtc_jf", "beta": 2.5}
    _, default = _second_request("rtc")  # no preset clip: the policy's default
    assert default.beta is None and "beta" not in sampler_call("rtc", np.zeros((1, 8, 2)), np.ones((1, 8)), None)[1]
    # a backend without a per-request clip is called without one (it was loaded with the preset's)
    old = _Recorder(takes_beta=False)
    assert not takes_beta(old) and takes_beta(pol)
    infer_specs(old, np.zeros((1, 3)), [spec])
    assert old.calls[-1] == {"sampler": "rtc", "beta": "absent"}
    with pytest.raises(ValueError, match="one guidance clip"):
        spec_call([spec, dataclasses.replace(spec, beta=1.0)])


def test_bad_request_betas_are_refused():
    for bad in (-1.0, 0.0, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ValueError, match="beta"):
            make_strategy("rtc", beta=bad)
    with pytest.raises(ValueError, match="beta"):
        sampler_call("rtc", np.zeros((1, 8, 2)), np.ones((1, 8)), None, beta=float("nan"))
    # samplers without guidance ignore a clip
    assert "beta" not in sampler_call("prefix", np.zeros((1, 8, 2)), None, np.array([1]), beta=3.0)[1]
