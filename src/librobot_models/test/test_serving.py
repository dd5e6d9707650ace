"""The policy server and its client over real gRPC and HTTP on loopback: the same actions as local
inference, sessions kept apart, bad requests refused with the reason, a slow, stopped or restarted
server reported as PolicyUnavailable, TLS and the token."""

import base64
import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from librobot_models.checkpoint import save_checkpoint
from librobot_models.frameworks.act import ACTConfig
from librobot_models.normalization import NormStats
from librobot_models.policy import Policy
from librobot_models.serving import PolicyUnavailable, wire
from librobot_models.serving.client import RemotePolicy, parse_endpoint
from librobot_models.serving.server import PolicyHost, PolicyServer, ServerSettings

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def tiny_act(path, chunk_size=10, **fields):
    config = ACTConfig(state_dim=6, action_dim=6, chunk_size=chunk_size, camera_names=("front",),
                       image_size=(32, 32), vision_channels=(8, 16), dim_model=32, n_heads=4,
                       dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
                       n_vae_encoder_layers=1, latent_dim=4, **fields)
    stats = NormStats.from_array(np.random.default_rng(0).uniform(-0.5, 0.5, size=(100, 6)))
    metadata = {"embodiment": "so100", "joint_names": JOINTS, "camera_names": ["front"], "rate_hz": 10.0}
    save_checkpoint(path, config.create(), config, {"state": stats, "actions": stats}, metadata)
    return path


def observation(seed=0):
    rng = np.random.default_rng(seed)
    return {"images": {"front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)},
            "state": rng.uniform(-0.5, 0.5, 6).astype(np.float32), "instruction": "pick", "time_s": 1.5}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_act(tmp_path_factory.mktemp("serve") / "act")


def serve(host, **settings):
    server = PolicyServer(host, ServerSettings(**{"grpc_port": 0, **settings}))
    server.start()
    return server


@pytest.fixture
def server(checkpoint):
    server = serve(PolicyHost.from_checkpoint(checkpoint), http_port=0)
    yield server
    server.stop(0)


def request_json(server, path, body=None, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", method="POST" if body is not None else "GET",
                                     data=None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode()),
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_grpc_and_http_answer_exactly_what_local_inference_does(checkpoint, server):
    local = Policy.from_checkpoint(checkpoint)
    remote = RemotePolicy(f"grpc://127.0.0.1:{server.grpc_port}")
    try:
        for seed in range(3):
            expected = local.infer(observation(seed))["actions"]
            np.testing.assert_array_equal(remote.infer(observation(seed))["actions"], expected)
            status, reply = request_json(server, "/infer", {"session": "h", "observation": wire.to_json_observation(observation(seed))})
            assert status == 200 and reply["checkpoint_id"] == local.checkpoint_id
            np.testing.assert_array_equal(wire.from_json_array(reply["actions"], "actions"), expected)
        assert (remote.framework, remote.chunk_size, remote.action_dim, remote.joint_names, remote.rate_hz) == (
            "act", 10, 6, JOINTS, 10.0)
        assert remote.checkpoint_id == local.checkpoint_id and remote.camera_names == ["front"]
        assert request_json(server, "/ready") == (200, {"ready": True, "checkpoint_id": local.checkpoint_id})
        assert request_json(server, "/metadata")[1] == remote.metadata
    finally:
        remote.close()


def test_each_client_session_keeps_its_own_episode_state(tmp_path):
    """Temporal ensembling remembers earlier chunks: two clients interleaved get what two separate
    local policies give, and reset starts a client's episode afresh."""
    path = tiny_act(tmp_path / "act_te", temporal_ensemble_coeff=0.01)
    server = serve(PolicyHost.from_checkpoint(path))
    a, b = (RemotePolicy(f"127.0.0.1:{server.grpc_port}") for _ in range(2))
    local_a, local_b = Policy.from_checkpoint(path), Policy.from_checkpoint(path)
    try:
        for step in range(4):
            np.testing.assert_allclose(a.infer(observation(step))["actions"], local_a.infer(observation(step))["actions"], atol=1e-6)
            np.testing.assert_allclose(b.infer(observation(10 + step))["actions"], local_b.infer(observation(10 + step))["actions"], atol=1e-6)
        a.reset()
        fresh = Policy.from_checkpoint(path)
        np.testing.assert_allclose(a.infer(observation(7))["actions"], fresh.infer(observation(7))["actions"], atol=1e-6)
    finally:
        a.close(), b.close(), server.stop(0)


class Gate:
    """A policy whose inference waits for another client's to start too: serial serving deadlocks."""

    def __init__(self, policy, barrier):
        self.policy, self.barrier = policy, barrier

    def infer(self, obs, inpaint=None):
        self.barrier.wait()  # raises BrokenBarrierError after its timeout
        return self.policy.infer(obs, inpaint)

    def __getattr__(self, name):
        return getattr(self.policy, name)


def test_several_clients_are_served_at_once(checkpoint):
    barrier = threading.Barrier(2, timeout=10.0)
    server = serve(PolicyHost(lambda: Gate(Policy.from_checkpoint(checkpoint), barrier)))
    clients = [RemotePolicy(f"127.0.0.1:{server.grpc_port}", timeout_s=20.0) for _ in range(2)]
    results = [None, None]

    def run(i):
        try:
            results[i] = clients[i].infer(observation(i))["actions"].shape
        except Exception as err:  # noqa: BLE001 - reported below
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        assert results == [(10, 6), (10, 6)]
    finally:
        [c.close() for c in clients]
        server.stop(0)


def test_malformed_requests_are_refused_with_the_reason_and_the_server_keeps_serving(server):
    pb, services = wire.protos()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = services.PolicyServiceStub(channel)
    good = wire.to_proto_observation(pb, observation())
    bad_bytes = pb.Observation()
    bad_bytes.CopyFrom(good)
    bad_bytes.images["front"].data = b"\x00" * 10
    bad_dtype = pb.Observation()
    bad_dtype.CopyFrom(good)
    bad_dtype.state.dtype = "object"
    no_camera = pb.Observation(state=good.state)
    cases = [(bad_bytes, "has 10 bytes"), (bad_dtype, "dtype 'object'"), (no_camera, "lacks camera 'front'"),
             (pb.Observation(), "no state")]
    try:
        for obs, reason in cases:
            with pytest.raises(grpc.RpcError) as err:
                stub.Infer(pb.InferRequest(session="s", observation=obs), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in err.value.details()
        with pytest.raises(grpc.RpcError, match="session is empty"):
            stub.Infer(pb.InferRequest(observation=good), timeout=10)
        assert stub.Infer(pb.InferRequest(session="s", observation=good), timeout=10).actions.shape == [10, 6]
    finally:
        channel.close()
    # the client raises what a local Policy raises for a bad observation: ValueError, with the reason
    remote = RemotePolicy(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(ValueError, match=r"obs\['state'\] has shape \(4,\)"):
        remote.infer({**observation(), "state": np.zeros(4, np.float32)})
    remote.close()
    # HTTP: 422 with the reason, 413 beyond the size bound, and then a good request still works
    assert request_json(server, "/infer", b"{not json")[0] == 422
    status, reply = request_json(server, "/infer", {"session": "h", "observation": {"images": {}, "state": {"dtype": "float32", "shape": [6], "data": "!!"}}})
    assert status == 422 and "not base64" in reply["detail"]
    obs = wire.to_json_observation(observation())
    assert request_json(server, "/infer", {"session": "h", "observation": obs})[0] == 200


def test_http_requests_beyond_the_size_bound_are_refused(checkpoint):
    server = serve(PolicyHost.from_checkpoint(checkpoint), grpc_port=None, http_port=0, max_message_mb=0.01)
    try:
        body = json.dumps({"session": "h", "observation": wire.to_json_observation(observation())}).encode()
        assert len(body) > 0.01 * 1024 * 1024
        assert request_json(server, "/infer", body)[0] == 413  # declared too long
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        connection.putrequest("POST", "/infer")
        connection.putheader("Transfer-Encoding", "chunked")  # no length declared: counted as it comes
        connection.endheaders()
        for start in range(0, len(body), 4096):
            part = body[start:start + 4096]
            connection.send(b"%x\r\n%s\r\n" % (len(part), part))
        connection.send(b"0\r\n\r\n")
        assert connection.getresponse().status == 413
        connection.close()
        small = {"session": "h", "observation": wire.to_json_observation(
            {**observation(), "images": {"front": np.zeros((8, 8, 3), np.uint8)}})}
        assert request_json(server, "/infer", small)[0] == 200
    finally:
        server.stop(0)


class Slow:
    def __init__(self, policy, delay_s):
        self.policy, self.delay_s = policy, delay_s

    def infer(self, obs, inpaint=None):
        time.sleep(self.delay_s)
        return self.policy.infer(obs, inpaint)

    def __getattr__(self, name):
        return getattr(self.policy, name)


def test_a_slow_server_is_unavailable_after_the_timeout_not_later(checkpoint):
    server = serve(PolicyHost(lambda: Slow(Policy.from_checkpoint(checkpoint), 2.0)))
    remote = RemotePolicy(f"127.0.0.1:{server.grpc_port}", timeout_s=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(PolicyUnavailable, match=r"no answer within 0.3 s"):
            remote.infer(observation())
        assert time.monotonic() - started < 1.5
        remote.timeout_s = 10.0
        assert remote.infer(observation())["actions"].shape == (10, 6)
    finally:
        remote.close()
        server.stop(0)


def test_a_stopped_server_is_unavailable_and_a_restarted_one_is_used_again(checkpoint, tmp_path):
    server = serve(PolicyHost.from_checkpoint(checkpoint))
    port = server.grpc_port
    remote = RemotePolicy(f"127.0.0.1:{port}", timeout_s=0.5)
    expected = remote.infer(observation())["actions"]
    server.stop(0)
    with pytest.raises(PolicyUnavailable, match=f"127.0.0.1:{port}"):
        remote.infer(observation())
    server = serve(PolicyHost.from_checkpoint(checkpoint), grpc_port=port)
    deadline = time.monotonic() + 10.0
    while True:  # the channel reconnects by itself, backing off at most a second
        try:
            np.testing.assert_array_equal(remote.infer(observation())["actions"], expected)
            break
        except PolicyUnavailable:
            assert time.monotonic() < deadline, "no reconnection within 10 s"
            time.sleep(0.1)
    server.stop(0)
    # restarted with a model whose chunks are longer: refused, not driven with
    server = serve(PolicyHost.from_checkpoint(tiny_act(tmp_path / "act_20", chunk_size=20)), grpc_port=port)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                remote.infer(observation())
                pytest.fail("a model that does not fit answered")
            except PolicyUnavailable as err:
                if "does not fit" in str(err):
                    assert "chunk_size 10 -> 20" in str(err)
                    break
                assert time.monotonic() < deadline, str(err)
                time.sleep(0.1)
    finally:
        remote.close()
        server.stop(0)


def test_no_server_is_one_clear_error():
    with pytest.raises(PolicyUnavailable, match="no connection within 0.5 s"):
        RemotePolicy("127.0.0.1:9", connect_timeout_s=0.5)
    for endpoint in ("http://x:1", "host", "host:0", "host:port"):
        with pytest.raises(ValueError, match="policy endpoint"):
            parse_endpoint(endpoint)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_tls_and_the_token(checkpoint, tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = serve(PolicyHost.from_checkpoint(checkpoint), token="s3cret", tls_cert=str(cert), tls_key=str(key))
    endpoint = f"grpcs://localhost:{server.grpc_port}"
    try:
        remote = RemotePolicy(endpoint, token="s3cret", root_cert=str(cert))
        assert remote.infer(observation())["actions"].shape == (10, 6)
        remote.close()
        with pytest.raises(PolicyUnavailable, match="UNAUTHENTICATED"):
            RemotePolicy(endpoint, token="wrong", root_cert=str(cert))
        with pytest.raises(PolicyUnavailable):  # plain text to a TLS port
            RemotePolicy(f"grpc://localhost:{server.grpc_port}", token="s3cret", connect_timeout_s=1.0)
    finally:
        server.stop(0)


def test_serving_beyond_loopback_needs_tls_and_a_token(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="needs TLS"):
        ServerSettings(address="0.0.0.0")
    with pytest.raises(ValueError, match="needs TLS"):
        ServerSettings(address="0.0.0.0", token="t")
    # the CLI says so in one line, before binding anything
    result = subprocess.run([sys.executable, "-m", "librobot_models.serve", "--checkpoint", str(checkpoint),
                             "--address", "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs TLS" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "librobot_models.serve", "--checkpoint", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_arrays_round_trip_on_the_wire_in_every_dtype():
    for dtype in wire.DTYPES:
        array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
        np.testing.assert_array_equal(wire.from_json_array(wire.to_json_array(array), "a"), array)
        dtype_name, shape, data = wire.array_parts(array)
        assert (dtype_name, shape, len(data)) == (dtype, [2, 3, 4], array.nbytes)
    big_endian = np.arange(3, dtype=">f4")
    np.testing.assert_array_equal(wire.array_from_parts(*wire.array_parts(big_endian), "a"), big_endian)
    assert base64.b64decode(wire.to_json_array(np.array([1.0], np.float32))["data"]) == np.float32(1.0).tobytes()
    with pytest.raises(ValueError, match="dtype object"):
        wire.array_parts(np.array([None]))
