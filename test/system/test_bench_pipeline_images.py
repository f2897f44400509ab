"""`async-vla-ros bench pipeline --policy vla --image-sizes ...` end to end, short: the shipped VLA
with two cameras, two render sizes side by side, the latency split table and the overhead line."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("lerobot")

pytestmark = [pytest.mark.system, pytest.mark.slow]


def test_bench_pipeline_splits_the_latency_per_image_size(capsys):
    from async_vla_ros.cli import main

    rc = main(
        [
            "bench",
            "pipeline",
            "--policy",
            "vla",
            "--image-sizes",
            "64",
            "96",
            "--fifo",
            "off",
            "--duration",
            "3",
            "--warmup",
            "3",
        ]
    )
    cap = capsys.readouterr()
    out = cap.out
    assert rc == 0, out + cap.err
    assert "policy vla, control 20 Hz" in out and "images: scene,wrist 64 px; scene,wrist 96 px" in out
    table = out[out.index("obs -> chunk latency split") :].splitlines()
    assert "scene,wrist 64 px: median / p95 / p99 ms" in table[1] and "scene,wrist 96 px" in table[1]
    rows = {line.split(" (per ")[0]: line for line in table[2:] if " (per " in line}
    for stage in (  # measured from the first frame / chunk on (the policy's and scheduler's windows may
        # not be in a diagnostics message yet when a loaded machine serves the first chunk late)
        "image transport: sim stamp -> ingestion",
        "image decode + resize at ingestion",
        "ingestion: assemble + publish observation",
        "model (inference)",
        "scheduling: model end -> scheduler",
        "total: obs stamp -> chunk at scheduler",
        "overhead beyond the model",
    ):
        assert stage in rows and "n/a" not in rows[stage], rows.get(stage)
    assert "waiting at the policy: obs in -> model" in rows and "observation transport -> policy node" in rows
    over = next(line for line in table if line.startswith("overhead beyond the model (total"))
    assert "scene,wrist 64 px" in over and "scene,wrist 96 px" in over and "target median <= 3 ms" in over
