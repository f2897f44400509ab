"""The observation -> chunk latency of a graph run, split into stages (``bench pipeline``).

Pure (numpy, no rclpy): what the nodes measured themselves goes in, a table comes out. Two sources:

* per accepted chunk, the scheduler's ``ChunkReport`` fields (``chunk_columns``): total latency
  (arrival at the scheduler - observation stamp), model time, injected delay, the chunk's way back
  (model end -> arrival at the scheduler), and the observation's age when the model started
  (total - model - injected - the chunk's way back);
* the stages no report carries, as each node's rolling median / p95 / p99 in /diagnostics
  (``<stage>_median_s`` / ``_p95_s`` / ``_p99_s``, last 400 samples of the node):
  camera_ingestion ``image_transport`` (an image's stamp at the sim -> its callback), ``image_prep``
  (decode + resize), ``obs_age`` (the state's stamp -> assembly starts), ``ingest`` (assembly ->
  published), ``obs_age_out`` (the state's stamp -> published); policy ``obs_age_in`` (the state's
  stamp -> its callback at the policy) and ``obs_wait`` (callback -> the model starts on it; a
  request sent ahead of its observation is already waiting);
  scheduler ``merge`` (arrival -> plan published, after the total).

With camera_ingestion in the policy's process (``compose``, the default graph) the observation is
handed over by a call, and its transport row says so. Otherwise, observation transport (ingestion
-> policy) is the one stage no node times alone (the publisher's
source timestamp would say, but rclpy's EventsExecutor cannot hand it to a callback): its median is
the difference of the policy's and camera_ingestion's median observation ages (p95 / p99 "-"), the
cumulative "obs stamp -> policy callback" row beside it is exact. The stages of the observation's
way (state transport, ingestion, observation transport, waiting) follow each other, so their
medians add up to about the per-chunk "obs stamp -> model start" row; medians of different sample
sets never add up exactly. Images take their own way into ingestion (image transport, decode +
resize) and wait there for the next observation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Stage", "STAGES", "CHUNK_FIELDS", "chunk_columns", "stage_table", "format_stage_table"]

# ChunkReport fields the split reads
CHUNK_FIELDS = (
    "total_latency_s",
    "inference_s",
    "injected_delay_s",
    "obs_age_s",
    "request_transport_s",
    "queue_s",
    "transport_s",
)

# (key, label, per what, source): source is ("diag", node, metric), ("chunk", expression key) or
# ("diff", node, metric, node, metric): median of the first minus median of the second
STAGES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "image_transport",
        "image transport: sim stamp -> ingestion",
        "frame",
        ("diag", "camera_ingestion", "image_transport"),
    ),
    ("image_prep", "image decode + resize at ingestion", "frame", ("diag", "camera_ingestion", "image_prep")),
    ("state_transport", "state transport: sim stamp -> ingestion", "obs", ("diag", "camera_ingestion", "obs_age")),
    ("ingestion", "ingestion: assemble + publish observation", "obs", ("diag", "camera_ingestion", "ingest")),
    (
        "obs_transport",
        "observation transport -> policy node",
        "obs",
        ("diff", "policy", "obs_age_in", "camera_ingestion", "obs_age_out"),
    ),
    ("at_policy", "= obs stamp -> policy callback", "obs", ("diag", "policy", "obs_age_in")),
    ("obs_wait", "waiting at the policy: obs in -> model", "chunk", ("diag", "policy", "obs_wait")),
    ("to_model", "= obs stamp -> model start", "chunk", ("chunk", "to_model")),
    ("model", "model (inference)", "chunk", ("chunk", "model")),
    ("injected", "injected delay", "chunk", ("chunk", "injected")),
    ("scheduling", "scheduling: model end -> scheduler", "chunk", ("chunk", "scheduling")),
    ("merge", "merge: arrival -> plan out (after total)", "chunk", ("diag", "scheduler", "merge")),
    ("total", "total: obs stamp -> chunk at scheduler", "chunk", ("chunk", "total")),
    ("overhead", "overhead beyond the model", "chunk", ("chunk", "overhead")),
)


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    per: str  # frame | obs | chunk: what one sample is
    median_s: float | None  # None: not measured in this run (e.g. no camera)
    p95_s: float | None
    p99_s: float | None
    n: int | None = None  # samples, for the per-chunk rows (the diagnostics windows do not say)
    exact: bool = True  # False: a difference of two medians (no p95 / p99)
    note: str = ""  # shown instead of the figures (e.g. a stage this graph layout does not have)


def chunk_columns(reports: Iterable[Any]) -> dict[str, np.ndarray]:
    """``CHUNK_FIELDS`` of ChunkReport-like objects (attributes) as arrays."""
    reps = list(reports)
    return {f: np.array([float(getattr(r, f)) for r in reps], dtype=np.float64) for f in CHUNK_FIELDS}


def _derived(c: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    col = {k: np.asarray(c[k], dtype=np.float64) for k in CHUNK_FIELDS}
    return {
        # observation stamp -> model start: everything before the model (total - model - injected -
        # the chunk's way back); the same as obs age + request transport + queue for a request sent
        # after its observation, and also right for one sent ahead (its observation age is 0)
        "to_model": col["total_latency_s"] - col["inference_s"] - col["injected_delay_s"] - col["transport_s"],
        "model": col["inference_s"],
        "injected": col["injected_delay_s"],
        "scheduling": col["transport_s"],
        "total": col["total_latency_s"],
        "overhead": col["total_latency_s"] - col["inference_s"] - col["injected_delay_s"],
    }


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def stage_table(chunks: Mapping[str, Sequence[float]], diags: Mapping[str, Mapping[str, Any]]) -> list[Stage]:
    """One :class:`Stage` per row of ``STAGES``. ``chunks``: ``CHUNK_FIELDS`` -> per-chunk values
    (s) of accepted chunks; ``diags``: short node name -> its /diagnostics values."""
    derived = _derived(chunks)
    rows = []
    for key, label, per, src in STAGES:
        if src[0] == "chunk":
            a = derived[src[1]]
            a = a[np.isfinite(a)]
            if a.size:
                med, p95, p99 = (float(x) for x in np.quantile(a, (0.5, 0.95, 0.99)))
                rows.append(Stage(key, label, per, med, p95, p99, int(a.size)))
            else:
                rows.append(Stage(key, label, per, None, None, None, 0))
        elif key == "obs_transport" and diags.get("policy", {}).get("observation_source") == "in-process":
            # camera_ingestion runs in the policy's process and hands the observation over: no transport
            rows.append(Stage(key, label, per, None, None, None, exact=False, note="in process, no DDS"))
        elif src[0] == "diff":
            a, b = (_num(diags.get(node, {}).get(f"{m}_median_s")) for node, m in (src[1:3], src[3:5]))
            rows.append(Stage(key, label, per, None if a is None or b is None else a - b, None, None, exact=False))
        else:
            d = diags.get(src[1], {})
            name = src[2]
            rows.append(
                Stage(
                    key,
                    label,
                    per,
                    _num(d.get(f"{name}_median_s")),
                    _num(d.get(f"{name}_p95_s")),
                    _num(d.get(f"{name}_p99_s")),
                )
            )
    return rows


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1e3 * x:.2f}"


def _cell(s: Stage) -> str:
    if s.note:
        return s.note
    if not s.exact:
        return f"~{_ms(s.median_s)} / - / -"
    return f"{_ms(s.median_s)} / {_ms(s.p95_s)} / {_ms(s.p99_s)}"


def format_stage_table(columns: Mapping[str, Sequence[Stage]], title: str = "stage") -> str:
    """Columns side by side (e.g. ``{"64 px": rows, "224 px": rows}``): median / p95 / p99 in ms."""
    names = list(columns)
    width = max(len(label) for _, label, _, _ in STAGES) + len(" (per chunk)")
    cells = {name: {s.key: _cell(s) for s in columns[name]} for name in names}
    cw = max([len(f"{n}: median / p95 / p99 ms") for n in names] + [len(v) for c in cells.values() for v in c.values()])
    lines = [f"{title:{width}s}  " + "  ".join(f"{n + ': median / p95 / p99 ms':>{cw}s}" for n in names)]
    for key, label, per, _ in STAGES:
        lines.append(f"{label + f' (per {per})':{width}s}  " + "  ".join(f"{cells[n][key]:>{cw}s}" for n in names))
    return "\n".join(lines)
