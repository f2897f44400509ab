"""Scene, kinematics and environment basics (MuJoCo Panda)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from async_vla_ros.assets import panda_available

pytestmark = pytest.mark.skipif(not panda_available(), reason="Panda model not fetched (make setup)")

from async_vla_ros.sim import kinematics as K  # noqa: E402
from async_vla_ros.sim import scene as S  # noqa: E402
from async_vla_ros.sim.env import BatchedPandaEnv, PandaEnv  # noqa: E402
from async_vla_ros.sim.tasks import Q_REST, TASKS, make_task  # noqa: E402


def test_scene_loads_with_expected_physics():
    model = make_task("pick_moving").build_model()
    assert model.opt.timestep == pytest.approx(0.001)
    assert model.nu == 8
    ids = S.SceneIds.from_model(model)
    assert len(ids.arm_qpos) == 7 and len(ids.finger_qpos) == 2
    hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
    assert model.body_gravcomp[hand] == 1.0
    for cam in ("scene", "wrist"):
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam) >= 0
    # Arm links never collide (contype 0); the finger pads do in pick_moving.
    link3 = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "link3")
    assert all(model.geom_contype[g] == 0 for g in range(model.ngeom) if model.geom_bodyid[g] == link3)
    lf = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "left_finger")
    assert sum(model.geom_contype[g] == S.ROBOT_CONTYPE for g in range(model.ngeom) if model.geom_bodyid[g] == lf) == 1


def test_bad_robot_contacts_rejected():
    with pytest.raises(ValueError, match="robot_contacts"):
        S.build_spec(robot_contacts=("elbow",))


def test_fk_and_jacobian_match_mujoco():
    spec = S.build_spec()
    spec.body("hand").add_site(name="tcp", pos=[0, 0, K.TCP_OFFSET])
    model = spec.compile()
    data = mujoco.MjData(model)
    ids = S.SceneIds.from_model(model)
    sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
    q = np.random.default_rng(0).uniform(K.Q_LOW, K.Q_HIGH, size=(4, 7))
    jac, pos, rot = K.jacobian(q)
    for i in range(4):
        data.qpos[ids.arm_qpos] = q[i]
        mujoco.mj_forward(model, data)
        jp, jr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        mujoco.mj_jacSite(model, data, jp, jr, sid)
        np.testing.assert_allclose(pos[i], data.site_xpos[sid], atol=1e-9)
        np.testing.assert_allclose(rot[i], data.site_xmat[sid].reshape(3, 3), atol=1e-6)
        np.testing.assert_allclose(jac[i, :3], jp[:, ids.arm_dof], atol=1e-9)
        np.testing.assert_allclose(jac[i, 3:], jr[:, ids.arm_dof], atol=1e-9)


def test_ik_reaches_reachable_targets():
    targets = np.array([[0.45, 0.0, 0.25], [0.55, -0.15, 0.05], [0.35, 0.2, 0.35]])
    q = K.solve_ik(np.tile(Q_REST, (3, 1)), targets, q_rest=Q_REST, iters=40)
    pos, rot = K.fk(q)
    np.testing.assert_allclose(pos, targets, atol=1e-3)  # the null-space posture pull leaves < 1 mm
    np.testing.assert_allclose(rot, np.broadcast_to(K.R_DOWN, (3, 3, 3)), atol=1e-3)
    assert np.all(q >= K.Q_LOW) and np.all(q <= K.Q_HIGH)


def test_command_to_ctrl_gripper_mapping():
    a = np.zeros(8)
    a[:7] = Q_REST
    a[7] = 0.04
    ctrl = S.command_to_ctrl(a)
    np.testing.assert_allclose(ctrl[:7], Q_REST)
    assert ctrl[7] == pytest.approx(127.5)
    with pytest.raises(ValueError):
        S.command_to_ctrl(np.zeros(7))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_reset_is_seeded_and_obs_layout(task):
    env = BatchedPandaEnv(task, 2, threads=1)
    o1 = env.reset([3, 4])
    o2 = env.reset([3, 4])
    np.testing.assert_array_equal(o1, o2)
    assert o1.shape == (2, env.task.obs_dim)
    assert not np.allclose(o1[0], o1[1])
    sl = env.task.obs_slices
    # Arm at rest at the start; the tcp field is forward kinematics of the q field.
    np.testing.assert_allclose(o1[:, sl["qd"]], 0.0, atol=1e-9)
    np.testing.assert_allclose(o1[:, sl["tcp"]], K.fk(o1[:, sl["q"]])[0], atol=1e-12)
    env.close()


def test_position_command_holds_pose_and_rejects_bad_actions():
    env = PandaEnv("track")
    obs = env.reset(0)
    q0 = obs[:7].copy()
    cmd = np.concatenate([q0, [0.0]])
    for _ in range(5):
        obs = env.step(cmd)
    # Gravity compensation: the servo holds the commanded pose (no sag).
    np.testing.assert_allclose(obs[:7], q0, atol=2e-3)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        env._env.step(np.full((1, 8), np.nan))
    env.close()


def test_renders_non_blank_image():
    ok, reason = S.gl_available()
    if not ok:
        pytest.skip(reason)
    env = BatchedPandaEnv("bifurcate", 1, threads=1)
    env.reset([0])
    img = env.render(0, "scene", 96, 96)
    wrist = env.render(0, "wrist", 64, 64)
    env.close()
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert wrist.shape == (64, 64, 3)
    # Not a blank frame: many distinct colours and a real spread of intensities.
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    assert img.std() > 10


_TASK_OBJECTS = {"track": ("target",), "intercept": ("ball",), "bifurcate": ("pole", "goal"), "pick_moving": ("cube",)}


def _in_scene_view(model: mujoco.MjModel, data: mujoco.MjData, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Which world points (n, 3) the scene camera's square image shows (pinhole, fovy both ways)."""
    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "scene")
    d = (points - data.cam_xpos[cid]) @ data.cam_xmat[cid].reshape(3, 3)  # camera frame: x right, y up, -z ahead
    half = np.tan(np.radians(model.cam_fovy[cid]) / 2) * (1 - margin)
    return (d[:, 2] < 0) & (np.abs(d[:, 0] / -d[:, 2]) < half) & (np.abs(d[:, 1] / -d[:, 2]) < half)


@pytest.mark.parametrize("placement", sorted(S.SCENE_CAMERAS))
def test_every_scene_camera_placement_sees_every_tasks_objects_and_the_fingertips(placement, monkeypatch):
    from async_vla_ros import names as N
    from async_vla_ros.sim.experts import ScriptedExpert

    monkeypatch.setattr(N, "SCENE_CAMERA", placement)
    for name, bodies in _TASK_OBJECTS.items():
        task = make_task(name)
        env = BatchedPandaEnv(task, 6)
        cid = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, "scene")
        assert env.model.cam_fovy[cid] == pytest.approx(S.SCENE_CAMERAS[placement]["fovy"])  # the named placement
        ids = [mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, b) for b in bodies]
        hand = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "hand")
        expert = ScriptedExpert(task)
        obs = env.reset(list(range(100, 106)))
        for _ in range(env.episode_steps):
            for i, d in enumerate(env.datas):
                mujoco.mj_kinematics(env.model, d)
                mujoco.mj_camlight(env.model, d)
                tcp = d.xpos[hand] + d.xmat[hand].reshape(3, 3)[:, 2] * K.TCP_OFFSET  # between the fingertips
                pts = np.vstack([d.xpos[ids], tcp])
                # the intercept ball is rolled in from x 0.86..0.92 and enters the view by x = 0.82; once
                # the paddle has sent it away from the goal line (|y| <= 0.25 there) it may leave
                keep = pts[:, 0] <= 0.82
                if name == "intercept":
                    p, v = obs[i, task.obs_slices["ball_pos"]], obs[i, task.obs_slices["ball_vel"]]
                    y_goal = p[1] + v[1] * (0.30 - p[0]) / min(v[0], -1e-6)
                    keep[0] &= v[0] < 0 and abs(y_goal) <= 0.3
                assert _in_scene_view(env.model, d, pts[keep]).all(), (placement, name, pts)
            obs = env.step(expert.act(obs))
        env.close()


def test_the_default_scene_camera_frames_the_workspace():
    """front_v2 shows a 4 cm object in the middle of the workspace ~4 px wide at 64 px (front_v1: ~2)."""
    from async_vla_ros import names as N

    assert N.SCENE_CAMERA in S.SCENE_CAMERAS and N.SCENE_CAMERA_LEGACY == "front_v1"
    for placement, lo, hi in (("front_v1", 1.5, 3.0), ("front_v2", 3.5, 5.0)):
        cam = S.SCENE_CAMERAS[placement]
        dist = np.linalg.norm(np.array(cam["pos"]) - [0.5, 0.0, 0.1])
        px = 0.04 / (2 * dist * np.tan(np.radians(cam["fovy"]) / 2)) * 64
        assert lo < px < hi, (placement, px)
