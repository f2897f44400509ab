"""The fault cases of ``async-vla-ros chaos`` (:mod:`async_vla_ros.eval.chaos`): each is one
function ``(run, res)`` that injects its fault into the running graph through the
:class:`~async_vla_ros.eval.chaos.ChaosRun` ``run`` (its probe, launcher and parameter clients) and
records what it observed in ``res``; the runner adds the checks every graph case gets (command
stream within the limits, restarts at the measured joints, every node alive). ``CASES`` lists
them in run order with the behaviour each one expects.
"""

from __future__ import annotations

import argparse
import contextlib
import copy as copy_module
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from async_vla_ros.eval import chaos_remote
from async_vla_ros.eval.graph_probe import ROGUE_CHUNK_BASE, ROGUE_NAME, ROGUE_REQUEST_BASE
from async_vla_ros.eval.stream_check import NS, StreamCheck
from async_vla_ros.rosenv import apply_ros_defaults

if TYPE_CHECKING:
    from async_vla_ros.eval.chaos import ChaosRun

__all__ = ["CASES", "CASE_NAMES", "CASE_BY_NAME", "Case", "CaseResult", "counter_delta"]


@dataclass
class CaseResult:
    """Outcome of one case (a row of the report)."""

    name: str
    expected: str
    observed: str = ""
    recovery_s: float | None = None  # fault end -> first accepted chunk (None: not applicable / never)
    recovery_note: str = ""  # what the recovery time measures when it is not the default
    passed: bool = False
    safety: StreamCheck | None = None
    alive: bool = True
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def fail(self, why: str) -> None:
        self.problems.append(why)


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[ChaosRun, CaseResult], None]  # the fault and its checks (the runner adds the common ones)
    expected: str
    needs_graph: bool = True
    # a restart of the command stream away from the measured joints fails the case (else it is
    # reported in the details: an intermittent 0.35 rad in policy_killed under load is unexplained)
    strict_restarts: bool = False


def counter_delta(before: dict, after: dict, prefix: str) -> dict[str, int]:
    """Increase of the integer diagnostics counters under ``prefix`` between two snapshots."""
    out = {}
    for k, v in after.items():
        if k.startswith(prefix) and isinstance(v, int) and not isinstance(v, bool):
            d = v - int(before.get(k, 0) or 0)
            if d:
                out[k[len(prefix) :]] = d
    return out


# ====================================================================== the cases
def policy_killed(run: ChaosRun, res: CaseResult) -> None:
    # a 200 ms model time makes "mid-chunk" deterministic: kill right after a request went out
    run.require(res, "policy", "injected_latency_s", 0.2)
    t_set = run.probe.now()
    if not run.wait(lambda: len(run.probe.requests_since(t_set)) >= 1, 10.0):
        res.fail("no request reached the policy")
        return
    # the process that runs the policy node: in the default graph (compose:=true) camera_ingestion
    # and the scheduler die with it; with compose:=false the policy dies alone
    proc = run.graph.process_of("policy")
    with_it = [n for n in proc.node_names if n != "policy"]
    old_max = run.probe.max_chunk_id()
    d0 = run.probe.diag_of("scheduler")
    c0 = run.probe.diag_of("correction")
    t_kill = run.probe.now()
    run.launcher.restart(proc.name)
    t_started = run.probe.now()
    run.recovery(res, t_kill, run.config.restart_timeout_s, pred=lambda r: r[1] > old_max)
    # the restarted node reads the params file again: injected latency 0
    t_rec = run.probe.now()
    run.wait(
        lambda: run.probe.diag_stamped("scheduler")[0] > t_rec and run.probe.diag_stamped("correction")[0] > t_rec,
        5.0,
    )
    c1 = run.probe.diag_of("correction")
    holds = counter_delta(c0, c1, "holds").get("", 0)
    # a new episode before the old plan ran dry disengages the correction node (the robot's own
    # controller holds then): no hold of its own to count
    new_episode = c1.get("episode_id") != c0.get("episode_id")
    res.details.update(
        restart_s=(t_started - t_kill) / NS, killed_with=with_it, correction_holds=holds, new_episode=new_episode
    )
    res.recovery_note = "kill -> first chunk of the restarted node (includes its start-up)"
    new_chunk = (
        f"first chunk of the new node merged {res.recovery_s:.2f} s after the kill"
        if res.recovery_s is not None
        else "no chunk of the new node merged"
    )
    if "scheduler" in with_it:
        # the scheduler restarted too: no request left to time out; the plan stopped with it
        res.observed = (
            f"killed mid-chunk with {', '.join(with_it)} (one process; pid restarted); the correction node "
            f"held {holds} ticks{' (a new episode began meanwhile)' if new_episode else ''}; {new_chunk}"
        )
        return
    timeouts = counter_delta(d0, run.probe.diag_of("scheduler"), "timeouts").get("", 0)
    rejected = counter_delta(d0, run.probe.diag_of("scheduler"), "rejected.")
    res.details.update(scheduler_timeouts=timeouts, rejected=rejected)
    res.observed = (
        f"killed mid-chunk (pid restarted); scheduler timed out {timeouts} request(s)"
        + (", rejected " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) if rejected else "")
        + "; "
        + new_chunk
    )


def latency_spike_x10(run: ChaosRun, res: CaseResult) -> None:
    base = run.baseline_latency_s or 0.02
    t_b = run.probe.now() - 3 * NS
    lat0 = [r[4] for r in run.probe.reports_since(t_b) if r[2] and r[4] > 0]
    base = float(np.median(lat0)) if len(lat0) >= 5 else base
    before = float(run.get_param("policy", "injected_latency_s") or 0.0)  # a launch may set one
    injected = min(5.0, before + 9.0 * base)  # model + pipeline + injected ~ 10x the measured latency
    run.require(res, "policy", "injected_latency_s", injected)
    t0 = run.probe.now()
    run.fault_window()
    t_end = run.probe.now()  # before the restore request: recovery includes its round trip
    run.require(res, "policy", "injected_latency_s", before)
    spike = [r for r in run.probe.reports_since(t0) if r[0] <= t_end and r[2] and r[4] > injected]
    if not spike:
        res.fail("no chunk merged during the latency spike")
        ratio, dmax = float("nan"), -1
    else:
        ratio = float(np.median([r[4] for r in spike])) / base
        dmax = max(r[5] for r in spike)
    run.recovery(res, t_end, pred=lambda r: 0 < r[4] < 2.0 * base)
    res.recovery_note = "spike end -> first chunk at baseline latency (< 2x)"
    res.details.update(
        baseline_latency_s=base, injected_s=injected, latency_ratio=ratio, d_max=dmax, merged_during=len(spike)
    )
    res.observed = (
        f"latency {1e3 * base:.0f} -> {1e3 * base * ratio:.0f} ms (x{ratio:.1f}), measured d up to "
        f"{dmax}; {len(spike)} chunks merged during the spike"
    )


def rogue_chunks(run: ChaosRun, res: CaseResult) -> None:
    expect = {
        "nan": {"non_finite"},
        "inf": {"non_finite"},
        "wrong_shape": {"bad_shape"},
        "wrong_names": {"bad_action_names"},
        "future_stamp": {"stamp_mismatch"},
        "stale_stamp": {"stamp_mismatch"},
        "duplicate": {"duplicate"},
        "out_of_order": {"duplicate", "out_of_order", "stale", "expired"},
    }
    sent: dict[int, str] = {}  # rogue chunk id -> kind
    dup_ids: dict[int, str] = {}
    next_id = ROGUE_CHUNK_BASE + (run.probe.now() // 1000) % (1 << 40)
    t0 = run.probe.now()

    def verdicts():
        reps = run.probe.reports_since(t0)
        by_id: dict[int, list] = {}
        for r in reps:
            by_id.setdefault(r[1], []).append(r)
        return reps, by_id

    def copy(src) -> Any:
        m = copy_module.deepcopy(src)  # never mutate the probe's stored real chunks
        m.policy_name = ROGUE_NAME
        return m

    def judged(ids: dict[int, str], dups: dict[int, str]) -> tuple[set, set]:
        """(rogue ids with a verdict, duplicated real ids with a rejection) among ``ids``/``dups``."""
        by_id = verdicts()[1]
        return {i for i in ids if i in by_id}, {i for i in dups if any(not r[2] for r in by_id.get(i, []))}

    last_real = -1
    rounds, redone, n_rogue = 0, 0, 0
    notes: list[str] = []  # rounds that lost chunks, and why
    while rounds < 3:

        def pair():
            """(latest real chunk, one 2+ chunks older) of the episode now running, or None:
            chunks of another episode are dropped before any check (no verdict to see)."""
            ep = run.probe.latest_episode()
            real = run.probe.latest_chunk()
            if real is None or real.episode_id != ep or int(real.chunk_id) == last_real:  # noqa: B023 (called within this round)
                return None
            for back in (4, 3, 2):
                older = run.probe.latest_chunk(back)
                if older is not None and older.episode_id == ep:
                    return real, older
            return None

        if not run.wait(lambda: pair() is not None, 15.0):
            res.fail("no two real chunks of the current episode to imitate")
            return
        real, older = pair()
        last_real = int(real.chunk_id)
        H, A = int(real.horizon), int(real.action_dim)
        other_ep0 = run.probe.diag_of("scheduler").get("dropped.chunk.other_episode", 0)
        round_ids: dict[int, str] = {}
        round_dups: dict[int, str] = {}
        for kind in expect:
            m = copy(real)
            if kind not in ("duplicate", "out_of_order"):
                next_id += 1
                m.chunk_id = next_id
                round_ids[next_id] = kind
            acts = np.asarray(real.actions, dtype=np.float64).reshape(H, A).copy()
            if kind == "nan":
                acts[H // 2, 0] = np.nan
            elif kind == "inf":
                acts[-1, 3] = np.inf
            elif kind == "wrong_shape":
                acts = acts[:-1]
                m.horizon = H - 1
            elif kind == "wrong_names":
                m.action_names = [f"panda_joint{i}" for i in range(1, 8)] + ["gripper_width"]
            elif kind in ("future_stamp", "stale_stamp"):
                shift = 10 * NS if kind == "future_stamp" else -10 * NS
                t = int(real.header.stamp.sec) * NS + int(real.header.stamp.nanosec) + shift
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(t, NS)
            elif kind == "duplicate":
                round_dups[int(real.chunk_id)] = kind
            elif kind == "out_of_order":
                m = copy(older)
                acts = np.asarray(older.actions, dtype=np.float64).reshape(H, A).copy()
                round_dups[int(older.chunk_id)] = kind
            m.actions = acts.reshape(-1).tolist()
            run.probe.pub_chunk.publish(m)
        # judge this round before the next one (the scheduler's subscription keeps the last 10
        # messages: a faster burst would be dropped by DDS before the node sees it)
        n_round = len(round_ids) + len(round_dups)
        run.wait(lambda: sum(map(len, judged(round_ids, round_dups))) == n_round, 5.0)  # noqa: B023
        seen_ids, seen_dups = judged(round_ids, round_dups)
        missing = n_round - len(seen_ids) - len(seen_dups)
        # An episode that ended while this round was on its way makes the scheduler drop the
        # round's rest as chunk.other_episode, before any check: counted in its diagnostics,
        # no verdict. Such a round is done again on the next episode, not judged.
        cut = False
        if missing and run.probe.latest_episode() != real.episode_id:
            run.wait(
                lambda o0=other_ep0, n=missing: (
                    run.probe.diag_of("scheduler").get("dropped.chunk.other_episode", 0) - o0 >= n
                ),
                3.0,
            )
            other_ep = run.probe.diag_of("scheduler").get("dropped.chunk.other_episode", 0) - other_ep0
            cut = other_ep >= missing and redone < 3
            notes.append(
                f"round {rounds + redone + 1}: {missing} of {n_round} without a verdict, the episode ended "
                f"meanwhile, chunk.other_episode +{other_ep} ({'done again' if cut else 'judged'})"
            )
        elif missing:
            notes.append(f"round {rounds + redone + 1}: {missing} of {n_round} without a verdict, same episode")
        if cut:  # keep what was judged; the rest never reached a check
            redone += 1
            round_ids = {i: k for i, k in round_ids.items() if i in seen_ids}
            round_dups = {i: k for i, k in round_dups.items() if i in seen_dups}
        else:
            rounds += 1
        sent.update(round_ids)
        dup_ids.update(round_dups)
        n_rogue += len(round_ids) + len(round_dups)

    run.wait(
        lambda: (
            all(i in verdicts()[1] for i in sent)
            and all(any(not r[2] for r in verdicts()[1].get(i, [])) for i in dup_ids)
        ),
        10.0,
    )
    reps, by_id = verdicts()
    wrong = []
    reasons: dict[str, int] = {}
    for cid, kind in sent.items():
        rs = by_id.get(cid, [])
        if not rs:
            wrong.append(f"{kind}: no verdict")
            continue
        for r in rs:
            reasons[r[3] or "ACCEPTED"] = reasons.get(r[3] or "ACCEPTED", 0) + 1
            if r[2] or r[3] not in expect[kind]:
                wrong.append(f"{kind}: {'accepted' if r[2] else r[3]}")
    all_reports = run.probe.reports_since(0)
    for cid, kind in dup_ids.items():
        rs = by_id.get(cid, [])
        rejected = [r for r in rs if not r[2]]
        if sum(1 for r in all_reports if r[1] == cid and r[2]) > 1:
            wrong.append(f"{kind}: a copy of chunk {cid} was merged")
        for r in rejected:
            reasons[r[3]] = reasons.get(r[3], 0) + 1
            if r[3] not in expect[kind]:
                wrong.append(f"{kind}: {r[3]}")
        if not rejected:
            wrong.append(f"{kind}: no verdict")
    if wrong:
        res.fail("rogue chunks not rejected as expected: " + ", ".join(sorted(set(wrong))))
    run.wait(lambda: sum(1 for r in run.probe.reports_since(t0) if r[2] and r[1] < ROGUE_CHUNK_BASE) >= 5, 10.0)
    reps = run.probe.reports_since(t0)
    real_ok = [r for r in reps if r[2] and r[1] < ROGUE_CHUNK_BASE]
    if not real_ok:
        res.fail("no real chunk merged while the rogue chunks came in")
    arrivals = [r[0] for r in real_ok]
    gap = max(np.diff(arrivals) / NS) if len(arrivals) > 1 else float("nan")
    res.recovery_s = None
    res.recovery_note = f"no interruption (largest gap between merged real chunks {gap:.2f} s)"
    res.details.update(reasons=reasons, n_rogue=n_rogue, real_merged=len(real_ok), rounds_redone=redone, lost=notes)
    res.observed = (
        f"{n_rogue} rogue chunks, all rejected ("
        + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        + f"); {len(real_ok)} real chunks merged meanwhile"
    )


def bad_params_runtime(run: ChaosRun, res: CaseResult) -> None:
    attempts = [
        ("policy", "injected_latency_s", -1.0, ">= 0.0"),
        ("policy", "injected_latency_s", "slow", "must be a number"),
        ("sim", "clock_offset_s", float("nan"), "finite"),
        ("sim", "pause_joint_states", 3, "type"),
        ("correction", "rate_hz", 500.0, "read-only"),
        ("scheduler", "strategy", "naive", "read-only"),
        ("policy", "no_such_parameter", 1.0, ""),
    ]
    refused = []
    before = run.get_param("policy", "injected_latency_s")
    for node, name, value, needle in attempts:
        ok, why = run.set_param(node, name, value)
        if ok:
            res.fail(f"{node}.{name}={value!r} was accepted")
        elif needle and needle not in why:
            res.fail(f"{node}.{name}={value!r} refused without a clear reason: {why!r}")
        else:
            refused.append(f"{node}.{name}={value!r}: {why or 'refused'}")
    after = run.get_param("policy", "injected_latency_s")
    if before != after:
        res.fail(f"policy.injected_latency_s changed from {before!r} to {after!r}")
    # and a valid runtime change is taken
    ok, why = run.set_param("policy", "injected_latency_s", 0.0)
    if not ok:
        res.fail(f"a valid value was refused: {why}")
    t0 = run.probe.now()
    if not run.wait(lambda: run.probe.first_accept_after(t0) is not None, 10.0):
        res.fail("no chunk merged after the refused parameter changes")
    res.details["refused"] = refused
    res.recovery_note = "no interruption"
    res.observed = f"{len(refused)}/{len(attempts)} refused with a reason, e.g. " + "; ".join(refused[:2])


def camera_stops(run: ChaosRun, res: CaseResult) -> None:
    run.require(res, "sim", "pause_camera", True)
    t0 = run.probe.now()
    run.fault_window()
    t_end = run.probe.now()
    run.require(res, "sim", "pause_camera", False)
    # an image taken before the pause may still attach (up to max_image_age_s) and arrive late on a
    # loaded machine: judged by the image's own stamp, not by when the observation arrived
    during = [o for o in run.probe.obs_since(t0) if o[0] <= t_end]
    with_img = sum(1 for o in during if o[5] >= t0)
    merged = [r for r in run.probe.reports_since(t0) if r[0] <= t_end and r[2]]
    if not during:
        res.fail("observations stopped while only the camera was paused")
    elif with_img:
        res.fail(f"{with_img} observations carried an image while the camera was paused")
    ok = run.wait(lambda: any(o[2] for o in run.probe.obs_since(t_end)), run.config.recovery_timeout_s)
    if not ok:
        res.fail("no image attached after the camera resumed")
    run.recovery(res, t_end)
    img_back = next((o[0] for o in run.probe.obs_since(t_end) if o[2]), None)
    res.details.update(
        obs_during=len(during),
        merged_during=len(merged),
        image_back_s=(img_back - t_end) / NS if img_back else None,
    )
    res.observed = (
        f"{len(during)} observations without image (IMAGE_MISSING), {len(merged)} chunks merged "
        f"meanwhile; images back after " + (f"{(img_back - t_end) / NS:.2f} s" if img_back else "never")
    )


HOLD_SLACK_S = 0.25  # a stream fault: commands may go on this long past the plan's end (delivery)


def _stream_fault(run: ChaosRun, res: CaseResult, param: str, on, off, what: str) -> None:
    d0 = {n: run.probe.diag_of(n) for n in ("camera_ingestion", "correction")}
    run.require(res, "sim", param, on)
    t0 = run.probe.now()
    n0 = run.probe.n_commands()
    run.fault_window()
    t_end = run.probe.now()
    n_during = run.probe.n_commands() - n0
    run.require(res, "sim", param, off)
    # The sim applied the fault before answering (t0). Data measured before it may still be paired
    # and published until it is older than the ingestion's max_state_age_s (plus max_pair_dt_s), and
    # a loaded machine delays delivery to the probe by seconds: so an observation counts against
    # the case by when it was *published* (its DDS source timestamp), not when it arrived here.
    ing = run.graph.node("camera_ingestion").parameters
    expiry = t0 + int((float(ing.get("max_state_age_s", 0.1)) + float(ing.get("max_pair_dt_s", 0.02))) * NS)
    obs = [o for o in run.probe.obs_since(t0) if o[4] > expiry and o[4] <= t_end]
    merged = [r for r in run.probe.reports_since(expiry) if r[0] <= t_end and r[2]]
    run.recovery(res, t_end)
    # the counters a node publishes once per second: wait for a report from after the fault
    # (a loaded machine delays them by seconds; counting from a stale one reads as nothing)
    fresh = run.wait(
        lambda: (
            run.probe.diag_stamped("camera_ingestion")[0] > t_end and run.probe.diag_stamped("correction")[0] > t_end
        ),
        20.0,
    )
    if not fresh:
        res.fail("no diagnostics from camera_ingestion / correction within 20 s after the fault")
    drops = counter_delta(d0["camera_ingestion"], run.probe.diag_of("camera_ingestion"), "dropped.")
    holds = counter_delta(d0["correction"], run.probe.diag_of("correction"), "holds").get("", 0)
    if obs:
        res.fail(f"{len(obs)} observations published during the fault")
    # No new observation means no new chunk: the correction node may finish the plan it has (at
    # most H control steps from the fault's start), then it holds its last target or -- a new
    # episode began and it disengaged until the arm is measured at the new start -- publishes
    # nothing, and the robot's own controller holds. Commands stamped later than that, without
    # holds, would be a plan followed blindly.
    sched = run.graph.node("scheduler").parameters
    plan_s = int(sched.get("horizon", 8)) * float(sched.get("dt", 0.05))
    stamps, _, _ = run.probe.commands(t0, t_end)
    last_s = float((stamps.max() - t0) / NS) if len(stamps) else None
    res.details.update(
        ingestion_drops=drops,
        holds=holds,
        merged_during=len(merged),
        commands_during=n_during,
        last_command_s=last_s,
        plan_s=plan_s,
    )
    held = (
        f"correction held {holds} ticks"
        if holds
        else "correction published nothing (robot's controller held)"
        if n_during == 0
        else f"correction finished its plan ({n_during} commands, the last {last_s:.2f} s into the fault, "
        f"plan {plan_s:.2f} s), then published nothing (robot's controller held)"
        if last_s is not None and last_s <= plan_s + HOLD_SLACK_S
        else f"correction did not hold ({n_during} commands, the last {last_s} s into the fault)"
    )
    res.observed = f"{what}; observations stopped, {held}; ingestion dropped " + (
        ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "nothing"
    )


def joint_states_stop(run: ChaosRun, res: CaseResult) -> None:
    _stream_fault(run, res, "pause_joint_states", True, False, "joint states paused")


def clock_jump_forward(run: ChaosRun, res: CaseResult) -> None:
    j = run.config.clock_jump_s
    _stream_fault(run, res, "clock_offset_s", float(j), 0.0, f"sim clock +{j:.0f} s")


def clock_jump_back(run: ChaosRun, res: CaseResult) -> None:
    j = run.config.clock_jump_s
    _stream_fault(run, res, "clock_offset_s", -float(j), 0.0, f"sim clock -{j:.0f} s")


def rogue_observations(run: ChaosRun, res: CaseResult) -> None:
    run.probe.msgs["Observation"]
    if not run.wait(lambda: run.probe.latest_observation() is not None, 10.0):
        res.fail("no real observation to imitate")
        return
    nodes = ("policy", "scheduler", "correction")
    d0 = {n: run.probe.diag_of(n) for n in nodes}
    base = run.probe.latest_observation()
    state = np.asarray(base.state, dtype=np.float64)

    def rogue(kind: str, **fields) -> Any:
        m = copy_module.deepcopy(base)
        m.task = ROGUE_NAME  # the probe's own view of the graph ignores these
        m.obs_id = 1 + len(sent)  # below the real ids: never taken in place of a real observation
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(run.probe.now(), NS)
        for k, v in fields.items():
            setattr(m, k, v)
        sent.append(kind)
        return m

    sent: list[str] = []
    bad = state.copy()
    bad[0] = np.nan
    msgs = [
        rogue("nan", state=bad.tolist()),
        rogue("wrong_shape", state=state[:5].tolist(), state_dim=5),
        rogue("no_stamp"),
        rogue("future_stamp"),
    ]
    msgs[2].header.stamp.sec, msgs[2].header.stamp.nanosec = 0, 0
    future = run.probe.now() + 10 * NS
    msgs[3].header.stamp.sec, msgs[3].header.stamp.nanosec = divmod(future, NS)
    for m in msgs:
        run.probe.pub_obs.publish(m)
        time.sleep(0.01)
    # the hijack: well formed, huge ids, every joint 1 rad away from where the arm is
    far = state.copy()
    far[:7] += 1.0
    t_hijack = run.probe.now()
    run.probe.pub_obs.publish(rogue("hijack", state=far.tolist(), episode_id=1 << 62, obs_id=1 << 62))

    def rewinds(node: str) -> int:
        return int(run.probe.diag_of(node).get("rewinds", 0) or 0) - int(d0[node].get("rewinds", 0) or 0)

    followed = run.wait(lambda: all(rewinds(n) >= 1 for n in nodes), 15.0)
    t_back = run.probe.now()
    if not followed:
        res.fail("not every node followed the real ids back: rewinds " + str({n: rewinds(n) for n in nodes}))
    run.recovery(res, t_back)
    if res.recovery_s is not None:
        res.recovery_s += (t_back - t_hijack) / NS  # from the hijack, rewinds included
    run.wait(lambda: all(run.probe.diag_stamped(n)[0] > t_back for n in nodes), 5.0)
    drops = {n: counter_delta(d0[n], run.probe.diag_of(n), "dropped.observation.") for n in nodes}
    expect = {
        "policy": {"non_finite", "bad_shape", "no_stamp"},
        "scheduler": {"no_stamp", "future_stamp"},
        "correction": {"bad_state", "state_mismatch"},
    }
    for node, reasons in expect.items():
        missing = reasons - set(drops[node])
        if missing:
            res.fail(f"{node} did not count a drop for: {', '.join(sorted(missing))} (counted {drops[node]})")
    res.details.update(sent=sent, drops=drops, rewinds={n: rewinds(n) for n in nodes})
    res.recovery_note = "rogue observation -> every node back on the real ids -> first chunk merged"
    res.observed = (
        f"{len(sent)} rogue observations; dropped: "
        + "; ".join(f"{n} " + ", ".join(f"{k} {v}" for k, v in sorted(drops[n].items())) for n in nodes)
        + f"; rewinds {', '.join(f'{n} {rewinds(n)}' for n in nodes)}"
    )


def request_flood(run: ChaosRun, res: CaseResult) -> None:
    ChunkRequest = run.probe.msgs["ChunkRequest"]
    c = run.config
    d0 = {n: run.probe.diag_of(n) for n in ("policy", "scheduler")}
    ep = run.probe.latest_episode()
    H = int(run.graph.node("scheduler").parameters.get("horizon", 8))
    A = int(run.graph.node("scheduler").parameters.get("action_dim", 8))
    t0 = run.probe.now()
    deadline = time.monotonic() + c.flood_max_s
    sent = 0
    while sent < c.flood_count and time.monotonic() < deadline:
        m = ChunkRequest()
        now = run.probe.now()
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(now, NS)
        m.request_id = ROGUE_REQUEST_BASE + (now // 1000) % (1 << 30) + sent
        m.episode_id = ep
        m.obs_id = 0
        m.sampler = "vanilla"
        m.horizon, m.action_dim, m.dt = H, A, 0.05
        m.seed = -1
        run.probe.pub_request.publish(m)
        sent += 1
    t_end = run.probe.now()
    rate = sent / max(1e-9, (t_end - t0) / NS)
    run.recovery(res, t_end)
    run.wait(
        lambda: run.probe.diag_stamped("policy")[0] > t_end and run.probe.diag_stamped("scheduler")[0] > t_end,
        5.0,
    )
    pol = counter_delta(d0["policy"], run.probe.diag_of("policy"), "")
    sch = counter_delta(d0["scheduler"], run.probe.diag_of("scheduler"), "rejected.")
    res.details.update(sent=sent, rate_hz=rate, policy=pol, scheduler_rejected=sch)
    res.recovery_note = "flood end -> first chunk merged"
    res.observed = (
        f"{sent} requests at {rate:.0f}/s; policy superseded {pol.get('superseded', 0)}, "
        f"scheduler rejected " + (", ".join(f"{k} {v}" for k, v in sorted(sch.items())) or "none")
    )


def bad_params_start(run: ChaosRun, res: CaseResult) -> None:
    from async_vla_ros.bringup.graph import build_graph

    graph = build_graph("franka", {"policy": "expert"})
    bad = {
        "sim": ("camera_rate_hz:=-1.0", "camera_rate_hz"),
        "camera_ingestion": ("image_size:=9999", "image_size"),
        "policy": ("policy:=exprt", "did you mean 'expert'"),
        "scheduler": ("horizn:=8", "did you mean 'horizon'"),
        "correction": ("rate_hz:=0.5", "rate_hz"),
    }
    env = dict(os.environ)
    apply_ros_defaults(env)
    procs = {}
    for spec in graph.nodes:
        arg, _needle = bad[spec.name]
        if spec.hosted:
            # a process of several nodes (the policy's, with camera_ingestion and the scheduler): the bad
            # value goes to its own node only, in a params file keyed by node name, as the launchers do
            name, value = arg.split(":=", 1)
            params = run.workdir / f"bad_params_{spec.name}.yaml"  # removed with the run's temp folder
            params.write_text(yaml.safe_dump({spec.name: {"ros__parameters": {name: yaml.safe_load(value)}}}))
            cmd = [sys.executable, "-m", spec.module, "--ros-args", "--params-file", str(params)]
        else:
            cmd = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}", "-p", arg]
        procs[spec.name] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL
        )
    cli = [sys.executable, "-m", "async_vla_ros.cli", "launch", "franka", "latency_ms:=-5", "policy:=expert"]
    procs["launcher"] = subprocess.Popen(
        cli, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL
    )
    bad["launcher"] = ("latency_ms:=-5", "latency_ms")
    lines = []
    for name, p in procs.items():
        try:
            out, _ = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()  # a process this case started
            out, _ = p.communicate()
            res.fail(f"{name} did not exit with a bad parameter")
            continue
        needle = bad[name][1]
        text = out.strip()
        if p.returncode != 2:
            res.fail(f"{name}: exit status {p.returncode}, expected 2")
            if p.returncode is not None and p.returncode < 0:
                # a crash (run_node's faulthandler printed every thread's stack): keep it whole, it is
                # rare (a SIGSEGV once in a loaded CI run, 0 of 95 starts on a quiet machine)
                res.details[f"{name}_crash_output"] = text.splitlines()[-80:]
                print(f"[chaos] {name} crashed (status {p.returncode}); its output:\n{text[-6000:]}", flush=True)
        if "Traceback" in text:
            res.fail(f"{name}: printed a traceback")
        if needle not in text:
            res.fail(f"{name}: message does not name {needle!r}: {text[-300:]!r}")
        first = next((ln for ln in text.splitlines() if needle in ln), text.splitlines()[0] if text else "")
        lines.append(f"{name}: {first.strip()}")
    res.details["messages"] = lines
    res.recovery_note = "n/a (process start)"
    res.observed = (
        f"{sum(p.returncode == 2 for p in procs.values())}/{len(procs)} exited 2 with the reason, "
        f"e.g. `{lines[0] if lines else ''}`"
    )


def bad_bags(run: ChaosRun, res: CaseResult) -> None:
    from async_vla_ros.eval import replay as replay_cmd

    if not (run.bag_path / "metadata.yaml").is_file():
        res.fail("no bag was recorded from the graph (bad_bags needs the graph cases to run first)")
        return
    root = run.workdir / "bags"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    mcap = next(run.bag_path.glob("*.mcap"))
    variants: dict[str, Path] = {}

    def clone(name: str) -> Path:
        dst = root / name
        shutil.copytree(run.bag_path, dst)
        return dst

    p = clone("truncated")
    data = (p / mcap.name).read_bytes()
    (p / mcap.name).write_bytes(data[: len(data) * 6 // 10])
    variants["truncated"] = p
    p = clone("garbage_data")
    (p / mcap.name).write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    variants["garbage_data"] = p
    p = clone("malformed_metadata")
    (p / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: [not valid\n")
    variants["malformed_metadata"] = p
    p = clone("no_metadata")
    (p / "metadata.yaml").unlink()
    variants["no_metadata"] = p
    p = clone("empty_data")
    (p / mcap.name).write_bytes(b"")
    variants["empty_data"] = p
    variants["missing"] = root / "does_not_exist"
    (root / "a_file").write_text("not a bag")
    variants["a_file"] = root / "a_file"

    def replay(bag: Path) -> tuple[int | str, str]:
        err, out = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                # the replay command as `async-vla-ros replay` runs it (its own parser and run)
                ns = replay_cmd.add_arguments(argparse.ArgumentParser(prog="replay")).parse_args(
                    [
                        str(bag),
                        "--policy",
                        "expert",
                        "--method",
                        "naive",
                        "--delay",
                        "1",
                        "--no-plots",
                        "--out",
                        str(root / (bag.name + "_out")),
                    ]
                )
                rc = replay_cmd.run(ns)
        except BaseException as exc:  # noqa: BLE001 - an escaping exception is the failure we look for
            return f"raised {type(exc).__name__}", str(exc)
        return rc, err.getvalue().strip()

    rc, msg = replay(run.bag_path)
    if rc != 0:
        res.fail(f"replay of the good recorded bag failed ({rc}): {msg[-300:]}")
    msgs = {}
    for name, path in variants.items():
        rc, msg = replay(path)
        msgs[name] = msg.splitlines()[0] if msg else ""
        if rc != 2:
            res.fail(f"{name}: {rc}, expected exit 2 ({msg[-200:]!r})")
        elif not msg.startswith("replay:") or "Traceback" in msg:
            res.fail(f"{name}: unclear message {msg[-200:]!r}")
    res.details["messages"] = msgs
    res.recovery_note = "n/a (offline)"
    res.observed = (
        f"good bag replayed (exit 0); {len(variants)} broken bags exit 2, e.g. `{msgs.get('truncated', '')[:140]}`"
    )


CASES: tuple[Case, ...] = (
    Case(
        "bad_params_start",
        bad_params_start,
        "every node exits with status 2 and a one-line reason naming the parameter "
        "(no traceback); the launcher rejects a bad launch argument the same way",
        needs_graph=False,
    ),
    Case(
        "rogue_chunks",
        rogue_chunks,
        "every rogue chunk rejected with its reason (non_finite, bad_shape, bad_action_names, "
        "stamp_mismatch, duplicate / out_of_order), none merged; real chunks keep merging",
    ),
    Case(
        "rogue_observations",
        rogue_observations,
        "malformed observations dropped with their reason (non_finite, bad_shape, no_stamp, "
        "future_stamp); one well-formed observation with a huge episode id, a huge obs_id and every joint 1 rad "
        "away is taken as a new episode by the scheduler and the policy (topics are not authenticated), but the "
        "correction node does not engage on it (state_mismatch: its joints disagree with the measured ones) and "
        "the robot holds; every node follows the real ids again after rewind_after (10) observations, the "
        "command stream restarts at the measured joints and chunks merge again",
        strict_restarts=True,
    ),
    Case(
        "bad_params_runtime",
        bad_params_runtime,
        "set_parameters refused with a reason (out of range, wrong type, not finite, "
        "read-only, undeclared); values unchanged; the graph keeps running",
    ),
    Case(
        "latency_spike_x10",
        latency_spike_x10,
        "delay forecast grows, chunks keep merging (the plan may run dry: the correction "
        "node holds), commands within limits; latency back to baseline after the spike",
    ),
    Case(
        "camera_stops",
        camera_stops,
        "observations continue flagged IMAGE_MISSING (a state-only policy keeps serving; "
        "an image policy answers NO_OBSERVATION and the robot holds); images attached again after",
    ),
    Case(
        "joint_states_stop",
        joint_states_stop,
        "observations stop (no joint state to pair), no requests, the plan runs dry and the "
        "correction node holds the last target; chunks merge again when joint states return",
    ),
    Case(
        "clock_jump_forward",
        clock_jump_forward,
        "inputs stamped in the future dropped at ingestion (future_stamp), the robot holds; "
        "normal service right after the clock is back",
    ),
    Case(
        "clock_jump_back",
        clock_jump_back,
        "inputs stamped in the past dropped (out of order / stale), the robot holds; normal "
        "service right after the clock is back",
    ),
    Case(
        "request_flood",
        request_flood,
        "the policy serves only the newest request (the rest answered STALE_REQUEST), the "
        "scheduler rejects answers to requests it never sent; real requests resume after the flood",
    ),
    Case(
        "policy_killed",
        policy_killed,
        "the policy node's process dies mid-chunk and is restarted: the plan runs dry and the correction "
        "node holds; a scheduler in another process (compose:=false) abandons the request after its timeout "
        "and re-requests, one in the same process (the default) restarts with it; chunks of the restarted node "
        "merge",
    ),
    Case(
        "bad_bags",
        bad_bags,
        "replay on the recorded bag succeeds; on truncated, malformed, incomplete or missing bags it "
        "exits 2 with a clear reason (no traceback)",
        needs_graph=False,
    ),
    Case(
        "remote_faults",  # its own graph and openpi server (eval/chaos_remote.py), after the shared graph
        lambda run, res: chaos_remote.remote_faults(res, echo=run.echo),
        chaos_remote.EXPECTED,
        needs_graph=False,
    ),
)
CASE_NAMES: tuple[str, ...] = tuple(c.name for c in CASES)
CASE_BY_NAME = {c.name: c for c in CASES}
