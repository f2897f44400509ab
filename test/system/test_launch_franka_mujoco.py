"""launch_testing: `franka.launch.py sim:=mujoco` through the real ROS 2 launch service, the way
ros2/examples tests its launch files (``generate_test_description`` + unittest cases, run while
the launch runs, + post-shutdown checks of every process's exit status).

The launch file is taken from the package's share folder (the install-space layout `make setup`
gives the venv). While the graph runs: chunks merge and commands flow within the limits of the
correction node's safety filter; the ROS CLI sees the graph: `ros2 node list` lists all five
nodes, `ros2 topic hz /scheduler/chunk_report` reads a rate between one chunk per horizon and one
per control step, `ros2 param set` refuses a bad value with its reason and takes a valid one, which
then shows in the measured chunk latency. At shutdown launch sends SIGINT to every process: each
must exit with status 0.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing", reason="ROS 2 launch tools not installed (make setup with their sources)")
pytest.importorskip("mujoco")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription, SetLaunchConfiguration  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from ros_cli import Probe, node_list, ros2, topic_hz, wait_for  # noqa: E402

from async_vla_ros.bringup.graph import build_graph  # noqa: E402
from async_vla_ros.core.safety import ROBOT_LIMITS  # noqa: E402
from async_vla_ros.eval.stream_check import NS, check_command_stream  # noqa: E402
from launch import LaunchDescription  # noqa: E402

ARGS = {"sim": "mujoco", "policy": "expert", "method": "rtc", "task": "track", "fifo": "false"}
GRAPH = build_graph("franka", ARGS)
SCHED = GRAPH.node("scheduler").parameters
CONTROL_HZ = 1.0 / SCHED["dt"]
HORIZON = int(SCHED["horizon"])
COMMAND_HZ = GRAPH.node("correction").parameters["rate_hz"]
LIMITS = ROBOT_LIMITS[GRAPH.node("correction").parameters["robot"]]
START_S = 120.0  # first chunks: process start, model warm-up, sim settle (loaded 2-core machine)
SIGTERM_TIMEOUT_S = "30"


@pytest.mark.launch_test
@pytest.mark.system
@pytest.mark.slow
def generate_test_description():
    launch_file = Path(get_package_share_directory("async_vla_ros")) / "launch" / "franka.launch.py"
    return LaunchDescription(
        [
            # launch's grace between its SIGINT and a SIGTERM (default 5 s): on this 2-core machine
            # under load a node's clean exit took longer (every node exceeded 5 s once, load ~15)
            SetLaunchConfiguration("sigterm_timeout", SIGTERM_TIMEOUT_S),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)), launch_arguments=ARGS.items()),
            launch_testing.actions.ReadyToTest(),
        ]
    )


class TestGraphRuns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.probe = Probe()

    @classmethod
    def tearDownClass(cls):
        cls.probe.stop()

    def test_1_chunks_merge_and_commands_flow(self):
        p = self.probe
        ok = wait_for(lambda: len(p.accepted()) >= 20 and p.node.n_commands() >= 200, START_S)
        self.assertTrue(ok, f"{len(p.accepted())} chunks merged, {p.node.n_commands()} commands in {START_S} s")
        t, q, seq = p.node.commands()
        check = check_command_stream(t, q, 1.0 / COMMAND_HZ, LIMITS, p.node.segment_starts(), seq=seq)
        self.assertTrue(check.ok, check.violations)

    def test_2_node_list_shows_every_node(self):
        names = node_list()
        for node in GRAPH.nodes:
            self.assertIn(f"/{node.name}", names)

    def test_3_topic_hz_of_chunk_reports(self):
        t0 = self.probe.node.now()
        rates, out = topic_hz("/scheduler/chunk_report")
        self.assertGreaterEqual(len(rates), 2, out)
        # at most one chunk per control step, at least one per horizon (else the plan runs dry)
        lo, hi = CONTROL_HZ / HORIZON, CONTROL_HZ * 1.1
        self.assertTrue(lo <= rates[-1] <= hi, f"{rates[-1]} Hz not in [{lo}, {hi}]:\n{out}")
        # ... because there is at most one request per observation (requests are sent ahead of it)
        obs_ids = [r[2] for r in self.probe.node.requests_since(t0)]
        self.assertGreater(len(obs_ids), 10)
        self.assertEqual(len(obs_ids), len(set(obs_ids)), sorted(obs_ids))

    def test_4_param_set_refused_then_valid_change_takes_effect(self):
        bad = ros2("param", "set", "--no-daemon", "--spin-time", "5", "/policy", "injected_latency_s", "-1.0")
        self.assertIn("Setting parameter failed", bad.stdout)
        self.assertIn(">= 0.0", bad.stdout)  # the reason: the declared range
        got = ros2("param", "get", "--no-daemon", "--spin-time", "5", "/policy", "injected_latency_s")
        self.assertIn("0.0", got.stdout)
        good = ros2("param", "set", "--no-daemon", "--spin-time", "5", "/policy", "injected_latency_s", "0.15")
        self.assertIn("Set parameter successful", good.stdout)
        t0 = self.probe.node.now()
        slow = wait_for(lambda: any(r[4] >= 0.15 for r in self.probe.accepted(t0)), 30.0)
        back = ros2("param", "set", "--no-daemon", "--spin-time", "5", "/policy", "injected_latency_s", "0.0")
        self.assertTrue(slow, "no chunk with the injected latency merged within 30 s")
        self.assertIn("Set parameter successful", back.stdout)
        late = [r[4] for r in self.probe.accepted(t0 + NS)]
        self.assertTrue(late and np.max(late) < 5.0)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_every_process_exited_zero(self, proc_info):
        started = {name.rsplit("-", 1)[0] for name in proc_info.process_names()}
        self.assertEqual(started, {n.executable for n in GRAPH.nodes})
        launch_testing.asserts.assertExitCodes(proc_info)  # SIGINT from launch -> status 0
