"""The stage timings the nodes publish in /diagnostics for `bench pipeline`'s latency split:
camera_ingestion (image transport, decode + resize, ingestion, observation age at publish) and the
policy node (observation age at its callback, waiting until the model starts)."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from async_vla_msgs.msg import ActionChunk, ChunkRequest, Observation  # noqa: E402
from async_vla_ros.nodes.camera_ingestion import CameraIngestionNode  # noqa: E402
from async_vla_ros.nodes.common import NS_PER_S, ns_to_stamp, stamp_to_ns  # noqa: E402
from async_vla_ros.nodes.policy_node import PolicyNode  # noqa: E402

pytestmark = pytest.mark.ros
P = Parameter
ARM = [f"fr3_joint{i}" for i in range(1, 8)]
Q0 = np.array([0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785])


@pytest.fixture(scope="module", autouse=True)
def ros_context():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture()
def spin():
    made: list[Node] = []
    ex = SingleThreadedExecutor()

    def until(cond, timeout: float, *nodes: Node) -> bool:
        for n in nodes:
            if n not in made:
                made.append(n)
                ex.add_node(n)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cond():
            ex.spin_once(timeout_sec=0.02)
        return cond()

    yield until
    for n in made:
        getattr(n, "close", lambda: None)()
        ex.remove_node(n)
        n.destroy_node()


class Peer(Node):
    def __init__(self):
        super().__init__("test_stage_peer")
        self.out: list[Observation] = []
        self.chunks: list[ActionChunk] = []
        self.pub_js = self.create_publisher(JointState, "joint_states", 10)
        self.pub_img = self.create_publisher(Image, "camera/scene/image_raw", 10)
        self.pub_task = self.create_publisher(Observation, "sim/task_state", 10)
        self.pub_obs = self.create_publisher(Observation, "observation", 10)
        self.pub_req = self.create_publisher(ChunkRequest, "policy/chunk_request", 10)
        self.create_subscription(Observation, "observation", self.out.append, 10)
        self.create_subscription(ActionChunk, "policy/action_chunk", self.chunks.append, 10)

    def now(self) -> int:
        return self.get_clock().now().nanoseconds


def _diag_keys(vals: dict, name: str) -> tuple[float, float, float]:
    return vals[f"{name}_median_s"], vals[f"{name}_p95_s"], vals[f"{name}_p99_s"]


def test_camera_ingestion_times_the_image_path(spin):
    node = CameraIngestionNode(parameter_overrides=[P("image_size", value=16), P("camera_names", value=["scene"])])
    s = Peer()
    ready = lambda: all(p.get_subscription_count() > 0 for p in (s.pub_js, s.pub_img, s.pub_task))  # noqa: E731
    assert spin(ready, 10.0, node, s)
    assert not any(k.startswith(("image_transport", "ingest")) for k in node._diag_values())  # nothing yet
    now = s.now()
    img = Image(height=32, width=48, encoding="rgb8", step=48 * 3)
    img.header.stamp = ns_to_stamp(now - 3_000_000)  # stamped 3 ms before it is sent
    img.data = np.full(32 * 48 * 3, 5, np.uint8).tobytes()
    s.pub_img.publish(img)
    js = JointState(name=ARM, position=[0.1] * 7, velocity=[0.0] * 7)
    js.header.stamp = ns_to_stamp(now)
    s.pub_js.publish(js)
    assert spin(lambda: len(node._js) == 1 and len(node._img["scene"]) == 1, 5.0)
    task = Observation(state_dim=2, state=[1.0, 2.0])
    task.header.stamp = ns_to_stamp(now - 2_000_000)  # the observation's time: 2 ms before it is sent
    s.pub_task.publish(task)
    assert spin(lambda: len(s.out) == 1, 5.0)
    assert s.out[0].status == Observation.STATUS_OK
    vals = node._diag_values()
    tr, prep, ing, age, out = (
        _diag_keys(vals, n) for n in ("image_transport", "image_prep", "ingest", "obs_age", "obs_age_out")
    )
    received_by = (s.now() - (now - 3_000_000)) / NS_PER_S
    assert 0.003 <= tr[0] == tr[1] == tr[2] <= received_by  # one frame: its stamp -> its callback
    assert 0.0 <= prep[0] < 0.5 and 0.0 <= ing[0] < 0.5
    assert age[0] >= 0.002 and out[0] == pytest.approx(age[0] + ing[0], abs=1e-6)  # consecutive stages


def test_policy_node_times_the_observation_until_the_model_starts(spin):
    from async_vla_ros.sim.kinematics import fk

    policy = PolicyNode(parameter_overrides=[P("policy", value="expert"), P("task", value="track")])
    c = Peer()
    assert spin(
        lambda: c.pub_obs.get_subscription_count() > 0 and c.pub_req.get_subscription_count() > 0, 10.0, policy, c
    )
    tcp = fk(Q0[None])[0][0]
    state = np.concatenate([Q0, np.zeros(7), [0.0], tcp, tcp + [0.02, 0.0, 0.0], [0.1, 0.0, 0.0]])
    obs = Observation(obs_id=1, episode_id=1, task="track", state_dim=state.size, state=state.tolist())
    obs.header.stamp = ns_to_stamp(c.now() - 2_000_000)
    c.pub_obs.publish(obs)
    assert spin(lambda: 1 in policy._obs, 5.0)
    time.sleep(0.05)  # the request comes 50 ms after the observation: the wait shows it
    req = ChunkRequest(request_id=1, episode_id=1, obs_id=1, sampler="vanilla", horizon=8, action_dim=8)
    req.header.stamp = c.get_clock().now().to_msg()
    req.dt = 0.05
    c.pub_req.publish(req)
    assert spin(lambda: len(c.chunks) == 1, 10.0)
    ch = c.chunks[0]
    assert ch.error_code == ActionChunk.ERROR_NONE, ch.error_message
    vals = policy._diag_values()
    age_in, wait = _diag_keys(vals, "obs_age_in"), _diag_keys(vals, "obs_wait")
    assert age_in[0] >= 0.002
    # callback -> model start, plus the stamp -> callback part, is the observation's age at the start
    start_age = (stamp_to_ns(ch.timing.inference_start) - stamp_to_ns(obs.header.stamp)) / NS_PER_S
    assert wait[0] >= 0.05 and wait[0] + age_in[0] == pytest.approx(start_age, abs=1e-6)
