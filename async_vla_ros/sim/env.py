"""Panda environments: B copies of one task's scene, stepped together at the control rate.

``BatchedPandaEnv(task, num_envs)``:

- ``reset(seeds) -> obs (B, obs_dim)``: per env, the task samples its initial conditions from
  ``numpy.random.default_rng(seed)``; the arm starts at rest at the IK solution of the task's start
  TCP (hand pointing down), commanded to that same pose.
- ``step(actions (B, 8)) -> obs (B, obs_dim)``: actions are ABSOLUTE joint position targets (rad,
  clipped to the actuator ranges) + gripper width (m, clipped to [0, 0.08]); each is held for one
  control period (``task.dt`` / 0.001 physics steps). The position servos and the gripper are the
  Menagerie actuators; gravity is compensated (see ``scene``), so what remains is the servo's
  dynamic lag, as on a real arm with a joint impedance controller.
- The physics of the B envs runs on a small thread pool (``mj_step`` releases the GIL), so two cores
  step about twice as many envs per second as one.
- ``success() (B,)``, ``success_step() (B,)``, ``failed() (B,)``, ``states`` (per-env
  :class:`EpisodeState` with the random parameters and metrics).

Order inside a control step t: action -> physics (dt) -> metrics of step t (state at (t+1)dt) ->
events of step t+1 (kicks, pushes, mocap motion) -> observation of step t+1. So an event at a step
boundary is visible in the observation of that step, like a camera frame taken right after it.

``safety=SafetyConfig(...)`` (``core.safety``) makes the env drive the actuators as the running
graph does: each step's command is reached by a linear ramp from the previous step's command,
sampled at ``command_rate_hz`` (100 Hz: 5 ticks per 50 ms step), and every tick passes that env's
:class:`~async_vla_ros.core.safety.SafetyFilter` (the robot's velocity, acceleration and jerk limits)
before it reaches the servos. Without it the step's command goes to the servos as is, which lets
a policy's step changes through faster than a real arm's limits allow (``filter_deviation``: by
how much the filter moved each tick's command, rad).

``PandaEnv`` is the single-environment view (obs (obs_dim,), action (8,)).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import mujoco
import numpy as np

from async_vla_ros import names as N
from async_vla_ros.core.safety import SafetyConfig, SafetyFilter
from async_vla_ros.sim import kinematics as K
from async_vla_ros.sim import scene as S
from async_vla_ros.sim.tasks import Q_REST, EpisodeState, Task, make_task


class BatchedPandaEnv:
    """B environments of one task (see module docstring)."""

    def __init__(
        self,
        task: str | Task,
        num_envs: int,
        threads: int | None = None,
        safety: SafetyConfig | None = None,
        command_rate_hz: float = 100.0,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        self.task: Task = make_task(task) if isinstance(task, str) else task
        if not isinstance(self.task, Task):
            raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")
        self.num_envs = int(num_envs)
        self.model = self.task.build_model()
        self.datas = [mujoco.MjData(self.model) for _ in range(self.num_envs)]
        self.ids = self.task.ids
        self.obs_dim = self.task.obs_dim
        self.episode_steps = self.task.episode_steps
        self.dt = self.task.dt
        self._substeps = self.task.substeps
        lo_hi = self.model.actuator_ctrlrange[:7]
        self._q_lo, self._q_hi = lo_hi[:, 0].copy(), lo_hi[:, 1].copy()
        n_threads = min(2, os.cpu_count() or 1) if threads is None else int(threads)
        if n_threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        n_threads = min(n_threads, self.num_envs)
        self._pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
        bounds = np.linspace(0, self.num_envs, n_threads + 1).astype(int)
        self._slices = [slice(bounds[i], bounds[i + 1]) for i in range(n_threads)]
        self._obs = np.zeros((self.num_envs, self.obs_dim))
        self.states: list[EpisodeState] = []
        self.t = 0
        self.command = np.zeros((self.num_envs, S.ACTION_DIM))  # last applied command (B, 8)
        self._tcp = np.zeros((self.num_envs, 3))
        self._renderers: dict[tuple, S.SceneRenderer] = {}
        self.safety = safety
        self._filters: list[SafetyFilter] = []
        self._prev_command = self.command.copy()
        self.filter_deviation: list[float] = []  # per tick: max |filtered - ramped target| (rad)
        if safety is not None:
            ticks = self.dt * float(command_rate_hz)
            if not (ticks >= 1 and abs(ticks - round(ticks)) < 1e-9 and self._substeps % round(ticks) == 0):
                raise ValueError(
                    f"command_rate_hz {command_rate_hz} must give a whole number of ticks per {self.dt} s step "
                    f"that divides its {self._substeps} physics steps"
                )
            self._ticks = int(round(ticks))
            self.safety = replace(safety, dt=self.dt / self._ticks)

    # ------------------------------------------------------------------ episode
    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Start new episodes with these seeds (one per env). Returns obs (B, obs_dim)."""
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        params = [self.task.sample(np.random.default_rng(s)) for s in seeds]
        starts = [self.task.start_tcp(p) for p in params]
        tcp0 = np.stack([s[0] for s in starts])
        q0 = K.solve_ik(np.tile(Q_REST, (self.num_envs, 1)), tcp0, q_rest=Q_REST, iters=40)
        err = np.linalg.norm(K.fk(q0)[0] - tcp0, axis=1)
        if err.max() > 1e-3:
            raise RuntimeError(f"start pose unreachable (IK error {err.max():.4f} m); task sampling is wrong")
        self.states = [EpisodeState(seed=s, params=p) for s, p in zip(seeds, params)]
        self.t = 0
        for i, d in enumerate(self.datas):
            mujoco.mj_resetData(self.model, d)
            grip = float(starts[i][1])
            d.qpos[self.ids.arm_qpos] = q0[i]
            d.qpos[self.ids.finger_qpos] = grip / 2
            self.command[i, :7] = q0[i]
            self.command[i, 7] = grip
            d.ctrl[:] = S.command_to_ctrl(self.command[i])
            self.task.reset_objects(self.model, d, self.states[i])
            mujoco.mj_forward(self.model, d)
        self._tcp = K.fk(q0)[0]
        self._prev_command = self.command.copy()
        if self.safety is not None:
            self._filters = [SafetyFilter(self.safety) for _ in range(self.num_envs)]
            for i, f in enumerate(self._filters):
                f.reset(self.command[i, :7], float(self.command[i, 7]))
        for i, d in enumerate(self.datas):
            self.task.pre_step(self.model, d, self.states[i], self._tcp[i])
        self._obs = self._observe(np.arange(self.num_envs))
        return self._obs.copy()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """Apply actions (B, 8) for one control period; returns obs (B, obs_dim) of the next step.

        ``active`` (B,) bool: only these envs are simulated (e.g. skip envs whose outcome is
        decided); the others keep their state, observation and command.
        """
        if not self.states:
            raise RuntimeError("call reset(seeds) before step()")
        if self.done:
            raise RuntimeError(f"episode over ({self.episode_steps} steps); call reset()")
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (self.num_envs, S.ACTION_DIM):
            raise ValueError(f"actions must have shape (B, 8) = ({self.num_envs}, 8), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("actions contain NaN or Inf")
        if active is None:
            act = np.ones(self.num_envs, dtype=bool)
        else:
            act = np.asarray(active, dtype=bool)
            if act.shape != (self.num_envs,):
                raise ValueError(f"active must have shape ({self.num_envs},), got {act.shape}")
        a = a.copy()
        a[:, :7] = np.clip(a[:, :7], self._q_lo, self._q_hi)
        a[:, 7] = np.clip(a[:, 7], 0.0, S.GRIPPER_MAX)
        self.command = np.where(act[:, None], a, self.command)
        ctrl = S.command_to_ctrl(self.command)
        idx = np.flatnonzero(act)
        for i in idx:
            self.datas[i].ctrl[:] = ctrl[i]
        if self._pool is None or len(idx) < 2:
            self._physics(idx)
        else:
            list(self._pool.map(self._physics, np.array_split(idx, len(self._slices))))
        q = np.stack([self.datas[i].qpos[self.ids.arm_qpos] for i in idx]) if len(idx) else np.zeros((0, 7))
        if len(idx):
            self._tcp[idx] = K.fk(q)[0]
        for i in idx:
            self.task.post_step(self.model, self.datas[i], self.states[i], self._tcp[i])
            self.states[i].t += 1
        self.t += 1
        if not self.done:
            for i in idx:
                self.task.pre_step(self.model, self.datas[i], self.states[i], self._tcp[i])
        self._obs[idx] = self._observe(idx)
        return self._obs.copy()

    def _physics(self, idx: np.ndarray) -> None:
        if self.safety is None:
            for i in idx:
                mujoco.mj_step(self.model, self.datas[i], nstep=self._substeps)
            return
        n = self._ticks
        for i in idx:
            prev, cmd, f = self._prev_command[i], self.command[i], self._filters[i]
            for j in range(n):
                target = prev + (j + 1) / n * (cmd - prev)
                q, g, _ = f.filter(target[:7], float(target[7]))
                self.filter_deviation.append(float(np.max(np.abs(q - target[:7]))))
                self.datas[i].ctrl[:] = S.command_to_ctrl(np.r_[q, target[7] if g is None else g])
                mujoco.mj_step(self.model, self.datas[i], nstep=self._substeps // n)
            self._prev_command[i] = cmd

    def _observe(self, idx: np.ndarray) -> np.ndarray:
        obs = np.empty((len(idx), self.obs_dim))
        for j, i in enumerate(idx):
            d = self.datas[i]
            obs[j, 0:7] = d.qpos[self.ids.arm_qpos]
            obs[j, 7:14] = d.qvel[self.ids.arm_dof]
            obs[j, 14] = d.qpos[self.ids.finger_qpos].sum()
            obs[j, 15:18] = self._tcp[i]
            obs[j, 18:] = self.task.task_obs(self.model, d, self.states[i])
        return obs

    # ------------------------------------------------------------------ results
    @property
    def done(self) -> bool:
        return self.t >= self.episode_steps

    @property
    def tcp(self) -> np.ndarray:
        """TCP positions (B, 3) at the current step (forward kinematics of the measured joints)."""
        return self._tcp.copy()

    def decided(self) -> np.ndarray:
        """(B,) bool: the outcome of the episode is known (succeeded or failed)."""
        return np.array([s.success_step >= 0 or s.failed for s in self.states], dtype=bool)

    def success(self) -> np.ndarray:
        return np.array([self.task.success(s) for s in self.states], dtype=bool)

    def success_step(self) -> np.ndarray:
        return np.array([s.success_step for s in self.states], dtype=np.int64)

    def failed(self) -> np.ndarray:
        return np.array([s.failed for s in self.states], dtype=bool)

    # ------------------------------------------------------------------ images
    def render(
        self,
        index: int,
        camera: str = "scene",
        width: int = 128,
        height: int = 128,
        geom_groups: tuple[int, ...] = N.IMAGE_STYLES[N.IMAGE_STYLE],
    ) -> np.ndarray:
        """RGB image (height, width, 3) uint8 of env ``index`` at the current step."""
        key = (camera, width, height, tuple(geom_groups))
        if key not in self._renderers:
            self._renderers[key] = S.SceneRenderer(self.model, width, height, camera, geom_groups)
        d = self.datas[index]
        # Derived positions without touching the solver warm start (keeps runs bit-identical).
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        mujoco.mj_camlight(self.model, d)
        return self._renderers[key].render(d)

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> BatchedPandaEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PandaEnv:
    """One environment: ``reset(seed) -> obs (obs_dim,)``, ``step(action (8,)) -> obs (obs_dim,)``."""

    def __init__(self, task: str | Task):
        self._env = BatchedPandaEnv(task, 1, threads=1)
        self.task = self._env.task
        self.model = self._env.model
        self.data = self._env.datas[0]
        self.obs_dim = self._env.obs_dim
        self.episode_steps = self._env.episode_steps
        self.dt = self._env.dt

    def reset(self, seed: int) -> np.ndarray:
        return self._env.reset([seed])[0]

    def step(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (S.ACTION_DIM,):
            raise ValueError(f"action must have shape (8,), got {a.shape}")
        return self._env.step(a[None])[0]

    @property
    def done(self) -> bool:
        return self._env.done

    @property
    def state(self) -> EpisodeState:
        return self._env.states[0]

    def success(self) -> bool:
        return bool(self._env.success()[0])

    def render(
        self,
        camera: str = "scene",
        width: int = 128,
        height: int = 128,
        geom_groups: tuple[int, ...] = N.IMAGE_STYLES[N.IMAGE_STYLE],
    ) -> np.ndarray:
        return self._env.render(0, camera, width, height, geom_groups)

    def close(self) -> None:
        self._env.close()
