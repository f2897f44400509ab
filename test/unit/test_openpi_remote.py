"""openpi remote inference: the ``openpi://`` backend against real openpi websocket servers on 127.0.0.1.

Servers are openpi's own ``WebsocketPolicyServer`` (in a thread here, or ``async-vla-ros serve``
in a subprocess where a test kills it). Covers the protocol mapping, our guidance through the
server (rtc / prefix / bid equal local for the same seed), a plain openpi client, and the faults:
server down at start, killed mid-chunk, slow, malformed replies (NaN, shape, server error),
reconnect.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openpi_client")
pytest.importorskip("openpi_server")

from async_vla_ros.eval.policy_servers import free_port, start_serve  # noqa: E402
from async_vla_ros.policy.openpi_backend import (  # noqa: E402
    GUIDANCE_KEY,
    OpenpiAddress,
    OpenpiPolicy,
    RemoteReplyError,
)
from async_vla_ros.policy.openpi_serve import ServedPolicy, make_server  # noqa: E402
from async_vla_ros.policy.registry import (  # noqa: E402
    BackendError,
    BackendRequest,
    BackendUnavailable,
    load_policy_spec,
    parse_policy_spec,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def flow():
    return load_policy_spec("default", BackendRequest("track", num_threads=1))


class ThreadServer:
    """openpi's WebsocketPolicyServer on 127.0.0.1 in a thread, stoppable."""

    def __init__(self, served: ServedPolicy, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = make_server(served, "127.0.0.1", self.port)
        self.loop = asyncio.new_event_loop()
        self.task = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.server.run())
        try:
            self.loop.run_until_complete(self.task)
        except (asyncio.CancelledError, Exception):
            pass

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.task.cancel())
        self.thread.join(timeout=5)


@pytest.fixture
def served_flow(flow):
    srv = ThreadServer(ServedPolicy(flow, task="track", spec="default"))
    yield srv
    srv.stop()


def _obs(flow, b=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, flow.obs_dim)) * 0.1


def test_address_parsing_and_spec():
    a = OpenpiAddress("127.0.0.1:8123?horizon=8&action_dim=8&obs_dim=20&timeout=0.5&delay_ms=50")
    assert (a.host, a.port, a.uri) == ("127.0.0.1", 8123, "ws://127.0.0.1:8123")
    assert a.ints == {"horizon": 8, "action_dim": 8, "obs_dim": 20}
    assert a.floats["timeout"] == 0.5 and a.floats["delay_ms"] == 50
    for bad in ("nohost", "127.0.0.1:0", "h:80?bogus=1", "h:80?delay_ms=5000", "h:80?timeout=0", "h:80?horizon=x"):
        with pytest.raises(BackendError):
            OpenpiAddress(bad)
    spec = parse_policy_spec("openpi://127.0.0.1:8000")
    assert (spec.backend, spec.target) == ("openpi", "127.0.0.1:8000")


def test_server_down_at_start_is_a_clear_error():
    port = free_port()  # nothing listens there
    with pytest.raises(BackendError, match=r"cannot reach the openpi server at ws://127.0.0.1:\d+.*horizon=H"):
        load_policy_spec(f"openpi://127.0.0.1:{port}?connect_timeout=0.5", BackendRequest("track"))


def test_vanilla_and_guided_samplers_equal_local(flow, served_flow):
    remote = load_policy_spec(f"openpi://127.0.0.1:{served_flow.port}", BackendRequest("track"))
    assert (remote.horizon, remote.action_dim, remote.obs_dim) == (flow.horizon, flow.action_dim, flow.obs_dim)
    assert remote.guided and {"vanilla", "rtc", "prefix", "bid"} <= set(remote.samplers)
    # B = 1, as the policy node asks (a batch goes row by row: each row is one openpi request)
    obs = _obs(flow, b=1)
    h, a = flow.horizon, flow.action_dim
    prefix = np.cumsum(np.full((1, h, a), 0.02), axis=1) + flow.infer(obs, seed=0)[:, :1]
    weights = np.r_[np.ones(3), np.linspace(1, 0, h - 3)][None]
    cases = {
        "vanilla": {},
        "rtc": {"prefix": prefix, "weights": weights},
        "prefix": {"prefix": prefix, "n_frozen": np.array([3])},
        "bid": {"prefix": prefix, "weights": weights},
    }
    for sampler, kw in cases.items():
        local = flow.infer(obs, sampler, seed=7, **kw)
        got = remote.infer(obs, sampler, seed=7, **kw)
        np.testing.assert_array_equal(got, local, err_msg=sampler)
        info = remote.last_info
        assert info["round_trip_s"] > 0 and info["server_infer_s"] > 0
        assert 0 <= info["network_s"] < info["round_trip_s"]
    # rtc actually guides (not silently vanilla): differs from the vanilla chunk of the same seed
    assert not np.allclose(remote.infer(obs, "rtc", seed=7, **cases["rtc"]), flow.infer(obs, "vanilla", seed=7))
    # the request's guidance clip travels with it: the served chunk equals local rtc with that clip,
    # and differs from the server's default clip
    for beta in (0.05, 2.0):
        local = flow.infer(obs, "rtc", seed=7, beta=beta, **cases["rtc"])
        np.testing.assert_array_equal(remote.infer(obs, "rtc", seed=7, beta=beta, **cases["rtc"]), local)
    assert not np.allclose(
        remote.infer(obs, "rtc", seed=7, beta=0.05, **cases["rtc"]), remote.infer(obs, "rtc", seed=7, **cases["rtc"])
    )
    with pytest.raises(BackendError, match="beta"):
        remote.infer(obs, "rtc", seed=7, beta=-1.0, **cases["rtc"])
    two = np.repeat(obs, 2, axis=0)
    assert remote.infer(two, "rtc", seed=7, prefix=np.repeat(prefix, 2, 0), weights=np.repeat(weights, 2, 0)).shape == (
        2,
        h,
        a,
    )
    remote.close()


def test_plain_openpi_client_gets_vanilla(flow, served_flow):
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    client = WebsocketClientPolicy("127.0.0.1", served_flow.port)
    meta = client.get_server_metadata()
    assert meta["async_vla_ros"]["horizon"] == flow.horizon
    state = _obs(flow)[0]
    reply = client.infer({"state": state, "prompt": "track"})
    assert reply["actions"].shape == (flow.horizon, flow.action_dim)
    assert reply["sampler"] == "vanilla" and reply["server_timing"]["infer_ms"] > 0
    # a first-chunk rtc request (no prefix) runs vanilla, as locally (core/requests.py)
    reply = client.infer({"state": state, GUIDANCE_KEY: {"version": 1, "sampler": "rtc", "seed": 3}})
    assert reply["sampler"] == "vanilla"
    np.testing.assert_array_equal(reply["actions"], flow.infer(state[None], "vanilla", seed=3)[0])


def test_plain_openpi_server_shapes_from_spec_and_no_guidance(flow):
    """A server that does not advertise our metadata: shapes come from the spec, guided samplers refused."""

    class Plain:
        def infer(self, obs):
            return {"actions": np.zeros((flow.horizon, flow.action_dim))}

    from openpi_server.websocket_policy_server import WebsocketPolicyServer

    port = free_port()
    srv = ThreadServer.__new__(ThreadServer)
    srv.port, srv.server, srv.loop, srv.task = port, WebsocketPolicyServer(Plain(), "127.0.0.1", port), None, None
    srv.loop = asyncio.new_event_loop()
    srv.thread = threading.Thread(target=srv._run, daemon=True)
    srv.thread.start()
    time.sleep(0.3)
    try:
        with pytest.raises(BackendError, match="does not advertise 'horizon'"):
            OpenpiPolicy(f"127.0.0.1:{port}")
        pol = OpenpiPolicy(
            f"127.0.0.1:{port}?horizon={flow.horizon}&action_dim={flow.action_dim}&obs_dim={flow.obs_dim}"
        )
        assert not pol.guided
        assert pol.infer(_obs(flow), "vanilla").shape == (1, flow.horizon, flow.action_dim)
        assert pol.last_info["server_infer_s"] >= 0
        with pytest.raises(BackendError, match="runs only vanilla"):
            pol.infer(_obs(flow), "rtc", prefix=np.zeros((1, flow.horizon, flow.action_dim)), weights=np.ones((1, 8)))
    finally:
        srv.stop()


@pytest.mark.parametrize("fault", ["nan", "shape", "error"])
def test_malformed_reply_is_rejected_then_recovers(flow, fault):
    srv = ThreadServer(ServedPolicy(flow, task="track", fault=fault, fault_every=2))
    try:
        pol = OpenpiPolicy(f"127.0.0.1:{srv.port}?retry=0")
        obs = _obs(flow)
        assert np.isfinite(pol.infer(obs, seed=1)).all()  # reply 1: fine
        match = {"nan": "NaN or Inf", "shape": r"shape \(7, 8\)", "error": "injected server fault"}[fault]
        with pytest.raises(RemoteReplyError, match=match):
            pol.infer(obs, seed=1)  # reply 2: corrupted
        assert pol.n_bad_replies == 1
        np.testing.assert_array_equal(pol.infer(obs, seed=1), flow.infer(obs, seed=1))  # reply 3: fine again
    finally:
        srv.stop()


def test_slow_server_times_out_and_the_late_reply_is_never_used(flow):
    served = ServedPolicy(flow, task="track", latency_s=1.0)
    srv = ThreadServer(served)
    try:
        pol = OpenpiPolicy(f"127.0.0.1:{srv.port}?timeout=0.15&retry=0")
        obs = _obs(flow)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="no reply within 0.15 s"):
            pol.infer(obs, seed=1)
        assert time.monotonic() - t0 < 0.7  # the reply timeout + the bounded close, not the server's 1 s
        served.latency_s = 0.0
        time.sleep(1.0)  # the late reply of the first request arrives on the closed connection
        np.testing.assert_array_equal(pol.infer(obs, seed=2), flow.infer(obs, seed=2))
        assert pol.n_connects == 2
    finally:
        srv.stop()


def test_injected_client_delay_is_network_time(flow, served_flow):
    pol = OpenpiPolicy(f"127.0.0.1:{served_flow.port}?delay_ms=30")
    pol.infer(_obs(flow), seed=0)
    info = pol.last_info
    assert info["network_s"] >= 0.06  # 30 ms each way
    assert info["round_trip_s"] == pytest.approx(info["network_s"] + info["server_infer_s"])


@pytest.mark.slow
def test_serve_cli_killed_mid_chunk_then_reconnect(flow):
    """`async-vla-ros serve` in a subprocess: killed while a chunk is in flight, restarted, reconnected."""
    port = free_port()
    proc = start_serve("track", port, "--latency-ms", "500")
    try:
        deadline = time.monotonic() + 5  # the banner (printed before the bind) says where it listens
        while "serving default" not in proc.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"ws://127.0.0.1:{port}" in proc.output(), proc.output()
        pol = OpenpiPolicy(f"127.0.0.1:{port}?timeout=3&retry=0.2&connect_timeout=1")
        obs = _obs(flow)
        killer = threading.Timer(0.2, proc.kill)
        killer.start()
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="connection lost"):
            pol.infer(obs, seed=1)
        assert time.monotonic() - t0 < 2.0  # noticed when the socket closes, not at the timeout
        killer.join()
        with pytest.raises(BackendUnavailable, match="next reconnect attempt|cannot reach"):
            pol.infer(obs, seed=1)  # down: refused (or within the retry interval)
        time.sleep(0.25)
        with pytest.raises(BackendUnavailable, match="cannot reach the openpi server"):
            pol.infer(obs, seed=1)
        proc = start_serve("track", port, wait=False)
        deadline = time.monotonic() + 60
        while True:  # "serving" is printed just before the socket is bound
            try:
                got = pol.infer(obs, seed=1)
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "no reconnect within 60 s:\n" + proc.output()
                time.sleep(0.1)
        np.testing.assert_array_equal(got, flow.infer(obs, seed=1))
        assert pol.n_connects == 2
    finally:
        proc.kill()


@pytest.mark.slow
def test_serve_refuses_non_loopback_without_expose():
    r = subprocess.run(
        [sys.executable, "-m", "async_vla_ros.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "without --expose" in r.stderr


def test_start_before_server_with_shapes_then_connects(flow):
    port = free_port()
    spec = f"127.0.0.1:{port}?horizon={flow.horizon}&action_dim={flow.action_dim}&obs_dim={flow.obs_dim}"
    pol = OpenpiPolicy(spec + "&retry=0&connect_timeout=0.5")
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        pol.infer(_obs(flow))
    srv = ThreadServer(ServedPolicy(flow, task="track"), port=port)
    try:
        np.testing.assert_array_equal(pol.infer(_obs(flow), seed=4), flow.infer(_obs(flow), seed=4))
    finally:
        srv.stop()


def test_served_policy_rejects_bad_requests(flow):
    sp = ServedPolicy(flow, task="track")
    with pytest.raises(ValueError, match="needs 'state'"):
        sp.infer({"prompt": "x"})
    with pytest.raises(ValueError, match="finite values"):
        sp.infer({"state": np.full(flow.obs_dim, np.nan)})
    with pytest.raises(ValueError, match="version 1"):
        sp.infer({"state": np.zeros(flow.obs_dim), GUIDANCE_KEY: {"sampler": "rtc"}})
    with pytest.raises(ValueError, match="unknown sampler"):
        sp.infer({"state": np.zeros(flow.obs_dim), GUIDANCE_KEY: {"version": 1, "sampler": "magic"}})
    with pytest.raises(ValueError, match="prefix must be"):
        sp.infer(
            {"state": np.zeros(flow.obs_dim), GUIDANCE_KEY: {"version": 1, "sampler": "rtc", "prefix": np.zeros(3)}}
        )
    h, a = flow.horizon, flow.action_dim
    rtc = {"version": 1, "sampler": "rtc", "prefix": np.zeros((h, a)), "weights": np.ones(h)}
    with pytest.raises(ValueError, match="beta"):
        sp.infer({"state": np.zeros(flow.obs_dim), GUIDANCE_KEY: {**rtc, "beta": float("nan")}})

    class NoClip:  # a policy without a per-request clip: a sent clip is refused, not ignored
        horizon, action_dim, obs_dim = flow.horizon, flow.action_dim, flow.obs_dim

        def infer(self, obs, sampler="vanilla", prefix=None, weights=None, n_frozen=None, seed=None):
            return np.zeros((1, h, a))

    with pytest.raises(ValueError, match="no per-request guidance clip"):
        ServedPolicy(NoClip(), task="track").infer(
            {"state": np.zeros(flow.obs_dim), GUIDANCE_KEY: {**rtc, "beta": 2.0}}
        )
