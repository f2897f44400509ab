"""Batched Franka Panda kinematics and damped-least-squares IK in numpy.

Why not MuJoCo's own ``mj_jacSite`` or ``mink``: the scripted experts plan whole chunks
(H waypoints) for B environments at once, and a ChunkPolicy call must stay in the few-ms
range. One MuJoCo/mink solve costs 10-700 us per environment and waypoint; the vectorised
version below solves all B x 1 waypoints of one horizon step in one numpy pass.

Model: Craig's modified Denavit-Hartenberg parameters of the Panda (Franka documentation), which
the Menagerie MJCF reproduces body by body (``test_sim_kinematics`` checks against MuJoCo):

    joint   a (m)     d (m)   alpha (rad)
    1       0         0.333   0
    2       0         0       -pi/2
    3       0         0.316   pi/2
    4       0.0825    0       pi/2
    5      -0.0825    0.384   -pi/2
    6       0         0       pi/2
    7       0.088     0       pi/2
    flange  0         0.107   0          (then the hand, rotated -pi/4 about z)
    TCP     hand z + 0.1034 m            (point between the finger pads)

Frame i's transform is ``RotX(alpha_i) TransX(a_i) RotZ(q_i) TransZ(d_i)``; joint i turns about
the z axis of frame i.

Shapes: q (B, 7) rad; positions (B, 3) m; rotations (B, 3, 3) (columns = frame axes in world).
"""

from __future__ import annotations

import numpy as np

DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088])
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0])
DH_ALPHA = np.array([0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2])
FLANGE_D = 0.107
HAND_YAW = -np.pi / 4
TCP_OFFSET = 0.1034  # m along the hand z axis, from the hand frame to the centre of the finger pads

# Joint limits of the Panda (Menagerie MJCF = Franka datasheet), rad.
Q_LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])

# Tool orientation used by all tasks: hand z axis pointing down, fingers opening along world y.
R_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def _as_batch(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != 7:
        raise ValueError(f"q must have shape (B, 7) or (7,), got {q.shape}")
    return q


def _frames(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Joint axes z_i (B,7,3), joint origins o_i (B,7,3), TCP position (B,3), TCP rotation (B,3,3)."""
    b = q.shape[0]
    rot = np.broadcast_to(np.eye(3), (b, 3, 3)).copy()
    pos = np.zeros((b, 3))
    axes = np.empty((b, 7, 3))
    origins = np.empty((b, 7, 3))
    for i in range(7):
        ca, sa = np.cos(DH_ALPHA[i]), np.sin(DH_ALPHA[i])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]])
        # RotX(alpha) TransX(a): new origin = pos + R @ [a,0,0]; new rot = R @ rx.
        pos = pos + rot[:, :, 0] * DH_A[i]
        rot = rot @ rx
        c, s = np.cos(q[:, i]), np.sin(q[:, i])
        rz = np.zeros((b, 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
        rot = rot @ rz
        pos = pos + rot[:, :, 2] * DH_D[i]
        axes[:, i] = rot[:, :, 2]
        origins[:, i] = pos
    pos = pos + rot[:, :, 2] * FLANGE_D
    cy, sy = np.cos(HAND_YAW), np.sin(HAND_YAW)
    rot = rot @ np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    pos = pos + rot[:, :, 2] * TCP_OFFSET
    return axes, origins, pos, rot


def fk(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCP pose: q (B,7) -> position (B,3), rotation (B,3,3)."""
    _, _, pos, rot = _frames(_as_batch(q))
    return pos, rot


def jacobian(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TCP geometric Jacobian: q (B,7) -> J (B,6,7) (rows: linear xyz, angular xyz), pos, rot."""
    axes, origins, pos, rot = _frames(_as_batch(q))
    jp = np.cross(axes, pos[:, None, :] - origins)  # (B,7,3)
    jac = np.concatenate([jp, axes], axis=2).transpose(0, 2, 1)
    return jac, pos, rot


def orientation_error(rot: np.ndarray, rot_des: np.ndarray) -> np.ndarray:
    """Small-angle rotation error (B,3) taking ``rot`` towards ``rot_des`` (both (B,3,3))."""
    return 0.5 * np.cross(rot, rot_des, axis=1).sum(axis=2)


def solve_ik(
    q_init: np.ndarray,
    pos_des: np.ndarray,
    rot_des: np.ndarray = R_DOWN,
    q_rest: np.ndarray | None = None,
    iters: int = 3,
    damping: float = 1e-3,
    rot_weight: float = 0.5,
    rest_gain: float = 0.1,
    max_step: float = 0.4,
) -> np.ndarray:
    """Damped least squares IK for the TCP, batched.

    q_init (B,7) warm start; pos_des (B,3); rot_des (3,3) or (B,3,3); q_rest (7,) or (B,7) posture
    pulled on in the Jacobian null space. Each iteration moves at most ``max_step`` rad per joint;
    the result is clipped to the joint limits. Returns q (B,7).
    """
    q = _as_batch(q_init).copy()
    pos_des = np.asarray(pos_des, dtype=np.float64).reshape(q.shape[0], 3)
    rot_des = np.broadcast_to(np.asarray(rot_des, dtype=np.float64), (q.shape[0], 3, 3))
    if not (np.isfinite(pos_des).all() and np.isfinite(q).all()):
        raise ValueError("solve_ik: non-finite target or initial joints")
    w = np.array([1.0, 1.0, 1.0, rot_weight, rot_weight, rot_weight])
    eye6 = np.eye(6) * damping
    eye7 = np.eye(7)
    for _ in range(iters):
        jac, pos, rot = jacobian(q)
        err = np.concatenate([pos_des - pos, orientation_error(rot, rot_des)], axis=1) * w
        jw = jac * w[None, :, None]
        jjt = jw @ jw.transpose(0, 2, 1) + eye6
        dq = (jw.transpose(0, 2, 1) @ np.linalg.solve(jjt, err[..., None]))[..., 0]
        if q_rest is not None:
            # Null-space projector of the weighted Jacobian (damped pseudo-inverse).
            jpinv = jw.transpose(0, 2, 1) @ np.linalg.inv(jjt)
            null = eye7 - jpinv @ jw
            dq = dq + rest_gain * (null @ (np.asarray(q_rest) - q)[..., None])[..., 0]
        dq = np.clip(dq, -max_step, max_step)
        q = np.clip(q + dq, Q_LOW, Q_HIGH)
    return q
