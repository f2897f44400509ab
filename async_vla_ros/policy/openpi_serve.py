"""``async-vla-ros serve``: any of our policies behind openpi's ``WebsocketPolicyServer``.

The server is openpi's own (``openpi_server.websocket_policy_server``; msgpack-numpy over a
websocket, no pickle); :class:`ServedPolicy` is the openpi ``BasePolicy`` it calls. Protocol and
the optional guidance key: :mod:`async_vla_ros.policy.openpi_backend`. A request carrying
:data:`GUIDANCE_KEY` runs our sampler (``rtc`` / ``prefix`` / ``bid``) with exactly the sent prefix,
weights, frozen count and seed, through the one request conversion
(:func:`async_vla_ros.core.requests.sampler_call`, first-chunk fallback included), so a remote
chunk equals the local one; a plain openpi client (no such key) gets vanilla chunks.

Binds 127.0.0.1 unless ``--expose`` is given with another ``--host`` (then a warning: the
protocol has no authentication or encryption). Fault injection for tests and the chaos suite
(``--latency-ms``, ``--fault nan|shape|error --fault-every N``) is bounded and off by default.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from async_vla_ros.core.requests import SAMPLERS, sampler_call, takes_beta
from async_vla_ros.policy.openpi_backend import GUIDANCE_KEY, META_KEY, PROTOCOL_VERSION

__all__ = ["FAULTS", "ServedPolicy", "make_server", "add_arguments", "run"]

FAULTS = ("none", "nan", "shape", "error")
MAX_LATENCY_MS = 5000.0


class RequestError(ValueError):
    """A malformed observation dict (the server answers with the error text and closes)."""


class ServedPolicy:
    """openpi ``BasePolicy`` over a :class:`ChunkPolicy` (duck-typed: subclassing is not needed).

    ``fault`` (``nan``: NaN actions, ``shape``: one row short, ``error``: raise) hits every
    ``fault_every``-th reply; ``latency_s`` is added before each reply (a slow server).
    """

    def __init__(
        self,
        policy: Any,
        *,
        task: str = "",
        instruction: str = "",
        spec: str = "",
        camera: str = "image",
        latency_s: float = 0.0,
        fault: str = "none",
        fault_every: int = 1,
        sleep=time.sleep,
    ) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        if not 0 <= latency_s <= MAX_LATENCY_MS / 1e3:
            raise ValueError(f"latency must lie in [0, {MAX_LATENCY_MS / 1e3:.0f}] s")
        if fault_every < 1:
            raise ValueError("fault_every must be >= 1")
        self.policy = policy
        self.H, self.A, self.obs_dim = int(policy.horizon), int(policy.action_dim), int(policy.obs_dim)
        # the instruction a request without a prompt gets: given, else the policy's own (a LeRobot folder's)
        self.instruction = str(instruction or getattr(policy, "instruction", "") or "")
        self.task, self.spec = str(task), str(spec)
        cams = getattr(policy, "cameras", None)
        self.needs_image = getattr(getattr(policy, "config", None), "encoder", "") == "image" or bool(cams)
        if cams:
            self.cameras = tuple(cams)
        else:
            self.cameras = (camera,) if self.needs_image else ()
        self.latency_s, self.fault, self.fault_every = float(latency_s), fault, int(fault_every)
        self._sleep = sleep
        self.n_requests = 0

    def metadata(self) -> dict[str, Any]:
        return {
            META_KEY: {
                "version": PROTOCOL_VERSION,
                "horizon": self.H,
                "action_dim": self.A,
                "obs_dim": self.obs_dim,
                "cameras": list(self.cameras),
                "needs_image": self.needs_image,
                "samplers": list(SAMPLERS),
                "task": self.task,
                "instruction": self.instruction,
                "policy": self.spec,
            }
        }

    # ------------------------------------------------------------------ request -> infer
    def _obs(self, obs: Mapping[str, Any]) -> Any:
        if "state" not in obs:
            raise RequestError(f"observation needs 'state' ({self.obs_dim},); got keys {sorted(map(str, obs))}")
        state = np.asarray(obs["state"], dtype=np.float64).reshape(-1)
        if state.shape != (self.obs_dim,) or not np.isfinite(state).all():
            raise RequestError(f"'state' must be {self.obs_dim} finite values, got shape {state.shape}")
        if not self.needs_image:
            return state[None]
        images = obs.get("images") or {}
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise RequestError(f"observation lacks camera(s) {missing}; this policy reads {list(self.cameras)}")
        imgs = {c: np.asarray(images[c])[None] for c in self.cameras}
        out: dict[str, Any] = {"state": state[None]}
        if getattr(self.policy, "cameras", None):
            out["images"] = imgs
            out["instruction"] = str(obs.get("prompt") or self.instruction or self.task)
        else:
            out["image"] = imgs[self.cameras[0]]
        return out

    def _guidance(self, g: Any) -> tuple[str, dict[str, Any]]:
        if g is None:
            return "vanilla", {}
        if not isinstance(g, Mapping) or g.get("version") != PROTOCOL_VERSION:
            raise RequestError(f"{GUIDANCE_KEY} must be a dict with version {PROTOCOL_VERSION}")
        sampler = str(g.get("sampler", "vanilla"))
        if sampler not in SAMPLERS:
            raise RequestError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        prefix = weights = None
        if g.get("prefix") is not None:
            prefix = np.asarray(g["prefix"], dtype=np.float64)
            if prefix.shape != (self.H, self.A):
                raise RequestError(f"prefix must be (H, A) = ({self.H}, {self.A}), got {prefix.shape}")
            prefix = prefix[None]
        if g.get("weights") is not None:
            weights = np.asarray(g["weights"], dtype=np.float64)
            if weights.shape != (self.H,):
                raise RequestError(f"weights must be (H,) = ({self.H},), got {weights.shape}")
            weights = weights[None]
        n_frozen = np.array([int(g.get("n_frozen", 0))])
        seed = int(g.get("seed", -1))
        beta = g.get("beta")
        try:
            sampler, kw = sampler_call(sampler, prefix, weights, n_frozen, None if seed < 0 else seed, beta=beta)
        except ValueError as exc:  # a bad clip
            raise RequestError(str(exc)) from None
        if "beta" in kw and not takes_beta(self.policy):
            raise RequestError(f"this server's policy has no per-request guidance clip (beta {kw['beta']} sent)")
        return sampler, kw

    def infer(self, obs: dict) -> dict:
        self.n_requests += 1
        if not isinstance(obs, Mapping):
            raise RequestError(f"observation must be a dict, got {type(obs).__name__}")
        sampler, kw = self._guidance(obs.get(GUIDANCE_KEY))
        actions = np.asarray(self.policy.infer(self._obs(obs), sampler, **kw), dtype=np.float64)[0]
        if self.latency_s > 0:
            self._sleep(self.latency_s)
        if self.fault != "none" and self.n_requests % self.fault_every == 0:
            if self.fault == "error":
                raise RuntimeError(f"injected server fault on request {self.n_requests}")
            if self.fault == "nan":
                actions = actions.copy()
                actions[0, 0] = np.nan
            elif self.fault == "shape":
                actions = actions[:-1]
        return {"actions": actions, "sampler": sampler}

    def reset(self) -> None:
        pass


def make_server(served: ServedPolicy, host: str = "127.0.0.1", port: int = 8000):
    """openpi's ``WebsocketPolicyServer`` around ``served``."""
    from openpi_server.websocket_policy_server import WebsocketPolicyServer

    return WebsocketPolicyServer(served, host=host, port=port, metadata=served.metadata())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy", default="default", help="policy spec (default, a .pt path, expert, lerobot:DIR ...)"
    )
    parser.add_argument("--task", default="track", help="task of the policy (track, intercept, bifurcate, pick_moving)")
    parser.add_argument("--checkpoint-kind", default="base", help="checkpoint kind for policy 'default' (base, remac)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--expose",
        action="store_true",
        help="allow a non-loopback --host (no authentication, no encryption: trusted networks only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="backend noise seed (a request's seed overrides)")
    parser.add_argument("--n-steps", type=int, default=0, help="denoising steps (0: the checkpoint's)")
    parser.add_argument("--horizon", type=int, default=8, help="H for the expert backend")
    parser.add_argument("--camera", default="image", help="camera name of a one-camera image policy")
    parser.add_argument("--instruction", default="", help="language instruction when a request has no prompt")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each reply (tests; at most 5000)")
    parser.add_argument("--fault", choices=FAULTS, default="none", help="corrupt replies (tests, chaos)")
    parser.add_argument("--fault-every", type=int, default=1, help="the fault hits every N-th reply")


def run(ns: argparse.Namespace) -> int:
    import logging

    import torch

    from async_vla_ros.policy.registry import BackendError, BackendRequest, load_policy_spec

    if not _is_loopback(ns.host):
        if not ns.expose:
            print(
                f"serve: refusing to bind {ns.host!r} without --expose (the openpi protocol has no "
                "authentication or encryption; the default 127.0.0.1 serves this machine only)",
                file=sys.stderr,
            )
            return 2
        print(
            f"WARNING: serving on {ns.host}:{ns.port} to the network: anyone who reaches it can query the "
            "policy (no authentication, no encryption). Use a trusted network or an SSH tunnel.",
            file=sys.stderr,
        )
    torch.set_num_threads(1)
    req = BackendRequest(
        ns.task, kind=ns.checkpoint_kind, horizon=ns.horizon, n_steps=ns.n_steps, seed=ns.seed, num_threads=1
    )
    try:
        policy = load_policy_spec(ns.policy, req)
        served = ServedPolicy(
            policy,
            task=ns.task,
            instruction=ns.instruction,
            spec=ns.policy,
            camera=ns.camera,
            latency_s=ns.latency_ms / 1e3,
            fault=ns.fault,
            fault_every=ns.fault_every,
        )
    except (BackendError, ValueError, FileNotFoundError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = make_server(served, ns.host, ns.port)
    print(
        f"serving {ns.policy} (task {ns.task}, H={served.H} A={served.A} obs_dim={served.obs_dim}, "
        f"cameras {list(served.cameras)}) on ws://{ns.host}:{ns.port}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
