"""``async-vla-ros report RUN_OR_BAG``: a markdown + HTML report with plots, from a bag or a replay.

* A **bag** (rosbag2 directory): what the latency did during the run - per-chunk latency split
  and histogram (``/scheduler/chunk_report``), predicted vs measured delay, command period
  jitter, the executed command trajectory with its acceleration and jerk, message counts per
  topic, rejected chunks by reason.
* A **replay** (folder with ``replay.json`` from ``async-vla-ros replay``, or the file): the
  method comparison - metrics table, bar charts, executed trajectories against the recording with
  chunk switches marked, staleness distributions.

Output: ``report.md`` (PNG files beside it) and ``report.html`` (the same with the images
embedded, one self-contained file). Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros import names as N

__all__ = ["Section", "write_report", "write_replay_report", "write_bag_report", "add_arguments", "run"]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 9,
        }
    )
    return plt


@dataclass
class Section:
    """One report section: a title, text lines, an optional table and optional images (file names)."""

    title: str
    text: list[str] = field(default_factory=list)
    table: list[list[str]] | None = None  # first row: header
    images: list[str] = field(default_factory=list)


def _md_table(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def write_report(title: str, sections: Sequence[Section], out: Path) -> Path:
    """Write ``report.md`` and ``report.html`` (images embedded) into ``out``; returns the md path."""
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        md += [f"## {s.title}", ""]
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        for line in s.text:
            md += [line, ""]
            body.append(f"<p>{html.escape(line)}</p>")
        if s.table:
            md += _md_table(s.table) + [""]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in s.table[0])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in s.table[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        for img in s.images:
            md += [f"![{s.title}]({img})", ""]
            data = base64.b64encode((out / img).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(s.title)}" src="data:image/png;base64,{data}">')
    (out / "report.md").write_text("\n".join(md))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
    )
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    return out / "report.md"


def _f(v, scale: float = 1.0, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v * scale:.{digits}f}"


# ------------------------------------------------------------------------------------ replay
def _arr(rows) -> np.ndarray:
    return np.asarray([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


def write_replay_report(doc: dict[str, Any], out: Path) -> Path:
    """Report of a replay document (``replay.json`` content) into ``out``."""
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = doc.get("results") or []
    if not results:
        raise ValueError("replay document has no results")
    labels = [r["label"] for r in results]
    dt = float(doc["dt"])

    # metrics table
    head = [
        "condition",
        "switches",
        "jump mean / max (rad)",
        "accel@switch mean (rad/s²)",
        "jerk@switch mean (rad/s³)",
        "jerk RMS (rad/s³)",
        "staleness mean / p95 (ms)",
        "deviation RMS / max (rad)",
        "inference p50-ish mean (ms)",
    ]
    rows = [head]
    for r in results:
        m, tm = r["metrics"], r["timing"]
        rows.append(
            [
                r["label"],
                str(m["switches"]),
                f"{_f(m['jump']['mean'])} / {_f(m['jump']['max'])}",
                _f(m["accel_at_switch"]["mean"], digits=1),
                _f(m["jerk_at_switch"]["mean"], digits=0),
                _f(m["jerk_rms"], digits=0),
                f"{_f(m['staleness_s']['mean'], 1e3, 0)} / {_f(m['staleness_s']['p95'], 1e3, 0)}",
                f"{_f(m['deviation_rms'])} / {_f(m['deviation_max'])}",
                _f(tm["replay_inference_ms"]["mean"], digits=2),
            ]
        )
    rows[0][-1] = "replay inference mean (ms)"

    # bar charts
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    panels = [
        (
            "boundary jump (rad)",
            [r["metrics"]["jump"]["mean"] for r in results],
            [r["metrics"]["jump"]["max"] for r in results],
        ),
        (
            "jerk at switch (rad/s³)",
            [r["metrics"]["jerk_at_switch"]["mean"] for r in results],
            [r["metrics"]["jerk_at_switch"]["max"] for r in results],
        ),
        (
            "staleness (ms)",
            [_scale(r["metrics"]["staleness_s"]["mean"], 1e3) for r in results],
            [_scale(r["metrics"]["staleness_s"]["p95"], 1e3) for r in results],
        ),
        (
            "deviation from recording (rad)",
            [r["metrics"]["deviation_rms"] for r in results],
            [r["metrics"]["deviation_max"] for r in results],
        ),
    ]
    x = np.arange(len(results))
    for ax, (name, mean, hi) in zip(axes, panels):
        mean = [np.nan if v is None else v for v in mean]
        hi = [np.nan if v is None else v for v in hi]
        ax.bar(x, mean, color=[COLORS[i % len(COLORS)] for i in x], alpha=0.85, label="mean / RMS")
        ax.scatter(x, hi, color="k", marker="_", s=200, zorder=3, label="max / p95")
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_title(name)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "metrics.png")
    plt.close(fig)

    # trajectories: three joints, full run; switches as ticks
    rec = _arr(results[0]["series"]["recorded"]) if results[0]["series"]["recorded"] else np.zeros((0, 0))
    n_j = min(3, _arr(results[0]["series"]["executed"]).shape[1])
    fig, axes = plt.subplots(n_j, 1, figsize=(12, 2.3 * n_j), sharex=True, squeeze=False)
    for j in range(n_j):
        ax = axes[j, 0]
        if rec.size and rec.shape[1] > j:
            ax.plot(np.arange(len(rec)) * dt, rec[:, j], color="0.6", lw=3, alpha=0.6, label="recorded")
        for i, r in enumerate(results):
            ex = _arr(r["series"]["executed"])
            ax.plot(
                np.asarray(r["series"]["t"]) * dt, ex[:, j], color=COLORS[i % len(COLORS)], lw=1.1, label=r["label"]
            )
            sw = np.asarray(r["switches"], dtype=int)
            if sw.size:
                ax.plot(sw * dt, ex[sw, j], "|", color=COLORS[i % len(COLORS)], ms=8)
        ax.set_ylabel(f"joint {j + 1} (rad)")
    axes[0, 0].legend(fontsize=7, ncol=len(results) + 1, loc="upper right")
    axes[0, 0].set_title("executed joint targets (| = switch to a new chunk)")
    axes[-1, 0].set_xlabel("time since first observation (s)")
    fig.tight_layout()
    fig.savefig(out / "trajectory.png")
    plt.close(fig)

    # staleness distributions
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for i, r in enumerate(results):
        st = np.asarray([v for v in r["series"]["staleness_s"] if v is not None]) * 1e3
        if st.size:
            xs = np.sort(st)
            ax.step(
                xs, np.arange(1, xs.size + 1) / xs.size, where="post", color=COLORS[i % len(COLORS)], label=r["label"]
            )
    ax.set_xlabel("age of the observation behind each executed action (ms)")
    ax.set_ylabel("fraction of steps")
    ax.set_title("intra-chunk staleness (CDF)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "staleness.png")
    plt.close(fig)

    intro = [
        f"Bag: {doc.get('bag')}",
        f"Policy: {doc.get('policy')}, task: {doc.get('task') or 'n/a'}, dt = {dt} s, "
        f"recorded with strategy: {doc.get('recorded_strategy') or 'n/a'}.",
        "Open-loop replay of the recorded observations: methods are compared on identical inputs; "
        "'d=rec' replays the delays measured while recording. Lower is smoother / fresher / closer.",
    ]
    sections = [
        Section("Summary", intro, rows, ["metrics.png"]),
        Section(
            "Executed trajectories", ["Grey: what the robot was commanded in the recording."], images=["trajectory.png"]
        ),
        Section("Staleness", images=["staleness.png"]),
    ]
    return write_report("Replay evaluation", sections, out)


def _scale(v, s):
    return None if v is None else v * s


# --------------------------------------------------------------------------------------- bag
def write_bag_report(bag: Path, out: Path) -> Path:
    """Report of a recorded run (rosbag2 directory) into ``out``."""
    from async_vla_ros import names as N
    from async_vla_ros.bags import bag_info, read_messages

    COMMAND_TOPICS = tuple(N.absolute(t) for t in N.COMMAND_TOPICS)
    PLAN_TOPIC, REPORT_TOPIC = N.absolute(N.ACTION_PLAN), N.absolute(N.CHUNK_REPORT)

    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = bag_info(bag)
    t0 = info.start_ns
    sections = [
        Section(
            "Recording",
            [f"Bag: {bag} ({info.storage}), {info.duration_s:.1f} s, {info.n_messages} messages."],
            [["topic", "type", "messages", "rate (Hz)"]]
            + [
                [
                    t,
                    info.topics[t],
                    str(info.counts.get(t, 0)),
                    _f(info.counts.get(t, 0) / info.duration_s if info.duration_s > 0 else None, digits=1),
                ]
                for t in sorted(info.topics)
            ],
        )
    ]

    if REPORT_TOPIC in info.topics:
        rep = [m for m in read_messages(bag, [REPORT_TOPIC])]
        t = np.asarray([(m.t_ns - t0) / 1e9 for m in rep])
        lat = {
            k: np.asarray([getattr(m.msg, k) for m in rep], dtype=np.float64)
            for k in ("total_latency_s", "inference_s", "queue_s", "transport_s", "obs_age_s")
        }
        acc = np.asarray([m.msg.accepted for m in rep], dtype=bool)
        pred = np.asarray([m.msg.predicted_delay_steps for m in rep])
        meas = np.asarray([m.msg.measured_delay_steps for m in rep])
        jumps = np.asarray([m.msg.boundary_jump for m in rep], dtype=np.float64)
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [2.2, 1]})
        for i, k in enumerate(("total_latency_s", "inference_s", "transport_s", "queue_s")):
            v = lat[k]
            ok = v >= 0
            axes[0].plot(
                t[ok],
                v[ok] * 1e3,
                ".-" if k == "total_latency_s" else "-",
                lw=1,
                ms=3,
                color=COLORS[i],
                label=k.replace("_s", ""),
            )
        axes[0].set_xlabel("time (s)")
        axes[0].set_ylabel("ms")
        axes[0].set_title("per-chunk latency")
        axes[0].legend(fontsize=7)
        ok = lat["total_latency_s"] >= 0
        axes[1].hist(lat["total_latency_s"][ok] * 1e3, bins=30, color=COLORS[0], alpha=0.8)
        axes[1].set_xlabel("total latency (ms)")
        axes[1].set_title("latency histogram")
        fig.tight_layout()
        fig.savefig(out / "latency.png")
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [2.2, 1]})
        axes[0].step(t, pred, where="post", color=COLORS[1], label="predicted d (sent)")
        okm = meas >= 0
        axes[0].plot(t[okm], meas[okm], "o", ms=3, color=COLORS[0], label="measured d")
        axes[0].set_ylabel("steps")
        axes[0].set_xlabel("time (s)")
        axes[0].set_title("predicted vs measured delay")
        axes[0].legend(fontsize=7)
        okj = acc & np.isfinite(jumps) & (jumps >= 0)
        axes[1].hist(jumps[okj], bins=30, color=COLORS[3], alpha=0.8)
        axes[1].set_xlabel("boundary jump (rad)")
        axes[1].set_title("jump at each switch")
        fig.tight_layout()
        fig.savefig(out / "delay.png")
        plt.close(fig)
        under = int(np.sum((meas > pred) & okm))
        reasons: dict[str, int] = {}
        for m in rep:
            if not m.msg.accepted:
                reasons[m.msg.reject_reason or "unknown"] = reasons.get(m.msg.reject_reason or "unknown", 0) + 1
        tl = lat["total_latency_s"][ok] * 1e3
        text = [
            f"{len(rep)} chunks, {int(acc.sum())} merged; total latency median {_f(np.median(tl) if tl.size else None, digits=1)} ms, "
            f"p95 {_f(np.quantile(tl, 0.95) if tl.size else None, digits=1)} ms, max {_f(tl.max() if tl.size else None, digits=1)} ms.",
            f"Delay under-predicted (measured > predicted) for {under} of {int(okm.sum())} chunks.",
        ]
        table = (
            [["rejected: reason", "chunks"]] + [[k, str(v)] for k, v in sorted(reasons.items())] if reasons else None
        )
        sections.append(Section("Latency", text, table, ["latency.png", "delay.png"]))

    # the command topic that carries messages (the graph records both interfaces; one stays empty)
    cmd_topic = next((c for c in COMMAND_TOPICS if info.counts.get(c, 0)), None)
    if cmd_topic is not None:
        ts, qs = [], []
        for m in read_messages(bag, [cmd_topic]):
            q = (
                m.msg.data
                if cmd_topic == COMMAND_TOPICS[0]
                else (m.msg.points[0].positions if len(m.msg.points) else None)
            )
            if q is not None and len(q):
                ts.append(m.t_ns)
                qs.append(np.asarray(q, dtype=np.float64)[:7])
        if len(ts) > 4:
            ts_a = np.asarray(ts, dtype=np.float64)
            q = np.stack([x[: min(len(x) for x in qs)] for x in qs])
            period = np.diff(ts_a) / 1e6
            nominal = float(np.median(period))
            dts = nominal / 1e3
            acc_ = np.diff(q, 2, axis=0) / dts**2
            jerk = np.diff(q, 3, axis=0) / dts**3
            tt = (ts_a - t0) / 1e9
            fig, axes = plt.subplots(4, 1, figsize=(12, 8.5), sharex=False)
            for j in range(min(q.shape[1], 7)):
                axes[0].plot(tt, q[:, j], lw=1, color=COLORS[j % len(COLORS)], label=f"j{j + 1}")
            axes[0].set_ylabel("command (rad)")
            axes[0].legend(fontsize=7, ncol=7, loc="upper right")
            axes[0].set_title(f"executed command trajectory ({cmd_topic})")
            axes[1].plot(tt[1:-1], np.linalg.norm(acc_, axis=1), lw=0.8, color=COLORS[1])
            axes[1].set_ylabel("|accel| (rad/s²)")
            axes[2].plot(tt[2:-1], np.linalg.norm(jerk, axis=1), lw=0.8, color=COLORS[3])
            axes[2].set_ylabel("|jerk| (rad/s³)")
            axes[2].set_xlabel("time (s)")
            axes[3].hist(period - nominal, bins=50, color=COLORS[0], alpha=0.8)
            axes[3].set_xlabel(f"command period error (ms) vs median {nominal:.2f} ms")
            axes[3].set_ylabel("count")
            fig.tight_layout()
            fig.savefig(out / "command.png")
            plt.close(fig)
            err = np.abs(period - nominal)
            sections.append(
                Section(
                    "Command stream",
                    [
                        f"{len(ts)} commands, median period {nominal:.2f} ms, |period error| p99 "
                        f"{np.quantile(err, 0.99):.2f} ms, max {err.max():.2f} ms (receive times at the recorder); "
                        f"RMS joint acceleration {np.sqrt(np.mean(np.sum(acc_**2, 1))):.3f} rad/s², RMS jerk "
                        f"{np.sqrt(np.mean(np.sum(jerk**2, 1))):.1f} rad/s³."
                    ],
                    images=["command.png"],
                )
            )
    if info.counts.get(TICK_TOPIC, 0):
        sections.append(_command_loop_section(bag, info, out, plt))
    if info.counts.get(DIAG_TOPIC, 0):
        sections.append(_health_section(bag))
    if PLAN_TOPIC in info.topics and REPORT_TOPIC not in info.topics and cmd_topic is None:
        sections.append(
            Section("Plans", [f"{info.counts[PLAN_TOPIC]} plans recorded (no reports or commands to plot)."])
        )
    return write_report(f"Run report: {Path(bag).name}", sections, out)


TICK_TOPIC = N.absolute(N.COMMAND_METRICS)
DIAG_TOPIC = "/diagnostics"
_LEVELS = ("OK", "WARN", "ERROR", "STALE")


def _command_loop_section(bag: Path, info, out: Path, plt) -> Section:
    """The correction loop's own per-tick measurements (CommandMetrics): period error, safety."""
    from async_vla_ros.bags import read_messages

    rows = [
        (m.t_ns, m.msg.period_error_s, m.msg.safety_deviation, int(m.msg.safety_flags), bool(m.msg.hold))
        for m in read_messages(bag, [TICK_TOPIC])
    ]
    t = (np.asarray([r[0] for r in rows], dtype=np.float64) - info.start_ns) / 1e9
    err = np.asarray([r[1] for r in rows], dtype=np.float64) * 1e3
    dev = np.asarray([r[2] for r in rows], dtype=np.float64)
    flags = np.asarray([r[3] for r in rows])
    holds = int(sum(r[4] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    ok = np.isfinite(err)
    axes[0].plot(t[ok], err[ok], lw=0.6, color=COLORS[0])
    axes[0].set_ylabel("period error (ms)")
    axes[0].set_xlabel("time (s)")
    axes[0].set_title("command loop period error (measured in the loop)")
    okd = np.isfinite(dev)
    axes[1].plot(t[okd], dev[okd], lw=0.6, color=COLORS[3])
    axes[1].set_ylabel("rad")
    axes[1].set_xlabel("time (s)")
    axes[1].set_title("safety filter change of the command (max over joints)")
    fig.tight_layout()
    fig.savefig(out / "command_loop.png")
    plt.close(fig)
    names = ("input rejected", "position clamped", "rate limited", "braking", "gripper rejected", "gripper clamped")
    table = [["safety flag", "ticks", "share"]] + [
        [n, str(int(np.sum(flags & (1 << i) > 0))), f"{100.0 * np.mean(flags & (1 << i) > 0):.1f} %"]
        for i, n in enumerate(names)
    ]
    a = np.abs(err[ok])
    text = [
        f"{len(rows)} commanding ticks; |period error| median {_f(np.median(a) if a.size else None, digits=3)} ms, "
        f"p99 {_f(np.quantile(a, 0.99) if a.size else None, digits=3)} ms, max {_f(a.max() if a.size else None, digits=3)} ms "
        f"(the loop's own clock); {holds} ticks held the last target (plan ran dry).",
        f"Safety filter change of the command: median {_f(np.median(dev[okd]) if okd.any() else None, digits=4)} rad, "
        f"p99 {_f(np.quantile(dev[okd], 0.99) if okd.any() else None, digits=4)} rad, "
        f"max {_f(dev[okd].max() if okd.any() else None, digits=4)} rad.",
    ]
    return Section("Command loop (CommandMetrics)", text, table, ["command_loop.png"])


def _health_section(bag: Path) -> Section:
    """Per node: share of /diagnostics reports at each level and the most frequent breaches."""
    from collections import Counter

    from async_vla_ros.bags import read_messages

    levels: dict[str, Counter] = {}
    breaches: dict[str, Counter] = {}
    for m in read_messages(bag, [DIAG_TOPIC]):
        for st in m.msg.status:
            lv = int(st.level[0] if isinstance(st.level, (bytes, bytearray)) else st.level)
            levels.setdefault(st.name, Counter())[_LEVELS[lv] if 0 <= lv < 4 else str(lv)] += 1
            if lv in (1, 2):
                for part in str(st.message).split("; "):
                    breaches.setdefault(st.name, Counter())[part.split(" ")[0]] += 1
    table = [["node", "reports", "OK", "WARN", "ERROR", "most frequent breaches"]]
    for name in sorted(levels):
        c = levels[name]
        n = sum(c.values())
        top = ", ".join(f"{k} ({v})" for k, v in breaches.get(name, Counter()).most_common(3)) or "-"
        table.append([name, str(n)] + [f"{100.0 * c.get(k, 0) / n:.0f} %" for k in ("OK", "WARN", "ERROR")] + [top])
    return Section(
        "Node health (/diagnostics)",
        [
            "Share of each node's diagnostics reports at each level; the "
            "thresholds are the nodes' diag.<key>.warn / .error parameters."
        ],
        table,
    )


# --------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "run",
        metavar="RUN_OR_BAG",
        help="a rosbag2 directory, or a replay output (folder with replay.json, or the file)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: <bag>_report, or the replay folder)")
    return parser


def run(ns: argparse.Namespace) -> int:
    from async_vla_ros.bags import BagError

    src = Path(ns.run)
    try:
        if src.is_file() and src.suffix == ".json" or (src.is_dir() and (src / "replay.json").is_file()):
            path = src if src.is_file() else src / "replay.json"
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from exc
            md = write_replay_report(doc, Path(ns.out) if ns.out else path.parent)
        elif src.is_dir():
            md = write_bag_report(src, Path(ns.out) if ns.out else Path(str(src.resolve()) + "_report"))
        else:
            raise FileNotFoundError(f"{src}: neither a bag directory nor a replay.json")
    except (BagError, ValueError, FileNotFoundError, KeyError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    print(f"report: {md} and {md.with_suffix('.html')}")
    return 0
