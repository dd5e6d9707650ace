"""Test helper: small RLDS datasets (features.json, dataset_info.json, TFRecord shards of
tf.train.Example episodes), encoded here by hand, with the dummy source's content.

Import it with `sys.path.insert(0, str(Path(__file__).parent))` (pytest runs in importlib mode).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from librobot_training.datasets import DummyOptions, DummySource
from librobot_training.rlds import masked_crc32c

TFDS = "tensorflow_datasets.core.features."


# -- protobuf wire encoding ------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_feature(values: Any, packed: bool = True) -> bytes:
    """A Feature message: list of bytes -> BytesList, float array -> FloatList, int array -> Int64List."""
    if isinstance(values, list) and (not values or isinstance(values[0], (bytes, str))):
        items = [v.encode() if isinstance(v, str) else v for v in values]
        return _len_field(1, b"".join(_len_field(1, v) for v in items))
    array = np.asarray(values)
    if array.dtype.kind == "f":
        floats = array.astype("<f4").ravel()
        if packed:
            body = _len_field(1, floats.tobytes())
        else:
            body = b"".join(_varint(1 << 3 | 5) + f.tobytes() for f in floats)
        return _len_field(2, body)
    ints = [int(v) for v in array.ravel()]
    if packed:
        body = _len_field(1, b"".join(_varint(v) for v in ints))
    else:
        body = b"".join(_varint(1 << 3 | 0) + _varint(v) for v in ints)
    return _len_field(3, body)


def encode_example(features: Mapping[str, Any], packed: bool = True) -> bytes:
    """A serialized tf.train.Example holding `features` (name -> values as for encode_feature)."""
    entries = b"".join(
        _len_field(1, _len_field(1, name.encode()) + _len_field(2, encode_feature(values, packed)))
        for name, values in features.items()
    )
    return _len_field(1, entries)


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# -- features.json -----------------------------------------------------------------------------------
def _tensor(shape: Sequence[int], dtype: str = "float32") -> dict:
    return {"pythonClassName": TFDS + "tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encoding": "none"}}


def _image(shape: Sequence[int], fmt: str) -> dict:
    return {"pythonClassName": TFDS + "image_feature.Image",
            "image": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": "uint8", "encodingFormat": fmt}}


def features_json(state_dim: int, action_dim: int, cameras: Sequence[str], image_size: tuple[int, int],
                  fmt: str = "png") -> dict:
    """An RLDS features.json tree like Open X-Embodiment's (state, action, images, language, flags)."""
    h, w = image_size
    observation = {c: _image((h, w, 3), fmt) for c in cameras}
    observation["state"] = _tensor((state_dim,))
    step = {
        "observation": {"pythonClassName": TFDS + "features_dict.FeaturesDict",
                        "featuresDict": {"features": observation}},
        "action": _tensor((action_dim,)),
        "language_instruction": {"pythonClassName": TFDS + "text_feature.Text", "text": {}},
        "is_first": _tensor((), "bool"),
        "is_last": _tensor((), "bool"),
        "is_terminal": _tensor((), "bool"),
        "reward": _tensor((), "float32"),
    }
    return {
        "pythonClassName": TFDS + "features_dict.FeaturesDict",
        "featuresDict": {"features": {
            "steps": {"pythonClassName": TFDS + "dataset_feature.Dataset",
                      "sequence": {"feature": {"pythonClassName": TFDS + "features_dict.FeaturesDict",
                                               "featuresDict": {"features": step}},
                                   "length": "-1"}},
            "episode_metadata": {"pythonClassName": TFDS + "features_dict.FeaturesDict",
                                 "featuresDict": {"features": {
                                     "file_path": {"pythonClassName": TFDS + "text_feature.Text", "text": {}}}}},
        }},
    }


def make_rlds_dataset(
    root: str | Path,
    n_episodes: int = 3,
    length: int = 12,
    state_dim: int = 4,
    cameras: Sequence[str] = ("image", "wrist_image"),
    image_size: tuple[int, int] = (32, 32),
    n_shards: int = 2,
    packed: bool = True,
    fmt: str = "png",
    instruction: str = "reach the target",
    name: str = "toy_dataset",
    seed: int = 0,
) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """Write <root>/<name>/1.0.0 with DummySource's episodes (RGB images, PNG by default: lossless);
    returns the version directory and the episodes as written (state, action, images/<cam>)."""
    directory = Path(root) / name / "1.0.0"
    directory.mkdir(parents=True, exist_ok=True)
    source = DummySource(DummyOptions(episodes=n_episodes, length=length, state_dim=state_dim,
                                      cameras=("cam",), image_size=tuple(image_size), seed=seed))
    episodes = []
    for e in range(n_episodes):
        raw = source.read(e, ["state", "action", "images/cam"])
        images = {}
        for i, cam in enumerate(cameras):  # each camera a little different
            frames = raw["images/cam"].copy()
            frames[..., i % 3] = np.minimum(frames[..., i % 3].astype(int) + 20 * (i + 1), 255)
            images[cam] = frames
        episodes.append({"state": raw["state"], "action": raw["action"], **{f"images/{c}": v for c, v in images.items()}})
    (directory / "features.json").write_text(json.dumps(features_json(state_dim, state_dim, cameras, image_size, fmt)))
    shard_of = np.arange(n_episodes) % n_shards
    shard_lengths = []
    for shard in range(n_shards):
        chunks = []
        for e in np.flatnonzero(shard_of == shard):
            episode = episodes[e]
            steps = len(episode["state"])
            flags = np.zeros(steps, dtype=np.int64)
            features: dict[str, Any] = {
                "steps/observation/state": episode["state"],
                "steps/action": episode["action"],
                "steps/language_instruction": [instruction] * steps,
                "steps/is_first": np.where(np.arange(steps) == 0, 1, flags),
                "steps/is_last": np.where(np.arange(steps) == steps - 1, 1, flags),
                "steps/is_terminal": np.where(np.arange(steps) == steps - 1, 1, flags),
                "steps/reward": np.zeros(steps, np.float32),
                "episode_metadata/file_path": [f"episode_{e}.npy"],
            }
            for cam in cameras:
                ext = ".png" if fmt == "png" else ".jpg"
                features[f"steps/observation/{cam}"] = [
                    cv2.imencode(ext, cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in episode[f"images/{cam}"]
                ]
            chunks.append(tfrecord(encode_example(features, packed)))
        (directory / f"{name}-train.tfrecord-{shard:05d}-of-{n_shards:05d}").write_bytes(b"".join(chunks))
        shard_lengths.append(str(len(chunks)))
    info = {"name": name, "version": "1.0.0", "splits": [{"name": "train", "shardLengths": shard_lengths}]}
    (directory / "dataset_info.json").write_text(json.dumps(info))
    # the order RLDSSource reads them: shard by shard, record by record
    order = [int(e) for shard in range(n_shards) for e in np.flatnonzero(shard_of == shard)]
    return directory, [episodes[e] for e in order]
