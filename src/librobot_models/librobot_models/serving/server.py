"""One checkpoint served to many clients, over gRPC (policy.proto) and HTTP/JSON (FastAPI).

    host = PolicyHost.from_checkpoint("runs/act_so100")
    server = PolicyServer(host, ServerSettings(grpc_port=50051, http_port=8000))
    server.start(); ...; server.stop()

Each client names a session in its requests; a session has a Policy of its own (history window,
temporal ensembling, a stateful model's cache), so clients never mix their episodes. Sessions share
the model's weights unless the model keeps state between calls (a `reset()` method, Helix): then a
session gets its own copy. The least recently used session is dropped beyond `max_sessions`.
Requests run on a thread pool, several at once; one session's calls run in order.
"""

from __future__ import annotations

import copy
import hmac
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from librobot_models.serving import wire

MiB = 1024 * 1024


def describe(policy) -> dict[str, Any]:
    """What a client checks before the model drives its robot (the Metadata message's fields)."""
    return {
        "framework": policy.framework,
        "checkpoint_id": policy.checkpoint_id or "",
        "joint_names": list(policy.joint_names or []),
        "camera_names": list(policy.camera_names),
        "rate_hz": float(policy.rate_hz or 0.0),
        "chunk_size": int(policy.chunk_size),
        "action_dim": int(policy.action_dim),
        "state_dim": int(policy.config.state_dim),
        "observation_history": int(policy.observation_history),
        "supports_inpainting": bool(policy.supports_inpainting),
        "embodiment": str(policy.metadata.get("embodiment") or ""),
    }


class PolicyHost:
    """Per-session Policies of one model, made by `make_policy()` (first call: the template whose
    metadata is served)."""

    def __init__(self, make_policy: Callable[[], Any], max_sessions: int = 32) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions = {max_sessions}: expected >= 1")
        self._make_policy = make_policy
        self.metadata = describe(make_policy())
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, tuple[Any, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", max_sessions: int = 32) -> PolicyHost:
        from librobot_models.checkpoint import checkpoint_id, load_checkpoint
        from librobot_models.policy import Policy

        model, config, norm_stats, metadata = load_checkpoint(path, device=device)
        ident = checkpoint_id(path)
        stateful = callable(getattr(model, "reset", None))  # e.g. Helix's cached latent

        def make_policy() -> Policy:
            own = copy.deepcopy(model) if stateful else model
            return Policy(own, config, norm_stats, metadata, ident, device)

        return cls(make_policy, max_sessions)

    def session(self, name: str) -> tuple[Any, threading.Lock]:
        if not name:
            raise ValueError("session is empty: expected an id the client picks (e.g. a UUID)")
        with self._lock:
            if name in self._sessions:
                self._sessions.move_to_end(name)
                return self._sessions[name]
        entry = (self._make_policy(), threading.Lock())  # outside the lock: may copy a model
        with self._lock:
            entry = self._sessions.setdefault(name, entry)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            return entry

    def infer(self, session: str, obs: dict, inpaint: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, float]:
        """(actions (chunk, action_dim) float32, model time in ms); ValueError for bad input."""
        policy, lock = self.session(session)
        with lock:
            started = time.perf_counter()
            actions = policy.infer(obs, inpaint=inpaint)["actions"]
            return np.asarray(actions, dtype=np.float32), (time.perf_counter() - started) * 1e3

    def observe(self, session: str, obs: dict) -> None:
        policy, lock = self.session(session)
        with lock:
            policy.observe(obs)

    def reset(self, session: str) -> None:
        policy, lock = self.session(session)
        with lock:
            policy.reset()


# -- gRPC ------------------------------------------------------------------------------------------
def _grpc_servicer(host: PolicyHost):
    import grpc

    pb, services = wire.protos()

    def guarded(call):
        """Bad input -> INVALID_ARGUMENT with the reason; any other failure -> INTERNAL. The server
        keeps serving either way."""
        def handler(self, request, context):
            try:
                return call(request)
            except ValueError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            except Exception as err:  # noqa: BLE001 - reported to the client, the server goes on
                context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        return handler

    def inpaint_of(request):
        if not request.HasField("inpaint_targets"):
            return None
        return (wire.from_proto_array(request.inpaint_targets, "inpaint_targets"),
                wire.from_proto_array(request.inpaint_weights, "inpaint_weights"))

    def infer(request):
        actions, ms = host.infer(request.session, wire.from_proto_observation(request.observation),
                                 inpaint_of(request))
        return pb.InferReply(actions=wire.to_proto_array(pb, actions),
                             checkpoint_id=host.metadata["checkpoint_id"], infer_ms=ms)

    def observe(request):
        host.observe(request.session, wire.from_proto_observation(request.observation))
        return pb.Empty()

    def reset(request):
        host.reset(request.session)
        return pb.Empty()

    class Servicer(services.PolicyServiceServicer):
        Ready = guarded(lambda request: pb.ReadyReply(ready=True, checkpoint_id=host.metadata["checkpoint_id"]))
        GetMetadata = guarded(lambda request: pb.Metadata(**host.metadata))
        Infer = guarded(infer)
        Observe = guarded(observe)
        Reset = guarded(reset)

    return Servicer(), services


def _token_interceptor(token: str):
    import grpc

    expected = f"Bearer {token}".encode()

    def refuse(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer <token>)")

    class TokenInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            given = dict(details.invocation_metadata).get("authorization", "")
            if hmac.compare_digest(given.encode(), expected):
                return continuation(details)
            return grpc.unary_unary_rpc_method_handler(refuse)

    return TokenInterceptor()


# -- HTTP ------------------------------------------------------------------------------------------
def http_app(host: PolicyHost, token: str | None = None, max_message_bytes: int = 32 * MiB):
    """The same calls over HTTP/JSON: GET /ready, GET /metadata, POST /infer, /observe, /reset.
    Arrays are {"dtype", "shape", "data": base64 of the raw little-endian bytes}."""
    import json

    app = FastAPI(title="LibroBot policy server", version="1")

    def check_token(request: Request) -> None:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise HTTPException(401, "missing or wrong token (authorization: Bearer <token>)")

    async def read_json(request: Request) -> Mapping[str, Any]:
        """The body, refused beyond max_message_bytes before it is all read."""
        check_token(request)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_message_bytes:
            raise HTTPException(413, f"request of {declared} bytes: at most {max_message_bytes}")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > max_message_bytes:
                raise HTTPException(413, f"request over {max_message_bytes} bytes")
        try:
            data = json.loads(body)
        except ValueError as err:
            raise HTTPException(422, f"body is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "body must be a JSON object")
        return data

    async def call(function, *args):
        try:
            return await run_in_threadpool(function, *args)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None

    def session_of(data: Mapping[str, Any]) -> str:
        session = data.get("session")
        if not isinstance(session, str):
            raise HTTPException(422, f"session is {session!r}: expected a non-empty string")
        return session

    @app.get("/ready")
    def ready(request: Request) -> dict:
        check_token(request)
        return {"ready": True, "checkpoint_id": host.metadata["checkpoint_id"]}

    @app.get("/metadata")
    def metadata(request: Request) -> dict:
        check_token(request)
        return host.metadata

    @app.post("/infer")
    async def infer(request: Request) -> dict:
        data = await read_json(request)

        def run():
            obs = wire.from_json_observation(data.get("observation"))
            inpaint = None
            if data.get("inpaint_targets") is not None:
                inpaint = (wire.from_json_array(data["inpaint_targets"], "inpaint_targets"),
                           wire.from_json_array(data.get("inpaint_weights"), "inpaint_weights"))
            return host.infer(session_of(data), obs, inpaint)

        actions, ms = await call(run)
        return {"actions": wire.to_json_array(actions), "checkpoint_id": host.metadata["checkpoint_id"],
                "infer_ms": ms}

    @app.post("/observe")
    async def observe(request: Request) -> dict:
        data = await read_json(request)
        await call(lambda: host.observe(session_of(data), wire.from_json_observation(data.get("observation"))))
        return {}

    @app.post("/reset")
    async def reset(request: Request) -> dict:
        data = await read_json(request)
        await call(lambda: host.reset(session_of(data)))
        return {}

    return app


# -- both, in one process --------------------------------------------------------------------------
def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    address: str = "127.0.0.1"
    grpc_port: int | None = 50051  # None: no gRPC
    http_port: int | None = None  # None: no HTTP
    token: str | None = None  # clients send "authorization: Bearer <token>"
    tls_cert: str | None = None  # PEM certificate chain and key: TLS on both servers
    tls_key: str | None = None
    max_message_mb: float = 32.0
    workers: int = 8  # requests served at once

    def __post_init__(self) -> None:
        if self.grpc_port is None and self.http_port is None:
            raise ValueError("neither a gRPC nor an HTTP port: expected at least one")
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} = {port}: expected 0..65535 (0: any free port)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} does not exist: expected a PEM file")
        if not is_loopback(self.address) and (self.tls_cert is None or not self.token):
            raise ValueError(f"address {self.address} is reachable from other machines: serving there "
                             "needs TLS (--tls-cert, --tls-key) and a token (LIBROBOT_POLICY_TOKEN)")
        if not (self.max_message_mb > 0 and self.workers >= 1):
            raise ValueError(f"max_message_mb = {self.max_message_mb}, workers = {self.workers}: "
                             "expected > 0 and >= 1")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MiB)


class PolicyServer:
    """gRPC and/or HTTP servers over one PolicyHost, started on threads of this process."""

    def __init__(self, host: PolicyHost, settings: ServerSettings) -> None:
        self.host, self.settings = host, settings
        self.grpc_port: int | None = None  # the bound ports, once started (0 asks for a free one)
        self.http_port: int | None = None
        self._grpc = None
        self._http = None
        self._http_thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.grpc_port is not None:
            self._start_grpc()
        if self.settings.http_port is not None:
            self._start_http()

    def _start_grpc(self) -> None:
        import grpc

        s = self.settings
        servicer, services = _grpc_servicer(self.host)
        options = [("grpc.max_receive_message_length", s.max_message_bytes),
                   ("grpc.max_send_message_length", s.max_message_bytes)]
        interceptors = [_token_interceptor(s.token)] if s.token else []
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="grpc"),
                                 options=options, interceptors=interceptors,
                                 maximum_concurrent_rpcs=4 * s.workers)
        services.add_PolicyServiceServicer_to_server(servicer, self._grpc)
        target = f"{s.address}:{s.grpc_port}" if ":" not in s.address else f"[{s.address}]:{s.grpc_port}"
        if s.tls_cert is not None:
            credentials = grpc.ssl_server_credentials([(Path(s.tls_key).read_bytes(), Path(s.tls_cert).read_bytes())])
            self.grpc_port = self._grpc.add_secure_port(target, credentials)
        else:
            self.grpc_port = self._grpc.add_insecure_port(target)
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC to {target} (in use?)")
        self._grpc.start()

    def _start_http(self) -> None:
        import uvicorn

        s = self.settings
        sock = socket.socket(socket.AF_INET6 if ":" in s.address else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((s.address, s.http_port))  # bound here: a busy port fails now, and 0 gets a free one
        self.http_port = sock.getsockname()[1]
        app = http_app(self.host, s.token, s.max_message_bytes)
        config = uvicorn.Config(app, log_level="warning", ssl_certfile=s.tls_cert, ssl_keyfile=s.tls_key,
                                limit_concurrency=4 * s.workers, timeout_graceful_shutdown=1)
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, kwargs={"sockets": [sock]},
                                             name="http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 10.0
        while not self._http.started and self._http_thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._http.started:
            raise OSError(f"the HTTP server on {s.address}:{self.http_port} did not start")

    def stop(self, grace_s: float = 1.0) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
        if self._http is not None:
            self._http.should_exit = True
            self._http_thread.join(grace_s + 5.0)

    def wait(self) -> None:
        """Block until the servers stop (Ctrl-C in the CLI)."""
        if self._grpc is not None:
            self._grpc.wait_for_termination()
        elif self._http_thread is not None:
            self._http_thread.join()
