"""PNG plots for the paper-style benchmark (matplotlib, Agg backend: no display needed).

``success_vs_delay(results, task, path)``: one line per method, success rate against the
simulated delay d with 95 % Wilson intervals as error bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from async_vla_ros.eval.stats import wilson_interval  # noqa: E402

# Fixed colours/markers per method so every task's plot reads the same way.
_STYLE = {
    "sync": ("#7f7f7f", "s", ":"),
    "naive": ("#000000", "o", "-"),
    "te": ("#8c564b", "v", "--"),
    "bid": ("#9467bd", "^", "--"),
    "rtc_hard": ("#ff9896", "x", "--"),
    "rtc": ("#d62728", "o", "-"),
    "rtc_jf": ("#ff7f0e", "s", "-"),
    "remac": ("#1f77b4", "D", "-"),
    "remac_clean": ("#aec7e8", "D", "--"),
    "a2c2": ("#2ca02c", "P", "-"),
    "remac_rtc": ("#17becf", "d", "-."),
    "rtc_a2c2": ("#bcbd22", "*", "-."),
    "remac_a2c2": ("#e377c2", "h", "-."),
}


PANEL_A = ("sync", "naive", "te", "bid", "rtc_hard", "rtc", "rtc_jf")  # baselines and RTC
PANEL_B_REF = ("naive", "rtc")  # repeated in the second panel for reference


def _draw(ax, counts: Mapping[str, Mapping[int, tuple[int, int]]], methods: Sequence[str]) -> None:
    n_m = max(1, len(methods))
    for j, m in enumerate(methods):
        per_d = counts.get(m, {})
        ds = sorted(per_d)
        if not ds:
            continue
        rates, lo, hi = [], [], []
        for d in ds:
            k, n = per_d[d]
            p = k / n
            a, b = wilson_interval(k, n)
            rates.append(p)
            lo.append(max(0.0, p - a))  # round-off at k = 0 or k = n
            hi.append(max(0.0, b - p))
        color, marker, ls = _STYLE.get(m, (None, "o", "-"))
        off = (j - (n_m - 1) / 2) * 0.03  # small horizontal jitter so error bars do not overlap
        ax.errorbar(
            [d + off for d in ds],
            rates,
            yerr=[lo, hi],
            label=m,
            color=color,
            marker=marker,
            ls=ls,
            lw=1.4,
            ms=4.5,
            capsize=2.5,
            alpha=0.9,
        )
    all_d = sorted({d for m in methods for d in counts.get(m, {})})
    if all_d:
        ax.set_xticks(all_d)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("inference delay d (control steps of 50 ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), framealpha=0.9)


def success_vs_delay(
    counts: Mapping[str, Mapping[int, tuple[int, int]]],
    task: str,
    path: str | Path,
    methods: Sequence[str] | None = None,
    title_suffix: str = "",
) -> Path:
    """Plot ``counts[method][d] = (successes, n)`` for one task; writes ``path`` (PNG).

    Two panels: baselines and RTC; REMAC, A2C2, combinations and ablations (with naive and RTC
    repeated for reference). Error bars: 95 % Wilson intervals.
    """
    methods = list(methods) if methods is not None else list(counts)
    a = [m for m in methods if m in PANEL_A]
    b = [m for m in methods if m in PANEL_B_REF] + [m for m in methods if m not in PANEL_A]
    panels = [(a, "baselines and RTC"), (b, "REMAC, A2C2, combinations")]
    panels = [(ms, t) for ms, t in panels if ms]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), dpi=110, sharey=True, squeeze=False)
    for ax, (ms, title) in zip(axes[0], panels):
        _draw(ax, counts, ms)
        ax.set_title(title, fontsize=10)
    axes[0][0].set_ylabel("success rate (95% Wilson CI)")
    fig.suptitle(f"{task}: success vs inference delay{title_suffix}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
