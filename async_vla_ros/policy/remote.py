"""What every remote backend (a client of a policy server) shares: the address, the reconnect
policy, the per-row request loop with injected delay, reply validation and network timing.

A remote backend is a :class:`RemoteChunkPolicy` subclass that says how to open and close a
connection (:meth:`~RemoteChunkPolicy._open`, :meth:`~RemoteChunkPolicy._close`) and how to send
one observation row and read one chunk back (:meth:`~RemoteChunkPolicy._payload`,
:meth:`~RemoteChunkPolicy._request`); this class
does the rest the same way for every protocol:

* **errors**: no server, a dropped connection, no reply within ``timeout`` ->
  :class:`~async_vla_ros.policy.registry.BackendUnavailable` (transient: the policy node answers
  ERROR_BACKEND_UNAVAILABLE and keeps serving; the connection is dropped so a late reply can never
  be taken for the next request's); a reply that is not a valid chunk -> :class:`RemoteReplyError`
  (ERROR_INFERENCE_FAILED); a per-call protocol (gRPC) keeps its connection after a reply timeout
  (``drop_on_timeout``);
* **reconnect**: the next call reconnects, at most once per ``retry`` seconds;
* **validation**: every chunk is checked like a local one (:func:`check_reply_actions`: shape
  (H, A), numeric, finite);
* **timing**: after each call ``last_info`` holds ``round_trip_s`` (request out -> reply in),
  ``server_infer_s`` (the server's own inference time, -1 when the protocol does not report it)
  and ``network_s`` (round trip - server time: serialisation, transport, injected delay; -1 when
  the server time is unknown);
* **injected delay** (``delay_ms`` option, experiments): slept before the request and after the
  reply, i.e. added one-way delay in both directions, bounded by :data:`MAX_DELAY_MS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import numpy as np

from async_vla_ros.core.requests import SAMPLERS
from async_vla_ros.core.strategies import check_beta
from async_vla_ros.policy.checks import check_sampler, check_seed, check_state
from async_vla_ros.policy.registry import BackendError, BackendUnavailable

__all__ = ["MAX_DELAY_MS", "RemoteAddress", "RemoteChunkPolicy", "RemoteReplyError", "check_reply_actions"]

MAX_DELAY_MS = 1000.0


class RemoteReplyError(ValueError):
    """The server answered, but not with a valid chunk (shape, NaN/Inf, missing actions, error text)."""


class RemoteAddress:
    """``HOST:PORT?key=value&...`` with typed, checked options (subclasses list their options)."""

    SCHEME: ClassVar[str] = "remote"  # for messages: '<scheme> address ...'
    EXAMPLE: ClassVar[str] = "127.0.0.1:8000"
    INTS: ClassVar[tuple[str, ...]] = ()  # options >= 1
    FLOATS: ClassVar[dict[str, float]] = {"timeout": 1.0, "connect_timeout": 2.0, "retry": 0.5, "delay_ms": 0.0}
    STRS: ClassVar[tuple[str, ...]] = ()
    POSITIVE: ClassVar[tuple[str, ...]] = ("timeout", "connect_timeout")  # floats that must be > 0

    def __init__(self, target: str) -> None:
        hostport, _, query = str(target).partition("?")
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BackendError(f"{self.SCHEME} address {target!r}: expected HOST:PORT[?options], e.g. {self.EXAMPLE}")
        self.target = str(target)
        self.host, self.port = host.strip("[]"), int(port)
        self.ints: dict[str, int] = {}
        self.floats = dict(self.FLOATS)
        self.strs: dict[str, str] = {}
        for key, val in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            try:
                if key in self.INTS:
                    self.ints[key] = int(val)
                    if self.ints[key] < 1:
                        raise ValueError("must be >= 1")
                elif key in self.FLOATS:
                    self.floats[key] = float(val)
                    if not np.isfinite(self.floats[key]) or self.floats[key] < 0:
                        raise ValueError("must be finite and >= 0")
                elif key in self.STRS:
                    self.strs[key] = val
                else:
                    known = (*self.INTS, *self.FLOATS, *self.STRS)
                    raise ValueError(f"unknown option (known: {', '.join(known)})")
            except ValueError as exc:
                raise BackendError(f"{self.SCHEME} address {target!r}: option {key}={val!r}: {exc}") from None
        if self.floats["delay_ms"] > MAX_DELAY_MS:
            raise BackendError(f"{self.SCHEME} address {target!r}: delay_ms is bounded to {MAX_DELAY_MS:.0f}")
        zero = [k for k in self.POSITIVE if self.floats[k] <= 0]
        if zero:
            raise BackendError(f"{self.SCHEME} address {target!r}: {' and '.join(zero)} must be > 0")

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def check_reply_actions(actions: Any, horizon: int, action_dim: int) -> np.ndarray:
    """A reply's chunk, checked like a local one: numeric (H, A), finite -> float64 copy."""
    a = np.asarray(actions)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise RemoteReplyError(f"reply actions are not numeric (dtype {a.dtype})")
    if a.shape != (horizon, action_dim):
        raise RemoteReplyError(f"reply actions have shape {a.shape}, expected (H, A) = ({horizon}, {action_dim})")
    if not np.isfinite(a).all():
        raise RemoteReplyError("reply actions contain NaN or Inf")
    return a.astype(np.float64)


class RemoteChunkPolicy:
    """:class:`ChunkPolicy` over a policy server (module docstring). Not thread-safe for
    concurrent ``infer`` calls beyond its own lock (one request at a time, like every backend).

    Subclasses set ``horizon``, ``action_dim``, ``obs_dim``, ``samplers`` (what the server runs)
    and implement :meth:`_open`, :meth:`_close`, :meth:`_payload`, :meth:`_request`; ``server`` names the server in
    messages. ``clock`` (seconds, monotonic) and ``sleep`` are injectable for tests.
    """

    horizon: int
    action_dim: int
    obs_dim: int
    samplers: tuple[str, ...] = ("vanilla",)
    server = "policy server"
    hint = ""  # appended to 'cannot reach' messages (what to start there)
    sampler_hint = ""  # appended to 'runs only vanilla' messages (where guided samplers run)
    # a stream protocol (openpi's websocket) must drop the connection after a reply timeout, or the
    # late reply would be read as the next request's; a per-call RPC protocol (gRPC) need not
    drop_on_timeout = True

    def __init__(self, address: RemoteAddress, task: str = "", *, clock=time.monotonic, sleep=time.sleep) -> None:
        self.address = address
        self.task = str(task)
        self._clock, self._sleep = clock, sleep
        self._connected = False
        self._lock = threading.Lock()
        self._last_attempt = -float("inf")
        self.last_info: dict[str, Any] = {}
        self.last_error = ""
        self.n_connects = 0
        self.n_unavailable = 0
        self.n_bad_replies = 0

    # ------------------------------------------------------------------ subclass hooks
    def _open(self) -> None:
        """Connect (any exception: the server cannot be reached now)."""
        raise NotImplementedError

    def _close(self) -> None:
        """Close the connection (best effort: it may be broken already)."""
        raise NotImplementedError

    def _payload(self, obs: Any, row: int, b: int, sampler: str, kw: dict[str, Any]) -> Any:
        """The request for observation row ``row`` of ``b`` (bad input: ValueError / BackendError;
        nothing is sent yet). ``kw``: the call's ``prefix``, ``weights``, ``n_frozen``, ``seed``."""
        raise NotImplementedError

    def _request(self, payload: Any) -> tuple[Any, float]:
        """Send ``payload``; return ``(actions (H, A), server seconds or -1)``.

        Raise :class:`RemoteReplyError` for a reply that is not a chunk, :class:`TimeoutError`
        when no reply came in time; any other exception means the connection is lost."""
        raise NotImplementedError

    def _after_connect(self) -> None:
        """Called after each successful (re)connect (e.g. check the server still serves the same shapes)."""

    # ------------------------------------------------------------------ connection
    def _connect(self, force: bool = False) -> None:
        now = self._clock()
        retry = self.address.floats["retry"]
        if not force and now - self._last_attempt < retry:
            raise BackendUnavailable(
                f"{self.server} unavailable ({self.last_error}); "
                f"next reconnect attempt in {retry - (now - self._last_attempt):.2f} s"
            )
        self._last_attempt = now
        try:
            self._open()
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - refused, timed out, handshake: all mean "no server"
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._close_quietly()
            raise BackendUnavailable(f"cannot reach the {self.server} ({self.last_error}){self.hint}") from None
        self._connected = True
        self.n_connects += 1
        self.last_error = ""
        self._after_connect()

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - already broken
            pass

    def _drop(self, why: str) -> None:
        self.last_error = why
        if self._connected:
            self._close_quietly()
        self._connected = False

    def close(self) -> None:
        with self._lock:
            self._drop("closed")

    # ------------------------------------------------------------------ ChunkPolicy
    def _state(self, obs: Any) -> np.ndarray:
        return check_state(obs["state"] if isinstance(obs, Mapping) else obs, self.obs_dim)

    def infer(
        self,
        obs: np.ndarray | Mapping[str, Any],
        sampler: str = "vanilla",
        prefix: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        n_frozen: np.ndarray | None = None,
        seed: int | None = None,
        beta: float | None = None,
    ) -> np.ndarray:
        """(B, H, A) float64 in robot units; one request per row (policy servers take one observation).
        ``beta``: the request's RTC guidance clip, sent along where the protocol carries it (ours
        over openpi); None: the server's default."""
        check_sampler(sampler, SAMPLERS)
        seed = check_seed(seed)
        try:
            beta = check_beta(beta, "remote infer")
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        b = self._state(obs).shape[0]
        kw = {"prefix": prefix, "weights": weights, "n_frozen": n_frozen, "seed": seed, "beta": beta}
        delay = self.address.floats["delay_ms"] / 1e3
        out = np.empty((b, self.horizon, self.action_dim))
        rtt = server = 0.0
        server_known = True
        with self._lock:
            for row in range(b):
                if not self._connected:
                    self._connect()
                if sampler != "vanilla" and sampler not in self.samplers:
                    raise BackendError(
                        f"the {self.server} runs only {'/'.join(self.samplers)}; sampler {sampler!r} "
                        f"is not available through it{self.sampler_hint}"
                    )
                payload = self._payload(obs, row, b, sampler, kw)
                t0 = self._clock()
                if delay > 0:
                    self._sleep(delay)  # injected network delay, request direction
                try:
                    actions, server_row = self._request(payload)
                except RemoteReplyError as exc:
                    self.n_bad_replies += 1
                    self._drop(str(exc))
                    raise
                except Exception as exc:  # noqa: BLE001 - closed, reset, timeout: the server is gone for now
                    self.n_unavailable += 1
                    timeout = self.address.floats["timeout"]
                    timed_out = isinstance(exc, TimeoutError)
                    why = f"no reply within {timeout:.2f} s" if timed_out else "connection lost"
                    if timed_out and not self.drop_on_timeout:
                        self.last_error = f"{why}: {type(exc).__name__}: {exc}"
                    else:
                        self._drop(f"{why}: {type(exc).__name__}: {exc}")
                    raise BackendUnavailable(f"{self.server}: {self.last_error}") from None
                if delay > 0:
                    self._sleep(delay)  # reply direction
                rtt_row = self._clock() - t0
                try:
                    out[row] = check_reply_actions(actions, self.horizon, self.action_dim)
                except RemoteReplyError:
                    self.n_bad_replies += 1
                    raise
                rtt += rtt_row
                server += max(server_row, 0.0)
                server_known = server_known and server_row >= 0
        self.last_info = {
            "sampler": sampler,
            "round_trip_s": rtt,
            "server_infer_s": server if server_known else -1.0,
            "network_s": max(rtt - server, 0.0) if server_known else -1.0,
            "latency_ms": 1e3 * rtt,
        }
        return out
