"""Replay evaluation on a small bag written here from the MuJoCo track task: deterministic metrics,
known answers for the switch metrics, clear errors for bad bags, the CLI and the report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from async_vla_ros import bags as B
from async_vla_ros.eval import replay as R

DT = 0.05
H = 8
N_STEPS = 48  # the track episode lasts 50 steps
T0_NS = 1_700_000_000 * 10**9


def _ns_stamp(ns: int):
    return B.default_message("builtin_interfaces/msg/Time", sec=ns // 10**9, nanosec=ns % 10**9)


def _header(ns: int):
    return B.default_message("std_msgs/msg/Header", stamp=_ns_stamp(ns), frame_id="fr3_link0")


def write_track_bag(
    path: Path, d: int = 2, steps: int = N_STEPS, with_reports: bool = True, policy_name: str = "expert/track"
) -> Path:
    """Run the track task with the expert under a naive scheduler at delay d and record what the
    live graph would publish: observations, chunks (named ``policy_name`` as the policy node
    names them), chunk reports, plans and commands."""
    from async_vla_ros.core.chunk import Chunk
    from async_vla_ros.core.scheduler import ChunkScheduler, SchedulerConfig
    from async_vla_ros.sim.env import PandaEnv
    from async_vla_ros.sim.experts import ScriptedExpert

    env = PandaEnv("track")
    expert = ScriptedExpert("track", horizon=H)
    sched = ChunkScheduler(SchedulerConfig(horizon=H, action_dim=8), "naive")
    obs = env.reset(3)
    pending = []
    with B.BagWriter(path) as w:
        w.add_topic("/observation", "async_vla_msgs/msg/Observation")
        w.add_topic("/scheduler/action_plan", "async_vla_msgs/msg/ActionPlan")
        w.add_topic("/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray")
        w.add_topic("/policy/action_chunk", "async_vla_msgs/msg/ActionChunk")
        if with_reports:
            w.add_topic("/scheduler/chunk_report", "async_vla_msgs/msg/ChunkReport")
        hold = np.append(obs[:7], obs[14])  # q (7) and gripper width
        for t in range(steps):
            t_ns = T0_NS + int(t * DT * 1e9)
            w.write(
                "/observation",
                t_ns,
                B.default_message(
                    "async_vla_msgs/msg/Observation",
                    header=_header(t_ns),
                    obs_id=t + 1,
                    episode_id=1,
                    task="track",
                    state_dim=obs.size,
                    state=obs.astype(np.float64),
                ),
            )
            for item in [p for p in pending if p[0] <= t]:
                pending.remove(item)
                res = sched.on_chunk(item[1], t)
                if with_reports:
                    w.write(
                        "/scheduler/chunk_report",
                        t_ns + 1000,
                        B.default_message(
                            "async_vla_msgs/msg/ChunkReport",
                            header=_header(t_ns),
                            chunk_id=item[1].chunk_id,
                            request_id=item[1].request_id,
                            accepted=res.accepted,
                            merge_strategy="naive",
                            inference_s=0.004,
                            total_latency_s=d * DT,
                            predicted_delay_steps=d,
                            measured_delay_steps=res.measured_d if res.measured_d is not None else -1,
                            boundary_jump=res.boundary_jump or 0.0,
                        ),
                    )
            spec = sched.maybe_request(t)
            if spec is not None:
                acts = expert.infer(obs[None])[0]
                pending.append((t + d, Chunk(spec.request_id + 1, spec.request_id, t, acts)))
                w.write(
                    "/policy/action_chunk",
                    t_ns + 500,
                    B.default_message(
                        "async_vla_msgs/msg/ActionChunk",
                        header=_header(t_ns),
                        chunk_id=spec.request_id + 1,
                        request_id=spec.request_id + 1,
                        policy_name=policy_name,
                        horizon=H,
                        action_dim=8,
                        dt=DT,
                        actions=acts.ravel(),
                    ),
                )
            a = sched.action_at(t)
            rem = sched.timeline.remaining(t + 1)
            plan = np.vstack([a[None], rem]) if a is not None else np.zeros((0, 8))
            w.write(
                "/scheduler/action_plan",
                t_ns + 2000,
                B.default_message(
                    "async_vla_msgs/msg/ActionPlan",
                    header=_header(t_ns),
                    plan_id=t + 1,
                    step=t,
                    merge_strategy="naive",
                    dt=DT,
                    length=len(plan),
                    action_dim=8,
                    actions=plan.ravel(),
                ),
            )
            cmd = a if a is not None else hold
            hold = cmd
            w.write(
                "/forward_position_controller/commands",
                t_ns + 3000,
                B.default_message("std_msgs/msg/Float64MultiArray", data=np.asarray(cmd, dtype=np.float64)),
            )
            obs = env.step(cmd)
    env.close()
    return path


@pytest.fixture(scope="module")
def track_bag(tmp_path_factory):
    return write_track_bag(tmp_path_factory.mktemp("replay") / "bag")


@pytest.fixture(scope="module")
def expert():
    from async_vla_ros.sim.experts import ScriptedExpert

    return ScriptedExpert("track", horizon=H)


def test_load_recording(track_bag):
    rec = R.load_recording(track_bag)
    assert rec.obs.shape == (N_STEPS, 24) and rec.task == "track" and rec.dt == DT
    assert rec.delays and set(rec.delays) == {2}
    assert len(rec.plans) == N_STEPS - 2 and rec.cmd.shape  # empty plans (first d steps) are skipped == (N_STEPS, 8)


def test_replay_same_metrics_twice(track_bag, expert):
    rec = R.load_recording(track_bag)
    for method, delay in (("naive", None), ("rtc", 3), ("te", 1)):
        cfg = R.ReplayConfig(method, delay, DT, H, seed=5)
        a, b = R.replay(rec, expert, cfg), R.replay(rec, expert, cfg)
        assert a.metrics == b.metrics, method
        np.testing.assert_array_equal(a.executed, b.executed)
        assert a.metrics["switches"] > 3 and a.metrics["staleness_s"]["n"] > 0


def test_replay_reproduces_the_recording(track_bag, expert):
    """Same method, same (recorded) delays, same deterministic expert: the replayed execution is
    the recorded one, so the deviation is zero and the staleness is the known schedule."""
    rec = R.load_recording(track_bag)
    res = R.replay(rec, expert, R.ReplayConfig("naive", None, DT, H))
    assert res.metrics["deviation_steps"] > N_STEPS - 5
    assert res.metrics["deviation_max"] == pytest.approx(0.0, abs=1e-12)
    # staleness of step t = (t + 1 - t_obs) * dt with t - t_obs >= d = 2 (observations on the step grid)
    st = res.staleness_s[np.isfinite(res.staleness_s)]
    steps = st / DT
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-5)
    assert steps.min() == pytest.approx(3.0, abs=1e-5) and steps.max() <= H + 1e-5
    # a larger delay executes later actions of each chunk: staler
    res4 = R.replay(rec, expert, R.ReplayConfig("naive", 4, DT, H))
    assert res4.metrics["staleness_s"]["mean"] > res.metrics["staleness_s"]["mean"]
    assert res4.metrics["deviation_rms"] > 0


def test_switch_metrics_known_answer():
    x = np.zeros((6, 2))
    x[3:] = [3.0, 4.0]  # a step of norm 5 at index 3
    jump, acc, jerk = R._diffs(x, 3, 0.1)
    assert jump == pytest.approx(5.0)
    assert acc == pytest.approx(5.0 / 0.01)  # x[4] - 2x[3] + x[2] = -(3,4)... norm 5
    assert jerk == pytest.approx(np.linalg.norm(x[4] - 3 * x[3] + 3 * x[2] - x[1]) / 0.001)
    assert math.isnan(R._diffs(x, 0, 0.1)[0])


def test_config_and_bag_errors(tmp_path, track_bag, expert):
    with pytest.raises(ValueError, match="did you mean 'rtc'"):
        R.ReplayConfig("rtcc", 1, DT, H)
    with pytest.raises(ValueError, match="delay"):
        R.ReplayConfig("rtc", H, DT, H)
    no_rep = write_track_bag(tmp_path / "norep", steps=12, with_reports=False)
    with pytest.raises(B.BagError, match="no recorded delays"):
        R.replay(R.load_recording(no_rep), expert, R.ReplayConfig("naive", None, DT, H))
    only_js = tmp_path / "js"
    with B.BagWriter(only_js) as w:
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    with pytest.raises(B.BagError, match="no /observation"):
        R.load_recording(only_js)
    trunc = tmp_path / "trunc"
    shutil.copytree(track_bag, trunc)
    (f,) = trunc.glob("*.mcap")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(B.BagError):
        R.load_recording(trunc)
    with pytest.raises(ValueError, match="do not fit the policy .* needs obs_dim"):
        R.replay(R.load_recording(track_bag), _WrongDim(), R.ReplayConfig("naive", 1, DT, H))


class _WrongDim:
    horizon, action_dim, obs_dim = H, 8, 5


def test_cli_replay_and_report(tmp_path, track_bag, capsys):
    from async_vla_ros.cli import main

    out = tmp_path / "out"
    rc = main(["replay", str(track_bag), "--method", "naive", "rtc", "--delay", "recorded", "3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "replay.json").read_text())
    assert [r["label"] for r in doc["results"]] == ["naive d=rec", "naive d=3", "rtc d=rec", "rtc d=3"]
    for name in ("report.md", "report.html", "metrics.png", "trajectory.png", "staleness.png"):
        assert (out / name).stat().st_size > 1000, name
    assert "| naive d=3 |" in (out / "report.md").read_text()
    rc = main(["report", str(track_bag), "--out", str(tmp_path / "bagrep")])
    assert rc == 0, capsys.readouterr().err
    for name in ("report.html", "latency.png", "delay.png", "command.png"):
        assert (tmp_path / "bagrep" / name).stat().st_size > 1000, name
    md = (tmp_path / "bagrep" / "report.md").read_text()
    assert "## Latency" in md and "## Command stream" in md and "| /observation |" in md
    assert main(["replay", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------- the catalogue (issue 16, item 9)
def test_replay_defaults_to_the_recorded_policy_and_refuses_a_preset_it_cannot_serve(tmp_path, track_bag, capsys):
    """A new user's replay of an expert recording runs the expert (as recorded, nothing asked for
    it on the command line, the report says so); REMAC needs a REMAC model the expert does not
    have: an error that says why, never naive's numbers under REMAC's name."""
    from async_vla_ros.cli import main

    rec = R.load_recording(track_bag)
    assert rec.policy_name == "expert/track" and R.recorded_policy(rec) == "expert"
    out = tmp_path / "out"
    rc = main(["replay", str(track_bag), "--method", "naive", "rtc", "--delay", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "replay.json").read_text())
    assert doc["policy"] == "expert" and "Policy: expert" in (out / "report.md").read_text()
    assert main(["replay", str(track_bag), "--method", "naive", "remac", "--delay", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot serve preset 'remac'" in err and "no remac model" in err
    assert main(["replay", str(track_bag), "--method", "remac+rtc", "--out", str(out)]) == 2
    assert "did you mean 'remac_rtc'" in capsys.readouterr().err


def test_replay_of_a_flow_recording_loads_each_presets_models(tmp_path, capsys):
    """A bag recorded with the shipped checkpoint (what ``demo --record`` gives): replay defaults
    to the shipped models, and each preset gets its own (REMAC checkpoint, A2C2 head)."""
    from async_vla_ros.checkpoints import DIR
    from async_vla_ros.cli import main

    base = DIR / "track_base.pt"
    if not (base.is_file() and (DIR / "track_remac.pt").is_file() and (DIR / "track_a2c2.pt").is_file()):
        pytest.skip("shipped track checkpoints absent")
    bag = write_track_bag(tmp_path / "flowbag", steps=30, policy_name=f"flow/track/{base}")
    out = tmp_path / "out"
    rc = main(["replay", str(bag), "--method", "naive", "remac", "rtc_a2c2", "--delay", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "replay.json").read_text())
    assert doc["policy"] == "default"
    assert "track_base.pt" in doc["models"]["naive"]["base"]
    assert "track_remac.pt" in doc["models"]["remac"]["remac"] and "base" not in doc["models"]["remac"]
    assert "track_a2c2.pt" in doc["models"]["rtc_a2c2"]["a2c2"]
    by = {r["method"]: r for r in doc["results"]}
    assert by["remac"]["strategy"] == "remac" and by["rtc_a2c2"]["strategy"] == "rtc"
    ex = {m: np.array(by[m]["series"]["executed"], dtype=float) for m in by}
    assert not np.allclose(ex["naive"], ex["remac"], equal_nan=True)  # another model ran
    assert not np.allclose(ex["naive"], ex["rtc_a2c2"], equal_nan=True)
    # a recording made with a checkpoint that is not on this machine: say so
    gone = write_track_bag(tmp_path / "gone", steps=12, policy_name="flow/track/" + str(tmp_path / "nope.pt"))
    assert main(["replay", str(gone), "--delay", "2", "--out", str(out)]) == 2
    assert "not on this machine" in capsys.readouterr().err


def test_replay_gives_the_scheduler_the_presets_strategy_options(track_bag, expert):
    """The preset's RTC schedule and guidance clip reach the replayed scheduler, as they reach the
    scheduler node and the lockstep runner: every guided rtc request carries the preset's beta to
    ``infer(beta=...)``; without the options it carries none (the policy's own default)."""
    from async_vla_ros.presets import get_preset

    class BetaSpy:
        def __init__(self, inner):
            self.inner, self.betas = inner, []
            self.horizon, self.action_dim, self.obs_dim = inner.horizon, inner.action_dim, inner.obs_dim

        def infer(self, obs, *args, beta=None, **kwargs):
            self.betas.append(beta)
            return self.inner.infer(obs, *args, **kwargs)

    rec = R.load_recording(track_bag)
    preset = get_preset("rtc")
    assert dict(preset.strategy_options)["beta"] == 5.0
    spy = BetaSpy(expert)
    R.replay(rec, spy, R.ReplayConfig("rtc", 2, DT, H, preset="rtc", strategy_options=preset.strategy_options))
    # the first request has nothing planned to guide towards: no guidance, no clip
    assert spy.betas[0] is None and len(spy.betas) > 3 and set(spy.betas[1:]) == {5.0}
    bare = BetaSpy(expert)
    R.replay(rec, bare, R.ReplayConfig("rtc", 2, DT, H))
    assert bare.betas and set(bare.betas) == {None}
