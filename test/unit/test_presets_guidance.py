"""Presets carry the RTC guidance variant, its schedule and beta; strategies map to samplers."""

from __future__ import annotations

import pytest

from async_vla_ros.core.strategies import make_strategy, strategy_sampler
from async_vla_ros.presets import MethodPreset, PresetError, get_preset


def test_rtc_variants_and_remac_variants_map_to_their_samplers():
    assert get_preset("rtc").sampler == "rtc" and get_preset("rtc_jf").sampler == "rtc_jf"
    assert get_preset("remac").sampler == "remac" and get_preset("remac_clean").sampler == "prefix"
    assert get_preset("remac").checkpoint == "remac" and get_preset("remac_clean").checkpoint == "remac_clean"
    assert get_preset("rtc_jf").strategy_options == (("schedule", "exp"),) and get_preset("rtc_jf").beta == 5.0
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
