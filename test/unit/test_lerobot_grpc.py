"""The ``lerobot-grpc`` backend: a client of LeRobot's STOCK gRPC ``policy_server``.

Real servers run on 127.0.0.1 (subprocesses in a temp folder, :mod:`async_vla_ros.eval.policy_servers`)
serving the tiny random SmolVLA of the test fixtures. Covered: the address and the folder's
feature layout, the observation -> raw observation mapping (joint names, cameras, instruction,
must_go), the reply -> chunk mapping and its errors (shape, NaN, timesteps, empty reply),
presets the server cannot serve, and the faults: server down at start, slow, killed mid-chunk,
malformed replies, reconnect.
"""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("grpc")
pytest.importorskip("lerobot")

from async_vla_ros.eval.policy_servers import free_port, start_lerobot_grpc  # noqa: E402
from async_vla_ros.policy.lerobot_grpc_backend import GrpcAddress, LeRobotGrpcPolicy, PolicyFolder  # noqa: E402
from async_vla_ros.policy.registry import (  # noqa: E402
    BackendError,
    BackendRequest,
    BackendUnavailable,
    load_models,
    load_policy_spec,
    parse_policy_spec,
)
from async_vla_ros.policy.remote import RemoteReplyError  # noqa: E402
from async_vla_ros.presets import get_preset  # noqa: E402

H, A, N = 8, 8, 24  # the fixture's chunk, action and state sizes


def _obs(b: int = 1, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "state": rng.normal(size=(b, N)) * 0.1,
        "images": {"scene": rng.integers(0, 256, size=(b, 64, 64, 3), dtype=np.uint8)},
    }


class _Stock:
    """LeRobot's stock server for the module, started on demand on a port chosen up front (so a
    client can be made before it is up), stopped at the end."""

    def __init__(self) -> None:
        self.port, self.proc = free_port(), None

    def up(self):
        if self.proc is None:
            self.proc = start_lerobot_grpc(self.port)
        return self.proc


@pytest.fixture(scope="module")
def stock():
    st = _Stock()
    yield st
    if st.proc is not None:
        st.proc.stop()


def test_address_and_spec():
    a = GrpcAddress("127.0.0.1:8123?policy=/p/x&timeout=0.5&delay_ms=20&horizon=4&load_timeout=30")
    assert (a.host, a.port, a.strs["policy"], a.ints["horizon"]) == ("127.0.0.1", 8123, "/p/x", 4)
    assert a.floats["timeout"] == 0.5 and a.floats["delay_ms"] == 20 and a.floats["load_timeout"] == 30
    for bad, match in [
        ("127.0.0.1:8123", "needs the policy folder"),
        ("127.0.0.1?policy=x", "HOST:PORT"),
        ("127.0.0.1:1?policy=x&bogus=1", "unknown option"),
        ("127.0.0.1:1?policy=x&delay_ms=5000", "bounded"),
        ("127.0.0.1:1?policy=x&timeout=0", "must be > 0"),
    ]:
        with pytest.raises(BackendError, match=match):
            GrpcAddress(bad)
    ps = parse_policy_spec("lerobot-grpc://127.0.0.1:1?policy=/x")
    assert (ps.backend, ps.target) == ("lerobot-grpc", "127.0.0.1:1?policy=/x")


def test_folder_features(tiny_smolvla_dir):
    f = PolicyFolder(tiny_smolvla_dir)
    assert (f.policy_type, f.obs_dim, f.action_dim, f.chunk) == ("smolvla", N, A, H)
    assert f.cameras == {"scene": "observation.images.scene"}
    feats = f.lerobot_features()
    assert feats["observation.state"]["names"] == [f"state_{i}" for i in range(N)]
    assert tuple(feats["observation.images.scene"]["shape"]) == (64, 64, 3)
    with pytest.raises(BackendError, match="no config.json"):
        PolicyFolder(tiny_smolvla_dir / "vlm" / "nothing")


def test_presets_with_guidance_are_refused_at_load(tiny_smolvla_dir):
    spec = f"lerobot-grpc://127.0.0.1:{free_port()}?policy={tiny_smolvla_dir}"
    for method in ("rtc", "remac_clean", "bid", "rtc_lerobot"):
        with pytest.raises(BackendError, match="runs only the vanilla sampler"):
            load_models("track", get_preset(method), spec)


def test_down_at_start_then_unavailable_until_up(stock, tiny_smolvla_dir):
    pol = load_policy_spec(
        f"lerobot-grpc://127.0.0.1:{stock.port}?policy={tiny_smolvla_dir}&connect_timeout=0.3&retry=0&timeout=20",
        BackendRequest("track"),
    )
    assert (pol.horizon, pol.action_dim, pol.obs_dim, pol.needs_image) == (H, A, N, True)  # from the folder
    with pytest.raises(BackendUnavailable, match=r"cannot reach the LeRobot policy server.*policy_server"):
        pol.infer(_obs())
    assert pol.n_connects == 0
    stock.up()
    try:
        assert pol.infer(_obs()).shape == (1, H, A)  # reconnects: Ready + the policy instructions
        assert pol.n_connects == 1
    finally:
        pol.close()


def test_mapping_to_the_raw_observation(tiny_smolvla_dir):
    pol = LeRobotGrpcPolicy(f"127.0.0.1:{free_port()}?policy={tiny_smolvla_dir}&connect_timeout=0.2", "track")
    obs = _obs(b=2)
    obs["instruction"] = "intercept the moving target"
    step, data = pol._payload(obs, 1, 2, "vanilla", {})
    timed = pickle.loads(data)
    raw = timed.get_observation()
    assert timed.must_go is True and timed.get_timestep() == step
    assert [raw[f"state_{i}"] for i in range(N)] == pytest.approx(obs["state"][1].tolist())
    np.testing.assert_array_equal(raw["scene"], obs["images"]["scene"][1])
    assert raw["task"] == "intercept the moving target"
    # the one-camera fallback, and the folder's instruction without one
    _, data = pol._payload({"state": obs["state"], "image": obs["images"]["scene"]}, 0, 2, "vanilla", {})
    raw = pickle.loads(data).get_observation()
    np.testing.assert_array_equal(raw["scene"], obs["images"]["scene"][0])
    assert raw["task"] == pol.instruction != ""
    for bad, match in [
        ({"state": obs["state"], "images": {"front": obs["images"]["scene"]}}, "camera names do not match"),
        ({"state": obs["state"], "images": {"scene": obs["images"]["scene"].astype(float)}}, "uint8"),
        ({"state": obs["state"]}, "missing"),
    ]:
        with pytest.raises(BackendError, match=match):
            pol._payload(bad, 0, 2, "vanilla", {})
    with pytest.raises(ValueError, match="obs_dim"):
        pol.infer({"state": np.zeros((1, N + 1)), "images": {}})
    with pytest.raises(BackendError, match="runs only vanilla.*no RTC"):
        pol._connected = True
        pol.infer(_obs(), "rtc", prefix=np.zeros((1, H, A)), weights=np.ones((1, H)))


class _Reply:
    def __init__(self, data: bytes) -> None:
        self.data = data


class _FakeStub:
    """Stands in for the gRPC stub: answers GetActions with a crafted TimedAction list."""

    def __init__(self, make) -> None:
        self.make, self.step = make, None

    def SendObservations(self, chunks, timeout):  # noqa: N802 - gRPC names
        self.step = pickle.loads(b"".join(c.data for c in chunks)).get_timestep()

    def GetActions(self, empty, timeout):  # noqa: N802
        return _Reply(self.make(self.step))


def _timed(step: int, actions) -> bytes:
    import torch
    from lerobot.async_inference.helpers import TimedAction

    return pickle.dumps(
        [TimedAction(timestamp=0.0, timestep=step + i, action=torch.as_tensor(a)) for i, a in enumerate(actions)]
    )


def test_reply_validation(tiny_smolvla_dir):
    pol = LeRobotGrpcPolicy(f"127.0.0.1:{free_port()}?policy={tiny_smolvla_dir}&connect_timeout=0.2", "track")
    good = np.arange(H * A, dtype=np.float32).reshape(H, A)
    bad_nan = good.copy()
    bad_nan[3, 2] = np.nan
    cases = [
        (lambda s: _timed(s, good), None),
        (lambda s: _timed(s, good[:-1]), r"shape \(7, 8\), expected \(H, A\) = \(8, 8\)"),
        (lambda s: _timed(s, good[:, :-1]), r"action has shape \(7,\)"),
        (lambda s: _timed(s, bad_nan), "NaN or Inf"),
        (lambda s: _timed(s + 1, good), "not for the observation sent"),
        (lambda s: b"", "sent no actions"),
        (lambda s: pickle.dumps({"actions": good}), "not a list of TimedAction"),
        (lambda s: b"not a pickle", "not a pickled action list"),
    ]
    for make, match in cases:
        pol._stub, pol._connected = _FakeStub(make), True
        if match is None:
            out = pol.infer(_obs())
            np.testing.assert_array_equal(out[0], good)
            assert pol.last_info["round_trip_s"] > 0 and pol.last_info["network_s"] == -1.0  # no server time
        else:
            with pytest.raises(RemoteReplyError, match=match):
                pol.infer(_obs())
    assert pol.n_bad_replies == len(cases) - 1


def test_joint_names_checked_like_the_local_backend(tiny_smolvla_dir, tmp_path):
    folder = tmp_path / "named"
    shutil.copytree(tiny_smolvla_dir, folder)
    side = json.loads((folder / "async_vla_ros.json").read_text())
    names = [f"fr3_joint{i}" for i in range(1, 8)] + ["gripper"]
    side["action_names"] = names
    (folder / "async_vla_ros.json").write_text(json.dumps(side))
    pol = LeRobotGrpcPolicy(f"127.0.0.1:{free_port()}?policy={folder}&connect_timeout=0.2", "track")
    pol.check_names(action_names=names)
    with pytest.raises(BackendError, match="different order"):
        pol.check_names(action_names=names[::-1])
    with pytest.raises(BackendError, match="differ"):
        pol.check_names(action_names=[*names[:-1], "finger"])


def test_stock_server_round_trip(stock, tiny_smolvla_dir):
    server = stock.up()
    pol = LeRobotGrpcPolicy(f"127.0.0.1:{server.port}?policy={tiny_smolvla_dir}&timeout=20", "track")
    try:
        out = pol.infer(_obs(b=2))  # one request per row
        assert out.shape == (2, H, A) and np.isfinite(out).all()
        info = pol.last_info
        assert info["round_trip_s"] > 0 and info["server_infer_s"] == -1.0 and info["network_s"] == -1.0
        # must_go: the same observation twice is answered twice (the stock server would drop it otherwise)
        obs = _obs(seed=3)
        assert pol.infer(obs).shape == pol.infer(obs).shape == (1, H, A)
        assert "Observation" in server.output(200)  # the server logs its own time, does not send it
    finally:
        pol.close()


def test_slow_then_killed_mid_chunk_then_reconnect_to_malformed_replies(tiny_smolvla_dir):
    """A slow stock server (--inference_latency 1.2 s): a reply past the timeout is unavailable
    and the connection is kept; killed while a call waits: connection lost; down: cannot reach;
    back (as the fault server, every 2nd chunk NaN): reconnect, a NaN chunk rejected, the next good."""
    port = free_port()
    srv = start_lerobot_grpc(port, latency_s=1.2)
    pol = LeRobotGrpcPolicy(f"127.0.0.1:{port}?policy={tiny_smolvla_dir}&timeout=0.4&retry=0", "track")
    try:
        with pytest.raises(BackendUnavailable, match="no reply within 0.40 s"):
            pol.infer(_obs())
        assert pol._connected  # gRPC: the late reply is cancelled, the connection is kept
        pol.address.floats["timeout"] = 20.0
        assert pol.infer(_obs()).shape == (1, H, A)  # the next request gets its own chunk
        assert pol.n_connects == 1
        errors: list[BaseException] = []

        def call():
            try:
                pol.infer(_obs())
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                errors.append(exc)

        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.5)  # inside the server's 1.2 s
        srv.kill()
        th.join(20)
        assert len(errors) == 1 and isinstance(errors[0], BackendUnavailable), errors
        assert "connection lost" in str(errors[0])
        pol.address.floats["connect_timeout"] = 0.3
        with pytest.raises(BackendUnavailable, match="cannot reach"):
            pol.infer(_obs())
        srv = start_lerobot_grpc(port, fault="nan", fault_every=2)  # the stock server class, every 2nd chunk NaN
        assert pol.infer(_obs()).shape == (1, H, A)
        assert pol.n_connects == 2
        with pytest.raises(RemoteReplyError, match="NaN"):
            pol.infer(_obs())
        assert pol.infer(_obs()).shape == (1, H, A)  # the next reply is good again
    finally:
        pol.close()
        srv.stop()
