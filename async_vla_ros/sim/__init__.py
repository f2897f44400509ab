"""MuJoCo Panda simulation: scene, dynamic tasks, scripted experts, demonstrations, lockstep runner.

Headless rendering: MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when it is first imported,
so this package sets ``MUJOCO_GL=egl`` (unless the caller chose one) before any of its modules
imports mujoco. Import ``async_vla_ros.sim`` before ``mujoco`` if you render.
"""

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")
