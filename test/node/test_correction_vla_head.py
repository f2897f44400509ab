"""The correction node runs a VLA's A2C2 head: features of each observation's cameras and instruction.

In-process, with a tiny SmolVLA (test/conftest.py) and an untrained head given random output
weights (a trained head starts as the identity correction: its residual would be zero). A helper
node stands in for camera_ingestion (observations with images), the arm (joint states) and the
scheduler (one long plan). Waits are on received data with deadlines.
"""

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
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from async_vla_msgs.msg import ActionPlan, CommandMetrics, Observation  # noqa: E402
from async_vla_ros import names as N  # noqa: E402
from async_vla_ros.nodes.common import ns_to_stamp  # noqa: E402
from async_vla_ros.nodes.correction_node import CorrectionNode  # noqa: E402

pytestmark = pytest.mark.ros
P = Parameter
ARM = [f"fr3_joint{i}" for i in range(1, 8)]
Q0 = np.array([0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785])
TASK = "intercept"


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


@pytest.fixture(scope="module")
def vla(tiny_smolvla_proprio_dir):
    from async_vla_ros.policy.registry import BackendRequest, load_policy_spec

    return f"vla:{tiny_smolvla_proprio_dir}", load_policy_spec(f"vla:{tiny_smolvla_proprio_dir}", BackendRequest(TASK))


def _head(path, policy, latent_dim: int | None = None):
    import torch

    from async_vla_ros.policy.a2c2 import CorrectionConfig, CorrectionHead

    cfg = CorrectionConfig(
        obs_dim=N.N_PROPRIO,
        action_dim=8,
        horizon=int(policy.horizon),
        latent_dim=policy.latent_dim if latent_dim is None else latent_dim,
    )
    head = CorrectionHead(cfg)
    with torch.no_grad():  # an untrained head is the identity correction: give it an output
        head.out.weight.copy_(torch.randn(head.out.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.01)
    head.save(path)
    return path


def _image(fill: np.ndarray) -> Image:
    h, w, _ = fill.shape
    img = Image(height=h, width=w, encoding="rgb8", step=w * 3)
    img.data = fill.tobytes()
    return img


class Rig(Node):
    """camera_ingestion + arm + scheduler stand-in: observations (with or without images) and joint
    states at 20 Hz; one plan of 20 s once the correction node follows the episode."""

    def __init__(self, cameras: dict[str, tuple[int, int]]):
        super().__init__("test_vla_rig")
        rng = np.random.default_rng(1)
        self.frames = {c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c, (h, w) in cameras.items()}
        self.with_images = True
        self.state = np.concatenate([Q0, np.zeros(7), [0.04], np.zeros(9)])  # intercept: 15 + task fields
        self.obs_id = 0
        self.sent: list[Observation] = []
        self.commands: list[JointTrajectory] = []
        self.metrics: list[CommandMetrics] = []
        self.pub_obs = self.create_publisher(Observation, "observation", 10)
        self.pub_js = self.create_publisher(JointState, "joint_states", 10)
        self.pub_plan = self.create_publisher(ActionPlan, "scheduler/action_plan", 10)
        self.create_subscription(JointTrajectory, "fr3_arm_controller/joint_trajectory", self.commands.append, 10)
        self.create_subscription(CommandMetrics, "correction/command_metrics", self.metrics.append, 50)
        self.create_timer(0.05, self.tick)

    def tick(self) -> None:
        now = self.get_clock().now()
        js = JointState(name=ARM + ["fr3_finger_joint1"], position=Q0.tolist() + [0.02])
        js.header.stamp = now.to_msg()
        self.pub_js.publish(js)
        self.obs_id += 1
        m = Observation(obs_id=self.obs_id, episode_id=1, task=TASK, state_dim=self.state.size)
        m.header.stamp = now.to_msg()
        m.state = self.state.tolist()
        m.instruction = N.default_instruction(TASK)
        m.camera_names = list(self.frames)
        # an empty slot is what camera_ingestion sends for a missing or stale image
        m.images = [_image(f) if self.with_images else Image() for f in self.frames.values()]
        self.pub_obs.publish(m)
        self.sent.append(m)

    def plan(self, horizon: int) -> None:
        n = 400
        acts = np.tile(np.concatenate([Q0, [0.04]]), (n, 1))
        m = ActionPlan(plan_id=1, episode_id=1, step=0, merge_strategy="rtc", dt=0.05, length=n, action_dim=8)
        m.header.stamp = ns_to_stamp(self.get_clock().now().nanoseconds)
        m.actions = acts.ravel().tolist()
        m.chunk_ids = [1 + i // horizon for i in range(n)]
        m.chunk_index = [i % horizon for i in range(n)]
        m.horizon = horizon
        self.pub_plan.publish(m)


def test_the_vla_head_runs_on_each_observations_features_and_images_missing_pass_the_base_through(run, vla, tmp_path):
    spec, policy = vla
    head = _head(tmp_path / "vla_head.pt", policy)
    corr = CorrectionNode(
        parameter_overrides=[
            P("robot", value="panda"),
            P("sched_fifo_priority", value=0),
            P("a2c2_head", value=str(head)),
            P("a2c2_policy", value=spec),
            P("task", value=TASK),
        ]
    )
    rig = Rig(policy.camera_hw)
    assert run(lambda: corr.episode_id == 1, 15.0, corr, rig)
    rig.plan(int(policy.horizon))
    assert run(lambda: corr.n_residual_ticks >= 10 and corr.feature_worker.completed >= 3, 30.0), corr.drops.as_dict()
    assert corr.drops.total() == 0, corr.drops.as_dict()
    assert any(m.residual_norm > 0 for m in rig.metrics)  # the head's residual was added to the plan
    # the stored features are the VLA's of that observation's images, instruction and proprioception
    with corr._lock:
        obs_id, state, latent = corr._obs
    sent = next(m for m in rig.sent if m.obs_id == obs_id)
    want = policy.latent(
        {
            "state": np.asarray(sent.state)[None, : N.N_PROPRIO],
            "images": {c: f[None] for c, f in rig.frames.items()},
            "instruction": sent.instruction,
        }
    )
    np.testing.assert_allclose(latent, want, atol=1e-5)
    np.testing.assert_array_equal(state, np.asarray(sent.state)[: N.N_PROPRIO])
    vals = corr._diag_values()
    assert vals["a2c2_features"] >= 3 and 0 < vals["a2c2_feature_median_s"] <= vals["a2c2_feature_p95_s"]

    # observations without images: counted drops, the head is off, the base action is still commanded
    rig.with_images = False
    assert run(lambda: corr.drops.as_dict().get("a2c2.no_image", 0) >= 2, 10.0)
    with corr._lock:
        assert corr._obs[1] is None
    n_cmd, n_res, n_met = len(rig.commands), corr.n_residual_ticks, len(rig.metrics)
    assert run(lambda: len(rig.commands) >= n_cmd + 20, 10.0)
    assert corr.n_residual_ticks == n_res
    assert all(m.residual_norm == 0.0 and not m.hold for m in rig.metrics[n_met + 1 :])
    # the plan (Q0) itself, once the safety filter's rate limits have brought the command back from the residual
    assert run(lambda: np.max(np.abs(np.asarray(rig.commands[-1].points[0].positions[:7]) - Q0)) < 1e-6, 5.0)
    # images again: the head is back
    rig.with_images = True
    assert run(lambda: corr.n_residual_ticks > n_res, 10.0)


def test_a_head_that_does_not_fit_the_policy_refuses_to_start(vla, tmp_path):
    spec, policy = vla
    bad = _head(tmp_path / "bad.pt", policy, latent_dim=policy.latent_dim + 1)
    with pytest.raises(ValueError, match=rf"takes {policy.latent_dim + 1} features, the policy gives"):
        CorrectionNode(
            parameter_overrides=[P("a2c2_head", value=str(bad)), P("a2c2_policy", value=spec), P("task", value=TASK)]
        )
    good = _head(tmp_path / "good.pt", policy)
    with pytest.raises(ValueError, match="reads the base policy's features .*set a2c2_policy"):
        CorrectionNode(parameter_overrides=[P("a2c2_head", value=str(good))])
