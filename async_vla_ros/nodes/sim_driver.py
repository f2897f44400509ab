"""Real-time stepping of a simulation task at physics granularity (no rclpy).

``sim.env.PandaEnv.step`` holds one action for a whole control period (50 ms), which is what the
lockstep benchmark wants. A robot driver instead receives position commands at the correction
rate (100 Hz+) and must apply each as it arrives. :class:`PhysicsDriver` therefore advances the
same task and model in blocks of physics steps (1 ms each) with the latest command, and runs the
task's per-control-step bookkeeping (``post_step`` metrics, ``pre_step`` events, the step
counter) exactly at control-step boundaries, in the same order as ``PandaEnv.step``. Episode
start, success and the observation layout are the env's own (``PandaEnv.reset``, ``task``).

Coordinates: ``q``/``qd`` (7,) arm joints, ``fingers`` (2,) finger joint positions (each half the
gripper width), ``tcp`` (3,), ``task_obs`` (the task's fields of the observation, after the
common q/qd/gripper/tcp block).
"""

from __future__ import annotations

import mujoco
import numpy as np

from async_vla_ros.sim import kinematics as K
from async_vla_ros.sim import scene as S
from async_vla_ros.sim.env import PandaEnv

__all__ = ["PhysicsDriver"]


class PhysicsDriver:
    """One task episode after another, stepped in physics blocks (see module docstring)."""

    def __init__(self, task: str, seed: int = 0) -> None:
        self.env = PandaEnv(task)
        self.task = self.env.task
        self.model = self.env.model
        self.data = self.env.data
        self._batched = self.env._env  # the single env's batch of one: states, ids, step counter
        self.ids = self.task.ids
        self.dt = float(self.task.dt)
        self.substeps = int(self.task.substeps)  # physics steps per control step
        self.physics_dt = float(self.model.opt.timestep)
        lo_hi = self.model.actuator_ctrlrange[:7]
        self._q_lo, self._q_hi = lo_hi[:, 0].copy(), lo_hi[:, 1].copy()
        self.next_seed = int(seed)
        self.episode_id = 0
        self._sub = 0  # physics steps done inside the current control step
        self.command = np.zeros(S.ACTION_DIM)
        self.tcp = np.zeros(3)

    # ------------------------------------------------------------------ episodes
    def reset(self, seed: int | None = None) -> int:
        """Start the next episode (seed: the given one, else the running counter); returns its id."""
        s = self.next_seed if seed is None else int(seed)
        self.next_seed = s + 1
        obs = self.env.reset(s)
        self.episode_id += 1
        self.seed = s
        self._sub = 0
        self.command = self._batched.command[0].copy()
        self.tcp = obs[15:18].copy()
        return self.episode_id

    @property
    def step_index(self) -> int:
        """Control step of the current episode (0 at reset)."""
        return int(self._batched.t)

    @property
    def sub_steps(self) -> int:
        """Physics steps done inside the current control step."""
        return self._sub

    @property
    def done(self) -> bool:
        return bool(self._batched.done)

    @property
    def state(self):
        return self._batched.states[0]

    def success(self) -> bool:
        return bool(self.task.success(self.state))

    # ------------------------------------------------------------------ commands
    def set_command(self, q: np.ndarray | None = None, gripper: float | None = None) -> None:
        """Latest position targets: arm ``q (7,)`` rad (clipped to the actuator range) and/or
        gripper width (m, clipped to [0, 0.08]). Finite values only (the caller validates)."""
        if q is not None:
            qa = np.asarray(q, dtype=np.float64)
            if qa.shape != (7,) or not np.all(np.isfinite(qa)):
                raise ValueError(f"q must be 7 finite values, got {q!r}")
            self.command[:7] = np.clip(qa, self._q_lo, self._q_hi)
        if gripper is not None:
            g = float(gripper)
            if not np.isfinite(g):
                raise ValueError("gripper width must be finite")
            self.command[7] = min(max(g, 0.0), S.GRIPPER_MAX)

    # ------------------------------------------------------------------ physics
    def advance(self, n_physics: int) -> int:
        """Run ``n_physics`` physics steps with the current command; returns the number of
        control-step boundaries crossed (0 once the episode is done: physics stops there)."""
        if n_physics < 0:
            raise ValueError("n_physics must be >= 0")
        boundaries = 0
        self.data.ctrl[:] = S.command_to_ctrl(self.command)
        left = int(n_physics)
        while left > 0 and not self.done:
            n = min(left, self.substeps - self._sub)
            mujoco.mj_step(self.model, self.data, nstep=n)
            self._sub += n
            left -= n
            if self._sub == self.substeps:
                self._control_boundary()
                boundaries += 1
        return boundaries

    def _control_boundary(self) -> None:
        # the same order as BatchedPandaEnv.step: metrics of step t, counter, events of step t+1
        q = self.data.qpos[self.ids.arm_qpos]
        self.tcp = K.fk(q[None])[0][0]
        st = self.state
        self.task.post_step(self.model, self.data, st, self.tcp)
        st.t += 1
        self._batched.t += 1
        self._batched.command[0] = self.command
        self._sub = 0
        if not self.done:
            self.task.pre_step(self.model, self.data, st, self.tcp)

    # ------------------------------------------------------------------ measurements
    def joints(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Copies of arm q (7,), arm qd (7,), finger positions (2,), finger velocities (2,)."""
        d, ids = self.data, self.ids
        return (
            d.qpos[ids.arm_qpos].copy(),
            d.qvel[ids.arm_dof].copy(),
            d.qpos[ids.finger_qpos].copy(),
            d.qvel[ids.finger_dof].copy(),
        )

    def task_obs(self) -> np.ndarray:
        """TCP (3,) followed by the task's observation fields at the current control step."""
        return np.concatenate([self.tcp, self.task.task_obs(self.model, self.data, self.state)])

    def task_obs_names(self) -> list[str]:
        names = ["tcp_x", "tcp_y", "tcp_z"]
        for field, n in self.task.task_fields:
            names += [f"{field}_{i}" for i in range(n)]
        return names

    def render(self, camera: str, width: int, height: int, geom_groups: tuple[int, ...]) -> np.ndarray:
        """RGB (height, width, 3) uint8 (call from one thread only: the GL context is per thread)."""
        return self.env._env.render(0, camera, width, height, geom_groups)

    def close(self) -> None:
        self.env.close()
