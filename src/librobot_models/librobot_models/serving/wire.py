"""Observations and action chunks on the wire: numpy arrays as raw little-endian bytes with their
dtype and shape (never pickle), as protobuf messages (policy.proto) and as JSON (base64 bytes).

Decoding checks everything a client can get wrong and raises ValueError naming the bad value;
the server answers that as INVALID_ARGUMENT (gRPC) or 422 (HTTP) and keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Mapping

import numpy as np

# What an observation or a guidance array may be: no object, string or void dtypes.
DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool")


def protos():
    """The policy.proto message classes and service stubs (compiled once, on first use)."""
    import grpc

    return grpc.protos_and_services("librobot_models/serving/policy.proto")


def array_parts(array: np.ndarray) -> tuple[str, list[int], bytes]:
    """(dtype name, shape, little-endian C-order bytes) of an array."""
    array = np.asarray(array)
    if array.dtype.name not in DTYPES:
        raise ValueError(f"array of dtype {array.dtype}: expected one of {', '.join(DTYPES)}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return array.dtype.name, list(array.shape), np.ascontiguousarray(little).tobytes()


def array_from_parts(dtype: str, shape: Any, data: bytes, what: str) -> np.ndarray:
    """The inverse of array_parts; `what` names the array in errors."""
    if dtype not in DTYPES:
        raise ValueError(f"{what} has dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"{what} has shape {shape}: dimensions must be >= 0")
    itemsize = np.dtype(dtype).itemsize
    expected = math.prod(shape) * itemsize
    if len(data) != expected:
        raise ValueError(f"{what} has {len(data)} bytes: shape {shape} of {dtype} needs {expected}")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype, copy=False)


# -- protobuf --------------------------------------------------------------------------------------
def to_proto_array(pb, array: np.ndarray):
    dtype, shape, data = array_parts(array)
    return pb.Array(dtype=dtype, shape=shape, data=data)


def from_proto_array(message, what: str) -> np.ndarray:
    return array_from_parts(message.dtype, message.shape, message.data, what)


def to_proto_observation(pb, obs: Mapping[str, Any]):
    """Policy.infer's observation dict -> an Observation message."""
    message = pb.Observation(
        images={name: to_proto_array(pb, image) for name, image in obs["images"].items()},
        state=to_proto_array(pb, np.asarray(obs["state"])),
        instruction=obs.get("instruction") or "",
    )
    if obs.get("time_s") is not None:
        message.has_time, message.time_s = True, float(obs["time_s"])
    return message


def from_proto_observation(message) -> dict[str, Any]:
    if not message.HasField("state"):
        raise ValueError("observation has no state: expected the joint positions as an Array")
    obs: dict[str, Any] = {
        "images": {name: from_proto_array(a, f"image {name!r}") for name, a in message.images.items()},
        "state": from_proto_array(message.state, "state"),
    }
    if message.instruction:
        obs["instruction"] = message.instruction
    if message.has_time:
        obs["time_s"] = message.time_s
    return obs


# -- JSON ------------------------------------------------------------------------------------------
def to_json_array(array: np.ndarray) -> dict[str, Any]:
    dtype, shape, data = array_parts(array)
    return {"dtype": dtype, "shape": shape, "data": base64.b64encode(data).decode("ascii")}


def from_json_array(value: Any, what: str) -> np.ndarray:
    if not (isinstance(value, Mapping) and {"dtype", "shape", "data"} <= set(value)):
        raise ValueError(f"{what} is {str(value)[:80]!r}: expected {{dtype, shape, data (base64)}}")
    if not isinstance(value["shape"], list) or not all(isinstance(n, int) for n in value["shape"]):
        raise ValueError(f"{what} has shape {value['shape']!r}: expected a list of ints")
    try:
        data = base64.b64decode(value["data"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ValueError(f"{what}: data is not base64") from None
    return array_from_parts(str(value["dtype"]), value["shape"], data, what)


def to_json_observation(obs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "images": {name: to_json_array(image) for name, image in obs["images"].items()},
        "state": to_json_array(np.asarray(obs["state"])),
    }
    for key in ("instruction", "time_s"):
        if obs.get(key) is not None:
            out[key] = obs[key]
    return out


def from_json_observation(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"observation is {str(value)[:80]!r}: expected an object with images and state")
    images = value.get("images")
    if not isinstance(images, Mapping):
        raise ValueError("observation.images is missing: expected an object camera -> array")
    obs: dict[str, Any] = {
        "images": {name: from_json_array(a, f"image {name!r}") for name, a in images.items()},
        "state": from_json_array(value.get("state"), "state"),
    }
    for key in ("instruction", "time_s"):
        if value.get(key) is not None:
            obs[key] = value[key]
    return obs
