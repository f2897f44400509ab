"""Samplers against analytic velocity fields with known answers (tau = 0 noise, tau = 1 data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from async_vla_ros.policy import samplers as S

B, H, A = 3, 6, 2


@pytest.fixture(autouse=True)
def _float64():
    """Exact comparisons on analytic fields; restored after each test."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def transport_to(target: torch.Tensor):
    """v(x, tau) = (target - x) / (1 - tau): Euler reaches target exactly at tau = 1, for any n."""
    return lambda x, tau: (target - x) / (1.0 - tau)


def gaussian_field(mu: torch.Tensor, s: float):
    """Exact marginal velocity for data ~ N(mu, s^2) (elementwise) and noise N(0, 1).

    x_tau ~ N(tau mu, sig2), sig2 = (1 - tau)^2 + tau^2 s^2; v = mu + (tau s^2 - (1 - tau)) (x - tau mu) / sig2.
    Its flow is x_tau = tau mu + sqrt(sig2(tau)) x0. Separable across time steps and dims.
    """

    def v(x, tau):
        sig2 = (1 - tau) ** 2 + tau**2 * s**2
        return mu + (tau * s**2 - (1 - tau)) * (x - tau * mu) / sig2

    def denoise_jacobian(tau):  # d x1_hat / d x (a scalar times identity)
        sig2 = (1 - tau) ** 2 + tau**2 * s**2
        return tau * s**2 / sig2

    return v, denoise_jacobian


@pytest.fixture
def x0():
    return torch.randn(B, H, A, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- vanilla
@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_vanilla_transport_field_reaches_target_exactly(x0, n):
    target = torch.linspace(-1, 1, B * H * A).reshape(B, H, A)
    out = S.sample_vanilla(transport_to(target), x0, n)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-12)


def test_vanilla_gaussian_field_matches_closed_form_flow(x0):
    mu, s = torch.full((B, H, A), 0.7), 0.3
    v, _ = gaussian_field(mu, s)
    exact = mu + s * x0
    err_2k = (S.sample_vanilla(v, x0, 2000) - exact).abs().max().item()
    err_4k = (S.sample_vanilla(v, x0, 4000) - exact).abs().max().item()
    assert err_4k < 1e-3
    assert err_2k / err_4k == pytest.approx(2.0, rel=0.05)  # Euler converges at first order


def test_vanilla_matches_independent_euler_recursion(x0):
    mu, s, n = 0.4, 0.5, 5
    v, _ = gaussian_field(torch.full((B, H, A), mu), s)
    ref = x0.numpy().copy()
    for k in range(n):
        t = k / n
        sig2 = (1 - t) ** 2 + t**2 * s**2
        ref = ref + (mu + (t * s**2 - (1 - t)) * (ref - t * mu) / sig2) / n
    np.testing.assert_allclose(S.sample_vanilla(v, x0, n).numpy(), ref, rtol=0, atol=1e-12)


def test_flow_times_convention():
    assert S.flow_times(4) == [0.0, 0.25, 0.5, 0.75]  # noise first, data (tau = 1) never evaluated


# ----------------------------------------------------------------------------- RTC
def test_rtc_guidance_weight_formula_and_clip():
    assert S.rtc_guidance_weight(0.0, 5.0) == 5.0  # tau = 0: (1-tau)/tau = inf -> beta
    assert S.rtc_guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # (0.25 + 0.25) / (0.5 * 0.5)
    for tau in (0.1, 0.3, 0.6, 0.9):
        raw = ((1 - tau) / tau) * (tau**2 + (1 - tau) ** 2) / (1 - tau) ** 2
        assert S.rtc_guidance_weight(tau, 5.0) == pytest.approx(min(5.0, raw))
        assert S.rtc_guidance_weight(tau, 1e9) == pytest.approx(raw)
    assert S.rtc_guidance_weight(0.1, 5.0) == 5.0  # raw = 9.11 clipped
    with pytest.raises(ValueError):
        S.rtc_guidance_weight(1.0, 5.0)
    with pytest.raises(ValueError):
        S.rtc_guidance_weight(0.5, -1.0)


def test_rtc_with_zero_weights_equals_vanilla(x0):
    v, _ = gaussian_field(torch.full((B, H, A), 0.2), 0.4)
    y = torch.full((B, H, A), 3.0)
    out = S.sample_rtc(v, x0, 5, y, torch.zeros(B, H))
    torch.testing.assert_close(out, S.sample_vanilla(v, x0, 5), rtol=0, atol=0)


def test_rtc_zero_weights_equals_vanilla_on_nonseparable_field(x0):
    torch.manual_seed(1)
    mix = torch.nn.Linear(H * A, H * A)

    def v(x, tau):
        return torch.tanh(mix(x.reshape(x.shape[0], -1))).reshape(x.shape) * (1 + tau)

    with torch.no_grad():
        ref = S.sample_vanilla(v, x0, 4)
        out = S.sample_rtc(v, x0, 4, torch.ones(B, H, A), torch.zeros(H))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_rtc_pulls_guided_steps_towards_prefix_and_leaves_unguided_steps_alone(x0):
    v, _ = gaussian_field(torch.zeros(B, H, A), 1.0)
    y = torch.full((B, H, A), 2.0)
    w = torch.zeros(B, H)
    w[:, :2] = 1.0  # frozen prefix
    w[:, 2] = 0.5  # decaying soft mask
    van = S.sample_vanilla(v, x0, 5)
    rtc = S.sample_rtc(v, x0, 5, y, w)
    d_van = (van - y).abs()[:, :3]
    d_rtc = (rtc - y).abs()[:, :3]
    assert bool((d_rtc < d_van).all())
    # field separable across time steps: J is diagonal, so W = 0 steps get no guidance at all
    torch.testing.assert_close(rtc[:, 3:], van[:, 3:], rtol=0, atol=0)


def test_rtc_sign_and_vjp_on_linear_field():
    """v = a x: x1_hat = (1 + (1 - tau) a) x, J = (1 + (1 - tau) a) I; guided = v + w(tau) J (W (Y - x1_hat))."""
    a, tau, beta = -0.5, 0.5, 5.0
    x = torch.full((1, 3, 1), 1.0)
    y = torch.full((1, 3, 1), 4.0)
    wm = torch.tensor([[1.0, 0.5, 0.0]]).unsqueeze(-1)
    v = lambda x, t: a * x  # noqa: E731
    j = 1 + (1 - tau) * a  # 0.75
    x1_hat = j * 1.0
    expected = a * 1.0 + S.rtc_guidance_weight(tau, beta) * j * (wm * (4.0 - x1_hat))
    got = S.rtc_guided_velocity(v, x, tau, y, wm, beta)
    torch.testing.assert_close(got, expected.expand(1, 3, 1), rtol=0, atol=1e-12)
    assert got[0, 0, 0] > a * 1.0  # Y above the estimate: guidance pushes x up
    y_low = torch.full((1, 3, 1), -4.0)
    assert S.rtc_guided_velocity(v, x, tau, y_low, wm, beta)[0, 0, 0] < a * 1.0


@pytest.mark.parametrize("beta", [0.5, 5.0])
def test_rtc_beta_clip_bounds_the_step(beta):
    """Constant field (J = I): the correction per step never exceeds beta * |W (Y - x1_hat)| / n."""
    c = torch.zeros(1, H, A)
    v = lambda x, t: c  # noqa: E731
    x0 = torch.zeros(1, H, A)
    y = torch.full((1, H, A), 1e3)
    w = torch.ones(1, H)
    n = 10
    x = x0
    for tau in S.flow_times(n):
        x1_hat = x + (1 - tau) * c
        bound = beta * (w.unsqueeze(-1) * (y - x1_hat)).abs() / n
        x_new = x + S.rtc_guided_velocity(v, x, tau, y, w.unsqueeze(-1), beta) / n
        assert bool(((x_new - x).abs() <= bound + 1e-9).all())
        x = x_new
    out = S.sample_rtc(v, x0, n, y, w, beta=beta)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-9)


def test_rtc_refuses_inference_mode(x0):
    v, _ = gaussian_field(torch.zeros(B, H, A), 1.0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        S.sample_rtc(v, x0, 2, torch.zeros(B, H, A), torch.ones(H))


def test_rtc_accepts_h_vector_weights(x0):
    v, _ = gaussian_field(torch.zeros(B, H, A), 1.0)
    w = torch.linspace(1, 0, H)
    y = torch.ones(B, H, A)
    torch.testing.assert_close(S.sample_rtc(v, x0, 3, y, w), S.sample_rtc(v, x0, 3, y, w.expand(B, H)))


# ----------------------------------------------------------------------------- prefix (REMAC)
@pytest.mark.parametrize("mode", ["clean", "interpolant"])
def test_prefix_returns_prefix_exactly_per_row(x0, mode):
    v, _ = gaussian_field(torch.full((B, H, A), -0.3), 0.6)
    prefix = torch.arange(B * H * A, dtype=torch.float64).reshape(B, H, A)
    nf = torch.tensor([0, 2, H])
    out = S.sample_prefix(v, x0, 5, prefix, nf, mode=mode)
    van = S.sample_vanilla(v, x0, 5)
    for b, k in enumerate(nf.tolist()):
        assert torch.equal(out[b, :k], prefix[b, :k])
        # separable field: the free actions are exactly what vanilla gives
        torch.testing.assert_close(out[b, k:], van[b, k:], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["clean", "interpolant"])
def test_prefix_is_held_at_every_integration_step(x0, mode):
    prefix = torch.full((B, H, A), 5.0)
    seen = []

    def v(x, tau):
        seen.append((tau, x.clone()))
        return -x

    S.sample_prefix(v, x0, 4, prefix, 3, mode=mode)
    assert len(seen) == 4
    for tau, x in seen:
        expected = prefix[:, :3] if mode == "clean" else (1 - tau) * x0[:, :3] + tau * prefix[:, :3]
        torch.testing.assert_close(x[:, :3], expected, rtol=0, atol=1e-12)


def test_prefix_validation(x0):
    v = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="n_frozen"):
        S.sample_prefix(v, x0, 2, torch.zeros(B, H, A), H + 1)
    with pytest.raises(ValueError, match="n_frozen"):
        S.sample_prefix(v, x0, 2, torch.zeros(B, H, A), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="prefix"):
        S.sample_prefix(v, x0, 2, torch.zeros(B, H - 1, A), 1)
    with pytest.raises(ValueError, match="mode"):
        S.sample_prefix(v, x0, 2, torch.zeros(B, H, A), 1, mode="noisy")


# ----------------------------------------------------------------------------- BID
def _closest_to_prefix(cands, prefix, weights, weak):
    """Stand-in scorer with bid_select's signature: weighted distance to the prefix, argmin."""
    d = (np.linalg.norm(cands - prefix[:, None], axis=-1) * weights[:, None]).sum(-1)
    return d.argmin(axis=1)


def test_bid_candidates_and_selection():
    n_c = 5
    x0 = torch.randn(B, n_c, H, A, generator=torch.Generator().manual_seed(3))
    mu = torch.zeros(B * n_c, H, A)
    v, _ = gaussian_field(mu, 0.8)
    prefix = torch.full((B, H, A), 0.5)
    w = torch.ones(B, H)
    res = S.sample_bid(v, x0, 4, prefix, w, select=_closest_to_prefix)
    assert res.candidates.shape == (B, n_c, H, A) and res.actions.shape == (B, H, A)
    ref = S.sample_vanilla(v, x0.reshape(B * n_c, H, A), 4).reshape(B, n_c, H, A)
    torch.testing.assert_close(res.candidates, ref, rtol=0, atol=0)
    expected = _closest_to_prefix(ref.numpy(), prefix.numpy(), w.numpy(), None)
    np.testing.assert_array_equal(res.index, expected)
    for b in range(B):
        assert torch.equal(res.actions[b], ref[b, expected[b]])


def test_bid_weak_samples_reach_the_scorer():
    got = {}

    def select(c, p, w, weak):
        got["weak"] = weak
        return np.zeros(c.shape[0], dtype=np.int64)

    x0 = torch.randn(B, 2, H, A)
    weak_x0 = torch.randn(B, 3, H, A)
    target = torch.ones(B * 3, H, A)
    res = S.sample_bid(
        lambda x, t: -x,
        x0,
        2,
        torch.zeros(B, H, A),
        torch.ones(B, H),
        weak_v=transport_to(target),
        weak_x0=weak_x0,
        select=select,
    )
    assert got["weak"].shape == (B, 3, H, A)
    np.testing.assert_allclose(got["weak"], 1.0, atol=1e-12)
    assert res.weak is not None


def test_bid_rejects_bad_scorer_output():
    x0 = torch.randn(B, 2, H, A)
    with pytest.raises(ValueError, match="indices"):
        S.sample_bid(lambda x, t: -x, x0, 2, torch.zeros(B, H, A), torch.ones(B, H), select=lambda *a: np.full(B, 7))
    with pytest.raises(ValueError, match="together"):
        S.sample_bid(
            lambda x, t: -x,
            x0,
            2,
            torch.zeros(B, H, A),
            torch.ones(B, H),
            weak_v=lambda x, t: x,
            select=_closest_to_prefix,
        )


def test_bid_with_core_bid_select_prefers_coherent_candidate():
    bid = pytest.importorskip("async_vla_ros.core.bid")
    # candidate j is transported exactly to the constant j / 2; the prefix is 1.0 -> candidate 2
    n_c = 4
    targets = (torch.arange(n_c, dtype=torch.float64) / 2).repeat(B)[:, None, None].expand(B * n_c, H, A)
    res = S.sample_bid(
        transport_to(targets),
        torch.randn(B, n_c, H, A),
        3,
        torch.ones(B, H, A),
        torch.ones(B, H),
        select=bid.bid_select,
    )
    np.testing.assert_array_equal(res.index, np.full(B, 2))


# ----------------------------------------------------------------------------- validation
def test_sampler_input_validation(x0):
    v = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="steps"):
        S.sample_vanilla(v, x0, 0)
    with pytest.raises(ValueError, match="shape"):
        S.sample_vanilla(v, x0[0], 2)
    with pytest.raises(ValueError, match="NaN"):
        S.sample_vanilla(v, x0 * math.nan, 2)
    with pytest.raises(ValueError, match="velocity function"):
        S.sample_vanilla(lambda x, t: x[:, :1], x0, 2)
    with pytest.raises(ValueError, match="non-negative"):
        S.sample_rtc(v, x0, 2, torch.zeros(B, H, A), -torch.ones(H))
    with pytest.raises(ValueError, match="weights"):
        S.sample_rtc(v, x0, 2, torch.zeros(B, H, A), torch.ones(H + 1))


def test_unvalidated_fast_paths_match(x0):
    v, _ = gaussian_field(torch.full((B, H, A), 0.1), 0.7)
    prefix = torch.randn(B, H, A)
    nf = np.array([0, 2, 5])
    w = torch.rand(B, H)
    torch.testing.assert_close(
        S.sample_prefix(v, x0, 4, prefix, nf, validate=False), S.sample_prefix(v, x0, 4, prefix, nf), rtol=0, atol=0
    )
    torch.testing.assert_close(
        S.sample_rtc(v, x0, 4, prefix, w, validate=False), S.sample_rtc(v, x0, 4, prefix, w), rtol=0, atol=0
    )


# ----------------------------------------------------------------------------- RTC, Jacobian-free
def test_rtc_jf_on_linear_field_uses_identity_not_the_jacobian():
    """v = a x: exact guidance multiplies the error by J = 1 + (1 - tau) a, J = I guidance does not."""
    a, tau, beta = -0.5, 0.5, 5.0
    x = torch.full((1, 3, 1), 1.0)
    y = torch.full((1, 3, 1), 4.0)
    wm = torch.tensor([[1.0, 0.5, 0.0]]).unsqueeze(-1)
    v = lambda x, t: a * x  # noqa: E731
    x1_hat = (1 + (1 - tau) * a) * 1.0  # 0.75
    expected = a * 1.0 + S.rtc_guidance_weight(tau, beta) * (wm * (4.0 - x1_hat))
    got = S.rtc_guided_velocity(v, x, tau, y, wm, beta, jacobian=False)
    torch.testing.assert_close(got, expected.expand(1, 3, 1), rtol=0, atol=1e-12)
    exact = S.rtc_guided_velocity(v, x, tau, y, wm, beta)
    # weight 1 (tau = 0.5: min(5, 1 * 2) = 2) times err: the exact one is 0.75 of it
    torch.testing.assert_close(exact - a, 0.75 * (got - a), rtol=0, atol=1e-12)


def test_rtc_jf_equals_exact_when_velocity_does_not_depend_on_x(x0):
    """J = I exactly when v is independent of x, so both guidance variants agree there."""
    c = torch.linspace(-1, 1, H * A).reshape(1, H, A)
    v = lambda x, tau: c.expand_as(x) * (1 + tau)  # noqa: E731
    y = torch.randn(B, H, A, generator=torch.Generator().manual_seed(4))
    w = torch.linspace(1, 0, H)
    a = S.sample_rtc(v, x0, 4, y, w, beta=3.0)
    b = S.sample_rtc(v, x0, 4, y, w, beta=3.0, jacobian=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_rtc_jf_one_step_with_unit_weight_lands_on_the_prefix(x0):
    """n = 1, tau = 0, beta = 1, W = 1: x1 = x0 + v + (Y - x0 - v) = Y for any field."""
    v, _ = gaussian_field(torch.full((H, A), 0.3), 0.5)
    y = torch.randn(B, H, A, generator=torch.Generator().manual_seed(5))
    out = S.sample_rtc(v, x0, 1, y, torch.ones(H), beta=1.0, jacobian=False)
    torch.testing.assert_close(out, y, rtol=0, atol=1e-12)


def test_rtc_jf_works_under_inference_mode(x0):
    v, _ = gaussian_field(torch.zeros(H, A), 1.0)
    with torch.inference_mode():
        out = S.sample_rtc(v, x0, 3, torch.zeros(B, H, A), torch.ones(H), jacobian=False)
    assert out.shape == x0.shape


# ----------------------------------------------------------------------------- REMAC (authors)
def test_remac_start_is_tail_then_zeros():
    y = torch.arange(1.0, 1 + 2 * H * A).reshape(2, H, A)
    s = S.remac_start(y, np.array([2, 0]))
    torch.testing.assert_close(s[0, :2], y[0, :2])
    assert float(s[0, 2:].abs().sum()) == 0.0 and float(s[1].abs().sum()) == 0.0


@pytest.mark.parametrize("n", [1, 3, 5])
def test_remac_sampler_closed_form_and_mask_input(n):
    """v = T - x on the free rows: Euler gives x_n = T + (start - T)(1 - 1/n)^n; frozen rows stay
    at the start bit-exactly; the network sees the mask 1[k >= d] at every step."""
    target = torch.randn(B, H, A, generator=torch.Generator().manual_seed(1))
    start = torch.randn(B, H, A, generator=torch.Generator().manual_seed(2))
    d = np.array([0, 2, H])
    seen = []

    def v(x, tau, m):
        seen.append(m.clone())
        return target - x

    out = S.sample_remac(v, start, n, d)
    expected = target + (start - target) * (1 - 1 / n) ** n
    frozen = S.frozen_mask(d, B, H).unsqueeze(-1)
    torch.testing.assert_close(out, torch.where(frozen, start, expected), rtol=0, atol=1e-12)
    assert len(seen) == n
    for m in seen:
        torch.testing.assert_close(m, (~S.frozen_mask(d, B, H)).to(m.dtype))


def test_remac_sampler_is_deterministic():
    v = lambda x, tau, m: -x * (1 + tau)  # noqa: E731
    start = torch.randn(B, H, A, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(S.sample_remac(v, start, 4, 1), S.sample_remac(v, start, 4, 1), rtol=0, atol=0)


# ----------------------------------------------------------------------------- prefix adherence
def test_prefix_adherence_known_values():
    y = np.zeros((2, 4, 1))
    c = np.array([[[0.1], [-0.3], [0.5], [2.0]], [[1.0], [0.0], [0.0], [0.0]]])
    w = np.array([1.0, 1.0, 0.5, 0.0])
    frozen, soft = S.prefix_adherence(c, y, np.array([2, 0]), w)
    np.testing.assert_allclose(frozen, [0.3, np.nan])
    np.testing.assert_allclose(soft, [0.5, 1.0])  # row 1: no frozen rows, soft rows 0..2
