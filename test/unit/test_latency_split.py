"""The obs -> chunk latency split of `bench pipeline` (eval/latency_split.py): a pure function from
the scheduler's chunk reports and the nodes' /diagnostics values to the stage table; and the
graph's `camera_size` launch argument the benchmark's `--image-sizes` runs use."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from async_vla_ros.eval.latency_split import CHUNK_FIELDS, STAGES, chunk_columns, format_stage_table, stage_table


def _chunks(n=101):
    """Per-chunk report values (s) with known quantiles: obs_age 1..101 ms etc."""
    k = np.arange(n, dtype=np.float64)
    return {
        "obs_age_s": 1e-3 * (1 + k),  # request time - obs stamp
        "request_transport_s": np.full(n, 0.5e-3),
        "queue_s": np.full(n, 0.25e-3),
        "inference_s": np.full(n, 40e-3),
        "injected_delay_s": np.full(n, 10e-3),
        "transport_s": np.full(n, 0.75e-3),
        "total_latency_s": 1e-3 * (1 + k) + 0.5e-3 + 0.25e-3 + 40e-3 + 10e-3 + 0.75e-3,
    }


DIAGS = {
    "camera_ingestion": {
        "image_transport_median_s": 0.001,
        "image_transport_p95_s": 0.002,
        "image_transport_p99_s": 0.004,
        "image_prep_median_s": 0.0002,
        "image_prep_p95_s": 0.0003,
        "image_prep_p99_s": 0.0005,
        "obs_age_median_s": 0.0007,
        "obs_age_p95_s": 0.002,
        "obs_age_p99_s": 0.003,
        "ingest_median_s": 0.001,
        "ingest_p95_s": 0.002,
        "ingest_p99_s": 0.003,
        "obs_age_out_median_s": 0.0017,
        "obs_age_out_p95_s": 0.004,
        "obs_age_out_p99_s": 0.006,
        "cameras": "scene,wrist",  # strings and other keys are ignored
    },
    "policy": {
        "obs_age_in_median_s": 0.0025,
        "obs_age_in_p95_s": 0.005,
        "obs_age_in_p99_s": 0.009,
        "obs_wait_median_s": 0.0008,
        "obs_wait_p95_s": 0.003,
        "obs_wait_p99_s": 0.01,
    },
    "scheduler": {"merge_median_s": 0.0009, "merge_p95_s": 0.002, "merge_p99_s": float("nan")},
}


def test_stage_table_splits_reports_and_diagnostics():
    rows = {s.key: s for s in stage_table(_chunks(), DIAGS)}
    assert list(rows) == [key for key, *_ in STAGES]
    # per-chunk rows from the reports: exact quantiles over the chunks
    assert rows["model"].median_s == pytest.approx(0.040) and rows["model"].n == 101
    assert rows["injected"].p99_s == pytest.approx(0.010)
    assert rows["scheduling"].median_s == pytest.approx(0.75e-3)
    # obs stamp -> model start = obs_age + request transport + queue (median of 1..101 ms is 51 ms)
    assert rows["to_model"].median_s == pytest.approx(0.051 + 0.75e-3)
    assert rows["to_model"].p99_s == pytest.approx(0.100 + 0.75e-3)
    # total and the overhead beyond the model (total - model - injected)
    assert rows["total"].median_s == pytest.approx(0.051 + 0.0015 + 0.050)
    assert rows["overhead"].median_s == pytest.approx(0.051 + 0.0015)
    assert rows["overhead"].p95_s == pytest.approx(0.096 + 0.0015)
    # the nodes' own windows, taken as published
    assert (rows["image_transport"].median_s, rows["image_transport"].p95_s, rows["image_transport"].p99_s) == (
        0.001,
        0.002,
        0.004,
    )
    assert rows["state_transport"].p99_s == 0.003 and rows["ingestion"].median_s == 0.001
    assert rows["obs_wait"].p95_s == 0.003 and rows["at_policy"].median_s == 0.0025
    assert rows["merge"].median_s == 0.0009 and rows["merge"].p99_s is None  # NaN: not measured
    # observation transport: the policy's median obs age minus ingestion's at publish, median only
    ot = rows["obs_transport"]
    assert ot.median_s == pytest.approx(0.0008) and ot.p95_s is None and not ot.exact


def test_stage_table_without_images_or_chunks_says_not_measured():
    rows = {s.key: s for s in stage_table({f: [] for f in CHUNK_FIELDS}, {})}
    assert all(s.median_s is None for s in rows.values())
    assert rows["total"].n == 0
    text = format_stage_table({"no images": list(rows.values())})
    assert "n/a / n/a / n/a" in text and "~n/a / - / -" in text


def test_chunk_columns_reads_report_fields_and_table_puts_runs_side_by_side():
    reps = [SimpleNamespace(**{f: float(i) for f in CHUNK_FIELDS}) for i in range(3)]
    cols = chunk_columns(reps)
    assert set(cols) == set(CHUNK_FIELDS) and cols["inference_s"].tolist() == [0.0, 1.0, 2.0]
    a, b = stage_table(_chunks(), DIAGS), stage_table(_chunks(), {})
    text = format_stage_table({"scene,wrist 64 px": a, "scene,wrist 224 px": b})
    lines = text.splitlines()
    assert len(lines) == 1 + len(STAGES)
    assert "scene,wrist 64 px: median / p95 / p99 ms" in lines[0] and "224 px" in lines[0]
    img = next(line for line in lines if line.startswith("image transport"))
    assert "1.00 / 2.00 / 4.00" in img and img.rstrip().endswith("n/a / n/a / n/a")
    over = next(line for line in lines if line.startswith("overhead beyond the model"))
    assert "52.50 / 97.50 /" in over  # ms, both columns (same chunks)
    assert "~0.80 / - / -" in next(line for line in lines if line.startswith("observation transport"))


def test_camera_size_renders_at_the_driver_size_and_ingests_at_the_policys():
    from async_vla_ros.bringup.graph import GraphError, build_graph

    g = build_graph("franka", {"policy": "vla", "camera_size": "224"})
    sim, ing = g.node("sim").parameters, g.node("camera_ingestion").parameters
    assert sim["cameras"] == ["scene", "wrist"] and (sim["image_width"], sim["image_height"]) == (224, 224)
    assert ing["image_size"] == 64 and ing["camera_names"] == ["scene", "wrist"]
    g0 = build_graph("franka", {"policy": "vla"})
    assert g0.node("sim").parameters["image_width"] == 64
    # a state policy renders nothing, whatever the size
    assert "cameras" not in build_graph("franka", {"policy": "expert", "camera_size": "224"}).node("sim").parameters
    with pytest.raises(GraphError, match="camera_size"):
        build_graph("franka", {"policy": "vla", "camera_size": "8"})
    with pytest.raises(GraphError, match="camera_size"):
        build_graph("franka", {"policy": "vla", "camera_size": "1000"})


def test_a_request_sent_ahead_and_an_in_process_handover():
    """With the default graph (requests sent one step ahead, camera_ingestion in the policy's
    process) the report's observation age is 0 and the queue holds the wait for the observation;
    obs stamp -> model start still comes out right, and the transport row says there is none."""
    n = 11
    to_model = 1e-3 * (1 + np.arange(n))  # obs stamp -> model start, 1..11 ms
    chunks = {
        "obs_age_s": np.zeros(n),  # sent ahead
        "request_transport_s": np.full(n, 0.5e-3),
        "queue_s": 0.050 + to_model,  # waiting for the observation, then for the model
        "inference_s": np.full(n, 40e-3),
        "injected_delay_s": np.zeros(n),
        "transport_s": np.full(n, 0.75e-3),
        "total_latency_s": to_model + 40e-3 + 0.75e-3,
    }
    diags = {**DIAGS, "policy": {**DIAGS["policy"], "observation_source": "in-process"}}
    rows = {s.key: s for s in stage_table(chunks, diags)}
    assert rows["to_model"].median_s == pytest.approx(6e-3)
    assert rows["overhead"].median_s == pytest.approx(6e-3 + 0.75e-3)
    ot = rows["obs_transport"]
    assert ot.median_s is None and ot.note == "in process, no DDS"
    text = format_stage_table({"fewest": list(rows.values())})
    assert "in process, no DDS" in next(line for line in text.splitlines() if line.startswith("observation transport"))
