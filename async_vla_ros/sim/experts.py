"""Scripted experts, one per task, implementing the ``ChunkPolicy`` protocol.

An expert plans a whole chunk from the observation alone (no hidden state between calls, so it
can run under any delay in the lockstep runner): it predicts the world forward with the
observed velocities (constant velocity; the pushed cube's rest point under Coulomb friction),
turns the prediction into TCP waypoints p_k for steps ``t_obs + k`` (the position the TCP should
reach at the END of step ``t_obs + k``, i.e. at time ``(t_obs + k + 1 + lead) * dt``; ``lead``
compensates the servo lag) and solves batched damped-least-squares IK for each waypoint,
warm-started from the previous waypoint's solution (the first from the measured joints).
IK returns absolute targets: a converged solution does not depend on the start, so the
measured-joint warm start cannot accumulate the servo's lag into the command.

``infer(obs (B, obs_dim), sampler, prefix, weights, n_frozen, seed) -> (B, H, 8)``:
``vanilla`` and ``bid`` return the plan (the expert is deterministic: BID's N samples would be
equal); ``prefix`` overwrites the first ``n_frozen`` actions with the prefix (prefix-preserved
sampling); ``rtc`` blends ``W * prefix + (1 - W) * plan`` per step (the soft-mask inpainting that
RTC's guidance approximates). ``noise_std`` > 0 adds Gaussian noise (rad, and m/10 on the gripper)
to every action, drawn from ``seed`` (or the expert's own stream when ``seed`` is None).
``act(obs) -> (B, 8)`` is the closed-loop action (the first action of a fresh plan), used for
demonstrations.

bifurcate: the side (left/right of the pole) is a pseudo-random function of the goal position
(``expert_side``): random across episodes, constant within one, and computable from every
observation, so the expert stays stateless while its demonstrations are bimodal.
``keep_arm_side=True`` (DAgger labels, ``demos --driver``) keeps instead the side the arm has
taken once it is near the pole (``arm_side``): a learned driver picks its own side, and labels
that pull it back across the pole to the goal's side contradict the states they are given for
(such a round took v11's bifurcate from 0.95 to 0.44: docs/training.md, the fifth attempt).
"""

from __future__ import annotations

import numpy as np

from async_vla_ros.core.strategies import SAMPLERS
from async_vla_ros.sim import kinematics as K
from async_vla_ros.sim import scene as S
from async_vla_ros.sim.tasks import Q_REST, BifurcateTask, InterceptTask, PickMovingTask, Task, TrackTask, make_task


def expert_side(goal_y: np.ndarray) -> np.ndarray:
    """bifurcate: +1 (pass the pole on its +y side) or -1, from the goal's y (B,) -> (B,)."""
    cell = np.floor(np.asarray(goal_y) * 1e4).astype(np.int64)
    return np.where(((cell * 2654435761) >> 7) % 2 == 0, 1.0, -1.0)


def crossing_y(ball: np.ndarray, vel: np.ndarray, line_x: float) -> np.ndarray:
    """intercept: the y at which balls at ``ball`` (B, 3) moving with ``vel`` (B, 3) cross x = ``line_x``,
    straight on, taking at least 5 cm/s towards the line; a ball on or past the line: its y. (B,)"""
    vx = np.minimum(vel[:, 0], -0.05)
    tau = np.maximum(ball[:, 0] - line_x, 0.0) / -vx
    return ball[:, 1] + vel[:, 1] * tau


def arm_side(
    tcp: np.ndarray, pole: np.ndarray, default: np.ndarray, reach_x: float, clear_y: float = 0.01
) -> np.ndarray:
    """bifurcate: the side of the pole the TCP has taken (+1: +y), where it has taken one, else
    ``default`` (B,) -> (B,). Taken: the TCP is within ``reach_x`` of the pole in x or past it (where
    the expert starts bending round it) and more than ``clear_y`` to one side of its centre."""
    dy = tcp[:, 1] - pole[:, 1]
    taken = (tcp[:, 0] > pole[:, 0] - reach_x) & (np.abs(dy) > clear_y)
    return np.where(taken, np.sign(dy), default)


class ScriptedExpert:
    """ChunkPolicy of a task's scripted expert (see module docstring)."""

    action_dim = S.ACTION_DIM

    def __init__(
        self,
        task: str | Task,
        horizon: int = 8,
        noise_std: float = 0.0,
        seed: int = 0,
        ik_iters: int = 2,
        keep_arm_side: bool = False,
    ):
        self.task: Task = make_task(task) if isinstance(task, str) else task
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if not (np.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
        if ik_iters < 1:
            raise ValueError("ik_iters must be >= 1")
        self.horizon = int(horizon)
        self.obs_dim = self.task.obs_dim
        self.noise_std = float(noise_std)
        self.ik_iters = int(ik_iters)
        self.keep_arm_side = bool(keep_arm_side)  # bifurcate: module docstring
        self.dt = self.task.dt
        self._slices = self.task.obs_slices
        self._rng = np.random.default_rng(seed)
        self._plan = {
            TrackTask: self._plan_track,
            InterceptTask: self._plan_intercept,
            BifurcateTask: self._plan_bifurcate,
            PickMovingTask: self._plan_pick,
        }[type(self.task)]
        self.last_info: dict = {}

    # ------------------------------------------------------------------ ChunkPolicy
    def infer(
        self,
        obs,
        sampler: str = "vanilla",
        prefix=None,
        weights=None,
        n_frozen=None,
        seed: int | None = None,
        beta: float | None = None,
    ) -> np.ndarray:
        """Chunks (B, H, 8) planned from obs (B, obs_dim); see the module docstring for samplers.
        ``beta`` (a request's RTC guidance clip) is accepted and unused: the expert's blend with the
        prefix has no guidance weight to clip."""
        if isinstance(obs, dict):
            obs = obs["state"]
        o = np.asarray(obs, dtype=np.float64)
        if o.ndim != 2 or o.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape (B, {self.obs_dim}), got {o.shape}")
        if not np.isfinite(o).all():
            raise ValueError("obs contains NaN or Inf")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        b, h = o.shape[0], self.horizon
        tcp, grip = self._plan(o)  # (B,H,3), (B,H)
        q = o[:, self._slices["q"]]
        acts = np.empty((b, h, S.ACTION_DIM))
        for k in range(h):
            q = K.solve_ik(q, tcp[:, k], q_rest=Q_REST, iters=self.ik_iters)
            acts[:, k, :7] = q
        acts[:, :, 7] = np.clip(grip, 0.0, S.GRIPPER_MAX)
        if self.noise_std > 0:
            rng = np.random.default_rng(seed) if seed is not None else self._rng
            noise = rng.normal(0.0, self.noise_std, size=acts.shape)
            noise[..., 7] *= 0.1
            acts = acts + noise
        if sampler in ("prefix", "remac", "rtc", "rtc_jf"):
            if prefix is None:
                raise ValueError(f"sampler {sampler!r} needs prefix (B, H, 8)")
            y = np.asarray(prefix, dtype=np.float64)
            if y.shape != acts.shape:
                raise ValueError(f"prefix must have shape {acts.shape}, got {y.shape}")
            if sampler in ("prefix", "remac"):
                if n_frozen is None:
                    raise ValueError(f"sampler {sampler!r} needs n_frozen (B,)")
                nf = np.asarray(n_frozen).astype(int).reshape(b)
                mask = np.arange(h)[None, :] < nf[:, None]
                acts = np.where(mask[..., None], y, acts)
            else:
                if weights is None:
                    raise ValueError(f"sampler {sampler!r} needs weights (B, H)")
                w = np.asarray(weights, dtype=np.float64).reshape(b, h)[..., None]
                acts = w * y + (1 - w) * acts
        return acts

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Closed-loop expert action (B, 8): the first action of a plan from this observation."""
        return self.infer(obs)[:, 0]

    # ------------------------------------------------------------------ helpers
    def _f(self, o: np.ndarray, name: str) -> np.ndarray:
        return o[:, self._slices[name]]

    def _ahead(self, lead: float) -> np.ndarray:
        """Times (H,) at which waypoint k should be reached, relative to the observation."""
        return (np.arange(self.horizon) + 1 + lead) * self.dt

    @staticmethod
    def _approach(start: np.ndarray, goal: np.ndarray, vmax: float, times: np.ndarray) -> np.ndarray:
        """Straight-line motion at speed <= vmax: start (B,3), goal (B,H,3) -> (B,H,3)."""
        delta = goal - start[:, None]
        dist = np.linalg.norm(delta, axis=-1, keepdims=True)
        reach = vmax * times[None, :, None]
        scale = np.minimum(1.0, reach / np.maximum(dist, 1e-9))
        return start[:, None] + delta * scale

    # ------------------------------------------------------------------ track
    def _plan_track(self, o):
        times = self._ahead(lead=1.0)
        pos, vel = self._f(o, "target_pos"), self._f(o, "target_vel")
        tcp = pos[:, None] + vel[:, None] * times[None, :, None]
        return tcp, np.zeros(tcp.shape[:2])

    # ------------------------------------------------------------------ intercept
    def _plan_intercept(self, o):
        c = self.task.config
        times = self._ahead(lead=0.5)
        ball, vel, tcp = self._f(o, "ball_pos"), self._f(o, "ball_vel"), self._f(o, "tcp")
        y_hit = np.clip(crossing_y(ball, vel, c.defend_x), -0.3, 0.3)
        approaching = (vel[:, 0] < -0.05) & (ball[:, 0] > c.defend_x)
        y_goal = np.where(approaching, y_hit, tcp[:, 1])
        goal = np.stack([np.full_like(y_goal, c.defend_x), y_goal, np.full_like(y_goal, c.tcp_z)], axis=1)
        path = self._approach(tcp, np.repeat(goal[:, None], self.horizon, 1), 1.2, times)
        return path, np.zeros(path.shape[:2])

    # ------------------------------------------------------------------ bifurcate
    def _plan_bifurcate(self, o):
        c = self.task.config
        b, h = o.shape[0], self.horizon
        times = self._ahead(lead=0.5)
        tcp, goal = self._f(o, "tcp"), self._f(o, "goal_pos")
        pole, pvel = self._f(o, "pole_pos"), self._f(o, "pole_vel")
        side = expert_side(goal[:, 1])
        r = c.pole_radius + c.ee_radius
        offset, w_in, w_ramp = r + 0.03, r + 0.02, 0.08
        if self.keep_arm_side:
            side = arm_side(tcp, pole, side, reach_x=w_in + w_ramp)
        vx, vy_max = 0.35, 0.8
        x, y = tcp[:, 0].copy(), tcp[:, 1].copy()
        z = tcp[:, 2].copy()
        out = np.empty((b, h, 3))
        t_prev = 0.0
        for k in range(h):
            step = times[k] - t_prev
            t_prev = times[k]
            pole_y = np.clip(pole[:, 1] + pvel[:, 1] * times[k], -c.pole_range, c.pole_range)
            x_next = np.minimum(x + vx * step, goal[:, 0])
            dist_x = np.abs(x_next - pole[:, 0])
            bump = np.clip(1.0 - (dist_x - w_in) / w_ramp, 0.0, 1.0)
            passed = x_next > pole[:, 0] + w_in
            y_des = goal[:, 1] + bump * (pole_y + side * offset - goal[:, 1])
            y = y + np.clip(y_des - y, -vy_max * step, vy_max * step)
            # Do not enter the pole's x band before being clear of it sideways.
            blocked = (dist_x < w_in) & (np.abs(y - pole_y) < r + 0.01) & ~passed
            x = np.where(blocked, x, x_next)
            z = z + np.clip(goal[:, 2] - z, -0.5 * step, 0.5 * step)
            out[:, k] = np.stack([x, y, z], axis=1)
        return out, np.zeros((b, h))

    # ------------------------------------------------------------------ pick_moving
    def _plan_pick(self, o):
        c = self.task.config
        b, h = o.shape[0], self.horizon
        times = self._ahead(lead=0.5)
        tcp = self._f(o, "tcp").copy()
        width = self._f(o, "gripper")[:, 0].copy()
        cube, cvel = self._f(o, "cube_pos").copy(), self._f(o, "cube_vel")
        speed = np.linalg.norm(cvel[:, :2], axis=1)
        # Rest point of a sliding cube: stopping distance v^2 / (2 mu g) along its velocity.
        rest = cube.copy()
        rest[:, :2] += cvel[:, :2] * (speed / (2 * c.friction * 9.81))[:, None]
        size = 2 * c.cube_half
        grasp_z = c.cube_half + 0.005
        out_p = np.empty((b, h, 3))
        out_g = np.empty((b, h))
        t_prev = 0.0
        for k in range(h):
            step = times[k] - t_prev
            t_prev = times[k]
            e_xy = np.linalg.norm(rest[:, :2] - tcp[:, :2], axis=1)
            holding = (width < size + 0.012) & (width > size - 0.012) & (e_xy < 0.02) & (tcp[:, 2] - cube[:, 2] < 0.03)
            aligned = e_xy < 0.012
            low = tcp[:, 2] < grasp_z + 0.015
            # Once the fingers have started closing around the cube, keep closing (no dithering).
            committed = (width < S.GRIPPER_MAX - 0.01) & (width > size - 0.012) & (tcp[:, 2] < grasp_z + 0.035)
            closing = ~holding & aligned & (low | committed)
            approach = ~holding & ~closing
            # Approach: over the cube, descend as the horizontal error shrinks, gripper open.
            hover = np.clip(2.5 * (e_xy - 0.006), 0.0, 0.15)
            hover = np.where(width < S.GRIPPER_MAX - 0.015, np.maximum(hover, 0.07), hover)
            tgt = np.concatenate([rest[:, :2], (grasp_z + hover)[:, None]], axis=1)
            new = tcp.copy()
            dxy = tgt[:, :2] - tcp[:, :2]
            n = np.linalg.norm(dxy, axis=1, keepdims=True)
            new[:, :2] = tcp[:, :2] + dxy * np.minimum(1.0, 0.6 * step / np.maximum(n, 1e-9))
            new[:, 2] = tcp[:, 2] + np.clip(tgt[:, 2] - tcp[:, 2], -0.5 * step, 0.5 * step)
            lift = tcp.copy()
            lift[:, 2] = np.minimum(tcp[:, 2] + 0.4 * step, 0.2)
            tcp = np.where(holding[:, None], lift, np.where(approach[:, None], new, tcp))
            grip_cmd = np.where(approach, S.GRIPPER_MAX, 0.0)
            # Gripper model: moves towards the command at <= 0.25 m/s, stops on the cube when closing on it.
            w_next = width + np.clip(grip_cmd - width, -0.25 * step, 0.25 * step)
            on_cube = closing | holding
            width = np.where(on_cube, np.maximum(w_next, size), w_next)
            # A held cube moves with the hand.
            held = holding[:, None]
            cube = np.where(held, tcp - np.array([0.0, 0.0, grasp_z - c.cube_half]), cube)
            rest = np.where(held, cube, rest)
            out_p[:, k] = tcp
            out_g[:, k] = grip_cmd
        return out_p, out_g


# ---------------------------------------------------------------------- backend registration
def _load_expert(req) -> ScriptedExpert:
    """``expert``: the task's scripted expert (``BackendRequest.horizon``, ``seed``)."""
    from async_vla_ros.policy.registry import BackendError

    if req.target:
        raise BackendError("the 'expert' backend takes no target (policy spec 'expert')")
    return ScriptedExpert(req.task, horizon=req.horizon, seed=0 if req.seed is None else int(req.seed))


def _register() -> None:
    from async_vla_ros.policy.registry import Backend, register_backend

    # the expert IS the task's base policy: no REMAC/ablation model to serve
    register_backend(
        Backend(
            "expert",
            _load_expert,
            "the task's scripted expert as a chunk policy (no weights)",
            kinds=("base",),
            cameras=lambda _req: {},  # privileged state only
            per_request_beta=True,
        )
    )


_register()
