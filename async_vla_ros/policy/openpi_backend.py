"""The ``openpi`` backend: a policy behind openpi's websocket policy server, as a :class:`ChunkPolicy`.

``--policy openpi://HOST:PORT[?key=value&...]`` connects with openpi's own client
(``openpi_client.websocket_client_policy.WebsocketClientPolicy``: msgpack-numpy over a
websocket, no pickle). The server may be ``async-vla-ros serve`` (ours: it advertises shapes and
runs our guided samplers) or any openpi ``WebsocketPolicyServer`` (vanilla chunks only).

Protocol (one observation dict per request, one action dict per reply):

* request: ``{"state": (obs_dim,) float64, "images": {camera: (h, w, 3) uint8}, "prompt": str}``
  (the layout of openpi's ALOHA examples), plus, for guided samplers only, the optional key
  :data:`GUIDANCE_KEY` holding ``{"version": 1, "sampler": str, "prefix": (H, A) float64,
  "weights": (H,) float64, "n_frozen": int, "seed": int (-1: none), "beta": float (optional: the
  RTC guidance clip of this request; absent: the server policy's default)}``: exactly the arguments of
  :meth:`ChunkPolicy.infer` (d and s are in them: the first d weights are 1 and ``n_frozen`` = d
  for REMAC), so the server runs the same guidance as a local policy. A plain openpi server
  ignores the key; a vanilla request carries none (and a plain client sending none gets vanilla).
* reply: ``{"actions": (H, A), "server_timing": {"infer_ms": float, ...}}`` (the server's
  timing is added by ``WebsocketPolicyServer`` itself); ours adds ``"sampler"`` (what ran).
* server metadata (sent once on connect): ours holds :data:`META_KEY` with ``horizon``,
  ``action_dim``, ``obs_dim``, ``cameras``, ``needs_image``, ``samplers``, ``task``, ``policy``.

Spec options (query string): ``horizon``, ``action_dim``, ``obs_dim`` (needed for a server that
does not advertise them, or to start while the server is down), ``timeout`` (s to wait for a
reply, default 1.0), ``connect_timeout`` (s, default 2.0), ``retry`` (s between reconnect
attempts, default 0.5), ``delay_ms`` (injected one-way network delay, added on the way out and
on the way back, at most 1000: experiments), ``prompt`` (default: the task name), ``camera``
(name of the node's one camera, default the server's first camera or ``image``).

Every reply is checked like a local chunk: shape (H, A), finite, numeric; a bad one raises
:class:`RemoteReplyError` (the node answers ERROR_INFERENCE_FAILED). No server, a dropped
connection or no reply within ``timeout`` raise :class:`BackendUnavailable` (ERROR_BACKEND_UNAVAILABLE);
the connection is then closed (a late reply can never be taken for the next request's) and the
next call reconnects, at most once per ``retry`` seconds. After each call ``last_info`` holds
``round_trip_s`` (request out -> reply in), ``server_infer_s`` (the server's own inference time)
and ``network_s`` (the difference: serialisation, transport, injected delay).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from async_vla_ros.policy.registry import (
    Backend,
    BackendError,
    BackendRequest,
    BackendUnavailable,
    register_backend,
)
from async_vla_ros.policy.remote import RemoteAddress, RemoteChunkPolicy, RemoteReplyError

__all__ = [
    "GUIDANCE_KEY",
    "META_KEY",
    "OpenpiAddress",
    "OpenpiPolicy",
    "RemoteReplyError",
    "parse_address",
    "guidance_payload",
]

GUIDANCE_KEY = "async_vla_ros/guidance"  # optional request key: our sampler and its guidance
META_KEY = "async_vla_ros"  # server metadata key: shapes, cameras, samplers
PROTOCOL_VERSION = 1
CLOSE_TIMEOUT_S = 0.1  # closing a connection we gave up on (timeout, bad reply) waits at most this


class OpenpiAddress(RemoteAddress):
    """``HOST:PORT?options`` parsed (see the module docstring)."""

    SCHEME = "openpi"
    INTS = ("horizon", "action_dim", "obs_dim")
    STRS = ("prompt", "camera")

    @property
    def uri(self) -> str:
        return f"ws://{self.hostport}"


def parse_address(target: str) -> OpenpiAddress:
    return OpenpiAddress(target)


def guidance_payload(
    sampler: str, prefix: Any, weights: Any, n_frozen: Any, seed: int | None, row: int, beta: float | None = None
) -> dict[str, Any] | None:
    """The :data:`GUIDANCE_KEY` value for batch row ``row`` (None: a plain vanilla request)."""
    if sampler == "vanilla" and seed is None:
        return None
    g: dict[str, Any] = {"version": PROTOCOL_VERSION, "sampler": sampler, "seed": -1 if seed is None else int(seed)}
    if beta is not None:
        g["beta"] = float(beta)
    if prefix is not None:
        g["prefix"] = np.asarray(prefix, dtype=np.float64)[row]
    if weights is not None:
        g["weights"] = np.asarray(weights, dtype=np.float64)[row]
    if n_frozen is not None:
        g["n_frozen"] = int(np.asarray(n_frozen).reshape(-1)[row])
    return g


def _client_class():
    """openpi's client, with bounded connect / reply waits (the stock one waits for ever)."""
    import websockets.sync.client
    from openpi_client import msgpack_numpy
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    class BoundedClient(WebsocketClientPolicy):
        def __init__(self, uri: str, connect_timeout: float, reply_timeout: float) -> None:
            self._connect_timeout = connect_timeout
            self._reply_timeout = reply_timeout
            super().__init__(uri)

        def _wait_for_server(self):
            with warnings.catch_warnings():
                # websockets >= 16 asks for `with connect(...)`; this connection outlives a block (closed by _drop)
                warnings.simplefilter("ignore", DeprecationWarning)
                conn = websockets.sync.client.connect(
                    self._uri,
                    compression=None,
                    max_size=None,
                    open_timeout=self._connect_timeout,
                    close_timeout=CLOSE_TIMEOUT_S,  # a busy server must not hold up giving up on it
                )
                try:
                    metadata = msgpack_numpy.unpackb(conn.recv(timeout=self._connect_timeout))
                except BaseException:
                    conn.close()
                    raise
            return conn, metadata

        def infer(self, obs: dict) -> dict:
            self._ws.send(self._packer.pack(obs))
            reply = self._ws.recv(timeout=self._reply_timeout)
            if isinstance(reply, str):  # WebsocketPolicyServer sends the traceback as text, then closes
                raise RemoteReplyError(f"the server failed on this observation:\n{reply.strip()[-2000:]}")
            return msgpack_numpy.unpackb(reply)

        def close(self) -> None:
            self._ws.close()

    return BoundedClient


class OpenpiPolicy(RemoteChunkPolicy):
    """:class:`ChunkPolicy` over an openpi websocket server (see the module docstring; errors,
    reconnects and timing: :class:`~async_vla_ros.policy.remote.RemoteChunkPolicy`)."""

    hint = "; is `async-vla-ros serve` (or another openpi server) running there?"
    sampler_hint = " (it needs `async-vla-ros serve` there: it runs our guidance next to the model)"

    def __init__(self, address: OpenpiAddress | str, task: str = "", *, clock=time.monotonic, sleep=time.sleep):
        address = address if isinstance(address, OpenpiAddress) else OpenpiAddress(address)
        super().__init__(address, task, clock=clock, sleep=sleep)
        self.server = f"openpi server at {address.uri}"
        self._client = None
        self.metadata: dict[str, Any] = {}
        try:
            self._connect(force=True)
        except BackendUnavailable as exc:
            missing = [k for k in OpenpiAddress.INTS if k not in self.address.ints]
            if missing:
                raise BackendError(
                    f"{exc}; to start before the server, give the shapes in the spec "
                    f"(openpi://{self.address.host}:{self.address.port}?horizon=H&action_dim=A&obs_dim=N)"
                ) from None
        self._apply_metadata(first=True)

    def _apply_metadata(self, first: bool = False) -> None:
        """Shapes, samplers, cameras from the server's metadata (or the spec); on a reconnect the
        server must serve the same shapes (another model behind the address is an error)."""
        ours = self.metadata.get(META_KEY, {}) if isinstance(self.metadata, Mapping) else {}
        dims = {}
        for key in OpenpiAddress.INTS:
            val = self.address.ints.get(key, ours.get(key))
            if val is None:
                raise BackendError(
                    f"openpi server at {self.address.uri} does not advertise {key!r} (not an async-vla-ros "
                    f"server): give it in the spec, e.g. openpi://HOST:PORT?horizon=10&action_dim=8&obs_dim=8"
                )
            if ours.get(key) is not None and int(ours[key]) != int(val):
                raise BackendError(f"spec says {key}={val}, the server at {self.address.uri} serves {ours[key]}")
            if not first and int(val) != getattr(self, key):
                raise BackendError(f"the server at {self.address.uri} now serves {key}={val}, not {getattr(self, key)}")
            dims[key] = int(val)
        self.horizon, self.action_dim, self.obs_dim = dims["horizon"], dims["action_dim"], dims["obs_dim"]
        self.guided = bool(ours)
        self.samplers = tuple(ours.get("samplers", ("vanilla",)))
        self.cameras = tuple(ours.get("cameras", ()))
        # unknown until the server is reached: send the image whenever the node has one
        self.needs_image = bool(ours.get("needs_image", False)) if self.metadata else False
        self.camera = self.address.strs.get("camera") or (self.cameras[0] if self.cameras else "image")
        self.prompt = self.address.strs.get("prompt") or str(ours.get("instruction") or self.task)

    # ------------------------------------------------------------------ connection (RemoteChunkPolicy hooks)
    def _open(self) -> None:
        client = _client_class()(
            self.address.uri, self.address.floats["connect_timeout"], self.address.floats["timeout"]
        )
        self._client = client
        self.metadata = client.get_server_metadata() or {}

    def _after_connect(self) -> None:
        if hasattr(self, "horizon"):  # a reconnect
            self._apply_metadata()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ requests
    def _row_obs(self, obs: Any, row: int, b: int) -> dict[str, Any]:
        if isinstance(obs, Mapping):
            state = np.asarray(obs["state"], dtype=np.float64)
            images = dict(obs.get("images") or {})
            if obs.get("image") is not None:
                images.setdefault(self.camera, obs["image"])
            prompt = obs.get("instruction") or self.prompt
        else:
            state, images, prompt = np.asarray(obs, dtype=np.float64), {}, self.prompt
        out: dict[str, Any] = {"state": np.ascontiguousarray(state[row]), "prompt": str(prompt)}
        if images:
            imgs = {}
            for name, img in images.items():
                arr = np.asarray(img)
                if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != b or arr.shape[-1] != 3:
                    raise ValueError(f"camera {name!r}: expected (B, h, w, 3) uint8, got {arr.shape} {arr.dtype}")
                imgs[str(name)] = np.ascontiguousarray(arr[row])
            out["images"] = imgs
        return out

    def _payload(self, obs: Any, row: int, b: int, sampler: str, kw: dict[str, Any]) -> dict[str, Any]:
        req = self._row_obs(obs, row, b)
        if self.guided:
            g = guidance_payload(sampler, kw["prefix"], kw["weights"], kw["n_frozen"], kw["seed"], row, kw.get("beta"))
            if g is not None:
                req[GUIDANCE_KEY] = g
        return req

    def _request(self, payload: dict[str, Any]) -> tuple[Any, float]:
        reply = self._client.infer(payload)
        if not isinstance(reply, Mapping) or "actions" not in reply:
            keys = sorted(map(str, reply)) if isinstance(reply, Mapping) else type(reply).__name__
            raise RemoteReplyError(f"reply without 'actions' (got {keys})")
        timing = reply.get("server_timing") or {}
        infer_ms = timing.get("infer_ms", -1.0) if isinstance(timing, Mapping) else -1.0
        try:
            infer_ms = float(infer_ms)
        except (TypeError, ValueError):
            infer_ms = -1.0
        return reply["actions"], infer_ms / 1e3 if np.isfinite(infer_ms) and infer_ms >= 0 else -1.0


def _load_openpi(req: BackendRequest) -> OpenpiPolicy:
    if not req.target:
        raise BackendError("openpi backend needs an address: openpi://HOST:PORT")
    try:
        import openpi_client  # noqa: F401
    except ImportError as exc:  # pragma: no cover - installed by make setup
        raise BackendError(f"the openpi backend needs openpi-client ({exc}); run `make setup`") from None
    return OpenpiPolicy(req.target, req.task)


register_backend(
    Backend(
        "openpi",
        _load_openpi,
        "openpi websocket policy server: openpi://HOST:PORT[?options] (docs/remote.md)",
        per_request_beta=True,  # our server takes the clip in the guidance dict
    )
)
