"""What an intercept failure looks like: the paddle's last steps before the ball reaches its line.

Reads the step-by-step episodes ``eval --steps-out`` writes (:func:`~async_vla_ros.eval.eval_cmd.
load_steps`). For every episode whose ball comes within ``lead`` of the paddle's line
(``InterceptConfig.defend_x``) it takes the step ``t_c`` it does, and ``lookback`` steps before it:

* ``gap_before``: where the ball will cross the line (its position and velocity then, straight
  on, as the scripted expert predicts it) minus the TCP's y, ``lookback`` steps before ``t_c``;
* ``moved``: how far the TCP moved in y over those steps, signed towards the gap (positive: it
  moved to close it).

(Not the gap at ``t_c`` itself: by then the ball may be touching the paddle, and a crossing point
predicted from a velocity the paddle is changing means nothing.) A paddle that follows the ball
closes the gap; one that "stops short" leaves it open while moving little.

``--dagger DIR`` reads a DAgger round instead (``demos TASK --driver POLICY``, any task): per
control period, how far the expert's label was from what the driver sent (the norm of the joint
targets' difference, rad), over the driver's successful and failed episodes: where the learned
policy and the expert part. Usage::

    async-vla-ros eval --policy vla --task intercept --episodes 80 --method naive --delay 0 --steps-out s.npz
    python -m async_vla_ros.eval.failures s.npz
    python -m async_vla_ros.eval.failures --dagger data/dagger_R6/intercept
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from async_vla_ros.sim.experts import crossing_y
from async_vla_ros.sim.scene import PADDLE_HALF
from async_vla_ros.sim.tasks import InterceptConfig

__all__ = ["InterceptApproach", "intercept_approach", "summarize", "disagreement_by_step", "main"]


@dataclass(frozen=True)
class InterceptApproach:
    """Per episode (arrays of equal length, episodes whose ball reached the line's band only)."""

    seed: np.ndarray  # (E,)
    success: np.ndarray  # (E,) bool
    t_c: np.ndarray  # (E,) step the ball first came within ``lead`` of the line
    gap_before: np.ndarray  # (E,) m, predicted crossing y minus TCP y, ``lookback`` steps before t_c
    moved: np.ndarray  # (E,) m, TCP y motion over those steps, signed towards gap_before
    skipped: int  # episodes whose ball never came within ``lead`` of the line


def intercept_approach(
    obs: np.ndarray,
    steps: np.ndarray,
    success: np.ndarray,
    seed: np.ndarray,
    cols: Mapping[str, slice],
    lookback: int = 2,
    lead: float = 0.05,
    config: InterceptConfig | None = None,
) -> InterceptApproach:
    """``obs (E, T + 1, obs_dim)`` (NaN past an episode's end), ``steps (E,)`` steps simulated,
    ``cols``: observation field -> columns (``tcp``, ``ball_pos``, ``ball_vel``)."""
    if lookback < 1:
        raise ValueError(f"lookback must be >= 1, got {lookback}")
    for name in ("tcp", "ball_pos", "ball_vel"):
        if name not in cols:
            raise ValueError(f"the observations have no {name!r} (an intercept episode's fields: {sorted(cols)})")
    line = (config or InterceptConfig()).defend_x
    rows: list[tuple] = []
    skipped = 0
    for j in range(len(obs)):
        o = obs[j, : int(steps[j]) + 1]
        tcp, ball, vel = o[:, cols["tcp"]], o[:, cols["ball_pos"]], o[:, cols["ball_vel"]]
        near = np.flatnonzero(ball[:, 0] <= line + lead)
        if not len(near) or near[0] < lookback:
            skipped += 1
            continue
        tc = int(near[0])
        tb = tc - lookback
        gap_b = float(crossing_y(ball[tb : tb + 1], vel[tb : tb + 1], line)[0]) - tcp[tb, 1]
        moved = (tcp[tc, 1] - tcp[tb, 1]) * (1.0 if gap_b >= 0 else -1.0)
        rows.append((int(seed[j]), bool(success[j]), tc, gap_b, moved))
    a = list(zip(*rows, strict=True)) if rows else [()] * 5
    return InterceptApproach(
        seed=np.array(a[0], dtype=np.int64),
        success=np.array(a[1], dtype=bool),
        t_c=np.array(a[2], dtype=np.int64),
        gap_before=np.array(a[3], dtype=float),
        moved=np.array(a[4], dtype=float),
        skipped=skipped,
    )


def summarize(r: InterceptApproach, still: float = 0.02, lookback: int = 2) -> str:
    """A few lines: failures against successes (mean |gap| ``lookback`` steps before the line, how
    far the TCP moved towards it since, the share that moved less than ``still``)."""
    reach = PADDLE_HALF[1] + InterceptConfig().ball_radius  # paddle half-width + ball radius, 7 cm
    lines = [
        f"{len(r.success)} episodes reached the line's band ({r.skipped} skipped), {int((~r.success).sum())} failed; "
        f"the paddle's reach: {reach * 100:.0f} cm (half its width plus the ball's radius)"
    ]
    for label, m in (("failed", ~r.success), ("succeeded", r.success)):
        if not m.any():
            continue
        lines.append(
            f"  {label:>9} ({int(m.sum()):3d}): |gap| {lookback} steps before the line {np.abs(r.gap_before[m]).mean():.3f} m, "
            f"beyond the paddle's reach in {(np.abs(r.gap_before[m]) > reach).mean():.0%}; "
            f"moved towards it since {r.moved[m].mean():+.3f} m, "
            f"< {still * 100:.0f} cm in {(r.moved[m] < still).mean():.0%}; "
            f"gap on +y {(r.gap_before[m] > 0).mean():.0%}"
        )
    return "\n".join(lines)


def disagreement_by_step(
    labels: list[np.ndarray], executed: list[np.ndarray], success: np.ndarray
) -> dict[str, np.ndarray]:
    """Mean ``||label[t, :7] - executed[t, :7]||`` per step t over the successful and the failed
    episodes (``{"succeeded": (T,), "failed": (T,)}``, T the longest episode; a step no episode of a
    group reached is NaN, a group with no episode is left out)."""
    if not len(labels) or len(labels) != len(executed) or len(labels) != len(success):
        raise ValueError("need one label array, one executed array and one success flag per episode")
    t_max = max(len(a) for a in labels)
    err = np.full((len(labels), t_max), np.nan)
    for j, (a, e) in enumerate(zip(labels, executed, strict=True)):
        if a.shape != e.shape:
            raise ValueError(f"episode {j}: labels {a.shape} and executed {e.shape} differ")
        err[j, : len(a)] = np.linalg.norm(a[:, :7] - e[:, :7], axis=1)
    ok = np.asarray(success, dtype=bool)
    out = {}
    for label, m in (("succeeded", ok), ("failed", ~ok)):
        if m.any():
            with warnings.catch_warnings():  # a step no episode of the group reached: NaN, quietly
                warnings.simplefilter("ignore", RuntimeWarning)
                out[label] = np.nanmean(err[m], axis=0)
    return out


def main(argv: list[str] | None = None) -> int:
    from async_vla_ros.eval.eval_cmd import load_steps

    p = argparse.ArgumentParser(prog="python -m async_vla_ros.eval.failures", description=__doc__.splitlines()[0])
    p.add_argument("steps", nargs="?", help=".npz written by `eval --task intercept --steps-out`")
    p.add_argument("--dagger", metavar="DIR", help="a DAgger round's folder (`demos TASK --driver P`) instead")
    p.add_argument("--lookback", type=int, default=2, help="steps before the ball reaches the line (default 2)")
    p.add_argument("--lead", type=float, default=0.05, help="m before the line that counts as reaching it")
    ns = p.parse_args(argv)
    if ns.dagger:
        from async_vla_ros.sim.demos import load_demos

        demos = load_demos(ns.dagger, images=False)
        driver = (demos.info.get("driver") or {}).get("policy")
        if not driver:
            raise SystemExit(f"{ns.dagger}: not a DAgger round (no driver in meta/info.json): labels = commands")
        eps = demos.episodes
        ok = np.array([bool(e.meta.get("success")) for e in eps])
        by = disagreement_by_step([e.actions for e in eps], [e.executed for e in eps], ok)
        print(f"{ns.dagger}: {demos.info.get('task')}, driver {driver}, {len(eps)} episodes, {int(ok.sum())} succeeded")
        print("||expert label - driver's command|| (rad, joints), mean per control period:")
        for label, v in by.items():
            print(f"  {label:>9}: " + " ".join(f"{x:.2f}" for x in v))
        return 0
    if not ns.steps:
        p.error("give a --steps-out .npz or --dagger DIR")
    conditions, cols, per = load_steps(ns.steps)
    for cond, d in zip(conditions, per, strict=True):
        if cond.get("task") != "intercept":
            print(
                f"{cond.get('preset')} d={cond.get('delay_label')}: task {cond.get('task')!r}, not intercept: skipped"
            )
            continue
        r = intercept_approach(d["obs"], d["steps"], d["success"], d["seed"], cols, ns.lookback, ns.lead)
        print(f"{cond.get('preset')} d={cond.get('delay_label')} ({cond.get('policy')}):")
        print(summarize(r, lookback=ns.lookback))
    return 0


if __name__ == "__main__":
    sys.exit(main())
