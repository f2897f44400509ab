"""The policy node feeds a multi-camera VLA (tiny SmolVLA, cameras scene + wrist) the observation's
named cameras and instruction; a camera-name mismatch is one clear error naming both sets."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("async_vla_msgs.msg")
pytest.importorskip("lerobot")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from async_vla_msgs.msg import ActionChunk, ChunkRequest, Observation  # noqa: E402
from async_vla_ros.nodes.policy_node import PolicyNode, observation_images  # noqa: E402

pytestmark = pytest.mark.ros
OBS_DIM = 24


@pytest.fixture(scope="module", autouse=True)
def ros_context():
    rclpy.init()
    yield
    rclpy.shutdown()


class Client(Node):
    def __init__(self):
        super().__init__("test_camera_client")
        self.chunks: list[ActionChunk] = []
        self.pub_obs = self.create_publisher(Observation, "observation", 10)
        self.pub_req = self.create_publisher(ChunkRequest, "policy/chunk_request", 10)
        self.create_subscription(ActionChunk, "policy/action_chunk", self.chunks.append, 10)

    def observation(self, obs_id: int, cameras: dict[str, int | None], instruction: str = "") -> None:
        m = Observation(obs_id=obs_id, episode_id=1, task="track", state_dim=OBS_DIM)
        m.header.stamp = self.get_clock().now().to_msg()
        m.state = np.linspace(-0.5, 0.5, OBS_DIM).tolist()
        for name, fill in cameras.items():
            img = Image()
            if fill is not None:
                img.height = img.width = 64
                img.encoding, img.step = "rgb8", 64 * 3
                img.data = np.full(64 * 64 * 3, fill, np.uint8).tobytes()
            m.camera_names.append(name)
            m.images.append(img)
            m.image_ages_s.append(0.0)
        m.instruction = instruction
        self.pub_obs.publish(m)

    def request(self, rid: int, obs_id: int) -> None:
        m = ChunkRequest(request_id=rid, episode_id=1, obs_id=obs_id, sampler="vanilla", horizon=8, action_dim=8)
        m.header.stamp = self.get_clock().now().to_msg()
        m.dt, m.seed = 0.05, 3
        self.pub_req.publish(m)


def _spin(ex, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        ex.spin_once(timeout_sec=0.02)
    return cond()


def test_policy_node_feeds_every_camera_and_the_instruction(tiny_smolvla_2cam_dir):
    policy = PolicyNode(
        parameter_overrides=[
            Parameter("policy", value=f"lerobot:{tiny_smolvla_2cam_dir}"),
            Parameter("task", value="track"),
            Parameter("warmup", value=False),
        ]
    )
    client = Client()
    ex = SingleThreadedExecutor()
    for n in (policy, client):
        ex.add_node(n)
    try:
        assert policy.camera_hw == {"scene": (64, 64), "wrist": (64, 64)}
        ready = lambda: client.pub_obs.get_subscription_count() > 0 and policy.pub.get_subscription_count() > 0  # noqa: E731
        assert _spin(ex, ready, 10.0)
        client.observation(1, {"scene": 10, "wrist": 200}, "keep the gripper on the moving target")
        assert _spin(ex, lambda: 1 in policy._obs, 5.0)
        client.request(1, 1)
        assert _spin(ex, lambda: len(client.chunks) >= 1, 60.0)
        c = client.chunks[0]
        assert c.error_code == ActionChunk.ERROR_NONE, c.error_message
        info = policy.backend.last_info
        assert info["cameras"] == ["scene", "wrist"]
        assert info["instruction"] == "keep the gripper on the moving target"
        # the same chunk as the backend gives for those images directly: both cameras reached it
        direct = policy.backend.infer(
            {
                "state": np.linspace(-0.5, 0.5, OBS_DIM)[None],
                "images": {
                    "scene": np.full((1, 64, 64, 3), 10, np.uint8),
                    "wrist": np.full((1, 64, 64, 3), 200, np.uint8),
                },
                "instruction": "keep the gripper on the moving target",
            },
            "vanilla",
            seed=3,
        )
        np.testing.assert_allclose(np.asarray(c.actions).reshape(8, 8), direct[0], atol=1e-6)
        swapped = policy.backend.infer(
            {
                "state": np.linspace(-0.5, 0.5, OBS_DIM)[None],
                "images": {
                    "scene": np.full((1, 64, 64, 3), 200, np.uint8),
                    "wrist": np.full((1, 64, 64, 3), 10, np.uint8),
                },
                "instruction": "keep the gripper on the moving target",
            },
            "vanilla",
            seed=3,
        )
        assert not np.allclose(swapped, direct)  # the cameras are told apart by name
        # an empty slot (stale camera): no chunk from half the inputs, an answer that says which
        client.observation(2, {"scene": 10, "wrist": None})
        assert _spin(ex, lambda: 2 in policy._obs, 5.0)
        client.request(2, 2)
        assert _spin(ex, lambda: len(client.chunks) >= 2, 30.0)
        assert client.chunks[1].error_code == ActionChunk.ERROR_NO_OBSERVATION
        assert "['wrist']" in client.chunks[1].error_message
        # the graph sends other cameras than the policy takes: dropped, one error naming both sets
        client.observation(3, {"scene": 10, "front": 5})
        assert _spin(ex, lambda: policy.drops.as_dict().get("observation.camera_mismatch", 0) == 1, 5.0)
        client.request(3, 3)
        assert _spin(ex, lambda: len(client.chunks) >= 3, 30.0)
        err = client.chunks[2]
        assert err.error_code == ActionChunk.ERROR_NO_OBSERVATION
        assert "the graph sends ['front', 'scene'], the policy takes ['scene', 'wrist']" in err.error_message
    finally:
        policy.close()
        for n in (policy, client):
            ex.remove_node(n)
            n.destroy_node()


def test_a_proprioception_policy_gets_the_head_of_the_tasks_state(tiny_smolvla_proprio_dir):
    """The multi-task VLA reads q, qd, gripper (the first 15 values) of any task's observation;
    a state shorter than that is a counted, explained drop and the request gets an error chunk."""
    policy = PolicyNode(
        parameter_overrides=[
            Parameter("policy", value=f"lerobot:{tiny_smolvla_proprio_dir}"),
            Parameter("task", value="track"),
            Parameter("warmup", value=False),
        ]
    )
    client = Client()
    ex = SingleThreadedExecutor()
    for n in (policy, client):
        ex.add_node(n)
    try:
        assert policy.backend.reads_proprio and policy.obs_dim == 15
        ready = lambda: client.pub_obs.get_subscription_count() > 0 and policy.pub.get_subscription_count() > 0  # noqa: E731
        assert _spin(ex, ready, 10.0)
        client.observation(1, {"scene": 10, "wrist": 200})  # track's 24 values
        assert _spin(ex, lambda: 1 in policy._obs, 5.0)
        client.request(1, 1)
        assert _spin(ex, lambda: len(client.chunks) >= 1, 60.0)
        c = client.chunks[0]
        assert c.error_code == ActionChunk.ERROR_NONE, c.error_message
        direct = policy.backend.infer(
            {
                "state": np.linspace(-0.5, 0.5, OBS_DIM)[None, :15],
                "images": {
                    "scene": np.full((1, 64, 64, 3), 10, np.uint8),
                    "wrist": np.full((1, 64, 64, 3), 200, np.uint8),
                },
            },
            "vanilla",
            seed=3,
        )
        np.testing.assert_allclose(np.asarray(c.actions).reshape(8, 8), direct[0], atol=1e-6)
        short = Observation(obs_id=2, episode_id=1, task="track", state_dim=10)
        short.header.stamp = client.get_clock().now().to_msg()
        short.state = [0.0] * 10
        client.pub_obs.publish(short)
        assert _spin(ex, lambda: policy.drops.as_dict().get("observation.bad_shape", 0) == 1, 5.0)
        assert "15 proprioception values" in policy.obs_problem and "only 10" in policy.obs_problem
    finally:
        policy.close()
        for n in (policy, client):
            ex.remove_node(n)
            n.destroy_node()


def test_observation_images_rejects_malformed_camera_fields():
    from async_vla_ros.nodes.ingest import InputError

    m = Observation(camera_names=["scene"], images=[])
    with pytest.raises(InputError, match="1 camera names for 0 images"):
        observation_images(m)
    img = Image(height=2, width=2, encoding="bgr8", step=6, data=bytes(12))
    with pytest.raises(InputError, match="packed rgb8"):
        observation_images(Observation(camera_names=["scene"], images=[img]))
    with pytest.raises(InputError, match="duplicate"):
        observation_images(Observation(camera_names=["a", "a"], images=[Image(), Image()]))
    assert observation_images(Observation(camera_names=["a"], images=[Image()])) == {"a": None}
