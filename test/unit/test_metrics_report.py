"""``async-vla-ros report`` on a bag with the telemetry topics: the node-health table (share of
/diagnostics reports per level, most frequent breaches) and the command-loop section from
CommandMetrics, with known answers."""

from __future__ import annotations

import pytest

from async_vla_ros.bags import BagWriter, default_message
from async_vla_ros.eval.report import write_bag_report

pytest.importorskip("rosbags")
pytest.importorskip("matplotlib")
MS = 1_000_000


def _bag(path):
    with BagWriter(path) as w:
        w.add_topic("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray")
        w.add_topic("/correction/command_metrics", "async_vla_msgs/msg/CommandMetrics")
        for i in range(4):  # /scheduler: OK, WARN, ERROR, WARN; /policy: always OK
            lv = [0, 1, 2, 1][i]
            msg = {
                0: "ok",
                1: "latency_p95_s 0.3 > WARN limit 0.25",
                2: "latency_p95_s 0.6 > ERROR limit 0.5; hold_steps_per_s 2 > WARN limit 1",
            }[lv]
            st = [
                default_message("diagnostic_msgs/msg/DiagnosticStatus", name="/scheduler", level=lv, message=msg),
                default_message("diagnostic_msgs/msg/DiagnosticStatus", name="/policy", message="ok"),
            ]
            w.write(
                "/diagnostics",
                10**18 + i * 1000 * MS,
                default_message("diagnostic_msgs/msg/DiagnosticArray", status=st),
            )
        for k in range(100):  # every 4th tick rate-limited (bit 4), one clamped (bit 2); period error 0.1 ms or 1 ms
            flags = (4 if k % 4 == 0 else 0) | (2 if k == 50 else 0)
            w.write(
                "/correction/command_metrics",
                10**18 + k * 10 * MS,
                default_message(
                    "async_vla_msgs/msg/CommandMetrics",
                    tick=k + 1,
                    period_s=0.0101,
                    period_error_s=0.001 if k == 99 else 0.0001,
                    safety_flags=flags,
                    safety_deviation=0.002 * (k % 4 == 0),
                    hold=k < 3,
                ),
            )


def test_bag_report_has_health_and_command_loop_sections(tmp_path):
    bag = tmp_path / "bag"
    _bag(bag)
    md = write_bag_report(bag, tmp_path / "rep").read_text()
    assert "| /scheduler | 4 | 25 % | 50 % | 25 % | latency_p95_s (3), hold_steps_per_s (1) |" in md
    assert "| /policy | 4 | 100 % | 0 % | 0 % | - |" in md
    assert "100 commanding ticks; |period error| median 0.100 ms" in md and "max 1.000 ms" in md
    assert "3 ticks held the last target" in md
    assert "| rate limited | 25 | 25.0 % |" in md and "| position clamped | 1 | 1.0 % |" in md
    assert (tmp_path / "rep" / "command_loop.png").stat().st_size > 5000
