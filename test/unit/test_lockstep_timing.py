"""Lockstep runner timing semantics on a physics-free fake env and a scripted policy.

The policy's action encodes (chunk number, index k, observation step): action[0] = chunk
number (its call count), action[1] = k, action[2] = t_obs (read from the observation, which
the fake env fills with the step number). The fake env records every executed action, so the
test reads back which chunk and which k executed at each step and compares with the RTC
Kinetix semantics derived by hand:

naive, s = max(d, s_min): the first chunk (requested at t=0) arrives at t=d and starts at its
own k=0 (from standstill: hold before); chunk n >= 1 is requested at t = n*s and executes
k = d .. d+s-1 during [n*s + d, (n+1)*s + d).
sync: chunk n executes k = 0..s-1 during [n*(s+d) + d, n*(s+d) + d + s), holding in between.
"""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros.sim.lockstep import LockstepConfig, LockstepRunner, episode_seeds, smoothness
from async_vla_ros.sim.tasks import EpisodeState, make_task

H = 8


class FakeEnv:
    """Same interface as BatchedPandaEnv; obs = step number everywhere; records actions."""

    def __init__(self, task, num_envs, threads=None):
        self.task = task
        self.num_envs = num_envs
        self.obs_dim = task.obs_dim
        self.episode_steps = 24
        self.dt = 0.05
        self.command = np.full((num_envs, 8), -1.0)
        self.log: list[np.ndarray] = []
        self.obs_log: list[np.ndarray] = []

    def reset(self, seeds):
        self.t = 0
        self.states = [EpisodeState(seed=int(s), params={}) for s in seeds]
        self.command = np.full((self.num_envs, 8), -1.0)
        self.log = []
        return self._obs()

    def _obs(self):
        o = np.full((self.num_envs, self.obs_dim), float(self.t))
        self.obs_log.append(o)
        return o

    def step(self, actions, active=None):
        self.command = np.asarray(actions, dtype=float).copy()
        self.log.append(self.command.copy())
        self.t += 1
        return self._obs()

    @property
    def done(self):
        return self.t >= self.episode_steps

    def decided(self):
        return np.zeros(self.num_envs, bool)

    def success(self):
        return np.zeros(self.num_envs, bool)

    def success_step(self):
        return np.full(self.num_envs, -1)

    def close(self):
        pass


class EncodingPolicy:
    """ChunkPolicy whose actions say which call, which k and which observation step made them."""

    horizon = H
    action_dim = 8

    def __init__(self, obs_dim):
        self.obs_dim = obs_dim
        self.calls: list[tuple[int, str, int]] = []  # (batch size, sampler, t_obs)
        self.seeds: list[int] = []

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        b = obs.shape[0]
        t_obs = int(obs[0, 0])
        assert np.all(obs[:, 0] == t_obs)  # every env asks at the same step
        n = len(self.calls)
        self.calls.append((b, sampler, t_obs))
        self.seeds.append(seed)
        out = np.zeros((b, H, 8))
        out[:, :, 0] = n
        out[:, :, 1] = np.arange(H)
        out[:, :, 2] = t_obs
        return out


def _run(method, d, s_min, episodes=3, batch=3, correction=None, env_holder=None, seed=0):
    task = make_task("track")
    policy = EncodingPolicy(task.obs_dim)
    envs = []

    def factory(task, n, threads=None):
        e = FakeEnv(task, n)
        envs.append(e)
        return e

    runner = LockstepRunner(policy, correction, env_factory=factory)
    res = runner.run(
        LockstepConfig(task="track", strategy=method, delay=d, s_min=s_min, episodes=episodes, batch=batch, seed=seed)
    )
    return res, policy, envs


def _expected_naive(d, s, steps):
    out = []
    for t in range(steps):
        if t < d:
            out.append(None)
        elif t < s + d:
            out.append((0, t - d))
        else:
            n = (t - d) // s
            out.append((n, t - n * s))
    return out


def _expected_sync(d, s, steps):
    out = []
    period = s + d
    for t in range(steps):
        n, r = divmod(t, period)
        out.append((n, r - d) if r >= d else None)
    return out


def _executed(env, i=0):
    rows = []
    for a in env.log:
        rows.append(None if a[i, 0] < 0 else (int(a[i, 0]), int(a[i, 1])))
    return rows


@pytest.mark.parametrize("d,s_min", [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (2, 4), (0, 3), (3, 5)])
def test_naive_timing(d, s_min):
    res, policy, envs = _run("naive", d, s_min)
    s = max(d, s_min)
    env = envs[0]
    got = _executed(env)
    want = _expected_naive(d, s, env.episode_steps)
    assert got == want
    # Hold steps before the first chunk arrives keep the initial command.
    assert res.episodes[0].hold_steps == d
    # One batched call per inference step, all envs together, from the observation at n*s.
    assert all(b == 3 for b, _, _ in policy.calls)
    assert [t for _, _, t in policy.calls][:4] == [n * s for n in range(4)]
    # Action for step t of a chunk came from the chunk observed at t_obs: k == t - t_obs.
    for t, a in enumerate(env.log):
        if a[0, 0] > 0:  # chunks after the first (the first starts at k=0 on arrival)
            assert a[0, 1] == t - a[0, 2]


@pytest.mark.parametrize("d,s", [(0, 2), (2, 3), (3, 8)])
def test_sync_timing(d, s):
    _, _, envs = _run("sync", d, s)
    env = envs[0]
    got = _executed(env)
    want = _expected_sync(d, s, env.episode_steps)
    # While sync waits, the robot holds its last command (the fake records it unchanged).
    held = [g for g, w in zip(got, want) if w is None]
    prev = None
    for g, w in zip(got, want):
        if w is None:
            assert g == prev
        else:
            assert g == w
        prev = g
    assert len(held) > 0 or d == 0


def test_rtc_and_remac_requests_carry_guidance():
    # the first chunk of an episode has nothing to guide towards: vanilla (core/requests.py),
    # exactly as the policy node answers a request without a prefix
    for strategy, sampler in (("rtc", "rtc"), ("rtc_jf", "rtc_jf"), ("remac_clean", "prefix")):
        _, policy, _ = _run(strategy, 2, 1)
        assert [smp for _, smp, t in policy.calls if t == 0] == ["vanilla"], strategy
        assert {smp for _, smp, t in policy.calls if t > 0} == {sampler}, strategy
    # the authors' REMAC sampler starts its first chunk from zeros (no prefix): still "remac"
    _, policy, _ = _run("remac", 2, 1)
    assert {smp for _, smp, t in policy.calls} == {"remac"}


class KCorrection:
    """Residual = 1000 + k on the last action entry (checks k and that executed = base + residual)."""

    def __init__(self):
        self.ks = []

    def residual(self, obs, base_action, k, H, latent=None):
        assert H == 8
        self.ks.append(np.asarray(k).copy())
        r = np.zeros_like(base_action)
        r[:, 7] = 1000.0 + k
        return r


def test_correction_is_added_per_step_with_chunk_index():
    corr = KCorrection()
    _, _, envs = _run("naive", 2, 2, correction=corr)
    env = envs[0]
    for a in env.log:
        if a[0, 0] >= 0:
            assert a[0, 7] == 1000.0 + a[0, 1]  # k of the executed base action
    assert len(corr.ks) == sum(a[0, 0] >= 0 for a in env.log)


def test_batches_seeds_and_determinism():
    res1, pol1, envs1 = _run("naive", 1, 1, episodes=5, batch=2, seed=7)
    res2, pol2, _ = _run("naive", 1, 1, episodes=5, batch=2, seed=7)
    res3, pol3, _ = _run("naive", 1, 1, episodes=5, batch=2, seed=8)
    assert [e.seed for e in res1.episodes] == episode_seeds(7, 5)
    assert len(set(episode_seeds(7, 5))) == 5
    assert pol1.seeds == pol2.seeds and pol1.seeds != pol3.seeds
    assert [b for b, _, _ in pol1.calls].count(1) > 0  # last partial batch of 1 env
    assert res1.n == 5 and res1.infer_calls == len(pol1.calls)


def test_keep_steps_records_what_the_env_saw_and_was_sent():
    task = make_task("track")
    envs = []

    def factory(task, n, threads=None):
        envs.append(FakeEnv(task, n))
        return envs[-1]

    cfg = LockstepConfig(task="track", strategy="naive", delay=1, s_min=1, episodes=3, batch=3)
    res = LockstepRunner(EncodingPolicy(task.obs_dim), env_factory=factory, keep_steps=True).run(cfg)
    env = envs[0]
    for i, e in enumerate(res.episodes):
        assert e.obs.shape == (e.steps + 1, task.obs_dim) and e.commands.shape == (e.steps, 8)
        np.testing.assert_array_equal(e.obs, np.array([o[i] for o in env.obs_log]))  # reset's, then each step's
        np.testing.assert_array_equal(e.commands, np.array([a[i] for a in env.log]))
    plain = LockstepRunner(EncodingPolicy(task.obs_dim), env_factory=factory).run(cfg)
    assert all(e.obs is None and e.commands is None for e in plain.episodes)  # off by default: no memory spent


def test_smoothness_known_answer():
    dt = 0.1
    c = np.zeros((6, 1))
    c[3:, 0] = 1.0  # a unit step after rest
    acc_max, acc_rms, jerk_max, _ = smoothness(c, dt)
    assert acc_max == pytest.approx(1.0 / dt**2)
    assert jerk_max == pytest.approx(2.0 / dt**3)
    acc = np.diff(c[:, 0], 2) / dt**2
    assert acc_rms == pytest.approx(np.sqrt(np.mean(acc**2)))


def test_config_validation():
    with pytest.raises(ValueError, match="did you mean"):
        LockstepConfig(task="track", strategy="naiv")
    with pytest.raises(ValueError):
        LockstepConfig(task="trak")
    with pytest.raises(ValueError):
        LockstepConfig(task="track", delay=-1)


def test_varying_delay_forecast_comes_from_the_estimator_fed_with_real_delays():
    """A constant trace of 3: the estimator (node defaults: warm-up 1, d_init 0) forecasts 0 for the
    first two requests (under-shoot by 3 each), then 3 (exact)."""
    from async_vla_ros.core.delay import DelaySpec

    task = make_task("track")
    policy = EncodingPolicy(task.obs_dim)
    runner = LockstepRunner(policy, env_factory=lambda task, n, threads=None: FakeEnv(task, n))
    res = runner.run(
        LockstepConfig(task="track", strategy="naive", episodes=2, batch=2, delay_spec=DelaySpec(trace=(3,)))
    )
    f = res.forecast
    assert f["under"] == 2 * 2 and f["over"] == 0 and f["mean_under_steps"] == 3.0
    assert f["requests"] == sum(b for b, _, _ in policy.calls) and f["dropped"] == 0
    assert res.summary()["delay_label"] == "trace"


def test_fixed_delay_spec_equals_plain_delay():
    from async_vla_ros.core.delay import parse_delay

    task = make_task("track")
    out = []
    for kw in ({"delay": 2}, {"delay_spec": parse_delay("2")}):
        policy = EncodingPolicy(task.obs_dim)
        runner = LockstepRunner(policy, env_factory=lambda task, n, threads=None: FakeEnv(task, n))
        res = runner.run(LockstepConfig(task="track", strategy="rtc", episodes=2, batch=2, **kw))
        out.append((policy.calls, [e.steps for e in res.episodes]))
        assert res.forecast == {}
    assert out[0] == out[1]


def test_uniform_delays_vary_and_are_counted():
    from async_vla_ros.core.delay import parse_delay

    task = make_task("track")
    policy = EncodingPolicy(task.obs_dim)
    runner = LockstepRunner(policy, env_factory=lambda task, n, threads=None: FakeEnv(task, n))
    res = runner.run(
        LockstepConfig(task="track", strategy="rtc", episodes=3, batch=3, delay_spec=parse_delay("1:4"), seed=1)
    )
    f = res.forecast
    assert f["requests"] > 10 and f["under"] > 0 and f["over"] > 0  # max-over-window forecast: mostly over
    assert f["over"] > f["under"]
    assert res.summary()["delay_label"] == "U{1..4}"


class RenderingEnv(FakeEnv):
    """FakeEnv that renders: every pixel = the env index, one value per camera name."""

    def render(self, i, camera="scene", width=8, height=8, geom_groups=(0, 3)):
        self.drawn = tuple(geom_groups)
        return np.full((height, width, 3), i + (100 if camera == "wrist" else 0), np.uint8)


class CameraPolicy(EncodingPolicy):
    """EncodingPolicy that takes two cameras and records what it was fed."""

    camera_hw = {"scene": (6, 6), "wrist": (4, 4)}

    def __init__(self, obs_dim):
        super().__init__(obs_dim)
        self.fed: list[dict] = []

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        self.fed.append(obs)
        return super().infer(obs["state"], sampler, prefix, weights, n_frozen, seed)


@pytest.mark.parametrize("instruction", ["", "stay close to the target wherever it goes"])
def test_lockstep_feeds_every_named_camera_and_the_instruction(instruction):
    from async_vla_ros import names as N

    task = make_task("track")
    policy = CameraPolicy(task.obs_dim)
    runner = LockstepRunner(policy, env_factory=lambda task, n, threads=None: RenderingEnv(task, n))
    runner.run(LockstepConfig(task="track", strategy="naive", episodes=2, batch=2, instruction=instruction))
    first = policy.fed[0]
    assert set(first["images"]) == {"scene", "wrist"}
    assert first["images"]["scene"].shape == (2, 6, 6, 3) and first["images"]["wrist"].shape == (2, 4, 4, 3)
    assert first["images"]["wrist"][1, 0, 0, 0] == 101  # env 1's wrist camera, by name
    assert first["instruction"] == (instruction or N.INSTRUCTIONS["track"][0])


@pytest.mark.parametrize("style", [None, "collision", "visual"])
def test_lockstep_draws_the_image_style_the_policy_was_trained_on(style):
    """Frames drawn in another style than the training frames show the policy another robot
    (the default is the style demos and the sim node draw)."""
    from async_vla_ros import names as N

    task = make_task("track")
    policy = CameraPolicy(task.obs_dim)
    if style is not None:
        policy.image_style = style
    envs = []

    def make_env(task, n, threads=None):
        envs.append(RenderingEnv(task, n))
        return envs[-1]

    LockstepRunner(policy, env_factory=make_env).run(LockstepConfig(task="track", episodes=1, batch=1))
    assert envs[0].drawn == N.IMAGE_STYLES[style or N.IMAGE_STYLE]
