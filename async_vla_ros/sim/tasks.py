"""Four dynamic Panda tasks where inference latency matters.

Common conventions
------------------
- Control period ``dt`` = 0.05 s (20 Hz) over 1 kHz physics (50 physics steps per control step).
  With H = 8 a chunk spans 0.4 s; a delay of d = 4 steps is 0.2 s, comparable to the time scale on
  which every task's world changes unpredictably (random switches, kicks, pushes, moving obstacle).
- Step t covers ``[t*dt, (t+1)*dt)``. The observation of step t is the state at ``t*dt``; the
  action of step t is held during the step; success metrics are evaluated on the state at
  ``(t+1)*dt``. Random events (target switch, ball kick, obstacle velocity change, cube push) happen
  at step boundaries, before the physics of the step.
- Observation: a flat float64 vector, the same 18 leading fields for every task::

      q (7)        measured joint positions, rad
      qd (7)       measured joint velocities, rad/s
      gripper (1)  measured gripper width (sum of both finger joints), m
      tcp (3)      tool-centre-point position (between the finger pads, by forward kinematics of q), m

  followed by the task fields listed in each task's ``task_fields`` (positions in m, velocities in
  m/s, world frame; the robot base is at the origin, the table top is z = 0).
- Initial conditions come from a ``numpy.random.Generator`` seeded per episode; episodes have a
  fixed length (``episode_steps``); ``success_step`` is the step at which success was decided
  (the last step for "survive the episode" criteria).

Tasks
-----
track        keep the TCP within ``tol`` of a target moving on a random sum of sinusoids that
             switches to new random parameters at a random time; success = error < tol on at
             least ``min_fraction`` of the steps after ``warmup``.
intercept    a ball (r 3 cm) rolls across the table towards the goal line x = ``goal_x``; when it
             crosses a random x it is deflected (new random heading); the robot carries an 8 cm
             paddle under the hand; success = the ball never crosses the goal line.
bifurcate    move the TCP from the start to a goal past a pole that drifts sideways with random
             velocity changes; the pole can be passed on either side (the expert picks one per
             episode, the demonstrations are bimodal); success = within ``goal_tol`` of the goal
             without ever coming closer than ``pole_radius + ee_radius`` (horizontal distance).
pick_moving  grasp a 4 cm cube that is pushed (slides 6-10 cm in a random direction) when the
             gripper first comes down near it; success = cube centre lifted above ``lift_z``.
"""

from __future__ import annotations

import copy
import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import mujoco
import numpy as np

from async_vla_ros import names as N
from async_vla_ros.sim import scene as S

COMMON_FIELDS: tuple[tuple[str, int], ...] = (("q", 7), ("qd", 7), ("gripper", 1), ("tcp", 3))
N_COMMON = 18
# Compiled scenes by (task class, config): compiling loads ~60 meshes (~0.6 s). Read-only use:
# build_model hands out deep copies.
_MODEL_CACHE: dict[tuple[str, str], mujoco.MjModel] = {}
# Arm posture the IK pulls towards in its null space (elbow up, hand down).
Q_REST = np.array([0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785])


def _field_slices(fields: tuple[tuple[str, int], ...]) -> dict[str, slice]:
    out, i = {}, 0
    for name, n in fields:
        out[name] = slice(i, i + n)
        i += n
    return out


@dataclass
class EpisodeState:
    """Mutable per-episode state of one environment (random parameters, events, metrics)."""

    seed: int
    params: dict[str, Any]
    t: int = 0
    success_step: int = -1  # step at which success was decided, -1 while undecided / failed
    failed: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # per-step metrics and event records


class Task(ABC):
    """One task: scene objects, random initial conditions, events, observation, success.

    A Task instance is bound to one compiled model (``bind``) and then serves any number of MjData
    of that model; per-episode state lives in :class:`EpisodeState`.
    """

    name: ClassVar[str]
    task_fields: ClassVar[tuple[tuple[str, int], ...]]
    robot_contacts: ClassVar[tuple[str, ...]] = ()

    dt: float = 0.05
    episode_steps: int = 60

    # ------------------------------------------------------------------ description
    @property
    def obs_fields(self) -> tuple[tuple[str, int], ...]:
        return COMMON_FIELDS + self.task_fields

    @property
    def obs_dim(self) -> int:
        return sum(n for _, n in self.obs_fields)

    @property
    def obs_slices(self) -> dict[str, slice]:
        return _field_slices(self.obs_fields)

    @property
    def substeps(self) -> int:
        return int(round(self.dt / S.TIMESTEP))

    def metadata(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "dt": self.dt,
            "episode_steps": self.episode_steps,
            "obs_fields": [[n, k] for n, k in self.obs_fields],
            "obs_dim": self.obs_dim,
            "action_fields": [["q_target", 7], ["gripper_width", 1]],
            "action_dim": S.ACTION_DIM,
            "config": self.config_dict(),
        }

    def config_dict(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ model
    def build_model(self) -> mujoco.MjModel:
        """Compile the task's scene (cached per task type and config; each call returns a copy)."""
        key = (type(self).__name__, repr(getattr(self, "config", None)), N.SCENE_CAMERA)
        if key not in _MODEL_CACHE:
            spec = S.build_spec(self.add_objects, robot_contacts=self.robot_contacts)
            while len(_MODEL_CACHE) >= 8:
                _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
            _MODEL_CACHE[key] = spec.compile()
        model = copy.deepcopy(_MODEL_CACHE[key])
        self.bind(model)
        return model

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        """Add task bodies to the spec (default: none)."""

    def bind(self, model: mujoco.MjModel) -> None:
        """Resolve ids in a compiled model."""
        self.ids = S.SceneIds.from_model(model)

    # ------------------------------------------------------------------ episode
    @abstractmethod
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Random initial conditions of one episode."""

    @abstractmethod
    def start_tcp(self, params: dict[str, Any]) -> tuple[np.ndarray, float]:
        """Initial TCP position (3,) and gripper width for these parameters."""

    def reset_objects(self, model: mujoco.MjModel, data: mujoco.MjData, st: EpisodeState) -> None:
        """Place task objects for the episode (data is already at the initial arm pose)."""

    def pre_step(self, model: mujoco.MjModel, data: mujoco.MjData, st: EpisodeState, tcp: np.ndarray) -> None:
        """Events at the start of step ``st.t`` (before its physics); ``tcp`` (3,) at ``t*dt``."""

    @abstractmethod
    def task_obs(self, model: mujoco.MjModel, data: mujoco.MjData, st: EpisodeState) -> np.ndarray:
        """Task fields of the observation at the start of step ``st.t``."""

    @abstractmethod
    def post_step(self, model: mujoco.MjModel, data: mujoco.MjData, st: EpisodeState, tcp: np.ndarray) -> None:
        """Update metrics after the physics of step ``st.t`` (``tcp`` (3,) at ``(t+1)*dt``)."""

    def success(self, st: EpisodeState) -> bool:
        return st.success_step >= 0


# ====================================================================== track
@dataclass(frozen=True)
class TrackConfig:
    episode_steps: int = 50  # 2.5 s
    tol: float = 0.04  # m, tracking error counted as "on target"
    min_fraction: float = 0.8  # of the scored steps
    warmup: int = 4  # steps not scored at the start
    amp: tuple[float, float] = (0.03, 0.07)  # m, per-axis sinusoid amplitude range (x, y); z uses 1/3
    freq: tuple[float, float] = (0.3, 0.7)  # Hz
    switch: tuple[float, float] = (0.25, 0.75)  # switch time as a fraction of the episode

    def __post_init__(self) -> None:
        if self.episode_steps < 10 or not (0 < self.tol < 0.5) or not (0 < self.min_fraction <= 1):
            raise ValueError(f"bad TrackConfig {self}")
        if not (0 <= self.warmup < self.episode_steps):
            raise ValueError("TrackConfig.warmup must be in [0, episode_steps)")


class TrackTask(Task):
    name = "track"
    task_fields = (("target_pos", 3), ("target_vel", 3))

    def __init__(self, config: TrackConfig | None = None):
        self.config = config or TrackConfig()
        self.episode_steps = self.config.episode_steps

    def config_dict(self) -> dict[str, Any]:
        return dict(vars(self.config))

    def add_objects(self, spec: mujoco.MjSpec) -> None:
        b = spec.worldbody.add_body(name="target", mocap=True, pos=[0.45, 0, 0.25])
        b.add_geom(
            type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0], rgba=[1, 0.2, 0.2, 0.8], contype=0, conaffinity=0
        )

    def bind(self, model: mujoco.MjModel) -> None:
        super().bind(model)
        self._mocap = model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "target")]

    def _sinusoids(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        amp = rng.uniform(*c.amp, size=(2, 3)) * np.array([1.0, 1.0, 1 / 3])
        return {
            "amp": amp,
            "omega": 2 * np.pi * rng.uniform(*c.freq, size=(2, 3)),
            "phase": rng.uniform(0, 2 * np.pi, size=(2, 3)),
        }

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        centre = np.array([rng.uniform(0.42, 0.52), rng.uniform(-0.10, 0.10), rng.uniform(0.18, 0.30)])
        t_end = c.episode_steps * self.dt
        params = {
            "centre": centre,
            "first": self._sinusoids(rng),
            "second": self._sinusoids(rng),
            "t_switch": rng.uniform(*c.switch) * t_end,
        }
        # The target at every step boundary, precomputed (the env looks it up ~3x per step).
        path = [self.target(params, k * self.dt) for k in range(c.episode_steps + 1)]
        params["path_pos"] = np.array([p for p, _ in path])
        params["path_vel"] = np.array([v for _, v in path])
        return params

    @staticmethod
    def _f(p: dict[str, np.ndarray], t: float) -> tuple[np.ndarray, np.ndarray]:
        arg = p["omega"] * t + p["phase"]
        return (p["amp"] * np.sin(arg)).sum(0), (p["amp"] * p["omega"] * np.cos(arg)).sum(0)

    def target(self, params: dict[str, Any], t: float) -> tuple[np.ndarray, np.ndarray]:
        """Target position (3,) and velocity (3,) at time t (s).

        ``centre + f1(t)`` before the switch; afterwards ``centre + f2(t) + (f1(ts) - f2(ts)) *
        exp(-(t - ts) / 0.3 s)``: continuous position, a jump in velocity, bounded path.
        """
        ts, tau = params["t_switch"], 0.3
        if t < ts:
            pos, vel = self._f(params["first"], t)
        else:
            p1, _ = self._f(params["first"], ts)
            p2, vel = self._f(params["second"], t)
            p2s, _ = self._f(params["second"], ts)
            decay = np.exp(-(t - ts) / tau)
            pos = p2 + (p1 - p2s) * decay
            vel = vel - (p1 - p2s) * decay / tau
        return params["centre"] + pos, vel

    def start_tcp(self, params):
        return self.target(params, 0.0)[0], 0.0

    def pre_step(self, model, data, st, tcp):
        data.mocap_pos[self._mocap] = st.params["path_pos"][st.t]

    def task_obs(self, model, data, st):
        return np.concatenate([st.params["path_pos"][st.t], st.params["path_vel"][st.t]])

    def post_step(self, model, data, st, tcp):
        pos = st.params["path_pos"][st.t + 1]
        errs = st.info.setdefault("errors", [])
        errs.append(float(np.linalg.norm(tcp - pos)))
        c = self.config
        if st.t == c.episode_steps - 1:
            scored = np.array(errs[c.warmup :])
            frac = float((scored < c.tol).mean())
            st.info["on_target_fraction"] = frac
            st.info["mean_error"] = float(scored.mean())
            if frac >= c.min_fraction:
                st.success_step = st.t
            else:
                st.failed = True


# ====================================================================== intercept
@dataclass(frozen=True)
class InterceptConfig:
    episode_steps: int = 36  # 1.8 s
    goal_x: float = 0.30  # m, the ball must not cross x < goal_x
    defend_x: float = 0.45  # m, x of the paddle line the expert holds
    tcp_z: float = 0.025  # m, TCP height that puts the paddle across the ball's centre
    ball_radius: float = 0.03
    speed: tuple[float, float] = (0.55, 0.7)  # m/s, ball speed towards the goal
    kick_x: tuple[float, float] = (0.55, 0.65)  # m, the ball is deflected when it crosses this x
    aim_y: float = 0.25  # m, initial and deflected headings aim at |y| <= aim_y on the goal line

    def __post_init__(self) -> None:
        if not (self.goal_x < self.defend_x < self.kick_x[0] <= self.kick_x[1] < 0.85):
            raise ValueError("InterceptConfig needs goal_x < defend_x < kick_x < 0.85")
        if self.episode_steps < 10 or self.speed[0] <= 0 or self.speed[0] > self.speed[1]:
            raise ValueError(f"bad InterceptConfig {self}")


class InterceptTask(Task):
    name = "intercept"
    task_fields = (("ball_pos", 3), ("ball_vel", 3))
    robot_contacts = ("paddle",)

    def __init__(self, config: InterceptConfig | None = None):
        self.config = config or InterceptConfig()
        self.episode_steps = self.config.episode_steps

    def config_dict(self):
        return dict(vars(self.config))

    def add_objects(self, spec):
        c = self.config
        ball = spec.worldbody.add_body(name="ball", pos=[0.9, 0, c.ball_radius])
        ball.add_freejoint(name="ball_free")
        ball.add_geom(
            name="ball",
            type=mujoco.mjtGeom.mjGEOM_SPHERE,
            size=[c.ball_radius, 0, 0],
            rgba=[0.9, 0.5, 0.1, 1],
            mass=0.06,
            contype=S.OBJECT_CONTYPE,
            conaffinity=S.OBJECT_CONAFF,
            condim=3,
            friction=[0.6, 0.0, 0.0],
        )
        spec.worldbody.add_geom(
            name="goal_line",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.005, 0.4, 0.001],
            pos=[c.goal_x, 0, 0.001],
            rgba=[0.9, 0.1, 0.1, 1],
            contype=0,
            conaffinity=0,
        )

    def bind(self, model):
        super().bind(model)
        j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "ball_free")
        self._qpos = model.jnt_qposadr[j]
        self._dof = model.jnt_dofadr[j]

    def sample(self, rng):
        c = self.config
        start = np.array([rng.uniform(0.86, 0.92), rng.uniform(-0.15, 0.15), c.ball_radius])
        return {
            "start": start,
            "speed": rng.uniform(*c.speed),
            "aim": rng.uniform(-c.aim_y, c.aim_y),
            "kick_x": rng.uniform(*c.kick_x),
            "kick_aim": rng.uniform(-c.aim_y, c.aim_y),
            "start_y": rng.uniform(-0.15, 0.15),
        }

    def start_tcp(self, params):
        c = self.config
        return np.array([c.defend_x, params["start_y"], c.tcp_z]), 0.0

    def _set_velocity(self, data, pos: np.ndarray, aim_y: float, speed: float) -> None:
        d = np.array([self.config.goal_x - pos[0], aim_y - pos[1], 0.0])
        v = d / np.linalg.norm(d) * speed
        data.qvel[self._dof : self._dof + 3] = v
        # Rolling without slipping: omega = z x v / r.
        data.qvel[self._dof + 3 : self._dof + 6] = np.cross([0, 0, 1.0], v) / self.config.ball_radius

    def reset_objects(self, model, data, st):
        p = st.params
        data.qpos[self._qpos : self._qpos + 3] = p["start"]
        data.qpos[self._qpos + 3 : self._qpos + 7] = [1, 0, 0, 0]
        self._set_velocity(data, p["start"], p["aim"], p["speed"])
        st.info["kicked_at"] = -1

    def pre_step(self, model, data, st, tcp):
        pos = data.qpos[self._qpos : self._qpos + 3]
        if st.info["kicked_at"] < 0 and pos[0] <= st.params["kick_x"]:
            speed = float(np.linalg.norm(data.qvel[self._dof : self._dof + 2]))
            self._set_velocity(data, pos.copy(), st.params["kick_aim"], max(speed, 0.2))
            st.info["kicked_at"] = st.t

    def task_obs(self, model, data, st):
        return np.concatenate([data.qpos[self._qpos : self._qpos + 3], data.qvel[self._dof : self._dof + 3]])

    def post_step(self, model, data, st, tcp):
        if st.failed or st.success_step >= 0:
            return
        if data.qpos[self._qpos] < self.config.goal_x:
            st.failed = True
            st.info["goal_step"] = st.t
        elif st.t == self.config.episode_steps - 1:
            st.success_step = st.t


# ====================================================================== bifurcate
@dataclass(frozen=True)
class BifurcateConfig:
    episode_steps: int = 40  # 2 s
    height: float = 0.15  # m, TCP height of start and goal
    pole_x: float = 0.52  # m (+- 0.02 random)
    pole_radius: float = 0.04
    ee_radius: float = 0.035  # m, horizontal radius of the hand around the TCP counted as "touching"
    pole_speed: float = 0.4  # m/s, max sideways speed of the pole
    pole_range: float = 0.10  # m, |pole y| stays within this (it bounces)
    n_switches: int = 4  # random pole velocity changes per episode
    goal_tol: float = 0.03  # m

    def __post_init__(self) -> None:
        if self.episode_steps < 10 or min(self.pole_radius, self.ee_radius, self.goal_tol) <= 0:
            raise ValueError(f"bad BifurcateConfig {self}")


class BifurcateTask(Task):
    name = "bifurcate"
    task_fields = (("goal_pos", 3), ("pole_pos", 3), ("pole_vel", 3))

    def __init__(self, config: BifurcateConfig | None = None):
        self.config = config or BifurcateConfig()
        self.episode_steps = self.config.episode_steps

    def config_dict(self):
        return dict(vars(self.config))

    def add_objects(self, spec):
        c = self.config
        pole = spec.worldbody.add_body(name="pole", mocap=True, pos=[c.pole_x, 0, 0.2])
        pole.add_geom(
            type=mujoco.mjtGeom.mjGEOM_CYLINDER,
            size=[c.pole_radius, 0.2, 0],
            rgba=[0.2, 0.2, 0.8, 1],
            contype=0,
            conaffinity=0,
        )
        goal = spec.worldbody.add_body(name="goal", mocap=True, pos=[0.68, 0, c.height])
        goal.add_geom(
            type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0], rgba=[0.1, 0.8, 0.1, 0.8], contype=0, conaffinity=0
        )

    def bind(self, model):
        super().bind(model)
        bid = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)  # noqa: E731
        self._pole = model.body_mocapid[bid("pole")]
        self._goal = model.body_mocapid[bid("goal")]

    def sample(self, rng):
        c = self.config
        n = self.episode_steps + 1
        # Pole trajectory, precomputed per step: piecewise-constant velocity, bouncing in range.
        switch_steps = np.sort(rng.choice(np.arange(3, n - 3), size=c.n_switches, replace=False))
        y = np.empty(n)
        vy = np.empty(n)
        y[0], v = rng.uniform(-0.04, 0.04), rng.uniform(-c.pole_speed, c.pole_speed)
        for i in range(n):
            if i in switch_steps:
                v = rng.uniform(-c.pole_speed, c.pole_speed)
            if i > 0:
                y[i] = y[i - 1] + v * self.dt
                if abs(y[i]) > c.pole_range:
                    y[i] = np.sign(y[i]) * (2 * c.pole_range - abs(y[i]))
                    v = -v
            vy[i] = v
        return {
            "start": np.array([0.34, rng.uniform(-0.05, 0.05), c.height]),
            "goal": np.array([0.70, rng.uniform(-0.08, 0.08), c.height]),
            "pole_x": c.pole_x + rng.uniform(-0.02, 0.02),
            "pole_y": y,
            "pole_vy": vy,
        }

    def start_tcp(self, params):
        return params["start"].copy(), 0.0

    def pole(self, params, t: int) -> tuple[np.ndarray, np.ndarray]:
        t = min(t, len(params["pole_y"]) - 1)
        return (np.array([params["pole_x"], params["pole_y"][t], 0.2]), np.array([0.0, params["pole_vy"][t], 0.0]))

    def reset_objects(self, model, data, st):
        data.mocap_pos[self._goal] = st.params["goal"]
        st.info["min_clearance"] = np.inf

    def pre_step(self, model, data, st, tcp):
        data.mocap_pos[self._pole] = self.pole(st.params, st.t)[0]

    def task_obs(self, model, data, st):
        pos, vel = self.pole(st.params, st.t)
        return np.concatenate([st.params["goal"], pos, vel])

    def post_step(self, model, data, st, tcp):
        if st.failed or st.success_step >= 0:
            return
        c = self.config
        pole, _ = self.pole(st.params, st.t + 1)
        clearance = float(np.linalg.norm(tcp[:2] - pole[:2])) - c.pole_radius - c.ee_radius
        st.info["min_clearance"] = min(st.info["min_clearance"], clearance)
        if clearance < 0:
            st.failed = True
            st.info["touch_step"] = st.t
        elif np.linalg.norm(tcp - st.params["goal"]) < c.goal_tol:
            st.success_step = st.t


# ====================================================================== pick_moving
@dataclass(frozen=True)
class PickMovingConfig:
    episode_steps: int = 48  # 2.4 s
    cube_half: float = 0.02  # m
    lift_z: float = 0.08  # m, success when the cube centre is above this height
    trigger_height: tuple[float, float] = (0.05, 0.09)  # m above the cube top: TCP below -> push
    push_distance: tuple[float, float] = (0.06, 0.10)  # m slid after the push
    friction: float = 0.5  # cube-table sliding friction (the max of both geoms' values is used)

    def __post_init__(self) -> None:
        if self.episode_steps < 20 or not (0 < self.cube_half < 0.035) or self.lift_z <= self.cube_half:
            raise ValueError(f"bad PickMovingConfig {self}")


class PickMovingTask(Task):
    name = "pick_moving"
    task_fields = (("cube_pos", 3), ("cube_vel", 3))
    robot_contacts = ("fingers",)

    def __init__(self, config: PickMovingConfig | None = None):
        self.config = config or PickMovingConfig()
        self.episode_steps = self.config.episode_steps

    def config_dict(self):
        return dict(vars(self.config))

    def add_objects(self, spec):
        c = self.config
        cube = spec.worldbody.add_body(name="cube", pos=[0.5, 0, c.cube_half])
        cube.add_freejoint(name="cube_free")
        cube.add_geom(
            name="cube",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[c.cube_half] * 3,
            rgba=[0.8, 0.2, 0.2, 1],
            mass=0.05,
            contype=S.OBJECT_CONTYPE,
            conaffinity=S.OBJECT_CONAFF,
            condim=3,
            friction=[c.friction, 0.005, 0.0001],
        )

    def bind(self, model):
        super().bind(model)
        j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "cube_free")
        self._qpos = model.jnt_qposadr[j]
        self._dof = model.jnt_dofadr[j]

    def sample(self, rng):
        c = self.config
        ang = rng.uniform(0, 2 * np.pi)
        return {
            "cube": np.array([rng.uniform(0.45, 0.60), rng.uniform(-0.12, 0.12), c.cube_half]),
            "start": np.array([rng.uniform(0.40, 0.50), rng.uniform(-0.08, 0.08), 0.22]),
            "trigger": rng.uniform(*c.trigger_height),
            "push_dir": np.array([np.cos(ang), np.sin(ang), 0.0]),
            "push_dist": rng.uniform(*c.push_distance),
        }

    def start_tcp(self, params):
        return params["start"].copy(), S.GRIPPER_MAX

    def reset_objects(self, model, data, st):
        data.qpos[self._qpos : self._qpos + 3] = st.params["cube"]
        data.qpos[self._qpos + 3 : self._qpos + 7] = [1, 0, 0, 0]
        st.info["pushed_at"] = -1

    def pre_step(self, model, data, st, tcp):
        if st.info["pushed_at"] >= 0:
            return
        cube = data.qpos[self._qpos : self._qpos + 3]
        if tcp[2] < cube[2] + self.config.cube_half + st.params["trigger"]:
            # Slide push_dist under Coulomb friction: v0 = sqrt(2 mu g dist).
            v0 = np.sqrt(2 * self.config.friction * 9.81 * st.params["push_dist"])
            data.qvel[self._dof : self._dof + 3] = st.params["push_dir"] * v0
            st.info["pushed_at"] = st.t

    def task_obs(self, model, data, st):
        return np.concatenate([data.qpos[self._qpos : self._qpos + 3], data.qvel[self._dof : self._dof + 3]])

    def post_step(self, model, data, st, tcp):
        if st.success_step >= 0:
            return
        if data.qpos[self._qpos + 2] > self.config.lift_z:
            st.success_step = st.t
        elif st.t == self.config.episode_steps - 1:
            st.failed = True


# ====================================================================== registry
TASKS: dict[str, type[Task]] = {t.name: t for t in (TrackTask, InterceptTask, BifurcateTask, PickMovingTask)}


def make_task(name: str) -> Task:
    """Task by name (``track``, ``intercept``, ``bifurcate``, ``pick_moving``) with its default config."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}; known: {', '.join(TASKS)}")
    return TASKS[name]()
