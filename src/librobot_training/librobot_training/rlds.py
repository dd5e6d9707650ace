"""RLDS / Open X-Embodiment episodes read straight from TFRecord shards, without TensorFlow.

A TFDS-prepared RLDS dataset directory (often <name>/<version>/; given <name>/, its highest version
is used) holds:
    features.json         the feature tree; here it gives each step feature's shape and kind
    dataset_info.json     name, splits (optional here)
    <name>-<split>.tfrecord-00000-of-00004 ...   shards
Each shard is a sequence of TFRecords:
    uint64 length (LE) | uint32 masked crc32c(length) | data[length] | uint32 masked crc32c(data)
and each record's data is one serialized tf.train.Example holding one EPISODE: every step feature
flattened over the steps, e.g. `steps/observation/image` (bytes list, one encoded JPEG/PNG per step),
`steps/observation/state` (float list, T * dim), `steps/action`, `steps/is_first` (int64 list).

RLDSSource maps those keys to the source fields of librobot_training.datasets (RLDSOptions):
cameras -> images/<name>, state keys -> state (concatenated), action keys -> action, one bytes key
-> the instruction (its first step). Opening the source reads only JSON; the episode index (one
pass over every record: CRCs checked, step counts and instructions read) is built on first use.
A sample then reads its episode's record again (the last two parsed records are kept per process;
the data CRC is not checked again) and decodes only the images of the frames it needs.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping, Sequence

import cv2
import numpy as np

from librobot_training.datasets import DatasetInfo, EpisodeMeta, EpisodeSource

# -- CRC-32C (Castagnoli), as TFRecord uses it ------------------------------------------------------
_POLY = 0x82F63B78  # reflected


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)  # (256,) register after one byte, from a zero register
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_BITS = np.arange(32, dtype=np.uint32)


def _apply(matrix: np.ndarray, registers: np.ndarray) -> np.ndarray:
    """A GF(2)-linear map of 32-bit registers: matrix[k] is the image of bit k. (N,) -> (N,)"""
    bits = (registers[:, None] >> _BITS) & np.uint32(1)  # (N, 32)
    return np.bitwise_xor.reduce(np.where(bits.astype(bool), matrix, np.uint32(0)), axis=1)


@functools.lru_cache(maxsize=64)
def _zeros_operator(n_bytes: int) -> np.ndarray:
    """(32,) uint32: the map of the register over `n_bytes` zero bytes (square-and-multiply)."""
    one_byte = np.array([_TABLE[(1 << k) & 0xFF] ^ ((1 << k) >> 8) for k in range(32)], dtype=np.uint32)
    result = np.array([1 << k for k in range(32)], dtype=np.uint32)  # identity
    power = one_byte
    while n_bytes:
        if n_bytes & 1:
            result = _apply(power, result)  # power after result
        power = _apply(power, power)
        n_bytes >>= 1
    return result


def _crc_register(data: bytes | memoryview, register: int = 0) -> int:
    """The raw CRC register after `data` (no initial value or final xor), byte by byte."""
    table = _TABLE_LIST
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of `data`. Large inputs run as parallel lanes in numpy, combined by GF(2) shifts
    (CRC is linear: reg(A + B) = shift_|B|(reg(A)) ^ reg(B), registers starting at 0)."""
    data = memoryview(data).cast("B")
    n = len(data)
    if n < 4096:
        register = _crc_register(data, 0xFFFFFFFF)
        return register ^ 0xFFFFFFFF
    lanes = 1 << max(6, min(15, (int(np.sqrt(n)) * 2).bit_length()))  # a power of two, ~2 sqrt(n)
    lane_length = n // lanes
    body = np.frombuffer(data, dtype=np.uint8, count=lanes * lane_length).reshape(lanes, lane_length)
    columns = np.ascontiguousarray(body.T).astype(np.uint32)  # (lane_length, lanes): byte j of every lane
    registers = np.zeros(lanes, dtype=np.uint32)  # (lanes,)
    for column in columns:
        registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
    length = lane_length
    while len(registers) > 1:  # pairwise: left shifted past the right one, xor
        registers = _apply(_zeros_operator(length), registers[0::2]) ^ registers[1::2]
        length *= 2
    register = int(registers[0])
    register = _crc_register(data[lanes * lane_length :], register)
    initial = int(_apply(_zeros_operator(n), np.array([0xFFFFFFFF], dtype=np.uint32))[0])
    return (register ^ initial) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """The CRC TFRecord stores: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# -- TFRecord framing --------------------------------------------------------------------------------
class CorruptRecordError(ValueError):
    """A TFRecord whose length or CRC is wrong, or a file cut inside a record."""


@dataclass(frozen=True)
class RecordLocation:
    path: Path
    offset: int  # of the record's 12-byte header in the file
    length: int  # of its data


def _read_exact(f: BinaryIO, n: int, path: Path, offset: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CorruptRecordError(f"{path}: file ends inside the {what} of the record at offset {offset}")
    return data


def read_record(f: BinaryIO, path: Path, offset: int, check_data: bool = True) -> tuple[bytes, int]:
    """The data of the record at `offset` and the next record's offset. The length's CRC is always
    checked, the data's when `check_data` (it costs a pass over the data: about 30-40 MB/s)."""
    f.seek(offset)
    header = _read_exact(f, 12, path, offset, "header")
    length_bytes, length_crc = header[:8], int.from_bytes(header[8:], "little")
    if masked_crc32c(length_bytes) != length_crc:
        raise CorruptRecordError(f"{path}: bad length CRC in the record at offset {offset}")
    length = int.from_bytes(length_bytes, "little")
    data = _read_exact(f, length, path, offset, "data")
    data_crc = int.from_bytes(_read_exact(f, 4, path, offset, "data CRC"), "little")
    if check_data and masked_crc32c(data) != data_crc:
        raise CorruptRecordError(f"{path}: bad data CRC in the record at offset {offset} ({length} bytes)")
    return data, offset + 12 + length + 4


def iter_records(path: Path, check_data: bool = True) -> Iterator[tuple[RecordLocation, bytes]]:
    """Every record of a TFRecord file with its location (CRCs checked as in read_record)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            data, next_offset = read_record(f, path, offset, check_data)
            yield RecordLocation(path, offset, len(data)), data
            offset = next_offset


# -- tf.train.Example wire format --------------------------------------------------------------------
# Example{Features features = 1}; Features{map<string, Feature> feature = 1} (entries: key = 1,
# value = 2); Feature{oneof: BytesList bytes_list = 1, FloatList float_list = 2, Int64List int64_list = 3};
# each list is {repeated value = 1}, floats and ints packed or not.
class ExampleError(ValueError):
    """Bytes that are not a tf.train.Example."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ExampleError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ExampleError("varint longer than 10 bytes")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any, int, int]]:
    """(field number, wire type, varint value or None, value start, value end) of a message span."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire, value = tag >> 3, tag & 7, None
        if wire == 0:
            value, new = _varint(buf, pos)
        elif wire == 1:
            new = pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            new = pos + size
        elif wire == 5:
            new = pos + 4
        else:
            raise ExampleError(f"unsupported wire type {wire} (field {number})")
        if new > end:
            raise ExampleError(f"field {number} runs past the end of its message")
        yield number, wire, value, pos, new
        pos = new


def _int64s(buf: bytes, start: int, end: int, packed: bool, value: int | None) -> list[int]:
    if not packed:
        values = [value]
    else:
        values, pos = [], start
        while pos < end:
            v, pos = _varint(buf, pos)
            values.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _feature(buf: bytes, start: int, end: int) -> Any:
    """list[memoryview] | np.ndarray float32 | np.ndarray int64 of one Feature message."""
    view = memoryview(buf)
    for kind, _, _, s, e in _fields(buf, start, end):
        if kind == 1:  # BytesList
            return [view[vs:ve] for n, w, _, vs, ve in _fields(buf, s, e) if n == 1 and w == 2]
        if kind == 2:  # FloatList
            # packed (one length-delimited run) or not (one fixed32 each): little-endian floats either way
            parts = [np.frombuffer(view[vs:ve], dtype="<f4") for n, w, _, vs, ve in _fields(buf, s, e)
                     if n == 1 and w in (2, 5)]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if kind == 3:  # Int64List
            values: list[int] = []
            for n, w, v, vs, ve in _fields(buf, s, e):
                if n == 1:
                    values += _int64s(buf, vs, ve, w == 2, v)
            return np.array(values, dtype=np.int64)
    return []  # a Feature with no list set: an empty feature


def parse_example(data: bytes, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The features of a serialized tf.train.Example (only `keys`, when given): bytes features as
    lists of memoryviews into `data`, float features as float32 arrays, int64 features as int64 arrays."""
    wanted = None if keys is None else set(keys)
    features: dict[str, Any] = {}
    for number, wire, _, s, e in _fields(data, 0, len(data)):
        if number != 1 or wire != 2:
            continue
        for entry_number, entry_wire, _, es, ee in _fields(data, s, e):  # Features.feature map entries
            if entry_number != 1 or entry_wire != 2:
                continue
            key, span = None, None
            for n, w, _, vs, ve in _fields(data, es, ee):
                if n == 1 and w == 2:
                    key = bytes(data[vs:ve]).decode()
                elif n == 2 and w == 2:
                    span = (vs, ve)
            if key is not None and (wanted is None or key in wanted):
                features[key] = _feature(data, *span) if span is not None else []
    return features


# -- features.json -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    kind: str  # "tensor", "image", "text", "<encoding>-encoded tensor", or the TFDS class name of anything else
    shape: tuple[int, ...]  # per step; -1 where unknown
    dtype: str


def read_features_json(path: Path) -> dict[str, FeatureSpec]:
    """Flattened feature paths ("steps/observation/image") -> FeatureSpec, from TFDS's features.json."""
    try:
        tree = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    specs: dict[str, FeatureSpec] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        kind = str(node.get("pythonClassName", "")).rsplit(".", 1)[-1]
        if "featuresDict" in node:
            for name, child in node["featuresDict"].get("features", {}).items():
                walk(child, f"{prefix}{name}/")
        elif "sequence" in node:  # a Dataset or Sequence feature: its items are stacked per step
            walk(node["sequence"]["feature"], prefix)
        elif "image" in node:
            image = node["image"]
            dims = tuple(int(d) for d in image.get("shape", {}).get("dimensions", []))
            specs[prefix.rstrip("/")] = FeatureSpec("image", dims, image.get("dtype", "uint8"))
        elif "tensor" in node:
            tensor = node["tensor"]
            dims = tuple(int(d) for d in tensor.get("shape", {}).get("dimensions", []))
            encoding = tensor.get("encoding", "none")  # "bytes"/"zlib": serialized arrays, not read here
            kind = "tensor" if encoding in ("none", "") else f"{encoding}-encoded tensor"
            specs[prefix.rstrip("/")] = FeatureSpec(kind, dims, tensor.get("dtype", "float32"))
        elif "text" in node:
            specs[prefix.rstrip("/")] = FeatureSpec("text", (), "string")
        else:
            specs[prefix.rstrip("/")] = FeatureSpec(kind or "unknown", (), "")

    walk(tree, "")
    return specs


# -- the source --------------------------------------------------------------------------------------
# Common Open X-Embodiment names; the first present is used when the options leave a role unset.
DEFAULT_CAMERA_NAMES = {  # RLDS image key -> our camera name
    "steps/observation/image": "front",
    "steps/observation/wrist_image": "wrist",
    "steps/observation/image_wrist": "wrist",
    "steps/observation/hand_image": "wrist",
    "steps/observation/exterior_image_1_left": "front",
    "steps/observation/wrist_image_left": "wrist",
    "steps/observation/image_0": "front",
}
DEFAULT_STATE_KEYS = ("steps/observation/state", "steps/observation/proprio", "steps/observation/joint_position")
DEFAULT_ACTION_KEYS = ("steps/action",)
DEFAULT_INSTRUCTION_KEYS = ("steps/language_instruction", "steps/observation/natural_language_instruction")


@dataclass(frozen=True)
class RLDSOptions:
    """How RLDS keys become our fields (`dataset_options` of an `rlds:DIR` dataset).

    rate_hz: the control rate (RLDS does not record it). cameras: RLDS image key -> camera name
    (None: the DEFAULT_CAMERA_NAMES keys present, else every image feature under its own leaf name).
    state / action: keys concatenated in order (None: the first DEFAULT_*_KEYS present). instruction:
    a bytes key ("" for none; None: the first DEFAULT_INSTRUCTION_KEYS present). shapes: per-step
    shapes that replace or add to features.json's (key -> list of ints). joint_names: the state's
    (None: state_0, state_1, ...). split: whose shards are read. verify_crc: check every record's
    data CRC while building the index (false: only the lengths' CRCs, for a faster first pass).
    """

    rate_hz: float | None = None
    cameras: Mapping[str, str] | None = None
    state: Sequence[str] | None = None
    action: Sequence[str] | None = None
    instruction: str | None = None
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    joint_names: Sequence[str] | None = None
    split: str = "train"
    verify_crc: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.rate_hz, (int, float)) and self.rate_hz > 0):
            raise ValueError(
                f"rlds dataset_options.rate_hz = {self.rate_hz!r}: expected the control rate in Hz "
                "(RLDS does not record it)"
            )
        for name in ("state", "action"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))


def _find_dataset_dir(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"RLDS dataset directory {root} does not exist")
    if (root / "features.json").is_file():
        return root
    versions = [p for p in root.iterdir() if p.is_dir() and (p / "features.json").is_file()]
    if not versions:
        raise FileNotFoundError(f"RLDS dataset directory {root} has no features.json (nor a version directory with one)")

    def version_key(p: Path) -> tuple:
        return tuple(int(x) if x.isdigit() else -1 for x in re.split(r"[.\-]", p.name))

    return max(versions, key=version_key)


@dataclass(frozen=True)
class _Record:
    shard: int
    offset: int
    length: int  # steps
    instruction: str
    size: int  # bytes of data


class _EncodedFrames:
    """Encoded images of one camera of one episode, decoded for the slice asked for."""

    def __init__(self, images: list[memoryview], key: str, shape: tuple[int, ...], where: str) -> None:
        self._images, self._key, self._shape, self._where = images, key, shape, where

    def __getitem__(self, index: slice) -> np.ndarray:
        frames = []
        for step, encoded in zip(range(*index.indices(len(self._images))), self._images[index]):
            bgr = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{self._where}: {self._key} step {step} is not a decodable JPEG/PNG image")
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)
            expected = self._shape
            if len(expected) == 3 and any(e not in (-1, a) for e, a in zip(expected, frame.shape)):
                raise ValueError(
                    f"{self._where}: {self._key} step {step} decodes to {frame.shape}, "
                    f"expected {tuple(expected)} (features.json or dataset_options.shapes)"
                )
            frames.append(frame)
        if not frames:
            return np.zeros((0, *self._shape), dtype=np.uint8)
        return np.stack(frames)  # (n, H, W, 3) uint8


class RLDSSource(EpisodeSource):
    """Episodes of a TFDS/RLDS dataset directory (module docstring); `options` map its keys."""

    def __init__(self, root: str | Path, options: RLDSOptions) -> None:
        self.root = _find_dataset_dir(Path(root))
        self.options = options
        self.specs = read_features_json(self.root / "features.json")
        for key, shape in options.shapes.items():
            old = self.specs.get(key)
            self.specs[key] = FeatureSpec(old.kind if old else "tensor", tuple(int(d) for d in shape),
                                          old.dtype if old else "")
        self.shards = sorted(self.root.glob(f"*-{options.split}.tfrecord*"))
        if not self.shards:
            raise FileNotFoundError(
                f"RLDS dataset {self.root} has no '{options.split}' shards (*-{options.split}.tfrecord-*)"
            )
        self.cameras = self._pick_cameras()  # our name -> RLDS key
        self.state_keys = self._pick_vectors("state", options.state, DEFAULT_STATE_KEYS)
        self.action_keys = self._pick_vectors("action", options.action, DEFAULT_ACTION_KEYS)
        self.instruction_key = self._pick_instruction()
        state_dim = sum(self._dim(k) for k in self.state_keys)
        joint_names = list(options.joint_names) if options.joint_names is not None else [
            f"state_{j}" for j in range(state_dim)
        ]
        if len(joint_names) != state_dim:
            raise ValueError(f"rlds joint_names has {len(joint_names)} names, but the state has {state_dim} values")
        self.info = DatasetInfo(
            joint_names=joint_names,
            camera_names=list(self.cameras),
            rate_hz=float(options.rate_hz),
            state_dim=state_dim,
            action_dim=sum(self._dim(k) for k in self.action_keys),
            embodiment=None,
        )
        self._handles: dict[int, BinaryIO] = {}
        self._parsed: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._pid = os.getpid()

    # -- key mapping ---------------------------------------------------------------------------
    def _available(self, kind: str) -> list[str]:
        return sorted(k for k, s in self.specs.items() if s.kind == kind and k.startswith("steps/"))

    def _require(self, key: str, kind: str, role: str) -> FeatureSpec:
        spec = self.specs.get(key)
        if spec is None or spec.kind != kind:
            raise ValueError(
                f"RLDS dataset {self.root}: {role} key {key!r} is not a {kind} feature; "
                f"its {kind} features are {self._available(kind)}"
            )
        return spec

    def _pick_cameras(self) -> dict[str, str]:
        mapping = self.options.cameras
        if mapping is None:
            present = {k: v for k, v in DEFAULT_CAMERA_NAMES.items() if k in self.specs}
            if not present:
                present = {k: k.rsplit("/", 1)[-1] for k in self._available("image")}
            names = list(present.values())
            if len(set(names)) != len(names):
                raise ValueError(
                    f"RLDS dataset {self.root}: the default camera names clash ({present}); "
                    "give dataset_options.cameras (RLDS image key -> camera name)"
                )
            mapping = present
        if not mapping:
            raise ValueError(f"RLDS dataset {self.root} has no image features; its features: {sorted(self.specs)}")
        for key in mapping:
            self._require(key, "image", "camera")
        return {name: key for key, name in mapping.items()}

    def _pick_vectors(self, role: str, keys: Sequence[str] | None, defaults: Sequence[str]) -> tuple[str, ...]:
        if keys is None:
            present = [k for k in defaults if k in self.specs and self.specs[k].kind == "tensor"]
            if not present:
                raise ValueError(
                    f"RLDS dataset {self.root} has none of the default {role} keys {list(defaults)}; "
                    f"give dataset_options.{role} (tensor keys: {self._available('tensor')})"
                )
            keys = present[:1]
        for key in keys:
            self._require(key, "tensor", role)
            self._dim(key)
        return tuple(keys)

    def _dim(self, key: str) -> int:
        shape = self.specs[key].shape
        if len(shape) > 1 or any(d < 0 for d in shape):
            raise ValueError(
                f"RLDS feature {key} has per-step shape {list(shape)}; state and action keys need a fixed "
                "vector or scalar shape (give dataset_options.shapes)"
            )
        return shape[0] if shape else 1

    def _pick_instruction(self) -> str | None:
        key = self.options.instruction
        if key == "":
            return None
        if key is None:
            return next((k for k in DEFAULT_INSTRUCTION_KEYS if k in self.specs), None)
        if key not in self.specs or self.specs[key].kind not in ("text", "tensor"):
            raise ValueError(
                f"RLDS dataset {self.root}: instruction key {key!r} is not a text feature; "
                f"its text features are {self._available('text')}"
            )
        return key

    # -- index ---------------------------------------------------------------------------------
    @functools.cached_property
    def _records(self) -> list[_Record]:
        keys = [*self.action_keys, *([self.instruction_key] if self.instruction_key else [])]
        records = []
        for shard, path in enumerate(self.shards):
            for location, data in iter_records(path, self.options.verify_crc):
                where = f"{path} record at offset {location.offset}"
                features = self._parse(data, keys, where)
                length = self._steps(features, where)
                records.append(_Record(shard, location.offset, length, self._instruction(features), location.length))
        if not records:
            raise ValueError(f"RLDS dataset {self.root} has no episodes in its '{self.options.split}' shards")
        return records

    def _parse(self, data: bytes, keys: Sequence[str], where: str) -> dict[str, Any]:
        try:
            features = parse_example(data, keys)
        except (ExampleError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: not a tf.train.Example ({err})") from None
        missing = [k for k in keys if k not in features]
        if missing:
            raise ValueError(f"{where}: the episode lacks {missing}")
        return features

    def _steps(self, features: Mapping[str, Any], where: str) -> int:
        key = self.action_keys[0]
        n, dim = len(features[key]), self._dim(key)
        if n == 0 or n % dim:
            raise ValueError(f"{where}: {key} holds {n} values, not a whole number (> 0) of {dim}-vectors")
        return n // dim

    def _instruction(self, features: Mapping[str, Any]) -> str:
        if self.instruction_key is None or len(features[self.instruction_key]) == 0:
            return ""
        return bytes(features[self.instruction_key][0]).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self._records)

    def episode(self, index: int) -> EpisodeMeta:
        record = self._records[index]
        where = f"{self.shards[record.shard]} record at offset {record.offset}"
        return EpisodeMeta(record.length, record.instruction, where)

    # -- reading -------------------------------------------------------------------------------
    def _episode_features(self, index: int) -> dict[str, Any]:
        if self._pid != os.getpid():  # a forked worker opens its own files
            self._handles, self._parsed, self._pid = {}, OrderedDict(), os.getpid()
        if index in self._parsed:
            self._parsed.move_to_end(index)
            return self._parsed[index]
        record = self._records[index]
        path = self.shards[record.shard]
        if record.shard not in self._handles:
            self._handles[record.shard] = open(path, "rb")
        # the data CRC was checked when the index was built; the length's is checked again
        data, _ = read_record(self._handles[record.shard], path, record.offset, check_data=False)
        if len(data) != record.size:
            raise CorruptRecordError(f"{path}: the record at offset {record.offset} changed since it was indexed")
        where = f"{path} record at offset {record.offset}"
        keys = [*self.cameras.values(), *self.state_keys, *self.action_keys]
        features = self._parse(data, keys, where)
        length = record.length
        fields: dict[str, Any] = {}
        for role, keys in (("state", self.state_keys), ("action", self.action_keys)):
            parts = []
            for key in keys:
                values, dim = features[key], self._dim(key)
                if len(values) != length * dim:
                    raise ValueError(
                        f"{where}: {key} holds {len(values)} values, expected {length} steps x {dim} "
                        f"(shape {list(self.specs[key].shape)})"
                    )
                parts.append(np.asarray(values, dtype=np.float32).reshape(length, dim))
            fields[role] = np.concatenate(parts, axis=1)  # (T, sum of dims)
        for name, key in self.cameras.items():
            images = features[key]
            if len(images) != length:
                raise ValueError(f"{where}: {key} holds {len(images)} images for {length} steps")
            fields[f"images/{name}"] = _EncodedFrames(images, key, self.specs[key].shape, where)
        self._parsed[index] = fields
        if len(self._parsed) > 2:
            self._parsed.popitem(last=False)
        return fields

    def open(self, index: int) -> dict[str, Any]:
        return self._episode_features(index)

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles, self._parsed = {}, OrderedDict()

    def __getstate__(self) -> dict:
        """Open files and parsed records stay behind (spawned workers reopen lazily)."""
        return {**self.__dict__, "_handles": {}, "_parsed": OrderedDict()}
