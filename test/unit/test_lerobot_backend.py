"""The lerobot backend on a tiny offline SmolVLA: mapping, checks, our samplers on its velocity,
LeRobot's own RTC, and the d / s / soft-region mapping between the two."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from async_vla_ros.core.requests import sampler_call
from async_vla_ros.core.strategies import make_strategy, prefix_weights
from async_vla_ros.policy import samplers as S
from async_vla_ros.policy.registry import BackendError, BackendRequest, get_backend, load_policy_spec

H, A, OBS = 8, 8, 24


@pytest.fixture(scope="module")
def be(tiny_smolvla_dir):
    return load_policy_spec(f"lerobot:{tiny_smolvla_dir}", BackendRequest("track", seed=0))


def _obs(b=1, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "state": rng.normal(size=(b, OBS)),
        "images": {"scene": rng.integers(0, 256, (b, 64, 64, 3), dtype=np.uint8)},
    }


def test_offline_variables_are_set_before_hub_libraries():
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_loads_through_the_registry_with_dims(be):
    assert (be.horizon, be.action_dim, be.obs_dim) == (H, A, OBS)
    assert be.camera_hw == {"scene": (64, 64)}
    assert be.is_flow and "rtc_lerobot" in be.samplers
    assert "rtc_lerobot" in get_backend("lerobot").samplers
    out = be.infer(_obs(2), "vanilla", seed=3)
    assert out.shape == (2, H, A) and out.dtype == np.float64 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, be.infer(_obs(2), "vanilla", seed=3))  # seeded: deterministic
    assert not np.array_equal(out, be.infer(_obs(2), "vanilla", seed=4))


def test_cameras_go_by_name_and_a_mismatch_names_both_sets(be):
    o = _obs()
    with pytest.raises(BackendError, match=r"the policy takes \['scene'\], given \['front'\]"):
        be.infer({"state": o["state"], "images": {"front": o["images"]["scene"]}}, "vanilla", seed=1)
    with pytest.raises(BackendError, match="missing"):  # no unnamed single-image path
        be.infer({"state": o["state"], "image": o["images"]["scene"]}, "vanilla", seed=1)


def test_the_observation_instruction_is_used_when_present(be):
    o = _obs()
    be.infer(o, "vanilla", seed=1)
    assert be.last_info["instruction"] == be.instruction and be.last_info["cameras"] == ["scene"]
    said = "keep the gripper on the moving target"
    out = be.infer({**o, "instruction": said}, "vanilla", seed=1)
    assert be.last_info["instruction"] == said
    assert not np.array_equal(out, be.infer(o, "vanilla", seed=1))  # the tokens changed the chunk


@pytest.mark.parametrize(
    "obs, match",
    [
        ({"state": np.zeros((1, 7)), "images": _obs()["images"]}, "obs_dim"),
        ({"state": np.zeros((1, OBS))}, "missing"),
        ({"state": np.zeros((1, OBS)), "images": {"wrist": np.zeros((1, 64, 64, 3), np.uint8)}}, "camera names"),
        ({"state": np.zeros((1, OBS)), "images": {"scene": np.zeros((1, 32, 32, 3), np.uint8)}}, "expected"),
        ({"state": np.full((1, OBS), np.nan), "images": _obs()["images"]}, "NaN"),
    ],
)
def test_clear_errors_on_bad_observations(be, obs, match):
    with pytest.raises(BackendError, match=match):
        be.infer(obs, "vanilla")


def test_joint_names_and_order_are_checked(be):
    names = [f"j{i}" for i in range(A)]
    be.action_names = names
    try:
        be.check_names(action_names=names)
        with pytest.raises(BackendError, match="different order"):
            be.check_names(action_names=names[::-1])
        with pytest.raises(BackendError, match="differ"):
            be.check_names(action_names=[*names[:-1], "x"])
    finally:
        be.action_names = None


def test_not_a_policy_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="config.json"):
        load_policy_spec(f"lerobot:{tmp_path}", BackendRequest("track"))


def _lerobot_space(be, seed=0, d=3, s=2, n_real=None):
    batch, _ = be._batch(_obs(seed=seed))
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, H, be.padded_dim), generator=g)
    prev = torch.randn((1, H, A), generator=g)
    y = torch.nn.functional.pad(prev, (0, be.padded_dim - A))
    w = torch.as_tensor(prefix_weights(d, s, H, "exp", n_real=n_real), dtype=torch.float32)[None]
    return batch, noise, prev, y, w


def test_our_vanilla_on_the_velocity_matches_lerobot_sampling(be):
    batch, noise, *_ = _lerobot_space(be)
    v = be.velocity_fn(batch)
    ours = S.sample_vanilla(lambda x, tau: v(x, tau).detach(), noise, be.n_steps)[..., :A]
    be.policy.config.rtc_config.enabled = False
    try:
        theirs = be.policy.predict_action_chunk(batch, noise=noise.clone())
    finally:
        be.policy.config.rtc_config.enabled = True
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("d, s, n_real", [(0, 4, None), (2, 3, None), (3, 2, 5), (1, 1, None), (4, 4, None)])
def test_our_rtc_with_identity_jacobian_reproduces_lerobot_guidance(be, d, s, n_real):
    batch, noise, prev, y, w = _lerobot_space(be, seed=d + 7 * s, d=d, s=s, n_real=n_real)
    v = be.velocity_fn(batch)
    beta = be.settings.beta
    assert be.policy.config.rtc_config.max_guidance_weight == beta
    # J = I: the velocity does not depend on x for autograd (LeRobot evaluates v before x requires grad)
    jf = S.sample_rtc(lambda x, tau: v(x.detach(), tau), noise, be.n_steps, y, w[0], beta=beta)[..., :A]
    end = min(H - s, n_real if n_real is not None else H)
    theirs = be.policy.predict_action_chunk(
        batch, noise=noise.clone(), inference_delay=d, prev_chunk_left_over=prev[:, :end], execution_horizon=H - s
    )
    torch.testing.assert_close(jf, theirs, rtol=0, atol=2e-5)
    # and our exact VJP is a different (paper) guidance on the same model
    exact = S.sample_rtc(v, noise, be.n_steps, y, w[0], beta=beta)[..., :A]
    assert (exact - theirs).abs().max() > 1e-4


@pytest.mark.parametrize("d", range(0, H + 1))
@pytest.mark.parametrize("s", range(1, H + 1))
def test_soft_region_maps_to_lerobot_execution_horizon(be, d, s):
    proc = be.policy.rtc_processor
    for n_real in (H, H - 2, 3):
        ours = prefix_weights(d, s, H, "exp", n_real=n_real)
        # LeRobot clamps its execution horizon to the length of the leftover it is given (n_real)
        theirs = proc.get_prefix_weights(d, min(H - s, n_real), H).numpy()
        if d > min(H - s, n_real):  # LeRobot: start = min(d, end); ours keeps the frozen rows at 1
            theirs = proc.get_prefix_weights(d, d, H).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
        g = make_strategy("rtc_lerobot").guidance(n_real, d, s, H)
        assert g.n_frozen == min(d, H)
        dd, e = be.lerobot_rtc_args(g.weights[None], np.array([g.n_frozen]))
        assert dd == min(d, H) and e == max(min(d, H), min(H - s, n_real))


def test_first_chunk_runs_vanilla_for_both_rtc(be):
    g = make_strategy("rtc_lerobot").guidance(0, 3, 2, H)
    assert g.n_frozen == 0 and not g.weights.any()
    for sampler in ("rtc", "rtc_lerobot"):
        assert sampler_call(sampler, None, None, np.array([0])) == ("vanilla", {"seed": None})
    # and LeRobot's RTC with no leftover is its plain sampling (no guidance)
    batch, noise, *_ = _lerobot_space(be)
    np.testing.assert_array_equal(
        be.policy.predict_action_chunk(batch, noise=noise.clone()).numpy(),
        be.policy.predict_action_chunk(batch, noise=noise.clone(), prev_chunk_left_over=None).numpy(),
    )


def test_rtc_lerobot_refuses_other_schedules(be):
    prev = be.infer(_obs(), "vanilla", seed=0)
    w = prefix_weights(2, 3, H, "linear")[None]
    with pytest.raises(BackendError, match="exp schedule"):
        be.infer(_obs(), "rtc_lerobot", prefix=prev, weights=w, n_frozen=np.array([2]))


def test_samplers_run_and_pin_the_prefix(be):
    o = _obs(seed=5)
    prev = be.infer(o, "vanilla", seed=1)
    d, s = 3, 2
    w = prefix_weights(d, s, H, "exp")[None]
    van = be.infer(o, "vanilla", seed=2)
    pre = be.infer(o, "prefix", prefix=prev, n_frozen=np.array([d]), seed=2)
    np.testing.assert_allclose(pre[0, :d], prev[0, :d], atol=1e-5)  # held exactly (float32 round trip)
    rtc = be.infer(o, "rtc", prefix=prev, weights=w, seed=2)
    lr = be.infer(o, "rtc_lerobot", prefix=prev, weights=w, n_frozen=np.array([d]), seed=2)
    assert be.last_info["inference_delay"] == d and be.last_info["execution_horizon"] == H - s
    gap = {k: np.abs(x[0, :d] - prev[0, :d]).max() for k, x in (("van", van), ("rtc", rtc), ("lr", lr))}
    assert gap["rtc"] < gap["van"] and gap["lr"] < gap["van"], gap
    bid = be.infer(o, "bid", prefix=prev, weights=w, seed=2)
    assert bid.shape == (1, H, A) and len(be.last_info["bid_index"]) == 1
    assert be.infer(o, "bid", seed=2).shape == (1, H, A)  # first chunk: no prefix


def test_rtc_jf_is_lerobot_guidance_and_the_authors_remac_is_refused(be):
    """rtc_jf (our J = I guidance) runs on a LeRobot flow policy and gives LeRobot's own RTC chunk for
    the same request; the authors' remac sampler needs our mask-conditioned network: refused with why,
    never silently run as another sampler."""
    from async_vla_ros.presets import get_preset

    o = _obs(seed=6)
    prev = be.infer(o, "vanilla", seed=1)
    d, s = 2, 3
    w = prefix_weights(d, s, H, "exp")[None]
    jf = be.infer(o, "rtc_jf", prefix=prev, weights=w, seed=3)
    lr = be.infer(o, "rtc_lerobot", prefix=prev, weights=w, n_frozen=np.array([d]), seed=3)
    np.testing.assert_allclose(jf, lr, atol=1e-4)
    with pytest.raises(BackendError, match="remac"):
        be.infer(o, "remac", prefix=prev, weights=w, n_frozen=np.array([d]), seed=3)
    why = get_backend("lerobot").cannot_serve(get_preset("remac"), "x")
    assert why and "'remac'" in why


def test_guidance_clip_is_a_request_parameter(be):
    """One loaded LeRobot policy serves every preset's clip: ``beta`` per call reaches our rtc / rtc_jf
    and LeRobot's own rtc (its ``max_guidance_weight``, restored after the call); None is the
    load-time default, and a call with the default's value gives the same chunk as None."""
    from async_vla_ros.core.requests import takes_beta

    assert takes_beta(be) and get_backend("lerobot").per_request_beta
    o = _obs(seed=7)
    prev = be.infer(o, "vanilla", seed=1)
    d, s = 3, 2
    w = prefix_weights(d, s, H, "exp")[None]
    nf = np.array([d])
    default = be.settings.beta
    for sampler, kw in (("rtc", {}), ("rtc_jf", {}), ("rtc_lerobot", {"n_frozen": nf})):
        base = be.infer(o, sampler, prefix=prev, weights=w, seed=2, **kw)
        assert be.last_info["beta"] == default
        same = be.infer(o, sampler, prefix=prev, weights=w, seed=2, beta=default, **kw)
        np.testing.assert_array_equal(base, same)
        small = be.infer(o, sampler, prefix=prev, weights=w, seed=2, beta=0.05, **kw)
        assert be.last_info["beta"] == 0.05
        assert np.abs(small - base).max() > 1e-6, sampler  # the clip changed the guidance
        assert be.policy.rtc_processor.rtc_config.max_guidance_weight == default  # restored
    with pytest.raises(BackendError, match="beta"):
        be.infer(o, "rtc", prefix=prev, weights=w, seed=2, beta=float("nan"))
