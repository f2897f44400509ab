"""The one preset catalogue, the one backend registry, the one request conversion and the one
simulated-delay delivery loop (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from async_vla_ros import names as N
from async_vla_ros.core.chunk import Chunk
from async_vla_ros.core.delivery import DelayedDelivery, constant_delay, cycled_delays
from async_vla_ros.core.requests import infer_specs, sampler_call, spec_call
from async_vla_ros.core.scheduler import ChunkScheduler, SchedulerConfig
from async_vla_ros.core.strategies import STRATEGIES, strategy_sampler
from async_vla_ros.policy import registry as R
from async_vla_ros.presets import MethodPreset, PresetError, get_preset, preset_names, presets


# ---------------------------------------------------------------------- presets
def test_presets_read_once_with_one_name_each_and_the_sampler_from_the_strategy():
    table = presets()
    assert presets() is table  # read once
    assert set(preset_names()) >= {"sync", "naive", "te", "bid", "rtc_hard", "rtc", "remac", "a2c2", "remac_rtc"}
    assert all(not table[n].ablation for n in preset_names())
    assert {"remac_nomask", "remac_nocurriculum", "remac_nodelta", "remac_clean_noalign"} <= set(
        preset_names(ablations=True)
    )
    for p in table.values():
        assert p.strategy in STRATEGIES and p.sampler == strategy_sampler(p.strategy)
    assert get_preset("remac_rtc").sampler == "rtc" and get_preset("remac_rtc").checkpoint == "remac_clean"
    assert get_preset("rtc_a2c2").a2c2 and get_preset("bid").uses_weak
    with pytest.raises(PresetError, match="did you mean 'remac_rtc'"):
        get_preset("remac+rtc")
    with pytest.raises(PresetError, match="unknown merge strategy"):
        MethodPreset("x", "rtcc")
    with pytest.raises(AttributeError):
        table["rtc"].strategy = "naive"  # frozen


def test_shared_names_match_the_tasks():
    from async_vla_ros.sim.tasks import TASKS

    assert tuple(TASKS) == N.TASK_NAMES
    assert N.ACTION_NAMES[:7] == N.ARM_JOINTS and len(N.ACTION_NAMES) == 8
    assert N.absolute(N.OBSERVATION) == "/observation" and N.absolute("/x") == "/x"


# ---------------------------------------------------------------------- registry
class _Const:
    horizon, action_dim, obs_dim = 4, 2, 3

    def __init__(self, target):
        self.target = target

    def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
        return np.zeros((len(obs), 4, 2))


def test_a_new_backend_is_one_registration_and_its_specs_parse():
    R.register_backend(R.Backend("unit-remote", lambda req: _Const(req.target), "test", kinds=("base",)))
    assert "unit-remote" in R.available_backends() and {"flow", "expert"} <= set(R.available_backends())
    assert R.parse_policy_spec("unit-remote://127.0.0.1:8000?x=1") == R.PolicySpec(
        "unit-remote://127.0.0.1:8000?x=1", "unit-remote", "127.0.0.1:8000?x=1"
    )
    assert R.parse_policy_spec("unit-remote:/some/dir").target == "/some/dir"
    assert R.parse_policy_spec("expert") == R.PolicySpec("expert", "expert", "")
    assert R.parse_policy_spec("default").is_default
    assert R.parse_policy_spec("/a/b.pt") == R.PolicySpec("/a/b.pt", "flow", "/a/b.pt")
    with pytest.raises(R.BackendError, match="unknown policy backend"):
        R.parse_policy_spec("nosuch://host:1")
    pol = R.load_policy_spec("unit-remote://h:1", R.BackendRequest("track"))
    assert pol.target == "h:1"
    m = R.load_models("track", get_preset("rtc"), "unit-remote://h:1")
    assert m.policy.target == "h:1" and m.head is None and m.label == "unit-remote://h:1"
    with pytest.raises(R.BackendError, match="no remac model"):
        R.load_models("track", get_preset("remac"), "unit-remote://h:1")
    with pytest.raises(ValueError, match="already registered"):
        R.register_backend(R.Backend("unit-remote", lambda req: None))


def test_load_models_gives_each_preset_its_files(tmp_path):
    from async_vla_ros.checkpoints import DIR

    if not all((DIR / f"track_{k}.pt").is_file() for k in ("base", "remac", "a2c2")):
        pytest.skip("shipped track checkpoints absent")
    cache: dict = {}
    naive = R.load_models("track", get_preset("naive"), cache=cache)
    te = R.load_models("track", get_preset("te"), cache=cache)
    assert te.policy is naive.policy  # one model shared by the presets of a run that load it alike
    # same file and the same loaded model: the preset's guidance clip travels with each request
    rtc = R.load_models("track", get_preset("rtc"), cache=cache)
    assert rtc.files == naive.files and rtc.policy is naive.policy
    rtc_jf = R.load_models("track", get_preset("rtc_jf"), cache=cache)
    assert rtc_jf.policy is naive.policy and ("beta", 5.0) in rtc_jf.preset.strategy_options
    remac = R.load_models("track", get_preset("remac_a2c2"), cache=cache)
    assert set(remac.files) == {"remac", "a2c2"} and remac.head is not None and remac.policy is not naive.policy
    bid = R.load_models("track", get_preset("bid"), cache=cache)
    assert ("base_weak" in bid.files) == (DIR / "track_base_weak.pt").is_file()
    with pytest.raises(R.BackendError, match="no such checkpoint file"):
        R.load_models("track", get_preset("naive"), str(tmp_path / "nope.pt"))
    with pytest.raises(R.BackendError, match="not found"):
        R.load_models("track", get_preset("naive"), checkpoint_dir=tmp_path)
    expert = R.load_models("track", get_preset("rtc"), "expert")
    assert type(expert.policy).__name__ == "ScriptedExpert"
    with pytest.raises(R.BackendError, match="cannot serve preset 'remac'"):
        R.load_models("track", get_preset("remac"), "expert")


# ---------------------------------------------------------------------- request conversion
def test_one_request_conversion_with_the_first_chunk_fallback():
    p, w, nf = np.ones((1, 4, 2)), np.ones((1, 4)), np.array([2])
    assert sampler_call("rtc", None, None, nf) == ("vanilla", {"seed": None})
    assert sampler_call("prefix", None, None, nf, seed=3) == ("vanilla", {"seed": 3})
    assert sampler_call("bid", None, None, nf)[1] == {"seed": None}  # forward contrast only
    s, kw = sampler_call("prefix", p, w, nf)
    assert s == "prefix" and set(kw) == {"seed", "prefix", "n_frozen"} and kw["n_frozen"].dtype == np.int64
    assert set(sampler_call("rtc", p, w, nf)[1]) == {"seed", "prefix", "weights"}
    assert sampler_call("vanilla", p, w, nf)[1] == {"seed": None}
    with pytest.raises(ValueError, match="unknown sampler"):
        sampler_call("rtcc", p, w, nf)
    sched = ChunkScheduler(SchedulerConfig(horizon=4, action_dim=2), "rtc")
    first = sched.maybe_request(0)
    assert first.n_real == 0 and spec_call([first])[0] == "vanilla"
    out = infer_specs(_Const(""), np.zeros((1, 3)), [first])
    assert out.shape == (1, 4, 2)


class _OneGuidance:
    """A policy that, like LeRobot's RTC, takes one (d, H - s) per call; it records its calls."""

    horizon, action_dim = 4, 2

    def __init__(self):
        self.calls = []

    def infer(self, obs, sampler, prefix=None, weights=None, n_frozen=None, seed=None):
        assert (n_frozen == n_frozen[0]).all() and (weights == weights[:1]).all(), "rows differ"
        self.calls.append((obs["state"][:, 0].tolist(), obs["instruction"], int(n_frozen[0])))
        return np.repeat(obs["state"][:, :1, None], 4, axis=1).repeat(2, axis=2)


def test_a_sampler_with_one_guidance_per_call_gets_one_call_per_distinct_delay():
    from async_vla_ros.core.scheduler import RequestSpec

    def spec(d):
        w = np.r_[np.ones(d), np.zeros(4 - d)]
        return RequestSpec(0, 0, d, d, "rtc_lerobot", np.ones((4, 2)), w, d, 4, "rtc_lerobot")

    pol = _OneGuidance()
    obs = {"state": np.arange(4.0)[:, None].repeat(3, 1), "instruction": "go", "images": {"c": np.zeros((4, 2))}}
    out = infer_specs(pol, obs, [spec(1), spec(2), spec(1), spec(3)], seed=0)
    assert sorted(pol.calls) == [([0.0, 2.0], "go", 1), ([1.0], "go", 2), ([3.0], "go", 3)]
    np.testing.assert_array_equal(out[:, 0, 0], [0, 1, 2, 3])  # every row answered from its own observation
    pol.calls.clear()
    infer_specs(pol, obs, [spec(2)] * 4, seed=0)
    assert len(pol.calls) == 1  # equal rows: one call


# ---------------------------------------------------------------------- delivery loop
def test_delivery_loop_asks_the_delay_per_chunk_and_delivers_in_arrival_order():
    sched = ChunkScheduler(SchedulerConfig(horizon=8, action_dim=2, s_min=1), "naive")
    asked = []

    def delay(spec):
        asked.append(spec.request_id)
        return [3, 0, 2][len(asked) - 1] if len(asked) <= 3 else 1

    merges = []
    link = DelayedDelivery(sched, delay, on_merge=lambda c, r, t: merges.append((c.chunk_id, t, r.accepted)))
    for t in range(12):
        link.arrive(t)
        spec = link.request(t)
        if spec is not None:
            link.send(spec, np.full((8, 2), float(t)), t)
        sched.action_at(t)
    assert asked == list(range(len(asked))) and link.delays_used[:3] == [3, 0, 2]
    assert merges[0] == (0, 3, True)  # the first chunk waited its 3 steps
    assert [m[1] for m in merges] == sorted(m[1] for m in merges)
    link.clear()
    assert link.in_flight == 0
    rec = cycled_delays([1, 5], d_max=3)
    assert [rec(None) for _ in range(4)] == [1, 3, 1, 3]
    assert constant_delay(2)(None) == 2
    with pytest.raises(ValueError):
        constant_delay(-1)
    with pytest.raises(TypeError):
        DelayedDelivery(sched, 2)


def test_chunk_is_the_delivered_type():
    sched = ChunkScheduler(SchedulerConfig(horizon=4, action_dim=2), "naive")
    link = DelayedDelivery(sched, constant_delay(0))
    spec = link.request(0)
    ch = link.send(spec, np.zeros((4, 2)), 0)
    assert isinstance(ch, Chunk) and sched.n_accepted == 1 and link.in_flight == 0


def test_report_file_entries_name_shipped_checkpoints_from_the_package_and_hash_them():
    """Reports name a shipped checkpoint the same from any checkout (package-relative path) with its
    content hash; a file outside the package keeps the path it was given."""
    import hashlib

    from async_vla_ros.checkpoints import DIR
    from async_vla_ros.policy.registry import _file_entry

    path = DIR / "track_base.pt"
    if not path.is_file():
        pytest.skip("shipped track checkpoint missing")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert _file_entry(path) == f"async_vla_ros/checkpoints/track_base.pt ({sha})"
    assert _file_entry(DIR / ".." / "checkpoints" / "track_base.pt") == _file_entry(path)


def test_report_file_entries_keep_outside_paths(tmp_path):
    from async_vla_ros.policy.registry import _file_entry

    f = tmp_path / "head.pt"
    f.write_bytes(b"x")
    assert _file_entry(f).startswith(f"{f} (") and _file_entry(f).endswith(")")
