"""RemotePolicy: a policy server (librobot_models.serve) behind Policy's interface.

    policy = RemotePolicy("grpc://gpu-box:50051", timeout_s=0.5)   # grpcs:// for TLS
    policy.infer(obs)["actions"]        # (chunk, action_dim) float32, as Policy.infer
    policy.framework, policy.chunk_size, policy.joint_names, ...   # from the server's metadata

A bad observation is a ValueError, as with a local Policy. Anything that is not the observation's
fault -- the server unreachable, slower than `timeout_s`, failing, or serving another model that
does not fit what this client accepted -- is PolicyUnavailable, at once: the caller holds the robot
and calls again. The channel reconnects by itself (backoff capped at one second), and a restarted
server is used as soon as it answers.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np

from librobot_models.serving import PolicyUnavailable, wire

SCHEMES = ("grpc://", "grpcs://")
# What must not change under a client that already drives a robot with this model.
CONTRACT = ("joint_names", "camera_names", "rate_hz", "chunk_size", "action_dim", "state_dim")


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """'grpc://host:port' | 'grpcs://host:port' | 'host:port' -> (target, tls)."""
    tls = endpoint.startswith("grpcs://")
    target = endpoint.split("://", 1)[1] if "://" in endpoint else endpoint
    if "://" in endpoint and not endpoint.startswith(SCHEMES):
        raise ValueError(f"policy endpoint {endpoint!r}: expected grpc://host:port or grpcs://host:port")
    host, sep, port = target.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"policy endpoint {endpoint!r}: expected host:port with a port in 1..65535")
    return target, tls


def canonical_endpoint(endpoint: str) -> str:
    """The endpoint with its scheme ('host:port' is 'grpc://host:port'); ValueError if malformed."""
    parse_endpoint(endpoint)
    return endpoint if endpoint.startswith(SCHEMES) else "grpc://" + endpoint


class RemotePolicy:
    def __init__(self, endpoint: str, timeout_s: float = 1.0, token: str | None = None,
                 root_cert: str | None = None, connect_timeout_s: float = 5.0,
                 max_message_mb: float = 32.0) -> None:
        import grpc

        if not timeout_s > 0:
            raise ValueError(f"timeout_s = {timeout_s}: expected > 0 seconds")
        target, tls = parse_endpoint(endpoint)
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self._grpc = grpc
        self._pb, services = wire.protos()
        size = int(max_message_mb * 1024 * 1024)
        options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000)]
        if tls:
            pem = Path(root_cert).read_bytes() if root_cert else None
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(pem), options)
        else:
            if root_cert:
                raise ValueError(f"root_cert given for {endpoint}: TLS endpoints are grpcs://")
            self._channel = grpc.insecure_channel(target, options)
        self._call_metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = services.PolicyServiceStub(self._channel)
        self._session = uuid.uuid4().hex
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise PolicyUnavailable(f"policy server {endpoint}: no connection within {connect_timeout_s:g} s") from None
        self.metadata = self._fetch_metadata(timeout_s=max(timeout_s, connect_timeout_s))
        self._accepted = {key: self.metadata[key] for key in CONTRACT}

    # -- calls -------------------------------------------------------------------------------------
    def _call(self, method, request, timeout_s: float | None = None):
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._call_metadata)
        except self._grpc.RpcError as err:
            code, details = err.code(), err.details()
            if code == self._grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(details) from None
            what = ("no answer within {:g} s".format(timeout_s or self.timeout_s)
                    if code == self._grpc.StatusCode.DEADLINE_EXCEEDED else f"{code.name}: {details}")
            raise PolicyUnavailable(f"policy server {self.endpoint}: {what}") from None

    def _fetch_metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        reply = self._call(self._stub.GetMetadata, self._pb.Empty(), timeout_s)
        return {
            "framework": reply.framework, "checkpoint_id": reply.checkpoint_id,
            "joint_names": list(reply.joint_names), "camera_names": list(reply.camera_names),
            "rate_hz": reply.rate_hz, "chunk_size": reply.chunk_size, "action_dim": reply.action_dim,
            "state_dim": reply.state_dim, "observation_history": reply.observation_history,
            "supports_inpainting": reply.supports_inpainting, "embodiment": reply.embodiment,
        }

    def infer(self, obs: dict, inpaint: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        request = self._pb.InferRequest(session=self._session, observation=wire.to_proto_observation(self._pb, obs))
        if inpaint is not None:
            request.inpaint_targets.CopyFrom(wire.to_proto_array(self._pb, np.asarray(inpaint[0], np.float32)))
            request.inpaint_weights.CopyFrom(wire.to_proto_array(self._pb, np.asarray(inpaint[1], np.float32)))
        reply = self._call(self._stub.Infer, request)
        if reply.checkpoint_id != self.metadata["checkpoint_id"]:
            self._model_changed()
        actions = wire.from_proto_array(reply.actions, "actions")
        expected = (self.chunk_size, self.action_dim)
        if actions.shape != expected:
            raise PolicyUnavailable(f"policy server {self.endpoint}: actions {actions.shape}, expected {expected}")
        return {"actions": actions.astype(np.float32, copy=True), "server_infer_ms": reply.infer_ms}

    def _model_changed(self) -> None:
        """The server was restarted with another checkpoint: accept it only if it fits as the old did."""
        metadata = self._fetch_metadata()
        changed = {key: (self._accepted[key], metadata[key]) for key in CONTRACT
                   if metadata[key] != self._accepted[key]}
        if changed:
            raise PolicyUnavailable(
                f"policy server {self.endpoint} now serves {metadata['framework']} "
                f"{metadata['checkpoint_id']}, which does not fit: "
                + "; ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
        self.metadata = metadata

    def observe(self, obs: dict) -> None:
        if self.observation_history > 1:  # only history-window models use the steps in between
            request = self._pb.ObserveRequest(session=self._session,
                                              observation=wire.to_proto_observation(self._pb, obs))
            self._call(self._stub.Observe, request)

    def reset(self) -> None:
        """A new episode: a new session on the server (nothing to send; the old one ages out)."""
        self._session = uuid.uuid4().hex

    def close(self) -> None:
        self._channel.close()

    # -- Policy's properties -----------------------------------------------------------------------
    framework = property(lambda self: self.metadata["framework"])
    checkpoint_id = property(lambda self: self.metadata["checkpoint_id"])
    camera_names = property(lambda self: list(self.metadata["camera_names"]))
    joint_names = property(lambda self: list(self.metadata["joint_names"]) or None)
    rate_hz = property(lambda self: self.metadata["rate_hz"] or None)
    chunk_size = property(lambda self: self.metadata["chunk_size"])
    action_dim = property(lambda self: self.metadata["action_dim"])
    observation_history = property(lambda self: self.metadata["observation_history"])
    supports_inpainting = property(lambda self: self.metadata["supports_inpainting"])
