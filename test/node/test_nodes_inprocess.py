"""In-process node tests: each node built with ``parameter_overrides``, driven by a helper node.

Waits are on received data (or matched endpoints) with deadlines, never fixed sleeps. The ROS
environment (localhost discovery, a domain per test session) comes from test/conftest.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from async_vla_msgs.msg import ActionChunk, ActionPlan, ChunkRequest, Observation  # noqa: E402
from async_vla_ros.nodes.camera_ingestion import CameraIngestionNode  # noqa: E402
from async_vla_ros.nodes.common import NS_PER_S, build_node, ns_to_stamp, stamp_to_ns  # noqa: E402
from async_vla_ros.nodes.correction_node import CorrectionNode  # noqa: E402
from async_vla_ros.nodes.params import ParamError  # noqa: E402
from async_vla_ros.nodes.policy_node import PolicyNode  # noqa: E402
from async_vla_ros.nodes.scheduler_node import SchedulerNode  # noqa: E402

pytestmark = pytest.mark.ros
P = Parameter
ARM = [f"fr3_joint{i}" for i in range(1, 8)]
Q0 = np.array([0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785])
OBS_DIM = 24  # track: q, qd, gripper, tcp, target pos, target vel


@pytest.fixture(scope="module", autouse=True)
def ros_context():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture()
def run():
    """Spin given nodes until ``cond()`` holds (deadline); destroys them afterwards."""
    made: list[Node] = []
    ex = SingleThreadedExecutor()

    def spin_until(cond, timeout: float = 10.0, *nodes: Node) -> bool:
        for n in nodes:
            if n not in made:
                made.append(n)
                ex.add_node(n)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            ex.spin_once(timeout_sec=0.02)
        return cond()

    yield spin_until
    for n in made:
        getattr(n, "close", lambda: None)()
        ex.remove_node(n)
        n.destroy_node()


def _obs_msg(node: Node, obs_id: int, state: np.ndarray, episode: int = 1) -> Observation:
    m = Observation()
    m.header.stamp = node.get_clock().now().to_msg()
    m.obs_id = obs_id
    m.episode_id = episode
    m.task = "track"
    m.state_dim = state.size
    m.state = state.tolist()
    return m


def _track_state(node: Node) -> np.ndarray:
    """A plausible track observation: arm at Q0 at rest, target at the current TCP."""
    from async_vla_ros.sim.kinematics import fk

    tcp = fk(Q0[None])[0][0]
    return np.concatenate([Q0, np.zeros(7), [0.0], tcp, tcp + [0.02, 0.0, 0.0], [0.1, 0.0, 0.0]])


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "cls, overrides, needle",
    [
        (SchedulerNode, [P("strategy", value="rtx")], "did you mean 'rtc'"),
        (SchedulerNode, [P("dt", value=-0.05)], "dt: must be >= 0.001"),
        (SchedulerNode, [P("horizon", value=4), P("s_min", value=6)], "s_min (6) must be <= horizon (4)"),
        (CorrectionNode, [P("rate_hz", value=5.0)], "rate_hz: must be >= 10.0"),
        (CorrectionNode, [P("interpolation", value="cubic")], "interpolation: must be one of linear, hold"),
        (PolicyNode, [P("policy", value="exprt")], "did you mean 'expert'"),
        (PolicyNode, [P("policy", value="expert"), P("injected_latency_s", value="0.1")], "injected_latency_s"),
        (CameraIngestionNode, [P("joint_state_reliability", value="sometimes")], "joint_state_reliability"),
        (CameraIngestionNode, [P("arm_joint_names", value=["a", "b"])], "7 joints"),
        (CameraIngestionNode, [P("camera_names", value=["scene", "scene"])], "duplicate names"),
    ],
)
def test_bad_parameters_fail_at_start_with_a_clear_message(cls, overrides, needle):
    with pytest.raises((ParamError, ValueError)) as exc:
        build_node(cls, parameter_overrides=overrides)  # destroys the half-built node
    assert needle in str(exc.value)


def test_flow_backend_missing_checkpoint_is_a_clear_error(tmp_path):
    from async_vla_ros.policy.registry import BackendError, checkpoint_file

    with pytest.raises(BackendError, match="pass a checkpoint path"):
        checkpoint_file("track", "base", tmp_path)
    with pytest.raises(BackendError, match="no such checkpoint file"):
        build_node(PolicyNode, parameter_overrides=[P("policy", value=str(tmp_path / "nope.pt"))])


def test_node_executable_exits_2_on_bad_parameter():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "async_vla_ros.nodes.scheduler_node",
            "--ros-args",
            "-p",
            "strategy:=rtx",
            "-p",
            "horizon:=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "did you mean 'rtc'" in out.stderr and "horizon: must be >= 1" in out.stderr
    assert "Traceback" not in out.stderr


_STARTING_NODE = """
import os, signal, sys, time
from async_vla_ros.nodes.common import run_node

def factory():  # a node still importing a C extension when the launcher stops the graph
    if sys.argv[1] == "signal":
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2.0)
        except KeyboardInterrupt:
            pass  # what an extension's init does with it: it fails differently
    raise ImportError("initialization failed")

raise SystemExit(run_node(factory, sys.argv[:1]))
"""


@pytest.mark.parametrize("how, code", [("signal", 0), ("plain", 1)])
def test_node_stopped_while_starting_exits_cleanly_but_real_start_errors_do_not(how, code):
    out = subprocess.run([sys.executable, "-c", _STARTING_NODE, how], capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stderr
    assert ("ImportError: initialization failed" in out.stderr) == (how == "plain"), out.stderr


# ---------------------------------------------------------------------- policy node
class Client(Node):
    def __init__(self):
        super().__init__("test_client")
        self.chunks: list[ActionChunk] = []
        self.pub_obs = self.create_publisher(Observation, "observation", 10)
        self.pub_req = self.create_publisher(ChunkRequest, "policy/chunk_request", 10)
        self.create_subscription(ActionChunk, "policy/action_chunk", self.chunks.append, 10)

    def request(
        self, rid: int, method: str, obs_id: int, prefix=None, weights=None, n_frozen=0, h=8, a=8, beta=0.0, after=0
    ):
        m = ChunkRequest()
        m.guidance_beta = float(beta)
        m.header.stamp = self.get_clock().now().to_msg()
        m.request_id, m.episode_id, m.obs_id, m.sampler = rid, 1, obs_id, method
        if after:  # sent ahead: the observation stamped in [after, after + dt)
            m.obs_after = ns_to_stamp(after)
        m.horizon, m.action_dim, m.dt, m.n_frozen = h, a, 0.05, n_frozen
        m.prefix = [] if prefix is None else np.asarray(prefix).reshape(-1).tolist()
        m.weights = [] if weights is None else list(weights)
        m.seed = 7
        self.pub_req.publish(m)


def _ready(client: Client, policy: PolicyNode):
    return lambda: (
        client.pub_req.get_subscription_count() > 0
        and client.pub_obs.get_subscription_count() > 0
        and policy.pub.get_subscription_count() > 0
    )


def test_shutting_down_waits_for_a_stop_already_under_way():
    """A node that sees an executor/publisher error asks ``shutting_down``: a context being shut
    down (rclpy's signal thread) counts as a clean stop, a context that stays up as a real error."""
    import threading

    from async_vla_ros.nodes.common import shutting_down

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        assert not shutting_down(ctx, wait_s=0.05)  # stays up: a real error
        threading.Timer(0.15, ctx.shutdown).start()  # the signal thread, a moment later
        t0 = time.monotonic()
        assert shutting_down(ctx, wait_s=5.0)
        assert time.monotonic() - t0 < 4.0  # returned when the stop landed, not at the deadline
        assert shutting_down(ctx, wait_s=0.0)
    finally:
        ctx.try_shutdown()


def test_policy_node_expert_serves_requests_and_rejects_bad_ones(run):
    policy = PolicyNode(parameter_overrides=[P("policy", value="expert"), P("task", value="track")])
    client = Client()
    assert run(_ready(client, policy), 10.0, policy, client)
    state = _track_state(client)
    obs = _obs_msg(client, 1, state)
    client.pub_obs.publish(obs)
    bad = _obs_msg(client, 2, np.zeros(5))  # wrong obs_dim: dropped, counted
    client.pub_obs.publish(bad)
    prefix = np.tile(np.concatenate([Q0, [0.0]]), (8, 1))
    weights = np.r_[np.ones(2), np.zeros(6)]
    client.request(1, "rtc", 1, prefix, weights)
    assert run(lambda: len(client.chunks) >= 1, 10.0)
    c = client.chunks[0]
    assert c.error_code == ActionChunk.ERROR_NONE, c.error_message
    assert (c.request_id, c.obs_id, c.episode_id, c.sampler, c.horizon, c.action_dim) == (1, 1, 1, "rtc", 8, 8)
    acts = np.asarray(c.actions).reshape(8, 8)
    np.testing.assert_allclose(acts[:2], prefix[:2], atol=1e-12)  # weight-1 rows follow the prefix (expert blend)
    assert stamp_to_ns(c.header.stamp) == stamp_to_ns(obs.header.stamp)
    assert c.timing.inference_s > 0 and c.timing.queue_s >= 0
    assert stamp_to_ns(c.timing.inference_end) >= stamp_to_ns(c.timing.inference_start)
    # invalid requests are answered with an error chunk, never silently dropped
    client.request(2, "magic", 1)
    client.request(3, "vanilla", 1, h=4)
    assert run(lambda: len(client.chunks) >= 3, 10.0)
    errs = {ch.request_id: ch for ch in client.chunks[1:]}
    assert errs[2].error_code == ActionChunk.ERROR_INVALID_REQUEST and "magic" in errs[2].error_message
    assert errs[3].error_code == ActionChunk.ERROR_INVALID_REQUEST and "H=4" in errs[3].error_message
    assert len(errs[2].actions) == 0
    # a stale request id (not newer) is dropped and counted
    client.request(3, "vanilla", 1)
    assert run(lambda: policy.drops.as_dict().get("request.stale_id", 0) == 1, 5.0)
    assert run(lambda: policy.drops.as_dict().get("observation.bad_shape", 0) == 1, 5.0)


def test_policy_node_serves_a_request_sent_ahead_on_the_observation_it_names(run):
    policy = PolicyNode(parameter_overrides=[P("policy", value="expert"), P("obs_wait_s", value=0.02)])
    client = Client()
    assert run(_ready(client, policy), 10.0, policy, client)
    state = _track_state(client)
    dt = 50_000_000

    def obs_at(obs_id, stamp_ns):
        m = _obs_msg(client, obs_id, state)
        m.header.stamp = ns_to_stamp(stamp_ns)
        client.pub_obs.publish(m)

    # the request arrives first (naming observation 2, after observation 1) and waits for it
    t = client.get_clock().now().nanoseconds
    obs_at(1, t)
    client.request(1, "vanilla", 2, after=t)
    assert run(lambda: policy._last_request_id == 1, 5.0)  # the request was taken: it waits in the worker
    obs_at(2, t + dt)
    assert run(lambda: len(client.chunks) >= 1, 10.0)
    c = client.chunks[0]
    assert c.error_code == ActionChunk.ERROR_NONE, c.error_message
    assert c.obs_id == 2 and stamp_to_ns(c.header.stamp) == t + dt
    # a later observation came instead of the named one: answered, not served from another step
    client.request(2, "vanilla", 3, after=t + dt)
    obs_at(4, t + 2 * dt)
    assert run(lambda: len(client.chunks) >= 2, 10.0)
    c = client.chunks[1]
    assert c.error_code == ActionChunk.ERROR_NO_OBSERVATION and "was not received" in c.error_message
    # nothing arrives at all: answered after dt + obs_wait_s
    now = client.get_clock().now().nanoseconds
    client.request(3, "vanilla", 5, after=now)
    assert run(lambda: len(client.chunks) >= 3, 10.0)
    assert client.chunks[2].error_code == ActionChunk.ERROR_NO_OBSERVATION
    assert "did not arrive" in client.chunks[2].error_message
    # sent ahead without naming its observation: not a valid request
    client.request(4, "vanilla", 0, after=now)
    assert run(lambda: len(client.chunks) >= 4, 10.0)
    c = client.chunks[3]
    assert c.error_code == ActionChunk.ERROR_INVALID_REQUEST and "must name" in c.error_message


def test_policy_node_flow_checkpoint_rtc_with_injected_latency(run, tmp_path):
    from async_vla_ros.policy.base import make_flow_backend
    from async_vla_ros.policy.networks import FlowNetConfig

    cfg = FlowNetConfig(
        obs_dim=OBS_DIM, action_dim=8, horizon=8, hidden=32, channel_hidden=32, token_hidden=8, depth=1, obs_hidden=32
    )
    ckpt = make_flow_backend(cfg, init_seed=1, task="track").save(tmp_path / "random_flow.pt")
    policy = PolicyNode(
        parameter_overrides=[
            P("policy", value=str(ckpt)),
            P("injected_latency_s", value=0.05),
            P("n_steps", value=3),
            # one observation serves both requests: at load ~8 the second one started 2.6 s after it
            # (the test is about latency injection and the samplers, not about the staleness limit)
            P("max_obs_age_s", value=30.0),
        ]
    )
    client = Client()
    assert run(_ready(client, policy), 10.0, policy, client)
    client.pub_obs.publish(_obs_msg(client, 1, _track_state(client)))
    prefix = np.tile(np.concatenate([Q0, [0.04]]), (8, 1))
    client.request(1, "rtc", 1, prefix, np.r_[np.ones(3), 0.5, np.zeros(4)])
    client.request(2, "prefix", 1, prefix, None, n_frozen=3)
    assert run(lambda: len(client.chunks) >= 2, 15.0)
    by_id = {c.request_id: c for c in client.chunks}
    for rid, method in ((1, "rtc"), (2, "prefix")):
        c = by_id[rid]
        if c.error_code == ActionChunk.ERROR_STALE_REQUEST:
            continue  # request 2 may supersede request 1 while 1 waits: answered as stale
        assert c.error_code == ActionChunk.ERROR_NONE, c.error_message
        assert c.sampler == method and c.timing.injected_delay_s == pytest.approx(0.05)
        assert np.all(np.isfinite(c.actions)) and len(c.actions) == 64
    c2 = by_id[2]
    assert c2.error_code == ActionChunk.ERROR_NONE
    np.testing.assert_allclose(np.asarray(c2.actions).reshape(8, 8)[:3], prefix[:3], atol=1e-5)  # frozen prefix
    assert policy.policy_name.startswith("flow/track")


def test_policy_node_applies_each_requests_guidance_beta(run, tmp_path):
    """One loaded policy, the clip per request: a ChunkRequest's guidance_beta reaches the sampler
    (the chunk equals the backend's own infer at that beta), 0 means the policy's default, and two
    betas on the same observation and seed give different chunks."""
    from async_vla_ros.policy.base import load_policy, make_flow_backend
    from async_vla_ros.policy.networks import FlowNetConfig

    cfg = FlowNetConfig(
        obs_dim=OBS_DIM, action_dim=8, horizon=8, hidden=32, channel_hidden=32, token_hidden=8, depth=1, obs_hidden=32
    )
    ckpt = make_flow_backend(cfg, init_seed=3, task="track").save(tmp_path / "random_flow.pt")
    policy = PolicyNode(parameter_overrides=[P("policy", value=str(ckpt)), P("guidance_beta", value=2.0)])
    client = Client()
    assert run(_ready(client, policy), 10.0, policy, client)
    state = _track_state(client)
    client.pub_obs.publish(_obs_msg(client, 1, state))
    prefix = np.tile(np.concatenate([Q0, [0.04]]), (8, 1)) + 0.3
    weights = np.r_[np.ones(3), 0.5, 0.25, np.zeros(3)]
    ref = load_policy(ckpt)
    got = {}
    for rid, (sampler, beta) in enumerate((("rtc", 0.5), ("rtc", 20.0), ("rtc_jf", 0.5), ("rtc", 0.0)), start=1):
        client.request(rid, sampler, 1, prefix, weights, beta=beta)  # one at a time: none superseded
        assert run(lambda rid=rid: any(c.request_id == rid for c in client.chunks), 15.0)
        c = next(c for c in client.chunks if c.request_id == rid)
        assert c.error_code == ActionChunk.ERROR_NONE, c.error_message
        got[rid] = np.asarray(c.actions).reshape(8, 8)
        # guidance_beta 0: the node's load-time clip (its guidance_beta parameter, 2.0; the file says 5)
        want = ref.infer(
            state[None], sampler, prefix=prefix[None], weights=weights[None], seed=7, beta=beta if beta > 0 else 2.0
        )[0]
        np.testing.assert_allclose(got[rid], want, atol=1e-6, err_msg=f"request {rid}: {sampler} beta {beta}")
    assert np.abs(got[1] - got[2]).max() > 1e-3  # the clip changed the chunk: it was applied
    assert (
        ref.settings.beta == 5.0
        and np.abs(got[4] - ref.infer(state[None], "rtc", prefix=prefix[None], weights=weights[None], seed=7)[0]).max()
        > 1e-3
    )
    assert policy.drops.as_dict().get("request.guidance_beta_not_applied", 0) == 0


# ---------------------------------------------------------------------- scheduler -> policy -> correction
class Robot(Node):
    """Stands in for the sim + ingestion: observations and joint states at 20 Hz, records commands."""

    def __init__(self):
        super().__init__("test_robot")
        self.commands: list[JointTrajectory] = []
        self.plans: list[ActionPlan] = []
        self.pub_obs = self.create_publisher(Observation, "observation", 10)
        self.pub_js = self.create_publisher(JointState, "joint_states", 10)
        self.create_subscription(JointTrajectory, "fr3_arm_controller/joint_trajectory", self.commands.append, 10)
        self.create_subscription(ActionPlan, "scheduler/action_plan", self.plans.append, 10)
        self.obs_id = 0
        self.episode = 1
        self.state = _track_state(self)
        self.segments: list[int] = []  # stamps (ns) of the correction node's filter restarts
        self.create_subscription(
            Header,
            "correction/command_segment",
            lambda m: self.segments.append(m.stamp.sec * 10**9 + m.stamp.nanosec),
            10,
        )
        self.create_timer(0.05, self.tick)

    def tick(self):
        js = JointState()
        js.header.stamp = self.get_clock().now().to_msg()
        js.name = ARM + ["fr3_finger_joint1"]
        js.position = Q0.tolist() + [0.0]
        self.pub_js.publish(js)
        self.obs_id += 1
        self.pub_obs.publish(_obs_msg(self, self.obs_id, self.state, self.episode))


def test_scheduler_policy_correction_chain(run):
    policy = PolicyNode(parameter_overrides=[P("policy", value="expert")])
    sched = SchedulerNode(parameter_overrides=[P("strategy", value="rtc")])
    corr = CorrectionNode(
        parameter_overrides=[P("robot", value="panda"), P("sched_fifo_priority", value=0), P("rate_hz", value=100.0)]
    )
    robot = Robot()
    assert run(lambda: len(robot.commands) >= 20 and len(sched.arrivals) >= 3, 20.0, policy, sched, corr, robot)
    st = sched.sched.stats()
    assert st["accepted"] >= 3 and st["rejected"] == {}
    assert any(p.length > 0 for p in robot.plans)
    plan = next(p for p in reversed(robot.plans) if p.length > 0)
    assert plan.merge_strategy == "rtc" and plan.episode_id == 1 and len(plan.chunk_ids) == plan.length
    cmd = robot.commands[-1]
    assert cmd.joint_names == ARM + ["fr3_finger_joint1"]
    q = np.asarray(cmd.points[0].positions[:7])
    assert np.all(np.isfinite(q)) and np.max(np.abs(q - Q0)) < 0.5  # the expert reaches just ahead of the arm
    # measured latencies are sane: positive, well under a second on loopback
    lat = [a[1] for a in sched.arrivals]
    assert 0 < np.median(lat) < 0.5
    # every command went through the safety filter
    assert corr.safety.counts["ticks"] >= len(robot.commands)
    # a new episode resets the scheduler and drops the old plan in the correction node
    n_req = st["requests"]
    robot.episode = 2
    assert run(lambda: sched.episode_id == 2 and corr.episode_id == 2 and sched.sched.stats()["requests"] > n_req, 10.0)


@pytest.mark.parametrize("ahead", [True, False])
def test_the_scheduler_sends_requests_one_step_ahead_of_their_observation(run, ahead):
    policy = PolicyNode(parameter_overrides=[P("policy", value="expert")])
    sched = SchedulerNode(parameter_overrides=[P("strategy", value="rtc"), P("request_ahead", value=ahead)])
    robot = Robot()
    requests: list[ChunkRequest] = []
    chunks: list[ActionChunk] = []
    robot.create_subscription(ChunkRequest, "policy/chunk_request", requests.append, 10)
    robot.create_subscription(ActionChunk, "policy/action_chunk", chunks.append, 10)
    assert run(lambda: len(sched.arrivals) >= 6, 20.0, policy, sched, robot)
    assert sched.sched.stats()["rejected"] == {} and sched.drops.as_dict().get("chunk.stamp_mismatch", 0) == 0
    early = [r for r in requests if stamp_to_ns(r.obs_after) > 0]
    if not ahead:
        assert not early and all(r.obs_id > 0 for r in requests)
        return
    # the episode's first request goes out with its observation; the others a step before theirs
    assert requests[0].obs_id > 0 and stamp_to_ns(requests[0].obs_after) == 0
    assert len(early) >= 3
    by_id = {c.request_id: c for c in chunks if c.error_code == ActionChunk.ERROR_NONE}
    served = [r for r in early if r.request_id in by_id]
    assert len(served) >= 3
    for r in served:  # each answered from the observation it named, stamped after the request went out
        c = by_id[r.request_id]
        stamp = stamp_to_ns(c.header.stamp)
        assert c.obs_id == r.obs_id and stamp > stamp_to_ns(r.obs_after) and stamp > stamp_to_ns(r.header.stamp)
    # reports: the observation -> chunk latency, 0 observation age for a request sent ahead
    assert all(a[2] < 0.5 for a in sched.arrivals)


@pytest.mark.parametrize("strategy", ["naive", "rtc"])
def test_a_chunk_sent_back_before_the_scheduler_took_its_observation_is_merged(run, strategy):
    # in one process with the policy (policy_container) the chunk of a request sent ahead can come
    # back before the scheduler's own copy of that observation: merged at its step, delay 0
    # rtc with a forecast delay of 1: the core requests again in the step its chunk merges
    sched = SchedulerNode(
        parameter_overrides=[
            P("strategy", value=strategy),
            P("s_min", value=1),
            P("d_init", value=1),
            P("delay_warmup", value=10),
        ]
    )
    requests: list[ChunkRequest] = []
    probe = Node("test_probe")
    probe.create_subscription(ChunkRequest, "policy/chunk_request", requests.append, 10)
    # only the probe spins: the scheduler's timer stays still, its steps move by observations and chunks
    assert run(lambda: sched.pub_req.get_subscription_count() > 0, 10.0, probe)
    state = _track_state(probe)
    t0 = probe.get_clock().now().nanoseconds

    def obs(i):
        m = _obs_msg(probe, i, state)
        m.header.stamp = ns_to_stamp(t0 + (i - 1) * 50_000_000)
        return m

    def chunk(req, o):
        c = ActionChunk(chunk_id=1000 + req.request_id, request_id=req.request_id, episode_id=1, obs_id=o.obs_id)
        c.header.stamp = o.header.stamp
        c.horizon, c.action_dim, c.dt = 8, 8, 0.05
        c.action_names = list(sched.p["action_names"])
        c.actions = np.tile(np.concatenate([Q0, [0.0]]), 8).tolist()
        return c

    sched._locked(sched._on_observation)(obs(1))  # the first request goes out with its observation
    assert run(lambda: len(requests) >= 1, 5.0)
    sched.take_chunk(chunk(requests[0], obs(1)))  # merged: the next request is sent ahead, for step 1
    assert run(lambda: len(requests) >= 2, 5.0)
    ahead = requests[1]
    assert ahead.obs_id == 2 and stamp_to_ns(ahead.obs_after) == stamp_to_ns(obs(1).header.stamp)
    while probe.get_clock().now().nanoseconds < t0 + 50_000_000:  # the clock reaches observation 2
        run(lambda: False, 0.01)
    sched.take_chunk(chunk(ahead, obs(2)))  # before the scheduler saw observation 2
    assert sched.sched.stats()["accepted"] == 2 and sched.sched.stats()["rejected"] == {}
    assert sched.arrivals[-1][3] == 0  # measured delay: 0 steps
    # observation 2 had its request: the chunk freeing the slot sends none (a second request for
    # observation 2 was the graph's 22-24 chunks/s at 20 Hz)
    run(lambda: len(requests) > 2, 0.3)
    assert len(requests) == 2, [(r.request_id, r.obs_id) for r in requests]
    sched._locked(sched._on_observation)(obs(2))  # its own copy arrives afterwards: nothing breaks
    assert sched.drops.total() == 0, sched.drops.as_dict()
    # ... and sends the next request, ahead for observation 3: one request per observation
    assert run(lambda: len(requests) >= 3, 5.0)
    assert [r.obs_id for r in requests] == [1, 2, 3] and stamp_to_ns(requests[2].obs_after) == stamp_to_ns(
        obs(2).header.stamp
    )
    run(lambda: True, 0.0, sched)  # (destroyed by the fixture)


def test_rogue_observation_with_huge_episode_id(run):
    """One observation with a huge episode id, a huge obs_id and a state far from the arm: the
    correction node does not engage on that episode (its joints disagree with the measured ones),
    the command stream restarts only from the arm's measured joints, and once the real observations
    keep coming (rewind_after in a row) the scheduler, the correction node and the policy node follow
    them back and chunks merge again."""
    policy = PolicyNode(parameter_overrides=[P("policy", value="expert"), P("rewind_after", value=5)])
    sched = SchedulerNode(parameter_overrides=[P("strategy", value="rtc"), P("rewind_after", value=5)])
    corr = CorrectionNode(
        parameter_overrides=[
            P("robot", value="panda"),
            P("sched_fifo_priority", value=0),
            P("rate_hz", value=100.0),
            P("rewind_after", value=5),
        ]
    )
    robot = Robot()
    assert run(lambda: len(robot.commands) >= 20 and len(sched.arrivals) >= 2, 20.0, policy, sched, corr, robot)
    rogue_state = robot.state.copy()
    rogue_state[:7] += 1.0  # a pose 1 rad away on every joint
    huge = 2**62
    robot.pub_obs.publish(_obs_msg(robot, 10**9, rogue_state, episode=huge))
    assert run(lambda: sched.episodes.rewinds == 1 and corr.episodes.rewinds == 1 and policy.obs_ids.rewinds == 1, 10.0)
    assert sched.episode_id == corr.episode_id == robot.episode == 1
    assert sched.drops.as_dict()["observation.old_episode"] == 4  # the 5th in a row rewinds
    # the correction node never engaged on the rogue episode: its joints disagree with the measured ones
    assert corr.drops.as_dict()["observation.state_mismatch"] == 1
    accepted = sched.sched.stats()["accepted"]
    n_cmd = len(robot.commands)
    assert run(lambda: sched.sched.stats()["accepted"] > accepted + 2 and len(robot.commands) > n_cmd + 20, 10.0)
    # every restart of the command stream began at the measured joints (Q0), not at the rogue pose:
    # the first command stamped after each restart (topics are not ordered with each other: go by stamps)
    assert len(robot.segments) >= 2, robot.segments
    stamped = [
        (c.header.stamp.sec * 10**9 + c.header.stamp.nanosec, np.asarray(c.points[0].positions[:7]))
        for c in robot.commands
    ]
    for seg in robot.segments:
        after = [q for t, q in stamped if t >= seg]
        if after:
            assert np.max(np.abs(after[0] - Q0)) < 0.01, (seg, after[0])


class DriftingRobot(Robot):
    """The Robot, whose measured joints can be moved (an arm still converging on its controller's
    last target while nothing is commanded)."""

    def __init__(self):
        super().__init__()
        self.q_js = Q0.copy()

    def tick(self):
        js = JointState()
        js.header.stamp = self.get_clock().now().to_msg()
        js.name = ARM + ["fr3_finger_joint1"]
        js.position = self.q_js.tolist() + [0.0]
        self.pub_js.publish(js)
        self.obs_id += 1
        self.pub_obs.publish(_obs_msg(self, self.obs_id, self.state, self.episode))


def test_a_new_episode_restarts_the_commands_from_where_the_arm_is_when_it_engages(run):
    """A new episode may engage once a measurement after its first observation agrees with it; it
    engages when its first plan arrives. If the arm moved in between (its controller held the last
    target and the arm kept converging), the command stream restarts from where the arm is then,
    not from the earlier measurement: a loaded chaos run restarted 0.09 rad away from the arm."""
    policy = PolicyNode(parameter_overrides=[P("policy", value="expert"), P("injected_latency_s", value=0.6)])
    sched = SchedulerNode(parameter_overrides=[P("strategy", value="naive")])
    corr = CorrectionNode(
        parameter_overrides=[P("robot", value="panda"), P("sched_fifo_priority", value=0), P("rate_hz", value=100.0)]
    )
    robot = DriftingRobot()
    assert run(lambda: len(robot.commands) >= 20, 30.0, policy, sched, corr, robot)
    n_seg = len(robot.segments)
    robot.episode = 2  # the new episode's observations agree with the arm (Q0) ...
    assert run(lambda: corr.episode_id == 2, 10.0)
    t_new = time.monotonic()
    assert run(lambda: time.monotonic() - t_new > 0.2, 5.0)
    drift = np.array([0.06, -0.06, 0.06, 0.06, -0.06, 0.06, 0.0])
    robot.q_js = Q0 + drift  # ... then the arm moves before the episode's first plan (0.6 s latency)
    assert run(lambda: len(robot.segments) > n_seg, 10.0), "the new episode never engaged"
    seg = robot.segments[-1]
    assert run(lambda: any(c.header.stamp.sec * 10**9 + c.header.stamp.nanosec >= seg for c in robot.commands), 5.0)
    first = next(
        np.asarray(c.points[0].positions[:7])
        for c in robot.commands
        if c.header.stamp.sec * 10**9 + c.header.stamp.nanosec >= seg
    )
    assert np.max(np.abs(first - (Q0 + drift))) < 0.01, first - Q0


# ---------------------------------------------------------------------- camera ingestion
class Sensors(Node):
    def __init__(self, cameras=("scene", "wrist")):
        super().__init__("test_sensors")
        self.out: list[Observation] = []
        self.pub_js = self.create_publisher(JointState, "joint_states", 10)
        self.pub_img = {c: self.create_publisher(Image, f"camera/{c}/image_raw", 10) for c in cameras}
        self.pub_task = self.create_publisher(Observation, "sim/task_state", 10)
        self.create_subscription(Observation, "observation", self.out.append, 10)

    def image(self, camera: str, stamp_ns: int, fill: int) -> None:
        img = Image(height=32, width=48, encoding="rgb8", step=48 * 3)
        img.header.stamp = ns_to_stamp(stamp_ns)
        img.data = np.full(32 * 48 * 3, fill, np.uint8).tobytes()
        self.pub_img[camera].publish(img)


def test_camera_ingestion_pairs_by_stamp_and_drops_stale(run):
    node = CameraIngestionNode(
        parameter_overrides=[
            P("image_size", value=16),
            P("camera_names", value=["scene", "wrist"]),
            P("max_image_age_s", value=0.02),
        ]
    )
    s = Sensors()
    assert run(
        lambda: (
            all(p.get_subscription_count() > 0 for p in (s.pub_js, s.pub_task, *s.pub_img.values()))
            and node.pub.get_subscription_count() > 0
        ),
        10.0,
        node,
        s,
    )
    now = s.get_clock().now().nanoseconds
    s.image("scene", now - 5_000_000, 7)
    s.image("wrist", now - 50_000_000, 9)  # 50 ms before the observation: stale for this one
    for dt_ms, q in ((-30, 0.1), (-2, 0.2)):  # two joint states; the task state is at `now`
        js = JointState(
            name=ARM + ["fr3_finger_joint1", "fr3_finger_joint2"], position=[q] * 7 + [0.01, 0.015], velocity=[0.5] * 9
        )
        js.header.stamp = ns_to_stamp(now + dt_ms * 1_000_000)
        s.pub_js.publish(js)
    assert run(lambda: len(node._js) == 2 and all(len(b) == 1 for b in node._img.values()), 5.0)
    task = Observation(episode_id=4, task="track", state_dim=3, state=[1.0, 2.0, 3.0], state_names=["a", "b", "c"])
    task.header.stamp = ns_to_stamp(now)
    s.pub_task.publish(task)
    assert run(lambda: len(s.out) == 1, 5.0)
    o = s.out[0]
    st = np.asarray(o.state)
    assert o.state_dim == 18 and st.size == 18
    np.testing.assert_allclose(st[:7], 0.2)  # the joint state 2 ms from the task state, not the one 30 ms away
    np.testing.assert_allclose(st[7:14], 0.5)
    assert st[14] == pytest.approx(0.025) and st[15:].tolist() == [1.0, 2.0, 3.0]
    assert (o.episode_id, o.task, o.obs_id) == (4, "track", 1)
    assert stamp_to_ns(o.header.stamp) == now
    # every configured camera keeps its slot, in order; the stale one is empty and says so
    assert list(o.camera_names) == ["scene", "wrist"] and o.status == Observation.STATUS_IMAGE_MISSING
    scene, wrist = o.images
    assert (scene.height, scene.width, scene.encoding) == (16, 16, "rgb8") and set(bytes(scene.data)) == {7}
    assert (wrist.height, wrist.width) == (0, 0)
    assert o.image_ages_s[0] == pytest.approx(0.005) and o.image_ages_s[1] == 0.0
    assert node.n_missing == {"scene": 0, "wrist": 1}
    from async_vla_ros import names as N

    assert o.instruction == N.INSTRUCTIONS["track"][0]  # the task's first paraphrase by default
    # both cameras fresh: complete, OK; the instruction set at runtime travels with it
    res = node.set_parameters([P("instruction", value="follow the target, please")])
    assert res[0].successful
    t2 = now + 20_000_000
    s.image("wrist", t2 - 3_000_000, 11)
    s.image("scene", t2 - 1_000_000, 12)
    js = JointState(name=ARM, position=[0.3] * 7, velocity=[0.0] * 7)
    js.header.stamp = ns_to_stamp(t2)
    s.pub_js.publish(js)
    assert run(lambda: sum(len(b) for b in node._img.values()) == 4 and len(node._js) == 3, 5.0)
    task.header.stamp = ns_to_stamp(t2)
    s.pub_task.publish(task)
    assert run(lambda: len(s.out) == 2, 5.0)
    o2 = s.out[1]
    assert o2.status == Observation.STATUS_OK and o2.instruction == "follow the target, please"
    assert [set(bytes(im.data)) for im in o2.images] == [{12}, {11}]
    assert node.n_images_attached == 1
    # the image pipeline latency (oldest attached frame -> observation out) of complete observations only
    assert len(node.image_latencies) == 1
    assert node._diag_values()["image_latency_median_s"] == pytest.approx(node.image_latencies[0])
    # a task state older than max_state_age_s (0.1 s) when it arrives is dropped (never published)
    assert run(lambda: s.get_clock().now().nanoseconds > t2 + int(0.15 * NS_PER_S), 5.0)
    old = Observation(state_dim=3, state=[1.0, 2.0, 3.0])
    old.header.stamp = ns_to_stamp(t2 + 1_000_000)
    s.pub_task.publish(old)
    assert run(lambda: node.drops.as_dict().get("stale_state", 0) == 1, 5.0)
    assert len(s.out) == 2
    # a bad frame is a counted drop under its camera's name
    bad = Image(height=2, width=2, encoding="rgb8", step=6, data=b"\x00" * 5)
    bad.header.stamp = s.get_clock().now().to_msg()
    s.pub_img["wrist"].publish(bad)
    assert run(lambda: node.drops.as_dict().get("image.wrist.bad_shape", 0) == 1, 5.0)


def test_camera_ingestion_attaches_the_previous_frame_of_a_prev_slot(run):
    """``scene_prev`` is no camera of its own: its slot holds the scene frame one control period
    (``prev_frame_offset_s``) before the observation, ``scene_prev2`` two; only ``scene`` is
    subscribed."""
    node = CameraIngestionNode(
        parameter_overrides=[
            P("image_size", value=16),
            P("camera_names", value=["scene", "scene_prev", "scene_prev2"]),
            P("max_image_age_s", value=0.02),
            P("prev_frame_offset_s", value=0.05),
        ]
    )
    s = Sensors(cameras=("scene",))
    assert list(node.cameras) == ["scene"] and node.slots == ["scene", "scene_prev", "scene_prev2"]
    assert run(
        lambda: (
            all(p.get_subscription_count() > 0 for p in (s.pub_js, s.pub_task, *s.pub_img.values()))
            and node.pub.get_subscription_count() > 0
        ),
        10.0,
        node,
        s,
    )
    now = s.get_clock().now().nanoseconds
    for back_ms, fill in ((100, 1), (50, 2), (0, 3)):  # frames every control period
        s.image("scene", now - back_ms * 1_000_000, fill)
    js = JointState(name=ARM, position=[0.1] * 7, velocity=[0.0] * 7)
    js.header.stamp = ns_to_stamp(now)
    s.pub_js.publish(js)
    assert run(lambda: len(node._img["scene"]) == 3 and len(node._js) == 1, 5.0, node, s)
    task = Observation(episode_id=1, task="track", state_dim=3, state=[1.0, 2.0, 3.0])
    task.header.stamp = ns_to_stamp(now)
    s.pub_task.publish(task)
    assert run(lambda: len(s.out) == 1, 5.0, node, s)
    o = s.out[0]
    assert list(o.camera_names) == ["scene", "scene_prev", "scene_prev2"] and o.status == Observation.STATUS_OK
    assert [set(bytes(im.data)) for im in o.images] == [{3}, {2}, {1}]
    assert o.image_ages_s[1:] == pytest.approx([0.05, 0.10])
    assert node._diag_values()["cameras"] == "scene,scene_prev,scene_prev2"


def test_policy_container_hands_observations_and_chunks_over_in_process(run):
    from async_vla_ros.nodes.policy_container import PolicyContainer

    box = build_node(
        PolicyContainer,
        node_overrides={
            "policy": [P("policy", value="expert")],
            "camera_ingestion": [P("camera_names", value=["scene"])],
            "scheduler": [P("strategy", value="naive")],
        },
    )
    ing, policy, sched = box.nodes
    assert [n.get_name() for n in box.nodes] == ["camera_ingestion", "policy", "scheduler"]
    s = Sensors(cameras=("scene",))
    chunks: list[ActionChunk] = []
    s.create_subscription(ActionChunk, "policy/action_chunk", chunks.append, 10)
    assert run(
        lambda: (
            ing.pub.get_subscription_count() >= 3  # sensors, policy, scheduler
            and s.pub_task.get_subscription_count() > 0
            and policy.pub.get_subscription_count() >= 2
            and sched.pub_req.get_subscription_count() > 0
        ),
        10.0,
        *box.nodes,
        s,
    )
    t_next = time.monotonic()
    for _ in range(12):  # 20 Hz: a joint state and a camera frame, then the task state that triggers
        run(lambda t=t_next: time.monotonic() >= t, 1.0)
        t_next += 0.05
        now = s.get_clock().now().nanoseconds
        s.image("scene", now - 1_000_000, 5)
        js = JointState(name=ARM + ["fr3_finger_joint1", "fr3_finger_joint2"], position=[0.1] * 9, velocity=[0.0] * 9)
        js.header.stamp = ns_to_stamp(now - 1_000_000)
        s.pub_js.publish(js)
        task = _track_state(s)[15:]
        msg = Observation(episode_id=1, task="track", state_dim=task.size, state=task.tolist())
        msg.header.stamp = ns_to_stamp(now)
        s.pub_task.publish(msg)
    # published for the others, handed to the policy with the same id and stamp; the copy from the
    # topic skipped, not counted as a duplicate
    assert run(lambda: len(s.out) >= 8 and policy.echoes.n_echoes >= 1, 5.0)  # (the first may miss its image)
    first = s.out[0]
    assert policy._obs[first.obs_id][0] == stamp_to_ns(first.header.stamp)
    assert policy.drops.total() == 0
    # the scheduler took the policy's chunks in process (and skipped their published copies)
    assert run(lambda: len(sched.arrivals) >= 2 and sched.echoes.n_echoes >= 2, 10.0)
    # (a test step late by more than dt/2 on a loaded machine misses its window: answered NO_OBSERVATION)
    assert sched.sched.stats()["rejected"] == {}, sched.sched.stats()
    assert set(sched.drops.as_dict()) <= {"chunk.error_2"}, sched.drops.as_dict()
    # a second copy of a chunk it took in process (a rogue re-send) is checked: a duplicate
    pub = s.create_publisher(ActionChunk, "policy/action_chunk", 10)
    assert run(lambda: pub.get_subscription_count() > 0, 5.0)
    dup = chunks[-1]
    n_dup = sched.sched.stats()["rejected"].get("duplicate", 0)
    pub.publish(dup)
    assert run(lambda: sched.sched.stats()["rejected"].get("duplicate", 0) == n_dup + 1, 5.0)
    assert policy._diag_values()["observation_source"] == "in-process"
    assert sched._diag_values()["chunk_echoes_skipped"] >= 2
    # a chunk from another publisher on the topic is still taken and checked
    rogue = ActionChunk(chunk_id=1, request_id=999, episode_id=1)
    rogue.action_names = list(sched.p["action_names"])
    n0 = sum(sched.sched.stats()["rejected"].values())
    pub.publish(rogue)
    assert run(lambda: sum(sched.sched.stats()["rejected"].values()) + sched.drops.total() > n0, 5.0)


def test_camera_topics_parameter():
    from async_vla_ros.nodes.camera_ingestion import camera_topics

    assert camera_topics(["scene", "wrist"], ["wrist=/hand/color", "front=/unused"]) == {
        "scene": "camera/scene/image_raw",
        "wrist": "/hand/color",
    }
    with pytest.raises(ParamError, match="duplicate"):
        camera_topics(["scene", "scene"], [])
    with pytest.raises(ParamError, match="NAME=TOPIC"):
        camera_topics(["scene"], ["scene"])


def test_correction_franka_gripper_bridge_says_arm_only_without_franka_msgs(run):
    from async_vla_ros.nodes.franka_bridge import franka_msgs_available

    ok, why = franka_msgs_available()
    corr = CorrectionNode(
        parameter_overrides=[
            P("gripper_mode", value="franka_action"),
            P("command_interface", value="forward"),
            P("sched_fifo_priority", value=0),
        ]
    )
    try:
        assert corr.gripper_bridge is not None and corr.gripper_bridge.active == ok
        if not ok:
            assert "franka_msgs" in why
            corr.gripper_bridge.command(0.04)  # inactive: a no-op, never an error
            assert corr.gripper_bridge.goals_sent == 0
    finally:
        corr.close()
        corr.destroy_node()


# ---------------------------------------------------------------------- sim cameras
def test_sim_renders_each_control_steps_frames_just_before_its_task_state(run):
    # an observation pairs the task state with the newest frames: they must show that instant (as
    # in the lockstep runner and the demonstrations), not one from the camera's own phase
    pytest.importorskip("mujoco")
    from async_vla_ros.assets import panda_available

    if not panda_available():
        pytest.skip("MuJoCo Panda model not fetched (make setup)")
    from async_vla_ros.nodes.sim_node import SimNode

    sim = SimNode(
        parameter_overrides=[
            P("cameras", value=["scene"]),
            P("camera_rate_hz", value=20.0),
            P("image_width", value=32),
            P("image_height", value=32),
            P("wait_for_command", value=False),
            P("settle_s", value=0.1),
        ]
    )
    frames: list[int] = []
    states: list[tuple[int, int]] = []  # (stamp, obs_id)
    sink = Node("test_frame_sink")
    sink.create_subscription(Image, "camera/scene/image_raw", lambda m: frames.append(stamp_to_ns(m.header.stamp)), 50)
    sink.create_subscription(
        Observation, "sim/task_state", lambda m: states.append((stamp_to_ns(m.header.stamp), int(m.obs_id))), 50
    )
    try:
        assert run(lambda: len({o for _, o in states}) >= 25, 30.0, sim, sink), sim._diag_values()
    finally:
        sim.close()
    # the running steps: each new obs_id (one per control step); the newest frame before each
    first = {}
    for stamp, oid in states:
        first.setdefault(oid, stamp)
    ages = []
    for oid, stamp in sorted(first.items())[2:]:
        before = [f for f in frames if f <= stamp]
        assert before, oid
        ages.append((stamp - max(before)) / 1e6)
    # rendered and published right before the state (the state's stamp follows the frame's
    # camera_info); on the camera's own phase they were 0-50 ms older, 30 ms median
    assert len(ages) >= 20 and np.median(ages) < 5.0 and np.mean(np.asarray(ages) < 10.0) > 0.9, ages


def test_sim_renders_exactly_the_listed_cameras_each_on_its_topic(run):
    pytest.importorskip("mujoco")
    from async_vla_ros.assets import panda_available

    if not panda_available():
        pytest.skip("MuJoCo Panda model not fetched (make setup)")
    from async_vla_ros.nodes.sim_node import SimNode

    with pytest.raises(ParamError, match="must be distinct names of"):
        SimNode(parameter_overrides=[P("cameras", value=["top"])])
    bare = SimNode(parameter_overrides=[P("camera_rate_hz", value=20.0)])  # the default: no camera
    try:
        assert bare.pub_cams == {}
        assert not [t for t, _ in bare.get_topic_names_and_types() if t.startswith("/camera/")]
    finally:
        bare.close()
        bare.destroy_node()
    sim = SimNode(
        parameter_overrides=[
            P("cameras", value=["scene", "wrist"]),
            P("camera_rate_hz", value=20.0),
            P("image_width", value=32),
            P("image_height", value=32),
        ]
    )
    got: dict[str, Image] = {}
    sink = Node("test_camera_sink")
    for cam in ("scene", "wrist"):
        sink.create_subscription(Image, f"camera/{cam}/image_raw", lambda m, c=cam: got.setdefault(c, m), 10)
    try:
        assert run(lambda: len(got) == 2, 30.0, sim, sink), sim._diag_values()
        for cam, m in got.items():
            assert (m.height, m.width, m.encoding) == (32, 32, "rgb8") and len(m.data) == 32 * 32 * 3
            assert m.header.frame_id == f"{cam}_camera_optical_frame"
        assert bytes(got["scene"].data) != bytes(got["wrist"].data)  # two different views
        assert sim._diag_values()["cameras"] == "scene,wrist" and sim.frames_rendered >= 2
    finally:
        sim.close()
