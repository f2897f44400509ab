"""MuJoCo Panda scene: Menagerie Panda (with hand) on a table, task objects, two cameras.

Built with ``mujoco.MjSpec`` from the Menagerie ``panda.xml`` (located by
``async_vla_ros.assets.require_panda()``), then edited:

- physics at 1 kHz (``timestep = 0.001``), implicitfast integrator (Menagerie default);
- gravity compensation on every arm body (``gravcomp = 1``), like the Franka's internal model
  compensation: the position servos then track without a gravity sag;
- collisions: the table is the plane z = 0 (the robot base stands on it). Collision bit masks:
  ``contype``/``conaffinity`` = table 1/0, robot 2/0, task objects 1/3, so objects touch the
  table and the robot, while robot-table and robot-robot pairs are never tested. Arm-link collision
  meshes are switched off entirely; a task chooses which hand geoms collide (``robot_contacts``:
  ``"fingers"`` = the main finger pad box of each finger, ``"hand"`` = hand mesh, ``"paddle"`` = an 8 cm
  pusher plate fixed under the hand, added only when asked for);
- cameras: ``scene`` (fixed, in front of the robot, looking at the workspace) and ``wrist``
  (on the hand, looking along the fingers); one light without shadows.

Actuation (``command_to_ctrl``): an action (8,) = 7 absolute joint position targets (rad) + gripper
width (m, 0..0.08). The Menagerie gripper actuator takes 0..255 for 0..0.04 m per finger.

Rendering (``SceneRenderer``) is headless through ``MUJOCO_GL`` (``egl`` if unset, else the
caller's choice; ``osmesa`` needs Debian ``libosmesa6``, ``egl`` needs ``libegl1 libgl1`` and a
Mesa EGL driver such as ``libegl-mesa0``). Shadows and reflections are off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from async_vla_ros import names as N
from async_vla_ros.assets import require_panda

TIMESTEP = 0.001
N_ARM = 7
ACTION_DIM = 8
GRIPPER_MAX = 0.08  # m, fully open
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
_GRIPPER_CTRL_PER_M = 255.0 / GRIPPER_MAX

# Placements of the fixed ``scene`` camera, by name; ``names.SCENE_CAMERA`` is the one build_spec
# places. A policy that reads this camera is trained on one placement and must be shown that one: the
# VLA's sidecar records it (``scene_camera``) and the LeRobot backend refuses another. ``front_v1`` sees the whole table from 1.3 m (a 4 cm object is 2-3 px at
# 64 px); ``front_v2`` frames the tasks' workspace (x 0.30..0.82 m, |y| <= 0.25 m, z 0..0.42 m; the
# intercept ball enters the view at x ~0.82) from 40 degrees above the table, ~1 px per cm at 64 px.
SCENE_CAMERAS: dict[str, dict[str, tuple[float, ...] | float]] = {
    "front_v1": {"pos": (1.45, 0.0, 0.85), "target": (0.45, 0.0, 0.05), "fovy": 50.0},
    "front_v2": {"pos": (1.52, 0.0, 0.96), "target": (0.52, 0.0, 0.12), "fovy": 27.0},
}

# Collision bit masks (see module docstring).
TABLE_CONTYPE, TABLE_CONAFF = 1, 0
ROBOT_CONTYPE, ROBOT_CONAFF = 2, 0
OBJECT_CONTYPE, OBJECT_CONAFF = 1, 3

_ARM_BODIES = ("link1", "link2", "link3", "link4", "link5", "link6", "link7", "hand", "left_finger", "right_finger")
_CONTACT_KINDS = ("fingers", "hand", "paddle")
PADDLE_HALF = (0.012, 0.04, 0.02)  # m, box half sizes in the hand frame (x, y, z)
PADDLE_Z = 0.1034 - 0.005  # m, centre of the paddle along the hand z axis (bottom 1.5 cm below TCP)


def command_to_ctrl(action: np.ndarray) -> np.ndarray:
    """Action (..., 8) [q targets rad, gripper width m] -> MuJoCo ctrl (..., 8)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape[-1] != ACTION_DIM:
        raise ValueError(f"action must end in {ACTION_DIM} values, got shape {a.shape}")
    ctrl = a.copy()
    ctrl[..., 7] = np.clip(a[..., 7], 0.0, GRIPPER_MAX) * _GRIPPER_CTRL_PER_M
    return ctrl


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> list[float]:
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return [*right, *up]


def build_spec(
    add_objects: Callable[[mujoco.MjSpec], None] | None = None,
    robot_contacts: tuple[str, ...] = (),
) -> mujoco.MjSpec:
    """Panda + table + cameras (+ task objects from ``add_objects(spec)``) as an editable MjSpec."""
    bad = [c for c in robot_contacts if c not in _CONTACT_KINDS]
    if bad:
        raise ValueError(f"unknown robot_contacts {bad}; choose from {_CONTACT_KINDS}")
    spec = mujoco.MjSpec.from_file(str(require_panda() / "panda.xml"))
    spec.option.timestep = TIMESTEP
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480
    for light in spec.lights:
        light.castshadow = False

    for body in spec.bodies:
        if body.name in _ARM_BODIES:
            body.gravcomp = 1.0
        for g in body.geoms:
            if g.contype == 0 and g.conaffinity == 0:
                continue  # visual geom
            is_pad = g.classname.name == "fingertip_pad_collision_1"
            keep = (is_pad and "fingers" in robot_contacts) or (body.name == "hand" and "hand" in robot_contacts)
            g.contype, g.conaffinity = (ROBOT_CONTYPE, ROBOT_CONAFF) if keep else (0, 0)
            g.condim = 3
            g.friction = [1.0, 0.005, 0.0001]

    hand = spec.body("hand")
    if "paddle" in robot_contacts:
        hand.add_geom(
            name="paddle",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=list(PADDLE_HALF),
            pos=[0.0, 0.0, PADDLE_Z],
            rgba=[0.2, 0.3, 0.8, 1.0],
            contype=ROBOT_CONTYPE,
            conaffinity=ROBOT_CONAFF,
            mass=0.05,
        )
    cam = SCENE_CAMERAS[N.SCENE_CAMERA]
    spec.worldbody.add_camera(
        name="scene",
        pos=list(cam["pos"]),
        xyaxes=_look_at_xyaxes(np.array(cam["pos"]), np.array(cam["target"])),
        fovy=float(cam["fovy"]),
    )
    hand.add_camera(name="wrist", pos=[0.07, 0.0, 0.02], quat=[0.0, 1.0, 0.0, 0.0], fovy=75)
    spec.worldbody.add_light(name="key", pos=[0.5, 0.5, 1.8], dir=[0, -0.3, -1], castshadow=False)

    table = spec.worldbody.add_body(name="table")
    table.add_geom(
        name="table_top",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.8, 0.8, 0.02],
        pos=[0.45, 0.0, -0.02],
        rgba=[0.55, 0.45, 0.35, 1.0],
        contype=TABLE_CONTYPE,
        conaffinity=TABLE_CONAFF,
        friction=[0.6, 0.005, 0.0001],
    )
    if add_objects is not None:
        add_objects(spec)
    return spec


@dataclass(frozen=True)
class SceneIds:
    """Indices into a compiled model, resolved once."""

    arm_qpos: np.ndarray  # (7,) qpos addresses of joint1..7
    arm_dof: np.ndarray  # (7,) dof addresses of joint1..7
    finger_qpos: np.ndarray  # (2,)
    finger_dof: np.ndarray  # (2,)

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> SceneIds:
        def jid(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

        arm = [jid(n) for n in ARM_JOINTS]
        fing = [jid(n) for n in FINGER_JOINTS]
        if min(arm + fing) < 0:
            raise RuntimeError("Panda joints not found in the model")
        return cls(
            arm_qpos=np.array([model.jnt_qposadr[j] for j in arm]),
            arm_dof=np.array([model.jnt_dofadr[j] for j in arm]),
            finger_qpos=np.array([model.jnt_qposadr[j] for j in fing]),
            finger_dof=np.array([model.jnt_dofadr[j] for j in fing]),
        )


def gl_available() -> tuple[bool, str]:
    """Whether an offscreen GL context can be made here; (ok, reason if not)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        ctx = mujoco.GLContext(16, 16)
        ctx.make_current()
        ctx.free()
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any backend failure means "no GL here"
        return False, (
            f"no offscreen GL with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {exc}. "
            "Install Debian libegl1 libgl1 libegl-mesa0 (egl) or libosmesa6 (osmesa)."
        )


class SceneRenderer:
    """Headless RGB renderer for one camera. ``render(data) -> (height, width, 3) uint8``.

    ``geom_groups`` chooses what is drawn: Menagerie visual meshes are group 2, collision meshes
    group 3, table and task objects group 0. Drawing (0, 3) is several times faster than the visual
    meshes (0, 2).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        width: int = 128,
        height: int = 128,
        camera: str = "scene",
        geom_groups: tuple[int, ...] = N.IMAGE_STYLES[N.IMAGE_STYLE],
    ):
        if not (16 <= width <= 640 and 16 <= height <= 480):
            raise ValueError(f"image size {width}x{height} outside 16..640 x 16..480")
        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ValueError(f"unknown camera {camera!r}; the scene has 'scene' and 'wrist'")
        os.environ.setdefault("MUJOCO_GL", "egl")
        self.camera = camera
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        self._opt = mujoco.MjvOption()
        self._opt.geomgroup[:] = 0
        for g in geom_groups:
            self._opt.geomgroup[g] = 1
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self._renderer.update_scene(data, camera=self.camera, scene_option=self._opt)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()
