"""The ``lerobot-grpc`` backend: a client of LeRobot's stock async-inference policy server.

``--policy lerobot-grpc://HOST:PORT?policy=DIR[&key=value...]`` talks to
``python -m lerobot.async_inference.policy_server`` (lerobot 0.4.4, unmodified) over gRPC:

* connect: ``Ready`` (the server resets its queue), then ``SendPolicyInstructions`` with a pickled
  ``RemotePolicyConfig`` (policy type and feature layout read from ``DIR/config.json``; the
  server loads ``server_policy`` or ``DIR`` itself, so the folder must exist on both machines);
* per chunk: ``SendObservations`` with a pickled ``TimedObservation(..., must_go=True)`` (without
  ``must_go`` the server silently drops an observation whose joints moved < 1.0 since the last
  one), then ``GetActions``, which runs the policy on it and returns a pickled list of
  ``TimedAction``.

**Every payload is a Python pickle**: whoever can reach the port runs code in the server, and a
malicious server runs code in this client. Trusted networks only (an SSH tunnel otherwise); a
warning is logged at each first connect. The server does no RTC / REMAC / BID guidance (no field
for the leftover, d or s): this backend serves the ``vanilla`` sampler only, and the catalogue
(:func:`~async_vla_ros.policy.registry.load_models`) refuses presets with another sampler.

Mapping. Our observation ``{"state": (B, obs_dim), "images": {camera: (B, h, w, 3) uint8},
"image" (one-camera fallback), "instruction": str}`` -> the server's raw observation
``{joint name: float, camera key: (h, w, 3) uint8, "task": str}``: joint names from the folder's
sidecar (``async_vla_ros.json``, ``state_names``; else ``state_0..``), cameras from the policy's
image features through the sidecar's camera map (our name -> ``observation.images.KEY``; default
our name = KEY), the instruction from the observation, else the ``prompt`` option, the folder's
instruction, the task name. The server resizes images to the policy's size. The reply (H
``TimedAction``, H = ``horizon`` option or the policy's chunk size, robot units: the server's
post-processor un-normalises) is checked like a local chunk (shape (H, A), numeric, finite, and
its timesteps must be the ones of the observation sent); joint names and order are checked
against the sidecar's ``action_names`` like the local ``lerobot`` backend does.

Timing: the stock server reports no inference time to the client (it only logs
``Observation N | ... Total time: X ms``): ``last_info["server_infer_s"]`` and ``network_s`` are
-1 (unknown); ``round_trip_s`` is measured. The server also pads every ``GetActions`` to at least
its ``--inference_latency`` (default 1/30 s): start it with ``--inference_latency=0``.

Options (query string): ``policy`` (required: the LeRobot policy folder), ``server_policy`` (the
folder's path on the server, default ``policy``), ``device`` (server device, default cpu),
``horizon`` (actions per chunk, at most the chunk size), ``prompt``, ``timeout`` (s for one
chunk: both RPCs, default 1.0), ``connect_timeout`` (2.0), ``load_timeout`` (s for the server to
load the policy, 120), ``retry`` (s between reconnects, 0.5), ``delay_ms`` (injected one-way delay,
both directions, at most 1000: experiments). The server serves one client (``Ready`` from another
client resets it).
"""

from __future__ import annotations

import json
import logging
import pickle  # nosec - the stock server's protocol (module docstring: trusted networks only)
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from async_vla_ros.policy.lerobot_backend import (
    ACTION_KEY,
    IMAGE_PREFIX,
    SIDECAR,
    STATE_KEY,
    LeRobotPolicyBackend,
    _read_sidecar,
    folder_cameras,
)
from async_vla_ros.policy.registry import Backend, BackendError, BackendRequest, BackendUnavailable, register_backend
from async_vla_ros.policy.remote import RemoteAddress, RemoteChunkPolicy, RemoteReplyError

__all__ = ["GrpcAddress", "LeRobotGrpcPolicy", "PolicyFolder", "read_policy_folder", "PICKLE_WARNING"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PICKLE_WARNING = (
    "lerobot-grpc: LeRobot's policy server protocol is Python pickle: anyone who can reach {where} can run "
    "code in the server, and the server can run code in this client. Use it on a trusted network only "
    "(loopback or an SSH tunnel)."
)


class GrpcAddress(RemoteAddress):
    """``HOST:PORT?policy=DIR&...`` (module docstring)."""

    SCHEME = "lerobot-grpc"
    EXAMPLE = "127.0.0.1:8080?policy=DIR"
    INTS = ("horizon",)
    FLOATS = {**RemoteAddress.FLOATS, "load_timeout": 120.0}
    STRS = ("policy", "server_policy", "device", "prompt")
    POSITIVE = ("timeout", "connect_timeout", "load_timeout")

    def __init__(self, target: str) -> None:
        super().__init__(target)
        if not self.strs.get("policy"):
            raise BackendError(
                f"lerobot-grpc address {target!r}: needs the policy folder, e.g. lerobot-grpc://{self.EXAMPLE}"
            )


class PolicyFolder:
    """What the client needs from a LeRobot policy folder (``config.json`` + our sidecar); no lerobot import."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        cfg_path = self.folder / "config.json"
        if not cfg_path.is_file():
            raise BackendError(f"{self.folder}: not a LeRobot policy folder (no config.json)")
        try:
            cfg = json.loads(cfg_path.read_text())
            inputs, outputs = dict(cfg["input_features"]), dict(cfg["output_features"])
            self.policy_type = str(cfg["type"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"{cfg_path}: not a LeRobot policy config ({type(exc).__name__}: {exc})") from None
        if STATE_KEY not in inputs or ACTION_KEY not in outputs:
            raise BackendError(f"{cfg_path}: needs input {STATE_KEY!r} and output {ACTION_KEY!r} features")
        self.obs_dim = int(inputs[STATE_KEY]["shape"][0])
        self.action_dim = int(outputs[ACTION_KEY]["shape"][0])
        self.chunk = int(cfg.get("chunk_size") or cfg.get("horizon") or 0)
        if self.chunk < 1:
            raise BackendError(f"{cfg_path}: cannot tell the chunk length of a {self.policy_type!r} policy")
        self.image_shapes = {
            k: tuple(int(v) for v in ft["shape"]) for k, ft in inputs.items() if k.startswith(IMAGE_PREFIX)
        }
        unfed = sorted(set(inputs) - {STATE_KEY, *self.image_shapes})
        if unfed:
            raise BackendError(f"the policy needs input features this backend does not feed: {unfed}")
        side_path = self.folder / SIDECAR
        side = _read_sidecar(self.folder)
        if side.get("action_frame", "absolute") != "absolute":
            # LeRobot's server returns the model's chunk as is: joint targets relative to q, not positions
            raise BackendError(
                f"{self.folder}: its actions are {side['action_frame']!r} (names.ACTION_FRAMES); LeRobot's "
                "policy server returns them unconverted. Serve it in process (lerobot:DIR)"
            )
        cams = side.get("cameras") or {k[len(IMAGE_PREFIX) :]: k for k in self.image_shapes}
        bad = sorted(set(cams.values()) - set(self.image_shapes))
        if bad:
            raise BackendError(
                f"camera map names features the policy does not have: {bad}; it has {sorted(self.image_shapes)}"
            )
        self.cameras: dict[str, str] = dict(cams)  # our camera name -> LeRobot key
        self.instruction = str(side.get("instruction") or "")
        self.task = str(side.get("task") or "")
        self.state_names = list(side["state_names"]) if side.get("state_names") else None
        self.action_names = list(side["action_names"]) if side.get("action_names") else None
        for what, names, dim in (
            ("state", self.state_names, self.obs_dim),
            ("action", self.action_names, self.action_dim),
        ):
            if names is not None and (len(names) != dim or len(set(names)) != dim):
                raise BackendError(
                    f"{side_path}: {len(names)} {what} names for a {what} of dimension {dim} (or repeats)"
                )
        # the raw observation's joint keys (the server orders the state by these names)
        self.joint_keys = self.state_names or [f"state_{i}" for i in range(self.obs_dim)]

    def lerobot_features(self) -> dict[str, dict]:
        """The server's feature layout of our raw observation (LeRobot's own helper builds it)."""
        from lerobot.datasets.utils import hw_to_dataset_features

        hw: dict[str, Any] = {name: float for name in self.joint_keys}
        for key in self.cameras.values():
            c, h, w = self.image_shapes[key]
            hw[key[len(IMAGE_PREFIX) :]] = (h, w, c)
        return hw_to_dataset_features(hw, "observation", use_video=False)


def read_policy_folder(folder: str | Path) -> PolicyFolder:
    return PolicyFolder(folder)


def _lerobot():
    """LeRobot's gRPC stubs and wire classes, imported offline (hub variables set first)."""
    from async_vla_ros.hfenv import apply_hf_offline

    apply_hf_offline()
    import grpc
    from lerobot.async_inference import helpers
    from lerobot.async_inference.constants import SUPPORTED_POLICIES
    from lerobot.transport import services_pb2, services_pb2_grpc
    from lerobot.transport.utils import send_bytes_in_chunks

    return grpc, helpers, SUPPORTED_POLICIES, services_pb2, services_pb2_grpc, send_bytes_in_chunks


class LeRobotGrpcPolicy(RemoteChunkPolicy):
    """:class:`ChunkPolicy` over LeRobot's stock policy server (module docstring; errors,
    reconnects and timing: :class:`~async_vla_ros.policy.remote.RemoteChunkPolicy`).

    The node can start before the server (the shapes come from the folder): until it is up,
    every call raises BackendUnavailable.
    """

    samplers = ("vanilla",)
    drop_on_timeout = False  # a late GetActions is cancelled, never read as the next one (timesteps checked too)
    sampler_hint = " (LeRobot's policy server does no RTC / REMAC / BID guidance: use a vanilla method)"

    def __init__(self, address: GrpcAddress | str, task: str = "", *, clock=time.monotonic, sleep=time.sleep):
        address = address if isinstance(address, GrpcAddress) else GrpcAddress(address)
        super().__init__(address, task, clock=clock, sleep=sleep)
        self.server = f"LeRobot policy server at {address.hostport}"
        self.hint = (
            "; is `python -m lerobot.async_inference.policy_server --host=127.0.0.1 "
            f"--port={address.port} --inference_latency=0` running there?"
        )
        self.folder = PolicyFolder(address.strs["policy"])
        f = self.folder
        self.obs_dim, self.action_dim = f.obs_dim, f.action_dim
        self.horizon = int(address.ints.get("horizon", f.chunk))
        if self.horizon > f.chunk:
            raise BackendError(f"horizon={self.horizon}: the policy predicts chunks of {f.chunk} actions")
        self.cameras, self.instruction = dict(f.cameras), f.instruction
        self.state_names, self.action_names = f.state_names, f.action_names
        self.needs_image = bool(self.cameras)
        if f.task and self.task and f.task != self.task:
            raise BackendError(f"{f.folder} is a policy for task {f.task!r}, not {self.task!r}")
        self.prompt = address.strs.get("prompt") or f.instruction or self.task
        grpc, helpers, supported, pb, pb_grpc, send_chunks = _lerobot()
        if f.policy_type not in supported:
            raise BackendError(
                f"LeRobot's policy server serves {', '.join(supported)}; {f.folder} is a {f.policy_type!r} policy"
            )
        self._grpc, self._helpers, self._pb, self._pb_grpc, self._send_chunks = grpc, helpers, pb, pb_grpc, send_chunks
        self._setup = pickle.dumps(
            helpers.RemotePolicyConfig(
                policy_type=f.policy_type,
                pretrained_name_or_path=address.strs.get("server_policy") or str(f.folder),
                lerobot_features=f.lerobot_features(),
                actions_per_chunk=self.horizon,
                device=address.strs.get("device") or "cpu",
            )
        )
        self._channel = None
        self._stub = None
        self._step = 0
        self._warned = False
        try:
            self._connect(force=True)
        except BackendUnavailable as exc:
            log.warning("%s; starting anyway, every chunk request is answered unavailable until it is up", exc)

    # the same joint-name check as the local lerobot backend (content and order), on the sidecar's names
    check_names = LeRobotPolicyBackend.check_names

    # ------------------------------------------------------------------ connection (RemoteChunkPolicy hooks)
    def _open(self) -> None:
        grpc, pb = self._grpc, self._pb
        opts = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        self._channel = grpc.insecure_channel(self.address.hostport, options=opts)
        grpc.channel_ready_future(self._channel).result(timeout=self.address.floats["connect_timeout"])
        if not self._warned:
            log.warning(PICKLE_WARNING.format(where=self.address.hostport))
            self._warned = True
        stub = self._pb_grpc.AsyncInferenceStub(self._channel)
        stub.Ready(pb.Empty(), timeout=self.address.floats["connect_timeout"])
        try:
            stub.SendPolicyInstructions(pb.PolicySetup(data=self._setup), timeout=self.address.floats["load_timeout"])
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNKNOWN:  # the server's handler raised: it cannot load the policy
                self._close()
                raise BackendError(
                    f"the {self.server} could not load the policy "
                    f"{self.address.strs.get('server_policy') or self.folder.folder}: {exc.details()}"
                ) from None
            raise
        self._stub = stub

    def _close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    # ------------------------------------------------------------------ requests
    def _images(self, obs: Mapping[str, Any], b: int) -> dict[str, np.ndarray]:
        given: dict[str, Any] = {}
        if obs.get("images") is not None:
            if not isinstance(obs["images"], Mapping):
                raise BackendError("obs['images'] must map camera names to (B, h, w, 3) uint8 arrays")
            given.update(obs["images"])
        if obs.get("image") is not None:
            if len(self.cameras) != 1:
                raise BackendError(
                    f"one unnamed image given, but the policy takes {len(self.cameras)} cameras "
                    f"({', '.join(self.cameras)}): pass obs['images'] by name"
                )
            given.setdefault(next(iter(self.cameras)), obs["image"])
        missing = sorted(set(self.cameras) - set(given))
        unknown = sorted(set(given) - set(self.cameras))
        if missing or unknown:
            raise BackendError(
                f"camera names do not match: the policy takes {sorted(self.cameras)}"
                + (f", missing {missing}" if missing else "")
                + (f", unknown {unknown}" if unknown else "")
            )
        out = {}
        for name in self.cameras:
            img = np.asarray(given[name])
            if img.dtype != np.uint8 or img.ndim != 4 or img.shape[0] != b or img.shape[-1] != 3:
                raise BackendError(f"camera {name!r}: expected (B, h, w, 3) uint8, got {img.shape} {img.dtype}")
            out[name] = img
        return out

    def _payload(self, obs: Any, row: int, b: int, sampler: str, kw: dict[str, Any]) -> tuple[int, bytes]:
        """(timestep, pickled TimedObservation) of row ``row``: the server's raw observation."""
        if not isinstance(obs, Mapping):
            obs = {"state": obs}
        state = np.asarray(obs["state"], dtype=np.float64)[row]
        raw: dict[str, Any] = {name: float(v) for name, v in zip(self.folder.joint_keys, state, strict=True)}
        if self.cameras:
            for name, img in self._images(obs, b).items():
                raw[self.cameras[name][len(IMAGE_PREFIX) :]] = np.ascontiguousarray(img[row])
        raw["task"] = str(obs.get("instruction") or self.prompt)
        self._step += 1
        # the wire format's timestamp is wall-clock seconds (the server compares it with its own
        # time.time() for its logs); nothing here is scheduled by it
        timed = self._helpers.TimedObservation(
            timestamp=time.time(), timestep=self._step, observation=raw, must_go=True
        )
        return self._step, pickle.dumps(timed)

    def _request(self, payload: tuple[int, bytes]) -> tuple[Any, float]:
        grpc, pb = self._grpc, self._pb
        step, data = payload
        deadline = self._clock() + self.address.floats["timeout"]
        try:
            self._stub.SendObservations(
                self._send_chunks(data, pb.Observation), timeout=max(deadline - self._clock(), 1e-3)
            )
            reply = self._stub.GetActions(pb.Empty(), timeout=max(deadline - self._clock(), 1e-3))
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(exc.details()) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise ConnectionError(f"{code.name}: {exc.details()}") from None
            raise RemoteReplyError(f"the server failed on this observation ({code.name}: {exc.details()})") from None
        if not reply.data:
            # GetActions answers an empty message when its inference raised (e.g. a fresh server
            # without the policy) or no observation reached it within its obs_queue_timeout
            raise RemoteReplyError(
                "the server sent no actions (its inference failed, or the observation did not reach it): "
                "see the policy server's log"
            )
        try:
            timed = pickle.loads(reply.data)  # nosec - trusted server only (module docstring)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a malformed reply
            raise RemoteReplyError(f"reply is not a pickled action list ({type(exc).__name__}: {exc})") from None
        return self._actions(timed, step), -1.0  # the stock server reports no inference time

    def _actions(self, timed: Any, step: int) -> np.ndarray:
        """List of TimedAction -> (n, A) array; their timesteps must follow the observation's."""
        if not isinstance(timed, list) or not all(isinstance(t, self._helpers.TimedAction) for t in timed):
            raise RemoteReplyError(f"reply is not a list of TimedAction (got {type(timed).__name__})")
        if not timed:
            raise RemoteReplyError("reply holds no actions")
        steps = [int(t.get_timestep()) for t in timed]
        if steps != list(range(step, step + len(timed))):
            raise RemoteReplyError(
                f"reply is for timesteps {steps[0]}..{steps[-1]}, not for the observation sent ({step})"
            )
        rows = []
        for t in timed:
            a = t.get_action()
            a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
            if np.asarray(a).shape != (self.action_dim,):
                raise RemoteReplyError(
                    f"reply action has shape {np.asarray(a).shape}, expected (A,) = ({self.action_dim},)"
                )
            rows.append(a)
        return np.stack(rows)


def _load(req: BackendRequest) -> LeRobotGrpcPolicy:
    if not req.target:
        raise BackendError(f"the lerobot-grpc backend needs an address: lerobot-grpc://{GrpcAddress.EXAMPLE}")
    try:
        import grpc  # noqa: F401
    except ImportError as exc:  # pragma: no cover - installed by make setup (lerobot[async])
        raise BackendError(f"the lerobot-grpc backend needs grpcio ({exc}); run `make setup`") from None
    return LeRobotGrpcPolicy(req.target, req.task)


def _cameras(req: BackendRequest) -> dict[str, tuple[int, int]]:
    """The cameras of the policy folder named in the address (what the graph renders and sends)."""
    if not req.target:
        raise BackendError(f"the lerobot-grpc backend needs an address: lerobot-grpc://{GrpcAddress.EXAMPLE}")
    return folder_cameras(GrpcAddress(req.target).strs["policy"])


register_backend(
    Backend(
        "lerobot-grpc",
        _load,
        "LeRobot's stock async-inference policy server (gRPC, pickle: trusted networks only): "
        "lerobot-grpc://HOST:PORT?policy=DIR (docs/remote.md)",
        samplers=("vanilla",),
        cameras=_cameras,
    )
)
